//! Cost of classifying a query: a cache hit, the keyword fast path (which
//! skips the cache), and misses that need pg_query.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pgsplit::router::classify::{classify, ClassificationCache};

const SIMPLE: &str = "SELECT id, name, email FROM users WHERE id = $1";
const WITH_FUNCTION: &str =
    "SELECT u.id, lower(u.email), my_func(u.id) FROM users u WHERE u.id = $1";
const WITH_CTE: &str =
    "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
                        SELECT customer_id, count(*) FROM recent GROUP BY customer_id";
/// What `pgbench -S -M simple` sends: the literal changes every time.
const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 71234;";
const INSERT: &str = "INSERT INTO events (kind, payload) VALUES ($1, $2)";

fn bench(c: &mut Criterion) {
    let cache = ClassificationCache::new(10_000);
    cache.classify(WITH_FUNCTION);
    c.bench_function("cache hit: statement that needed pg_query", |b| {
        b.iter(|| cache.classify(black_box(WITH_FUNCTION)))
    });
    // Keyword-settled statements skip the cache: this is what sessions pay.
    c.bench_function("through the cache API: keyword-settled SELECT", |b| {
        b.iter(|| cache.classify(black_box(SIMPLE)))
    });
    c.bench_function("through the cache API: pgbench -S query", |b| {
        b.iter(|| cache.classify(black_box(PGBENCH_SELECT)))
    });

    for (name, sql) in [
        ("classify fast path: simple SELECT", SIMPLE),
        ("classify fast path: INSERT", INSERT),
        (
            "classify pg_query: SELECT with function calls",
            WITH_FUNCTION,
        ),
        ("classify pg_query: CTE", WITH_CTE),
    ] {
        c.bench_function(name, |b| b.iter(|| classify(black_box(sql))));
    }

    // Real misses through the cache (lookup, classify, insert, evict):
    // cycle through more distinct texts than the cache holds.
    for (name, template) in [
        ("cache miss fast path: simple SELECT", SIMPLE),
        (
            "cache miss pg_query: SELECT with function calls",
            WITH_FUNCTION,
        ),
    ] {
        let texts: Vec<String> = (0..4096).map(|i| format!("{template} /* {i} */")).collect();
        let cache = ClassificationCache::new(1024);
        let mut next = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % texts.len();
                cache.classify(black_box(&texts[next]))
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
