//! Limits and timeouts, each with the SQLSTATE PostgreSQL uses:
//! `idle_client_timeout` (57P05), `idle_in_transaction_timeout` (25P03,
//! the server connection rolled back and reclaimed), per-user
//! `max_connections` (53300), `query_wait_timeout` (53300),
//! `server_connect_timeout` and `server_login_retry` (08006), and
//! `client_login_timeout` against a client that dribbles its bytes, and a
//! cancel request ending a query's wait for a pooled connection (57014).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{app_url, primary_sql, proxy_config, spawn_watched_proxy, try_connect};
use pgsplit::config::UserConfig;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Connects and keeps the connection task's outcome: the FATAL error a
/// server (or pgsplit) sends before closing ends it with that error.
async fn connect_watched(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect through pgsplit");
    (client, tokio::spawn(connection))
}

/// The SQLSTATE the connection ended with.
async fn closing_code(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> Option<SqlState> {
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection ends")
        .expect("connection task");
    ended.err().and_then(|e| e.code().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_timeout_rolls_back_and_reclaims_the_server_connection() {
    let proxy = spawn_watched_proxy(proxy_config(
        "idle_in_transaction_timeout: 300ms\nrouting: { route: primary }\n",
    ));
    let (client, connection) = connect_watched(&app_url(proxy.addr)).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS idle_tx (id int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO idle_tx VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        closing_code(connection).await,
        Some(SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT)
    );
    assert_eq!(
        primary_sql("SELECT count(*) FROM idle_tx"),
        "0",
        "rolled back"
    );
    // The connection went back to the pool instead of being closed.
    let stats: Vec<_> = proxy
        .shared
        .pools
        .all()
        .into_iter()
        .map(|(_, pool)| pool.stats())
        .collect();
    assert!(stats.iter().all(|s| s.active == 0), "{stats:?}");
    assert!(stats.iter().any(|s| s.idle >= 1), "{stats:?}");
    assert_eq!(
        primary_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'"
        ),
        "0"
    );

    // Busy clients are not idle: a transaction that keeps talking, and a
    // statement that runs longer than the limit, both go on.
    let client = common::connect(proxy.addr).await;
    client.batch_execute("BEGIN").await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.batch_execute("SELECT 1").await.unwrap();
    }
    client.batch_execute("SELECT pg_sleep(0.6)").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    // Outside a transaction this limit does not apply.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_timeout_disconnects_with_57p05() {
    let proxy = spawn_watched_proxy(proxy_config("idle_client_timeout: 400ms\n"));
    let (client, connection) = connect_watched(&app_url(proxy.addr)).await;
    client.batch_execute("SELECT 1").await.unwrap();
    let started = Instant::now();
    assert_eq!(
        closing_code(connection).await,
        Some(SqlState::IDLE_SESSION_TIMEOUT)
    );
    assert!(started.elapsed() >= Duration::from_millis(350));
    // A client that keeps working stays.
    let busy = common::connect(proxy.addr).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy.batch_execute("SELECT 1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_connection_limit_gives_53300() {
    let mut config = proxy_config("");
    let app = config
        .users
        .iter_mut()
        .find(|u| u.name == "app")
        .expect("app user");
    app.max_connections = Some(2);
    let proxy = spawn_watched_proxy(config);
    let first = common::connect(proxy.addr).await;
    let second = common::connect(proxy.addr).await;
    let error = try_connect(&app_url(proxy.addr))
        .await
        .expect_err("a third client is over the limit");
    assert_eq!(
        error.code(),
        Some(&SqlState::TOO_MANY_CONNECTIONS),
        "{error}"
    );
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some("too many connections for role \"app\"")
    );
    // Other users are not limited by app's limit.
    let other = try_connect(&common::url(proxy.addr, "postgres", "postgres", "app"))
        .await
        .expect("another user logs in");
    other.batch_execute("SELECT 1").await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match try_connect(&app_url(proxy.addr)).await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("a freed slot is usable again: {error}"),
        }
    };
    third.batch_execute("SELECT 1").await.unwrap();
    second.batch_execute("SELECT 1").await.unwrap();
}

