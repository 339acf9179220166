//! The data path's own costs, apart from the kernel's: framing a server
//! response the size of a `pgbench -S` result, and taking a server
//! connection from the pool and giving it back (against a real PostgreSQL
//! started for the run).

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use pgsplit::backend::connection::LoginTarget;
use pgsplit::backend::{CheckoutLimits, PoolKey, PoolSettings, Pools, ServerSecret};
use pgsplit::cluster::{LocalCluster, APP_DATABASE, APP_PASSWORD, APP_USER};
use pgsplit::protocol::frame;
use pgsplit::protocol::messages;
use pgsplit::protocol::scram::ScramSecret;

/// RowDescription, DataRow, CommandComplete, ReadyForQuery: what the server
/// answers to `SELECT abalance FROM pgbench_accounts WHERE aid = $1`.
fn select_response() -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_slice(&messages::text_row_description(&["abalance"]));
    buf.put_slice(&messages::text_data_row(&[Some("0")]));
    buf.put_slice(&messages::command_complete("SELECT 1"));
    buf.put_slice(&messages::ready_for_query(b'I'));
    buf
}

fn framing(c: &mut Criterion) {
    let response = select_response();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    c.bench_function("frame a 4-message SELECT response", |b| {
        b.iter(|| {
            buf.extend_from_slice(&response);
            let mut frames = 0;
            while let Ok(Some(frame)) = frame::decode(&mut buf, 1 << 20) {
                black_box(frame.tag());
                frames += 1;
            }
            frames
        })
    });
}

fn pool_checkout(c: &mut Criterion) {
    let cluster = match LocalCluster::start(0) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("pool checkout skipped: cannot start PostgreSQL: {error:#}");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pools = Pools::new(PoolSettings {
        size: 4,
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(3600),
        max_message_size: 1 << 20,
        tcp_user_timeout: Duration::ZERO,
        tls: None,
    });
    let key = PoolKey {
        node: 0,
        database: APP_DATABASE.into(),
        user: APP_USER.into(),
    };
    let port = cluster.primary().port;
    let pool = pools.get_or_create(key, || LoginTarget {
        node_name: "pg1".into(),
        host: "127.0.0.1".into(),
        port,
        database: APP_DATABASE.into(),
        user: APP_USER.into(),
        secret: Some(ServerSecret::Scram(ScramSecret::Password(
            APP_PASSWORD.into(),
        ))),
    });
    let limits = CheckoutLimits {
        wait: Duration::from_secs(5),
        login_retry: Duration::from_secs(1),
    };
    // The first checkout logs in; the rest reuse that connection.
    runtime
        .block_on(pool.checkout(limits, std::time::Instant::now()))
        .expect("log in to PostgreSQL")
        .release();
    c.bench_function("pool checkout + release (idle connection)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                match pool.checkout(limits, std::time::Instant::now()).await {
                    Ok(server) => server.release(),
                    Err(error) => panic!("checkout failed: {error}"),
                }
            })
        })
    });
    drop(cluster);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = framing, pool_checkout
}
criterion_main!(benches);
