//! A planned switchover under load: clients that never retry see no failed
//! transaction and no acknowledged write is lost; the old primary is fenced
//! until it is rebuilt as a replica and rejoined through the admin API
//! (which runs `failover.rejoin_command` first).

mod common;

use std::time::{Duration, Instant};

use common::bank::{self, Workload};
use common::{admin_post, connect, proxy_config, spawn_watched_proxy, with_cluster};
use pgsplit::config::Role;
use pgsplit::monitor::NodeState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_load_fails_no_transaction_and_the_old_primary_rejoins() {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let (pg1, pg2) = with_cluster(|c| {
        bank::set_up(c, "'ANY 1 (pg1, pg2, pg3)'");
        (c.primary().clone(), c.replicas()[0].clone())
    });
    let mut config = proxy_config("");
    config.monitor.as_mut().unwrap().interval = Duration::from_millis(100);
    config.failover.rejoin_command = Some(format!(
        "echo \"$PGSPLIT_EVENT $PGSPLIT_NODE $PGSPLIT_PRIMARY $PGSPLIT_PRIMARY_PORT\" > {}",
        marker.path().display()
    ));
    let proxy = spawn_watched_proxy(config);
    let topology = &proxy.shared.topology;

    let workload = Workload::start(proxy.addr, 8, false);
    workload
        .wait_beyond(
            100,
            Duration::from_secs(20),
            "the workload did not get going",
        )
        .await;
    let admin = proxy.admin;
    let started = Instant::now();
    let (status, body) = tokio::task::spawn_blocking(move || {
        admin_post(admin, "/api/switchover", r#"{"target": "pg2"}"#)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    workload
        .wait_beyond(
            workload.acknowledged(),
            Duration::from_secs(10),
            "writes stopped after the switchover",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = workload.finish().await;
    println!(
        "switchover: took {took:?}; {} transfers acknowledged, {} failed",
        ledger.acknowledged.len(),
        ledger.failed
    );
    assert_eq!(
        ledger.failed, 0,
        "a client transaction failed during the switchover"
    );
    with_cluster(|c| bank::verify(c, &pg2, &ledger));

    let snapshot = topology.load_full();
    assert_eq!(snapshot.primary, Some(1));
    assert_eq!(snapshot.nodes[0].state, NodeState::Fenced);
    let report = snapshot.last_failover.clone().unwrap();
    assert_eq!(
        (report.kind, report.wal_bytes_behind),
        ("switchover", Some(0))
    );

    // Still a primary: the rejoin command runs, but pg1 is not readmitted.
    let (status, body) = admin_post(admin, "/api/nodes/pg1/rejoin", "");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("still runs as a primary"), "{body}");
    let ran = std::fs::read_to_string(marker.path()).unwrap();
    assert_eq!(ran.trim(), format!("rejoin pg1 pg2 {}", pg2.port));

    // Rebuilt as a replica of pg2, it rejoins and serves reads again.
    with_cluster(|c| c.rejoin_as_replica(&pg1, &pg2).unwrap());
    let (status, body) = admin_post(admin, "/api/nodes/pg1/rejoin", "");
    assert_eq!(status, 200, "{body}");
    let start = Instant::now();
    loop {
        let node = topology.load().nodes[0].clone();
        if node.state == NodeState::Up && node.role == Role::Replica && node.last_error.is_none() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{node:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = connect(proxy.addr).await;
    let mut ports = Vec::new();
    for _ in 0..20 {
        let rows = client.simple_query("SHOW port").await.unwrap();
        ports.extend(common::first_value(&rows));
    }
    assert!(
        ports.contains(&pg1.port.to_string()),
        "pg1 serves no reads: {ports:?}"
    );
}