/// A pgsplit (trust auth, user app) whose only node is a stand-in for a
/// broken server on `port`, with `extra` YAML.
fn one_node_proxy(port: u16, extra: &str) -> common::RunningProxy {
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nauth_method: trust\n{extra}\
         nodes: [{{ name: broken, host: 127.0.0.1, port: {port}, role: primary }}]\n\
         users: [{{ name: app, password: app }}]\n"
    );
    let config = pgsplit::config::Config::from_yaml(&yaml, &|_| None).unwrap();
    spawn_watched_proxy(config)
}

/// A node that accepts TCP connections and closes them at once, counting
/// them: how often pgsplit tried.
async fn closing_node() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, accepted)
}

async fn attempts_for_five_logins(login_retry: &str) -> usize {
    let (port, accepted) = closing_node().await;
    let proxy = one_node_proxy(port, &format!("server_login_retry: {login_retry}\n"));
    for _ in 0..5 {
        let error = try_connect(&app_url(proxy.addr))
            .await
            .expect_err("the node is broken");
        assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_retry_spares_a_failing_node() {
    assert_eq!(attempts_for_five_logins("0s").await, 5);
    assert_eq!(attempts_for_five_logins("10s").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_password_ends_the_login_retry_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgsplit.yaml");
    let yaml = |password: &str| {
        let config = proxy_config("server_login_retry: 1h\nauth_method: trust\n");
        let mut config = config;
        config.users.push(UserConfig {
            name: "retry_user".into(),
            password: password.into(),
            max_connections: None,
        });
        serde_json::to_string(&config).unwrap()
    };
    primary_sql(
        "DO $$ BEGIN CREATE ROLE retry_user LOGIN PASSWORD 'right'; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    primary_sql("GRANT CONNECT ON DATABASE app TO retry_user");
    std::fs::write(&path, yaml("wrong")).unwrap();
    let proxy = common::spawn_proxy_from_file(&path);
    let url = common::url(proxy.addr, "retry_user", "x", "app");
    for _ in 0..2 {
        let error = try_connect(&url).await.expect_err("wrong server password");
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{error}");
    }
    std::fs::write(&path, yaml("right")).unwrap();
    let (status, body) = common::admin_post(proxy.admin, "/api/reload", "");
    assert_eq!(status, 200, "{body}");
    let client = try_connect(&url)
        .await
        .expect("the new password is used at once");
    client.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_bounds_a_server_that_never_answers() {
    // Accepts connections (the kernel completes the handshake) and never
    // says a word, like a hung server.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let proxy = one_node_proxy(port, "server_connect_timeout: 500ms\n");
    let started = Instant::now();
    let error = try_connect(&app_url(proxy.addr))
        .await
        .expect_err("the server never answers");
    let elapsed = started.elapsed();
    assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message.as_deref().unwrap_or_default().contains("timed out"),
        "{message:?}"
    );
    assert!(
        (Duration::from_millis(450)..Duration::from_secs(3)).contains(&elapsed),
        "{elapsed:?}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_bounds_the_wait_for_a_pooled_connection() {
    let proxy = spawn_watched_proxy(proxy_config(
        "pool: { size: 1 }\nquery_wait_timeout: 300ms\nrouting: { route: primary }\n",
    ));
    // Logging in takes a server connection briefly too: both first.
    let holder = common::connect(proxy.addr).await;
    let waiter = common::connect(proxy.addr).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder.batch_execute("SELECT 1").await.unwrap();
    let started = Instant::now();
    let error = waiter
        .batch_execute("SELECT 1")
        .await
        .expect_err("the only connection is taken");
    assert_eq!(
        error.code(),
        Some(&SqlState::TOO_MANY_CONNECTIONS),
        "{error}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The session goes on; once the connection is free the query runs.
    holder.batch_execute("COMMIT").await.unwrap();
    waiter.batch_execute("SELECT 1").await.unwrap();
}

/// Polls the metrics until `sample` shows up; panics after 10 s.
async fn wait_for_metric(admin: std::net::SocketAddr, sample: &str) {
    for _ in 0..200 {
        if common::admin_get(admin, "/metrics").1.contains(sample) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics never showed {sample}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_ends_the_wait_for_a_pooled_connection() {
    let proxy = spawn_watched_proxy(proxy_config(
        "pool: { size: 1 }\nquery_wait_timeout: 60s\nrouting: { route: primary }\n",
    ));
    let holder = common::connect(proxy.addr).await;
    let waiter = Arc::new(common::connect(proxy.addr).await);
    holder.batch_execute("BEGIN").await.unwrap();
    let holder_pid = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    // Simple and extended protocol: the query waits behind the holder
    // until its cancel, which fails it the way PostgreSQL fails a
    // cancelled query, and the session goes on.
    for extended in [false, true] {
        let waiting = waiter.clone();
        let query = tokio::spawn(async move {
            if extended {
                waiting.query("SELECT 1", &[]).await.map(|_| ())
            } else {
                waiting.batch_execute("SELECT 1").await
            }
        });
        wait_for_metric(proxy.admin, "pgsplit_pool_waiting_clients{node=\"pg1\"} 1").await;
        let started = Instant::now();
        waiter.cancel_token().cancel_query(NoTls).await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(10), query)
            .await
            .expect("the cancel ends the wait")
            .unwrap()
            .expect_err("cancelled");
        assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        wait_for_metric(proxy.admin, "pgsplit_pool_waiting_clients{node=\"pg1\"} 0").await;
    }
    // The holder's transaction was not touched by the cancels.
    let still = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert_eq!(still, holder_pid);
    holder.batch_execute("COMMIT").await.unwrap();
    let one = waiter.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(one.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_startup_packet_is_dropped_at_client_login_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = spawn_watched_proxy(proxy_config("client_login_timeout: 1s\n"));
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // A startup packet announced as 10 kB, sent one byte every 50 ms: it
    // would take 8 minutes to arrive.
    let mut packet = 10_000i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&196608i32.to_be_bytes());
    packet.resize(10_000, b'x');
    let started = Instant::now();
    let mut closed_after = None;
    for byte in packet {
        if stream.write_all(&[byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still connected after 5 s"
        );
    }
    let closed_after = closed_after.expect("the connection was closed");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&closed_after),
        "{closed_after:?}"
    );
}

/// The backend process serving the client's next transaction.
async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid through pgsplit")
        .get(0)
}

/// Waits until backend `pid` has left the primary, which it does once
/// pgsplit closes its connection.
async fn wait_until_gone(pid: i32) -> bool {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    for _ in 0..50 {
        if primary_sql(&sql) == "0" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A pgsplit with `pool` settings routing everything to the primary, a
/// client of it, and the backend serving that client, checked to serve its
/// next transaction too (`reused` says why it must).
async fn primary_client_with_pool(
    pool: &str,
    reused: &str,
) -> (
    common::RunningProxy,
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    i32,
) {
    let proxy = spawn_watched_proxy(proxy_config(&format!(
        "pool: {pool}\nrouting: {{ route: primary }}\n"
    )));
    let (client, connection) = connect_watched(&app_url(proxy.addr)).await;
    let first = backend_pid(&client).await;
    assert_eq!(backend_pid(&client).await, first, "{reused}");
    (proxy, client, connection, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_connection_is_reused_until_its_idle_timeout_then_closed() {
    let (_proxy, client, _connection, first) =
        primary_client_with_pool("{ idle_timeout: 1s }", "reused within the idle timeout").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_idle = backend_pid(&client).await;
    assert_ne!(
        after_idle, first,
        "a connection idle past its timeout is not reused"
    );
    assert!(
        wait_until_gone(first).await,
        "the idle connection was closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_is_retired_after_its_max_lifetime_however_busy() {
    let (_proxy, client, _connection, first) = primary_client_with_pool(
        "{ max_lifetime: 2s, idle_timeout: 10m }",
        "reused within its lifetime",
    )
    .await;
    // Busy all along: never idle for long, so only the lifetime retires it.
    let started = Instant::now();
    let mut last = first;
    while started.elapsed() < Duration::from_millis(2500) && last == first {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = backend_pid(&client).await;
    }
    assert_ne!(last, first, "a connection past its lifetime is not reused");
    assert!(
        wait_until_gone(first).await,
        "the old connection was closed"
    );
}
