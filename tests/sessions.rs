//! Sessions through pgsplit with a real driver (tokio-postgres): both query
//! protocols, transactions, errors, prepared statements and session state
//! under transaction pooling.

mod common;

use common::{app_url, connect, first_value, primary_sql, proxy, start_proxy, try_connect};
use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_in_text_and_binary() {
    let client = connect(proxy()).await;
    let rows = client
        .simple_query("SELECT 1 + 1; SELECT 'x' || 'y'")
        .await
        .unwrap();
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec!["2", "xy"]);

    // tokio-postgres uses the extended protocol with binary results.
    let row = client
        .query_one(
            "SELECT $1::int8 * 2, $2::text, $3::float8, now() IS NOT NULL",
            &[&21i64, &"héllo", &1.5f64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "héllo");
    assert_eq!(row.get::<_, f64>(2), 1.5);
    assert!(row.get::<_, bool>(3));

    let many = client
        .query("SELECT g FROM generate_series(1, 5000) g", &[])
        .await
        .unwrap();
    assert_eq!(many.len(), 5000);
    assert_eq!(many[4999].get::<_, i32>(0), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_roll_back() {
    let mut client = connect(proxy()).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS tx_test (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    client.batch_execute("TRUNCATE tx_test").await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO tx_test VALUES (1, 'kept')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO tx_test VALUES (2, 'dropped')", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        primary_sql("SELECT string_agg(v, ',' ORDER BY id) FROM tx_test"),
        "kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_relayed_with_their_fields_and_the_session_recovers() {
    let client = connect(proxy()).await;
    let error = client.simple_query("SELEC 1").await.unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::SYNTAX_ERROR);
    assert!(db.position().is_some(), "error position is relayed");

    let error = client
        .query("SELECT 1 / $1::int", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO));

    client.batch_execute("BEGIN").await.unwrap();
    let error = client
        .batch_execute("SELECT no_such_column FROM pg_class")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNDEFINED_COLUMN));
    let error = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_forwarded() {
    let (client, mut connection) =
        tokio_postgres::connect(&app_url(proxy()), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notice(notice)) = message {
                let _ = tx.send(notice.message().to_owned());
            }
        }
    });
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    let notice = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(notice.as_deref(), Some("hello from plpgsql"));
}

