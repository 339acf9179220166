//! The replication monitor against real servers: a replica whose replay is
//! paused becomes `lagging` and gets no reads until it catches up, and a
//! stopped replica is `down` until it is started again.

mod common;

use std::time::{Duration, Instant};

use common::{connect, proxy_config, spawn_watched_proxy, with_cluster};
use pgsplit::config::{Consistency, LoadBalance};
use std::sync::Arc;

use pgsplit::monitor::{NodeState, SharedTopology};
use pgsplit::proxy::Shared;

/// The tests here stop and pause nodes of the binary's cluster: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INTERVAL: Duration = Duration::from_millis(200);
const MAX_LAG_BYTES: usize = 1024 * 1024;

/// A pgsplit that checks often, balances reads in turn (so a single client
/// reaches every replica) and treats 1 MiB of lag as too much.
fn watched_proxy() -> (std::net::SocketAddr, Arc<Shared>) {
    let mut config = proxy_config("");
    let monitor = config
        .monitor
        .as_mut()
        .expect("the test config has a monitor");
    monitor.interval = INTERVAL;
    config.routing.load_balance = LoadBalance::RoundRobin;
    config.routing.consistency = Consistency::Eventual;
    config.routing.max_lag_bytes = MAX_LAG_BYTES;
    let proxy = spawn_watched_proxy(config);
    (proxy.addr, proxy.shared)
}

/// The ports of the nodes that served `count` single-statement reads
/// (`SHOW port` is a read whatever pgsplit knows about functions yet).
async fn read_ports(client: &tokio_postgres::Client, count: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count {
        let messages = client
            .simple_query("SHOW port")
            .await
            .expect("a read through pgsplit");
        let port = common::first_value(&messages).and_then(|p| p.parse().ok());
        ports.push(port.expect("SHOW port returns the port"));
    }
    ports
}

/// Waits until node `index` is in `state`; returns how long that took.
async fn wait_for_state(
    topology: &SharedTopology,
    index: usize,
    state: NodeState,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let current = topology.load().nodes[index].state;
        if current == state {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "node {index} still {current:?}, not {state:?}, after {within:?}: {:?}",
            topology.load().nodes[index]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_replay_is_paused_gets_no_reads_until_it_catches_up() {
    let _serial = SERIAL.lock().await;
    let (addr, shared) = watched_proxy();
    let topology = &shared.topology;
    let (primary, paused, paused_port) = with_cluster(|c| {
        (
            c.primary().clone(),
            c.replicas()[0].clone(),
            c.replicas()[0].port,
        )
    });
    let client = connect(addr).await;
    let ports = read_ports(&client, 10).await;
    assert!(
        ports.contains(&paused_port),
        "{ports:?} {:?}",
        topology.load()
    );

    with_cluster(|c| {
        c.psql(&paused, "postgres", "SELECT pg_wal_replay_pause()")
            .unwrap();
        c.psql(
            &primary,
            "postgres",
            "CREATE TABLE IF NOT EXISTS lag_filler (id int, pad text); \
             INSERT INTO lag_filler SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
        )
        .unwrap();
    });
    // The lag passed 1 MiB when that INSERT committed.
    let took = wait_for_state(topology, 1, NodeState::Lagging, Duration::from_secs(10)).await;
    assert!(
        took <= INTERVAL * 2 + Duration::from_millis(300),
        "lagging only after {took:?}"
    );
    let lag = topology.load().nodes[1].lag_bytes.unwrap_or(0);
    assert!(lag > MAX_LAG_BYTES as u64, "lag of {lag} bytes");
    let ports = read_ports(&client, 20).await;
    assert!(
        !ports.contains(&paused_port),
        "a lagging replica served a read: {ports:?}"
    );

    with_cluster(|c| {
        c.psql(&paused, "postgres", "SELECT pg_wal_replay_resume()")
            .unwrap()
    });
    wait_for_state(topology, 1, NodeState::Up, Duration::from_secs(10)).await;
    assert!(read_ports(&client, 10).await.contains(&paused_port));
    with_cluster(|c| {
        c.psql(&primary, "postgres", "DROP TABLE lag_filler")
            .unwrap()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_down_and_comes_back_when_restarted() {
    let _serial = SERIAL.lock().await;
    let (addr, shared) = watched_proxy();
    let topology = &shared.topology;
    let (stopped, stopped_port) = with_cluster(|c| (c.replicas()[1].clone(), c.replicas()[1].port));
    let client = connect(addr).await;
    assert!(read_ports(&client, 10).await.contains(&stopped_port));

    with_cluster(|c| c.stop_node(&stopped).unwrap());
    // fail_after (3) failed checks in a row.
    wait_for_state(topology, 2, NodeState::Down, Duration::from_secs(5)).await;
    let status = topology.load().nodes[2].clone();
    assert!(status.last_error.is_some(), "{status:?}");
    let ports = read_ports(&client, 20).await;
    assert!(
        !ports.contains(&stopped_port),
        "a down replica served a read: {ports:?}"
    );

    with_cluster(|c| c.start_node(&stopped).unwrap());
    wait_for_state(topology, 2, NodeState::Up, Duration::from_secs(10)).await;
    assert!(read_ports(&client, 10).await.contains(&stopped_port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_reports_roles_positions_and_replication() {
    let _serial = SERIAL.lock().await;
    let (_addr, shared) = watched_proxy();
    let topology = &shared.topology;
    let start = Instant::now();
    while topology.load().checked_at.is_none() {
        assert!(start.elapsed() < Duration::from_secs(5), "no monitor round");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = topology.load_full();
    assert_eq!(snapshot.primary, Some(0));
    let primary = &snapshot.nodes[0];
    assert!(primary.wal_lsn.is_some_and(|lsn| lsn > 0), "{primary:?}");
    let names: Vec<&str> = primary
        .replication
        .iter()
        .map(|r| r.application_name.as_str())
        .collect();
    assert_eq!(names, ["pg2", "pg3"], "{:?}", primary.replication);
    assert!(primary
        .replication
        .iter()
        .all(|r| r.state.as_deref() == Some("streaming") && r.replay_lsn.is_some()));
    for replica in &snapshot.nodes[1..] {
        assert_eq!(replica.role, pgsplit::config::Role::Replica);
        assert!(
            replica.replay_lsn.is_some() && replica.lag_bytes.is_some(),
            "{replica:?}"
        );
    }
}
