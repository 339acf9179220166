//! Read-your-writes by WAL position, against replicas that apply WAL
//! 300 ms late (`recovery_min_apply_delay`): a client that writes and reads
//! straight back never misses its row, other clients keep reading from the
//! replicas, and `eventual` shows the misses that prove the test can fail.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use common::{connect, proxy_config, spawn_proxy, with_cluster};
use pgsplit::config::{Config, Consistency};
use tokio_postgres::Client;

const APPLY_DELAY: &str = "300ms";

/// Sets the replicas' apply delay and creates the test table, once.
fn prepare_cluster() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        with_cluster(|c| {
            for replica in c.replicas() {
                c.psql(
                    replica,
                    "postgres",
                    &format!("ALTER SYSTEM SET recovery_min_apply_delay = '{APPLY_DELAY}'"),
                )
                .unwrap();
                c.psql(replica, "postgres", "SELECT pg_reload_conf()")
                    .unwrap();
            }
            c.psql(
                c.primary(),
                pgsplit::cluster::APP_DATABASE,
                "CREATE TABLE ryw (id bigint PRIMARY KEY, note text); GRANT ALL ON ryw TO app",
            )
            .unwrap();
            c.wait_for_replicas().unwrap();
        })
    });
}

fn proxy_with(consistency: Consistency, adjust: impl FnOnce(&mut Config)) -> SocketAddr {
    prepare_cluster();
    let mut config = proxy_config("");
    config.routing.consistency = consistency;
    adjust(&mut config);
    spawn_proxy(config)
}

/// The first column of the first row of a simple query.
async fn value(client: &Client, sql: &str) -> Option<String> {
    common::first_value(&client.simple_query(sql).await.unwrap())
}

/// Inserts `id` and immediately reads it back, outside a transaction;
/// `true` when the read saw it.
async fn write_then_read(client: &Client, id: i64) -> bool {
    client
        .execute("INSERT INTO ryw VALUES ($1, 'x')", &[&id])
        .await
        .unwrap();
    let rows = client
        .query("SELECT note FROM ryw WHERE id = $1", &[&id])
        .await
        .unwrap();
    rows.len() == 1
}