/// Many clients, few server connections: each client's prepared statements
/// keep working on whichever connection serves its next transaction, and
/// two clients' identically named statements (tokio-postgres names them
/// s0, s1, ...) never collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_transaction_pooling() {
    let addr = start_proxy("pool: { size: 2 }\n");
    let mut tasks = Vec::new();
    for client_id in 0..8i64 {
        tasks.push(tokio::spawn(async move {
            let client = connect(addr).await;
            // Same name (s0) on every client, different text per client.
            let text = format!("SELECT $1::int8 + {client_id}");
            let statement = client.prepare(&text).await.unwrap();
            let shared = client.prepare("SELECT $1::int8 * 10").await.unwrap();
            for i in 0..30i64 {
                let row = client.query_one(&statement, &[&i]).await.unwrap();
                assert_eq!(row.get::<_, i64>(0), i + client_id);
                let row = client.query_one(&shared, &[&i]).await.unwrap();
                assert_eq!(row.get::<_, i64>(0), i * 10);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_and_deallocating_statements_behaves_like_postgres() {
    let client = connect(proxy()).await;
    let statement = client.prepare("SELECT 42").await.unwrap();
    assert_eq!(
        client
            .query_one(&statement, &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    // tokio-postgres numbers statements process-wide (pgsplit's own
    // monitor uses it too) and shows the name only in `Debug`.
    let debug = format!("{statement:?}");
    let name = debug
        .split("name: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the statement's name");
    let deallocate = format!("DEALLOCATE {name}");
    client.batch_execute(&deallocate).await.unwrap();
    let error = client.query_one(&statement, &[]).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
    let error = client.batch_execute(&deallocate).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));

    // Dropping a Statement sends Close; re-preparing the same text works.
    let again = client.prepare("SELECT 43").await.unwrap();
    drop(again);
    let third = client.prepare("SELECT 43").await.unwrap();
    assert_eq!(
        client
            .query_one(&third, &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        43
    );
}

/// `SET` follows the client to whichever server connection serves it, and
/// never leaks to another client sharing the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_and_do_not_leak() {
    let addr = start_proxy("pool: { size: 1 }\n");
    let a = connect(addr).await;
    let b = connect(addr).await;
    a.batch_execute("SET search_path TO pg_catalog, public; SET statement_timeout = '7s'")
        .await
        .unwrap();
    a.batch_execute("SET application_name = 'client_a'")
        .await
        .unwrap();
    // Executed through the extended protocol as well.
    a.execute("SET work_mem = '3MB'", &[]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(show(&b, "statement_timeout").await, "0");
        assert_eq!(show(&b, "application_name").await, "");
        assert_eq!(show(&b, "work_mem").await, "4MB");
        assert_eq!(show(&a, "statement_timeout").await, "7s");
        assert_eq!(show(&a, "search_path").await, "pg_catalog, public");
        assert_eq!(show(&a, "application_name").await, "client_a");
        assert_eq!(show(&a, "work_mem").await, "3MB");
    }
    // SET LOCAL and SETs in rolled-back transactions do not persist; RESET does.
    a.batch_execute("BEGIN; SET LOCAL statement_timeout = '1s'; COMMIT")
        .await
        .unwrap();
    a.batch_execute("BEGIN; SET work_mem = '9MB'; ROLLBACK")
        .await
        .unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    assert_eq!(show(&a, "statement_timeout").await, "7s");
    assert_eq!(show(&a, "work_mem").await, "3MB");
    a.batch_execute("RESET statement_timeout").await.unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    assert_eq!(show(&a, "statement_timeout").await, "0");
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    let rows = client
        .simple_query(&format!("SHOW {setting}"))
        .await
        .unwrap();
    first_value(&rows).unwrap()
}

/// Temporary tables cannot move between server connections, so creating
/// one pins the client to its connection for the rest of the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_pin_the_client() {
    let addr = start_proxy("pool: { size: 2 }\n");
    let a = connect(addr).await;
    let b = connect(addr).await;
    a.batch_execute("CREATE TEMP TABLE scratch (v int); INSERT INTO scratch VALUES (1), (2)")
        .await
        .unwrap();
    for _ in 0..5 {
        b.simple_query("SELECT 1").await.unwrap();
        let count = first_value(
            &a.simple_query("SELECT count(*) FROM scratch")
                .await
                .unwrap(),
        );
        assert_eq!(count.as_deref(), Some("2"));
    }
    drop(a);
    // The pinned connection is cleaned (DISCARD ALL) before reuse: no client sees the table.
    for _ in 0..4 {
        let c = connect(addr).await;
        let error = c
            .simple_query("SELECT count(*) FROM scratch")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::UNDEFINED_TABLE));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_the_running_query() {
    assert_cancel_reaches_the_running_query(proxy(), 20).await;
}

/// Runs `SELECT pg_sleep(seconds)` on the primary through `addr` and
/// cancels it once it runs, so the request is the one forwarded to the
/// server (a cancel during the wait for a server connection is
/// tests/limits.rs's). `seconds` tells concurrent tests' queries apart.
async fn assert_cancel_reaches_the_running_query(addr: std::net::SocketAddr, seconds: u32) {
    let client = try_connect(&app_url(addr)).await.unwrap();
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        let running = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE '%pg_sleep({seconds})' AND state = 'active' \
             AND pid <> pg_backend_pid()"
        );
        for _ in 0..200 {
            let running = running.clone();
            let count = tokio::task::spawn_blocking(move || primary_sql(&running))
                .await
                .unwrap();
            if count.trim() == "1" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let error = client
        .simple_query(&format!("/* pgsplit:primary */ SELECT pg_sleep({seconds})"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    canceller.await.unwrap().unwrap();
    assert_eq!(
        first_value(&client.simple_query("SELECT 5").await.unwrap()).as_deref(),
        Some("5")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_unix_socket_serves_writes_and_cancels() {
    let socket = common::primary_socket();
    let directory = socket.parent().expect("socket directory");
    let mut config = common::proxy_config("");
    let primary = config.primary_index();
    config.nodes[primary].host = directory.display().to_string();
    let addr = common::spawn_proxy(config);

    let client = try_connect(&app_url(addr)).await.unwrap();
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS unix_socket_t(x int)")
        .await
        .unwrap();
    // In a writing transaction, so it runs on the primary: there the
    // server sees no TCP peer.
    let transaction = client
        .simple_query(
            "BEGIN; INSERT INTO unix_socket_t VALUES (1); \
             SELECT inet_server_addr() IS NULL; COMMIT",
        )
        .await
        .unwrap();
    assert_eq!(first_value(&transaction).as_deref(), Some("t"));
    // The replicas, still over TCP, see the write.
    let mut seen = None;
    for _ in 0..100 {
        let rows = client
            .simple_query("SELECT count(*) FROM unix_socket_t")
            .await
            .unwrap();
        seen = first_value(&rows);
        if seen.as_deref() != Some("0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_ne!(seen.as_deref(), Some("0"));
    // A cancel request goes to the server over the socket too.
    assert_cancel_reaches_the_running_query(addr, 19).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_connection() {
    let addr = start_proxy("pool: { mode: session, size: 4 }\n");
    let client = connect(addr).await;
    let pid = first_value(
        &client
            .simple_query("SELECT pg_backend_pid()")
            .await
            .unwrap(),
    );
    client
        .batch_execute("PREPARE q AS SELECT 11")
        .await
        .unwrap();
    for _ in 0..3 {
        let other = connect(addr).await;
        other.simple_query("SELECT 1").await.unwrap();
        assert_eq!(
            first_value(
                &client
                    .simple_query("SELECT pg_backend_pid()")
                    .await
                    .unwrap()
            ),
            pid
        );
    }
    assert_eq!(
        first_value(&client.simple_query("EXECUTE q").await.unwrap()).as_deref(),
        Some("11")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_authentication_on_both_sides() {
    // The app_md5 role is stored as md5 on the server: pgsplit logs in with md5.
    let addr = start_proxy("auth_method: md5\n");
    let client = try_connect(&common::url(addr, "app_md5", "app_md5", "app"))
        .await
        .unwrap();
    assert_eq!(
        first_value(&client.simple_query("SELECT current_user").await.unwrap()).as_deref(),
        Some("app_md5")
    );
    let error = try_connect(&common::url(addr, "app", "wrong", "app"))
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD));
}

/// Many clients writing concurrently through a small pool: every
/// acknowledged write is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_a_small_pool_without_losing_writes() {
    let addr = start_proxy("pool: { size: 3 }\n");
    connect(addr)
        .await
        .batch_execute("CREATE TABLE IF NOT EXISTS concurrent_writes (client int, n int)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for client_id in 0..20i32 {
        tasks.push(tokio::spawn(async move {
            let mut client = connect(addr).await;
            for n in 0..25i32 {
                let tx = client.transaction().await.unwrap();
                tx.execute(
                    "INSERT INTO concurrent_writes VALUES ($1, $2)",
                    &[&client_id, &n],
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(primary_sql("SELECT count(*) FROM concurrent_writes"), "500");
    assert_eq!(
        primary_sql("SELECT count(DISTINCT (client, n)) FROM concurrent_writes"),
        "500"
    );
}

/// Server connections keep at most `pool.max_prepared_statements` pooled
/// statements: the least recently used are closed, and re-prepared when a
/// client needs them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_per_server_connection_are_bounded() {
    let addr =
        start_proxy("pool: { size: 1, max_prepared_statements: 4 }\nrouting: { route: primary }\n");
    let client = connect(addr).await;
    let mut statements = Vec::new();
    for i in 0..12i64 {
        statements.push(
            client
                .prepare(&format!("SELECT $1::int8 + {i}"))
                .await
                .unwrap(),
        );
    }
    for round in 0..3i64 {
        for (i, statement) in statements.iter().enumerate() {
            let row = client.query_one(statement, &[&round]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), round + i as i64);
        }
    }
    // Through the single server connection: only a few pooled statements live.
    let rows = client
        .simple_query("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgsplit_%'")
        .await
        .unwrap();
    let live: i64 = first_value(&rows).unwrap().parse().unwrap();
    assert!(
        live <= 4,
        "{live} pooled statements on one connection, limit 4"
    );
}
