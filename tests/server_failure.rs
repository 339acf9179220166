//! Server connections that die: terminated backends, restarted servers.
//! The client always gets an error instead of a hang, and its next query
//! runs on a healthy connection. (A separate binary, so restarting the
//! primary cannot disturb other tests.)

mod common;

use std::time::{Duration, Instant};

use common::{connect, first_value, primary_sql, start_proxy, try_connect, with_cluster};
use tokio_postgres::error::SqlState;

/// A proxy that sends everything to the primary, whose backends these
/// tests terminate and whose server they restart.
fn proxy() -> std::net::SocketAddr {
    static PROXY: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *PROXY.get_or_init(|| {
        start_proxy("routing: { route: primary }\nfailover: { mode: manual, client_wait: 1s }\n")
    })
}

/// Polls the primary until a backend matching `filter` shows up, returning its pid.
async fn wait_for_backend(filter: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = primary_sql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE {filter} AND pid <> pg_backend_pid() LIMIT 1"
        ));
        if !pid.is_empty() {
            return pid;
        }
        assert!(Instant::now() < deadline, "no backend matching {filter}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_in_order() {
    // One test drives the scenarios in turn: they restart the shared primary.
    server_killed_mid_query_gives_an_error_and_the_next_query_works().await;
    server_killed_mid_extended_batch_does_not_hang().await;
    server_killed_while_client_idles_in_transaction_is_reported().await;
    pools_recover_after_a_server_restart().await;
    writes_fail_cleanly_while_the_primary_is_down().await;
}

async fn server_killed_mid_query_gives_an_error_and_the_next_query_works() {
    let client = connect(proxy()).await;
    let query = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT pg_sleep(30) /* victim-simple */")
            .await;
        (client, result)
    });
    let pid = wait_for_backend("query LIKE '%victim-simple%'").await;
    primary_sql(&format!("SELECT pg_terminate_backend({pid})"));
    let (client, result) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .unwrap()
        .unwrap();
    let error = result.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{error}");
    let value = first_value(&client.simple_query("SELECT 'alive'").await.unwrap());
    assert_eq!(value.as_deref(), Some("alive"));
}

async fn server_killed_mid_extended_batch_does_not_hang() {
    let client = connect(proxy()).await;
    let query = tokio::spawn(async move {
        let result = client
            .query("SELECT pg_sleep(30), 'victim-extended'::text", &[])
            .await;
        (client, result)
    });
    let pid = wait_for_backend("query LIKE '%victim-extended%'").await;
    primary_sql(&format!("SELECT pg_terminate_backend({pid})"));
    let (client, result) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err());
    let row = client.query_one("SELECT $1::int", &[&3i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}

async fn server_killed_while_client_idles_in_transaction_is_reported() {
    let client = connect(proxy()).await;
    client
        .batch_execute("BEGIN; SELECT 'victim-idle-tx'")
        .await
        .unwrap();
    let pid = wait_for_backend("query LIKE '%victim-idle-tx%'").await;
    primary_sql(&format!("SELECT pg_terminate_backend({pid})"));
    // The transaction is gone: the client is told once, then carries on.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        match client.simple_query("SELECT 1").await {
            Err(error) => break error,
            Ok(_) => {
                // The proxy may not have noticed the closed socket yet.
                assert!(Instant::now() < deadline, "lost transaction never reported");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        matches!(error.code(), Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CONNECTION_FAILURE),
        "{error}"
    );
    assert_eq!(
        first_value(&client.simple_query("SELECT 2").await.unwrap()).as_deref(),
        Some("2")
    );
}

async fn pools_recover_after_a_server_restart() {
    let addr = proxy();
    let clients = futures_join(addr, 4).await;
    for client in &clients {
        client.simple_query("SELECT 1").await.unwrap();
    }
    with_cluster(|c| c.restart_node(c.primary())).unwrap();
    // Idle pooled connections died with the server; they are replaced.
    for client in &clients {
        let value = first_value(&client.simple_query("SELECT 'back'").await.unwrap());
        assert_eq!(value.as_deref(), Some("back"));
    }
    let fresh = connect(addr).await;
    fresh.simple_query("SELECT 1").await.unwrap();
}

async fn writes_fail_cleanly_while_the_primary_is_down() {
    let addr = proxy();
    with_cluster(|c| c.stop_node(c.primary())).unwrap();
    // A replica greets the client; its statements (all for the primary
    // here) fail at once: in manual mode no new primary comes by itself,
    // so waiting failover.client_wait (1s) would only delay the error.
    let client = try_connect(&common::app_url(addr)).await.unwrap();
    let started = Instant::now();
    let error = client.simple_query("SELECT 8").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    with_cluster(|c| c.start_node(c.primary())).unwrap();
    // Back within server_login_retry (1s) of the last failed attempt.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.simple_query("SELECT 9").await {
            Ok(rows) => {
                assert_eq!(first_value(&rows).as_deref(), Some("9"));
                break;
            }
            Err(error) => {
                assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");
                assert!(
                    Instant::now() < deadline,
                    "writes did not come back: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn futures_join(addr: std::net::SocketAddr, n: usize) -> Vec<tokio_postgres::Client> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(addr).await);
    }
    clients
}
