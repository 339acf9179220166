//! pgsplit follows the roles the servers report: a replica promoted by hand
//! while the primary still runs means split brain (writes refused, reads
//! served); once the old primary is gone, writes go to the promoted node,
//! all without restarting pgsplit.

mod common;

use std::time::{Duration, Instant};

use common::{connect, proxy_config, spawn_watched_proxy, with_cluster};
use pgsplit::config::Role;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The port of the node a write went to, or the error.
async fn write_port(client: &Client) -> Result<u16, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO roles_log VALUES (DEFAULT) RETURNING current_setting('port')::int",
            &[],
        )
        .await?;
    Ok(row.get::<_, i32>(0) as u16)
}

/// Retries `check` every 50 ms until it returns `Some`, for up to `within`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_replica_promoted_by_hand() {
    let (old_primary, promoted) = with_cluster(|c| {
        c.psql(
            c.primary(),
            pgsplit::cluster::APP_DATABASE,
            "CREATE TABLE roles_log (id serial PRIMARY KEY); GRANT ALL ON roles_log, roles_log_id_seq TO app",
        )
        .unwrap();
        c.wait_for_replicas().unwrap();
        (c.primary().clone(), c.replicas()[1].clone())
    });
    let mut config = proxy_config("");
    config.monitor.as_mut().unwrap().interval = Duration::from_millis(100);
    let proxy = spawn_watched_proxy(config);
    let (addr, shared) = (proxy.addr, proxy.shared);
    let topology = &shared.topology;
    let client = connect(addr).await;
    assert_eq!(write_port(&client).await.unwrap(), old_primary.port);

    // Two primaries: writes are refused with a clear error, reads go on.
    with_cluster(|c| {
        c.psql(&promoted, "postgres", "SELECT pg_promote()")
            .unwrap()
    });
    let error = eventually(Duration::from_secs(10), "split brain detection", || async {
        write_port(&client).await.err()
    })
    .await;
    assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("split brain") && message.contains("pg1") && message.contains("pg3"),
        "{message}"
    );
    assert!(topology.load().split_brain());
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty(), "reads still work during split brain");

    // The old primary goes away: the promoted replica takes the writes.
    with_cluster(|c| c.stop_node(&old_primary).unwrap());
    let port = eventually(
        Duration::from_secs(10),
        "writes on the promoted node",
        || async { write_port(&client).await.ok() },
    )
    .await;
    assert_eq!(port, promoted.port);
    let snapshot = topology.load_full();
    assert_eq!(snapshot.primary, Some(2));
    assert_eq!(snapshot.nodes[2].role, Role::Primary);
    assert_eq!(snapshot.nodes[1].role, Role::Replica);
    assert!(!snapshot.split_brain());
}
