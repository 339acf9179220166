//! `manual` and `external` failover modes on one cluster, in turn: in
//! manual mode a crashed primary is only replaced when an operator asks
//! (and the replaced node can then be rejoined by hand); in external mode a
//! promotion done by someone else is followed and pgsplit promotes nothing.

mod common;

use std::time::{Duration, Instant};

use common::{admin_post, connect, proxy_config, spawn_watched_proxy, with_cluster, RunningProxy};
use pgsplit::config::{FailoverMode, Role};
use pgsplit::monitor::NodeState;

const TIMEOUT: Duration = Duration::from_millis(600);

fn proxy(mode: FailoverMode) -> RunningProxy {
    let mut config = proxy_config("");
    config.monitor.as_mut().unwrap().interval = Duration::from_millis(100);
    config.failover.mode = mode;
    config.failover.timeout = TIMEOUT;
    spawn_watched_proxy(config)
}

/// The port a write through pgsplit landed on.
async fn write_port(client: &tokio_postgres::Client) -> Result<String, tokio_postgres::Error> {
    let rows = client
        .simple_query("INSERT INTO modes_log VALUES (DEFAULT) RETURNING current_setting('port')")
        .await?;
    Ok(common::first_value(&rows).unwrap_or_default())
}

async fn wait_until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_mode_waits_for_the_operator_and_external_mode_only_follows() {
    let (pg1, pg2, pg3) = with_cluster(|c| {
        c.psql(
            c.primary(),
            pgsplit::cluster::APP_DATABASE,
            "CREATE TABLE modes_log (id serial PRIMARY KEY); GRANT ALL ON modes_log, modes_log_id_seq TO app",
        )
        .unwrap();
        c.wait_for_replicas().unwrap();
        (
            c.primary().clone(),
            c.replicas()[0].clone(),
            c.replicas()[1].clone(),
        )
    });

    // Manual: the primary crashes and nothing happens by itself.
    let manual = proxy(FailoverMode::Manual);
    let topology = &manual.shared.topology;
    let (status, body) = admin_post(manual.admin, "/api/promote", "{}");
    assert_eq!(status, 409, "promoting while the primary is up: {body}");
    assert!(body.contains("not down"), "{body}");
    with_cluster(|c| c.kill_node(&pg1).unwrap());
    wait_until("the primary marked down", Duration::from_secs(5), || {
        topology.load().nodes[0].state == NodeState::Down
    })
    .await;
    tokio::time::sleep(TIMEOUT * 3).await;
    assert_eq!(
        topology.load().failovers,
        0,
        "manual mode promoted by itself"
    );
    assert_eq!(topology.load().primary, Some(0));

    // Through the admin console this time (the API answers the same way).
    let url = common::url(
        manual.addr,
        pgsplit::cluster::SUPERUSER,
        pgsplit::cluster::SUPERUSER_PASSWORD,
        "pgsplit",
    );
    let promote = common::run_tool(
        "psql",
        &["-X", "-c", "PROMOTE pg3", &url],
        pgsplit::cluster::SUPERUSER_PASSWORD,
    );
    let notice = String::from_utf8_lossy(&promote.stderr);
    assert!(promote.status.success(), "{notice}");
    assert!(notice.contains("pg3 is the primary"), "{notice}");
    let snapshot = topology.load_full();
    assert_eq!(snapshot.primary, Some(2));
    assert_eq!(snapshot.nodes[0].state, NodeState::Fenced);
    let client = connect(manual.addr).await;
    assert_eq!(write_port(&client).await.unwrap(), pg3.port.to_string());
    // pg2 follows pg3.
    let receiver = with_cluster(|c| {
        c.psql(
            &pg2,
            "postgres",
            "SELECT status || ':' || sender_port FROM pg_stat_wal_receiver",
        )
        .unwrap()
    });
    assert_eq!(receiver, format!("streaming:{}", pg3.port));

    // Rejoining a node that is still down fails; the node stays fenced.
    let (status, body) = admin_post(manual.admin, "/api/nodes/pg1/rejoin", "");
    assert_eq!(status, 409, "{body}");
    assert_eq!(topology.load().nodes[0].state, NodeState::Fenced);
    let (status, _) = admin_post(manual.admin, "/api/nodes/pg2/rejoin", "");
    assert_eq!(status, 409, "pg2 was never fenced");

    // External: someone else promotes pg2 (pg3 is stopped); pgsplit follows
    // and promotes nobody itself.
    let external = proxy(FailoverMode::External);
    let topology = &external.shared.topology;
    wait_until("pg3 seen as primary", Duration::from_secs(5), || {
        topology.load().primary == Some(2)
    })
    .await;
    let (status, body) = admin_post(external.admin, "/api/switchover", r#"{"target": "pg2"}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("external"), "{body}");
    with_cluster(|c| c.kill_node(&pg3).unwrap());
    tokio::time::sleep(TIMEOUT * 3).await;
    assert_eq!(topology.load().failovers, 0, "external mode promoted");
    assert_eq!(
        with_cluster(|c| c
            .psql(&pg2, "postgres", "SELECT pg_is_in_recovery()")
            .unwrap()),
        "t",
        "pgsplit promoted pg2 in external mode"
    );
    with_cluster(|c| c.psql(&pg2, "postgres", "SELECT pg_promote()").unwrap());
    wait_until("pg2 followed as primary", Duration::from_secs(5), || {
        topology.load().primary == Some(1)
    })
    .await;
    assert_eq!(topology.load().nodes[1].role, Role::Primary);
    assert_eq!(topology.load().failovers, 0);
    let client = connect(external.addr).await;
    assert_eq!(write_port(&client).await.unwrap(), pg2.port.to_string());
}
