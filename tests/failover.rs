//! Automatic failover with synchronous replication, under a bank-transfer
//! workload: a blip between pgsplit and the primary alone promotes nobody;
//! a crashed primary is replaced by the most caught-up replica, the other
//! replica follows it, no acknowledged transfer is lost, the money adds up,
//! and the old primary, restarted, is fenced.

mod common;

use std::time::{Duration, Instant};

use common::bank::{self, Workload};
use common::{connect, proxy_config, spawn_watched_proxy, with_cluster};
use pgsplit::config::{FailoverMode, Role};
use pgsplit::monitor::NodeState;

const TIMEOUT: Duration = Duration::from_secs(1);

/// The first value of a simple query through pgsplit.
async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client
        .simple_query(sql)
        .await
        .expect("query through pgsplit");
    common::first_value(&rows).expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_primary_is_replaced_without_losing_acknowledged_writes() {
    let (old_primary, replicas) = with_cluster(|c| {
        bank::set_up(c, "'ANY 1 (pg2, pg3)'");
        (c.primary().clone(), c.replicas().to_vec())
    });
    let mut config = proxy_config("");
    config.monitor.as_mut().unwrap().interval = Duration::from_millis(200);
    config.failover.mode = FailoverMode::Auto;
    config.failover.timeout = TIMEOUT;
    let proxy = spawn_watched_proxy(config);
    let topology = &proxy.shared.topology;
    let workload = Workload::start(proxy.addr, 8, true);
    workload
        .wait_beyond(0, Duration::from_secs(20), "no transfer committed")
        .await;

    // A blip between pgsplit's monitor and the primary: replication still
    // streams, so the replicas disagree that the primary is gone.
    proxy.shared.faults.block(0, true);
    tokio::time::sleep(TIMEOUT * 4).await;
    let during = topology.load_full();
    assert_eq!(
        during.nodes[0].state,
        NodeState::Down,
        "the monitor lost the primary"
    );
    assert_eq!(during.primary, Some(0));
    assert_eq!(during.failovers, 0, "a blip promoted a replica");
    proxy.shared.faults.block(0, false);
    workload
        .wait_beyond(
            workload.acknowledged(),
            Duration::from_secs(10),
            "writes stopped after the blip",
        )
        .await;

    let start = Instant::now();
    while topology.load().nodes[0].last_error.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the monitor never saw the primary again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The primary crashes.
    with_cluster(|c| c.kill_node(&old_primary).unwrap());
    let killed = Instant::now();
    let start = Instant::now();
    while topology.load().failovers == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no failover: {:?}",
            topology.load()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed_over = Instant::now();
    let first_write = loop {
        if let Some(at) = workload.first_commit_after(killed) {
            break at;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no write after the failover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "failover: new primary after {:?}, first acknowledged write {:?} after the primary was killed",
        failed_over - killed,
        first_write - killed
    );
    assert!(
        first_write >= failed_over - Duration::from_millis(50),
        "a write was acknowledged before the failover"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = workload.finish().await;

    let snapshot = topology.load_full();
    let new_primary = snapshot.primary.expect("a primary");
    assert_ne!(new_primary, 0);
    assert_eq!(snapshot.nodes[new_primary].role, Role::Primary);
    assert_eq!(snapshot.nodes[0].state, NodeState::Fenced);
    let report = snapshot.last_failover.clone().expect("a failover report");
    assert_eq!((report.from.as_str(), report.kind), ("pg1", "failover"));
    let (_, metrics) = common::admin_get(proxy.admin, "/metrics");
    for line in [
        "pgsplit_failovers_total 1",
        "pgsplit_node_events_total{event=\"promoted\"} 1",
        "pgsplit_node_events_total{event=\"fenced\"} 1",
        "pgsplit_node_events_total{event=\"followed\"} 1",
        "pgsplit_node_state{node=\"pg1\",state=\"fenced\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    let promoted = replicas[new_primary - 1].clone();
    let follower = replicas[2 - new_primary].clone();
    let transfers = with_cluster(|c| bank::verify(c, &promoted, &ledger));
    assert!(transfers >= ledger.acknowledged.len());
    println!(
        "failover: {} transfers acknowledged, {} failed during the failover, none lost",
        ledger.acknowledged.len(),
        ledger.failed
    );

    // The other replica streams from the new primary.
    let receiver = with_cluster(|c| {
        c.psql(
            &follower,
            "postgres",
            "SELECT status || ':' || sender_port FROM pg_stat_wal_receiver",
        )
        .unwrap()
    });
    assert_eq!(receiver, format!("streaming:{}", promoted.port));

    // The old primary comes back claiming to be primary: fenced, no traffic.
    with_cluster(|c| c.start_node(&old_primary).unwrap());
    let start = Instant::now();
    while topology.load().nodes[0].last_error.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the old primary does not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snapshot = topology.load_full();
    assert_eq!(snapshot.nodes[0].state, NodeState::Fenced);
    assert_eq!(
        snapshot.nodes[0].role,
        Role::Primary,
        "it still claims the role"
    );
    assert_eq!(snapshot.primary, Some(new_primary));
    let client = connect(proxy.addr).await;
    for _ in 0..10 {
        let read_port = value(&client, "SHOW port").await;
        assert_ne!(read_port, old_primary.port.to_string());
        let write_port = value(
            &client,
            "INSERT INTO transfers VALUES (-1, 1, 1, 0) ON CONFLICT (id) DO UPDATE SET amount = 0 \
             RETURNING current_setting('port')",
        )
        .await;
        assert_eq!(write_port, promoted.port.to_string());
    }
}