/// The port of the node that served a plain read.
async fn read_port(client: &Client) -> u16 {
    value(client, "SHOW port").await.unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_always_reads_its_own_writes_while_others_read_from_replicas() {
    let addr = proxy_with(Consistency::ReadYourWrites, |_| {});
    let primary_port = with_cluster(|c| c.primary().port);
    let writer = connect(addr).await;
    let reader = connect(addr).await;
    let mut misses = 0;
    let mut reader_on_replica = 0;
    const ROUNDS: i64 = 500;
    for id in 0..ROUNDS {
        if !write_then_read(&writer, id).await {
            misses += 1;
        }
        if read_port(&reader).await != primary_port {
            reader_on_replica += 1;
        }
    }
    let share = f64::from(reader_on_replica) / ROUNDS as f64;
    println!("read_your_writes: {misses} misses in {ROUNDS}; a non-writing client read from replicas {:.0}% of the time", share * 100.0);
    assert_eq!(misses, 0);
    assert!(
        share > 0.9,
        "only {share} of the other client's reads used a replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_consistency_misses_fresh_writes() {
    let configured = connect(proxy_with(Consistency::Eventual, |_| {})).await;
    // The same, chosen by the session at login (PGOPTIONS).
    let url = format!(
        "{}&options=-c%20pgsplit.consistency%3Deventual",
        common::app_url(proxy_with(Consistency::ReadYourWrites, |_| {}))
    );
    let chosen = common::try_connect(&url).await.unwrap();
    assert_eq!(
        value(&chosen, "SHOW pgsplit.consistency").await.as_deref(),
        Some("eventual")
    );
    for (client, first_id) in [(&configured, 10_000), (&chosen, 11_000)] {
        let mut misses = 0;
        for id in first_id..first_id + 100 {
            if !write_then_read(client, id).await {
                misses += 1;
            }
        }
        println!("eventual: {misses} misses in 100");
        assert!(
            misses > 50,
            "only {misses} stale reads with a {APPLY_DELAY} apply delay"
        );
    }
    // Back to the proxy's default: no more misses.
    chosen
        .batch_execute("RESET pgsplit.consistency")
        .await
        .unwrap();
    for id in 12_000..12_020 {
        assert!(write_then_read(&chosen, id).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_handed_to_another_session_makes_its_reads_causal() {
    let addr = proxy_with(Consistency::ReadYourWrites, |_| {});
    let writer = connect(addr).await;
    // Connected before the write, so that logging in (slow in a debug
    // build on a busy machine) does not eat into the replicas' apply delay.
    let unaware = connect(addr).await;
    let reader = connect(addr).await;
    assert_eq!(
        value(&writer, "SHOW pgsplit.last_lsn").await.as_deref(),
        Some("0/0")
    );
    writer
        .batch_execute("INSERT INTO ryw VALUES (20000, 'handed over')")
        .await
        .unwrap();
    let seen = value(&unaware, "SELECT note FROM ryw WHERE id = 20000").await;
    assert_eq!(
        seen, None,
        "without the position the replica's stale row shows"
    );
    let lsn = value(&writer, "SHOW pgsplit.last_lsn").await.unwrap();
    assert!(pgsplit::lsn::parse(&lsn).is_some_and(|l| l > 0), "{lsn}");

    reader
        .batch_execute(&format!("SET pgsplit.min_lsn = '{lsn}'"))
        .await
        .unwrap();
    assert_eq!(value(&reader, "SHOW pgsplit.min_lsn").await, Some(lsn));
    let seen = value(&reader, "SELECT note FROM ryw WHERE id = 20000").await;
    assert_eq!(seen.as_deref(), Some("handed over"));

    let error = reader
        .batch_execute("SET pgsplit.min_lsn = 'yesterday'")
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
    let error = reader
        .batch_execute("SET pgsplit.last_lsn = '0/1'")
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::CANT_CHANGE_RUNTIME_PARAM)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ryw_wait_a_read_waits_for_a_replica_instead_of_using_the_primary() {
    let addr = proxy_with(Consistency::ReadYourWrites, |config| {
        config.routing.ryw_wait = Duration::from_secs(2);
    });
    let primary_port = with_cluster(|c| c.primary().port);
    let client = connect(addr).await;
    for id in 30_000..30_005i64 {
        client
            .execute("INSERT INTO ryw VALUES ($1, 'waited')", &[&id])
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT note, current_setting('port')::int FROM ryw WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "waited");
        assert_ne!(
            row.get::<_, i32>(1) as u16,
            primary_port,
            "the read went to the primary"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_explicit_transactions_are_read_back_too() {
    let addr = proxy_with(Consistency::ReadYourWrites, |_| {});
    let client = connect(addr).await;
    for id in 40_000..40_100i64 {
        // Three round trips: BEGIN, the write, COMMIT (extended protocol).
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("INSERT INTO ryw VALUES ($1, 'in a transaction')", &[&id])
            .await
            .unwrap();
        client.batch_execute("COMMIT").await.unwrap();
        let rows = client
            .query("SELECT note FROM ryw WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "transfer {id} not read back");
    }
    let lsn = value(&client, "SHOW pgsplit.last_lsn").await.unwrap();
    assert_ne!(lsn, "0/0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_routed_to_the_primary_skips_commit_positions_and_stays_safe() {
    let addr = proxy_with(Consistency::ReadYourWrites, |_| {});
    let client = connect(addr).await;
    client
        .batch_execute("SET pgsplit.route = primary")
        .await
        .unwrap();
    assert!(write_then_read(&client, 50000).await);
    // Reads cannot go to a replica, so no commit position was asked for.
    assert_eq!(
        value(&client, "SHOW pgsplit.last_lsn").await.as_deref(),
        Some("0/0")
    );
    // Switching to auto right after an untracked write: the write's reads
    // stay on the primary (sticky_after_write), so it is still seen
    // although the replicas apply 300 ms late.
    client
        .execute("INSERT INTO ryw VALUES (50001, 'x')", &[])
        .await
        .unwrap();
    client
        .batch_execute("SET pgsplit.route = auto")
        .await
        .unwrap();
    let rows = client
        .query("SELECT note FROM ryw WHERE id = 50001", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the untracked write was read back");
}
