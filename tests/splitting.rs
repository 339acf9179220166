//! Read/write splitting against a real primary and two streaming replicas:
//! reads spread over the replicas, writes never reach one, and hints, rules,
//! read-only transactions and stickiness route where they say.

mod common;

use std::time::{Duration, Instant};

use common::{connect, first_value, primary_sql, run_tool, start_proxy, with_cluster};
use futures_sink::Sink;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Whether the statement ran on a replica (`pg_is_in_recovery()`).
async fn on_replica(client: &Client, prefix: &str) -> bool {
    let rows = client
        .simple_query(&format!("{prefix}SELECT pg_is_in_recovery()"))
        .await
        .unwrap();
    first_value(&rows).as_deref() == Some("t")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    // Reads right after a write wait for a replica to replay it rather
    // than fall back to the primary (the default `ryw_wait` is 0), so the
    // routing asserted here does not race replication.
    let addr = start_proxy("routing: { sticky_after_write: 0s, ryw_wait: 2s }\n");
    let client = connect(addr).await;
    for _ in 0..5 {
        assert!(on_replica(&client, "").await);
    }
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS split_rw (v int)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO split_rw VALUES (1)")
        .await
        .unwrap();
    // Explicit transactions go to the primary unless declared read-only.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(!on_replica(&client, "").await);
    client.batch_execute("COMMIT").await.unwrap();
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(on_replica(&client, "").await);
    client.batch_execute("COMMIT").await.unwrap();
    // SET TRANSACTION READ ONLY as the first statement after BEGIN.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET TRANSACTION READ ONLY")
        .await
        .unwrap();
    assert!(on_replica(&client, "").await);
    let error = client
        .batch_execute("CREATE TABLE split_never (v int)")
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "the client declared it read-only"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    // A plain BEGIN followed by a write stays on the primary and commits.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO split_rw VALUES (2)")
        .await
        .unwrap();
    assert!(!on_replica(&client, "").await);
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        primary_sql("SELECT count(*) FROM split_rw WHERE v = 2"),
        "1"
    );
    // The extended protocol is routed the same way.
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_look_like_reads_never_reach_a_replica() {
    let addr = start_proxy("routing: { sticky_after_write: 0s }\n");
    let client = connect(addr).await;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS split_w (id serial PRIMARY KEY, v int);
             CREATE SEQUENCE IF NOT EXISTS split_seq;
             INSERT INTO split_w (v) SELECT g FROM generate_series(1, 10) g",
        )
        .await
        .unwrap();
    let statements = [
        "SELECT nextval('split_seq')",
        "SELECT setval('split_seq', 100)",
        "SELECT * FROM split_w WHERE id = 1 FOR UPDATE",
        "SELECT * FROM split_w WHERE id = 1 FOR NO KEY UPDATE",
        "SELECT * FROM split_w WHERE id = 1 FOR SHARE",
        "SELECT * FROM split_w WHERE id = 1 FOR KEY SHARE",
        "WITH moved AS (UPDATE split_w SET v = v + 1 WHERE id = 2 RETURNING *) SELECT * FROM moved",
        "WITH gone AS (DELETE FROM split_w WHERE id = 3 RETURNING *) SELECT count(*) FROM gone",
        "SELECT * INTO TEMP split_copy FROM split_w",
        "SELECT pg_advisory_xact_lock(42)",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "EXPLAIN ANALYZE INSERT INTO split_w (v) VALUES (0)",
        "/* leading comment */ INSERT INTO split_w (v) VALUES (1)",
        "SELECT * FROM (SELECT id FROM split_w WHERE id = 4 FOR UPDATE) s",
        "DO $$ BEGIN PERFORM 1; END $$",
        "BEGIN; LOCK TABLE split_w IN ACCESS SHARE MODE; COMMIT",
        "VACUUM split_w",
        "ANALYZE split_w",
        "TRUNCATE split_copy",
        "MERGE INTO split_w w USING (VALUES (1)) v(id) ON w.id = v.id WHEN MATCHED THEN UPDATE SET v = 0",
        "CREATE TABLE IF NOT EXISTS split_ctas AS SELECT * FROM split_w",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS split_mv AS SELECT count(*) FROM split_w",
        "REFRESH MATERIALIZED VIEW split_mv",
        "REINDEX TABLE split_w",
        "CLUSTER split_w USING split_w_pkey",
        "CREATE OR REPLACE PROCEDURE split_proc() LANGUAGE sql AS $$ INSERT INTO split_w (v) VALUES (5) $$",
        "CALL split_proc()",
        "COMMENT ON TABLE split_w IS 'routed'",
        "GRANT SELECT ON split_w TO PUBLIC",
        "NOTIFY split_channel",
        "SELECT pg_notify('split_channel', 'payload')",
        "EXPLAIN (ANALYZE, COSTS OFF) DELETE FROM split_w WHERE id = -1",
        "SELECT 1; UPDATE split_w SET v = v WHERE id = 5",
    ];
    for sql in statements {
        if let Err(error) = client.batch_execute(sql).await {
            assert_ne!(
                error.code(),
                Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
                "{sql}: {error}"
            );
            panic!("{sql}: {error}");
        }
    }
    // COPY FROM STDIN.
    let sink = client.copy_in("COPY split_w (v) FROM STDIN").await.unwrap();
    futures_sink_send(sink, b"11\n12\n").await;
    // The same through the extended protocol with parameters.
    let row = client
        .query_one("SELECT nextval($1::text::regclass)", &[&"split_seq"])
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_of_a_function_that_writes_goes_to_the_primary() {
    let addr = start_proxy("routing: { sticky_after_write: 0s }\n");
    let setup = connect(addr).await;
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS split_audit (note text);
             CREATE OR REPLACE FUNCTION split_record(note text) RETURNS int LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO split_audit VALUES (note); RETURN 1; END $$;
             CREATE OR REPLACE FUNCTION split_double(x int) RETURNS int LANGUAGE sql IMMUTABLE AS
             $$ SELECT x * 2 $$",
        )
        .await
        .unwrap();
    with_cluster(|c| c.wait_for_replicas()).unwrap();
    let client = connect(addr).await;
    for i in 0..3 {
        let rows = client
            .simple_query(&format!("SELECT split_record('call {i}')"))
            .await
            .unwrap();
        assert_eq!(first_value(&rows).as_deref(), Some("1"));
    }
    assert_eq!(
        primary_sql("SELECT count(*) FROM split_audit WHERE note LIKE 'call %'"),
        "3"
    );
    // An immutable function is known read-only once pgsplit has read pg_proc.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = client
            .simple_query("SELECT split_double(21), pg_is_in_recovery()")
            .await
            .unwrap();
        let on_replica = rows
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(1) == Some("t")));
        if on_replica {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "immutable function never routed to a replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_session_route_and_read_only_sessions() {
    let addr = start_proxy("routing: { sticky_after_write: 0s }\n");
    let client = connect(addr).await;
    assert!(!on_replica(&client, "/* pgsplit:primary */ ").await);
    assert!(on_replica(&client, "/* pgsplit:replica */ ").await);

    client
        .batch_execute("SET pgsplit.route = primary")
        .await
        .unwrap();
    assert!(!on_replica(&client, "").await);
    client
        .batch_execute("SET pgsplit.route TO 'replica'")
        .await
        .unwrap();
    assert!(on_replica(&client, "").await);
    let error = client
        .batch_execute("SET pgsplit.route = sideways")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    client.batch_execute("RESET pgsplit.route").await.unwrap();
    assert!(on_replica(&client, "").await);

    // The route can be picked at login: PGOPTIONS="-c pgsplit.route=primary".
    let url = format!(
        "{}&options=-c%20pgsplit.route%3Dprimary",
        common::app_url(addr)
    );
    let pinned = common::try_connect(&url).await.unwrap();
    assert!(!on_replica(&pinned, "").await);

    // With default_transaction_read_only, BEGIN may use a replica.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    assert!(on_replica(&client, "").await);
    client.batch_execute("COMMIT").await.unwrap();

    // A write right after a setting pgsplit answered itself goes to the primary.
    let writer = connect(addr).await;
    writer
        .batch_execute("SET pgsplit.route = auto")
        .await
        .unwrap();
    writer
        .batch_execute("CREATE TABLE after_route_setting (x int); DROP TABLE after_route_setting")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stick_to_the_primary_right_after_a_write() {
    let addr = start_proxy("routing: { consistency: sticky, sticky_after_write: 1500ms }\n");
    let client = connect(addr).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS split_sticky (v int)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO split_sticky VALUES (7)")
        .await
        .unwrap();
    assert!(
        !on_replica(&client, "").await,
        "read right after a write must see it"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(on_replica(&client, "").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_send_an_application_to_tagged_replicas() {
    let tagged_port = with_cluster(|c| c.replicas()[1].port);
    let yaml = with_cluster(|c| pgsplit::demo::config_yaml(c, "127.0.0.1:0", ""));
    // Tag the second replica through a rule-bearing config of our own.
    let yaml = yaml.replace(
        &format!("port: {tagged_port}, role: replica }}"),
        &format!("port: {tagged_port}, role: replica, tags: [analytics] }}"),
    ) + "routing:\n  rules:\n    - { application_name: reports, route: replica, tag: analytics }\n";
    let config = pgsplit::config::Config::from_yaml(&yaml, &|_| None).unwrap();
    let addr = common::spawn_proxy(config);
    let url = format!("{}&application_name=reports", common::app_url(addr));
    let client = common::try_connect(&url).await.unwrap();
    for _ in 0..6 {
        let rows = client
            .simple_query("SELECT inet_server_port()")
            .await
            .unwrap();
        assert_eq!(first_value(&rows), Some(tagged_port.to_string()));
    }
}

/// After `pgbench -S` through pgsplit, the replicas served most reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_reads_are_spread_over_the_replicas() {
    let addr = start_proxy("");
    let url = common::app_url(addr);
    let init = run_tool("pgbench", &["-i", "-q", "-s", "1", "-n", &url], "app");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    with_cluster(|c| c.wait_for_replicas()).unwrap();
    let commits = || {
        with_cluster(|c| {
            c.nodes()
                .map(|node| {
                    c.psql(
                        node,
                        "app",
                        "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'",
                    )
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
                })
                .collect::<Vec<i64>>()
        })
    };
    let before = commits();
    let transactions = 4000;
    let out = run_tool(
        "pgbench",
        &["-S", "-n", "-c", "8", "-j", "2", "-t", "500", &url],
        "app",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{stdout}"
    );
    // Statistics reach pg_stat_database a moment after the transactions.
    let deadline = Instant::now() + Duration::from_secs(20);
    let served = loop {
        let after = commits();
        let served: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        if served.iter().sum::<i64>() >= transactions || Instant::now() > deadline {
            break served;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let replicas: i64 = served[1..].iter().sum();
    assert!(
        replicas * 100 >= transactions * 60,
        "replicas served {replicas} of {transactions} read transactions (per node: {served:?})"
    );
}

/// Sends `data` through a COPY FROM STDIN sink and finishes it.
async fn futures_sink_send(sink: tokio_postgres::CopyInSink<bytes::Bytes>, data: &'static [u8]) {
    let mut sink = std::pin::pin!(sink);
    std::future::poll_fn(|cx| sink.as_mut().poll_ready(cx))
        .await
        .unwrap();
    sink.as_mut()
        .start_send(bytes::Bytes::from_static(data))
        .unwrap();
    let rows = sink.as_mut().finish().await.unwrap();
    assert_eq!(rows, 2);
}
