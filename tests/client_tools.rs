//! Real client programs through pgsplit: psql scripts with `\copy`,
//! LISTEN/NOTIFY with tokio-postgres, and pgbench in every query mode.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pgsplit::cluster::{APP_PASSWORD, APP_USER};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_postgres::{AsyncMessage, Notification};

/// Longest a test waits for a notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with the tool's output unless it exited with status 0.
fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// psql

fn psql(args: &[&str]) -> Output {
    let url = common::app_url(common::proxy());
    let mut all = vec!["-X", "-v", "ON_ERROR_STOP=1", "-d", url.as_str()];
    all.extend_from_slice(args);
    common::run_tool("psql", &all, APP_PASSWORD)
}

/// The CSV line PostgreSQL writes for row `id` of the test data; every
/// tenth label needs quoting.
fn csv_line(id: usize) -> String {
    if id % 10 == 0 {
        format!("{id},\"row {id}, with \"\"quotes\"\"\"")
    } else {
        format!("{id},row {id}")
    }
}

fn path_str(path: &Path) -> &str {
    let path = path.to_str().expect("UTF-8 temp path");
    assert!(!path.contains('\''), "temp path {path:?} needs no quoting");
    path
}

#[test]
fn psql_script_with_copy_and_multi_statement_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.csv");
    let out = dir.path().join("out.csv");
    let script = dir.path().join("script.sql");
    let rows: Vec<String> = (1..=1000).map(csv_line).collect();
    std::fs::write(&data, rows.join("\n") + "\n").expect("write data.csv");
    std::fs::write(
        &script,
        format!(
            "DROP TABLE IF EXISTS tools_psql;\n\
             CREATE TABLE tools_psql (id int PRIMARY KEY, label text NOT NULL);\n\
             \\copy tools_psql FROM '{data}' WITH (FORMAT csv)\n\
             \\copy (SELECT id, label FROM tools_psql ORDER BY id) TO '{out}' WITH (FORMAT csv)\n\
             SELECT count(*) AS loaded, sum(id) AS id_sum FROM tools_psql \\gset\n\
             \\echo loaded :loaded rows, id sum :id_sum\n",
            data = path_str(&data),
            out = path_str(&out),
        ),
    )
    .expect("write script.sql");

    let output = psql(&["-f", path_str(&script)]);
    assert_success("psql -f script.sql", &output);
    assert!(
        text(&output.stdout).contains("loaded 1000 rows, id sum 500500"),
        "script output: {}",
        text(&output.stdout)
    );
    assert_eq!(
        common::primary_sql("SELECT count(*) FROM tools_psql"),
        "1000"
    );
    assert_eq!(
        common::primary_sql("SELECT label FROM tools_psql WHERE id = 20"),
        "row 20, with \"quotes\""
    );
    let exported = std::fs::read_to_string(&out).expect("read out.csv");
    assert_eq!(exported.lines().count(), 1000, "lines in out.csv");
    assert_eq!(
        exported,
        rows.join("\n") + "\n",
        "out.csv round-trips data.csv"
    );

    // Several statements in one -c string: one Query message, one implicit
    // transaction; psql prints the result of the last statement.
    let output = psql(&[
        "-qAt",
        "-c",
        "INSERT INTO tools_psql VALUES (1001, 'a'); \
         INSERT INTO tools_psql VALUES (1002, 'b'); \
         SELECT count(*) FROM tools_psql",
    ]);
    assert_success("psql -c with three statements", &output);
    assert_eq!(text(&output.stdout).lines().last(), Some("1002"));
    assert_eq!(
        common::primary_sql("SELECT count(*) FROM tools_psql"),
        "1002"
    );

    // A failing statement in such a string undoes the whole string.
    let output = psql(&[
        "-qAt",
        "-c",
        "INSERT INTO tools_psql VALUES (1003, 'c'); SELECT 1 / 0",
    ]);
    assert!(!output.status.success(), "division by zero must fail psql");
    assert!(
        text(&output.stderr).contains("division by zero"),
        "stderr: {}",
        text(&output.stderr)
    );
    assert_eq!(
        common::primary_sql("SELECT count(*) FROM tools_psql WHERE id = 1003"),
        "0",
        "the implicit transaction was rolled back"
    );

    // ON_ERROR_STOP ends a script at the first error (exit status 3);
    // statements before it stay committed, later ones never run.
    let failing = dir.path().join("failing.sql");
    std::fs::write(
        &failing,
        "INSERT INTO tools_psql VALUES (2000, 'before');\n\
         SELECT no_such_column FROM tools_psql;\n\
         INSERT INTO tools_psql VALUES (2001, 'after');\n",
    )
    .expect("write failing.sql");
    let output = psql(&["-f", path_str(&failing)]);
    assert_eq!(output.status.code(), Some(3), "psql exit status");
    assert!(
        text(&output.stderr).contains("no_such_column"),
        "stderr: {}",
        text(&output.stderr)
    );
    assert_eq!(
        common::primary_sql(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM tools_psql WHERE id >= 2000"
        ),
        "2000"
    );

    // With --single-transaction the same script leaves nothing behind.
    common::primary_sql("DELETE FROM tools_psql WHERE id >= 2000");
    let output = psql(&["--single-transaction", "-f", path_str(&failing)]);
    assert_eq!(output.status.code(), Some(3), "psql exit status");
    assert_eq!(
        common::primary_sql("SELECT count(*) FROM tools_psql WHERE id >= 2000"),
        "0"
    );
    assert_eq!(
        common::primary_sql("SELECT count(*) FROM tools_psql"),
        "1002"
    );
}

// ---------------------------------------------------------------------------
// LISTEN / NOTIFY

/// A tokio-postgres client whose notifications arrive on a channel.
async fn connect_with_notifications(
    addr: SocketAddr,
) -> (tokio_postgres::Client, UnboundedReceiver<Notification>) {
    let (client, mut connection) =
        tokio_postgres::connect(&common::app_url(addr), tokio_postgres::NoTls)
            .await
            .expect("connect through pgsplit");
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    let _ = tx.send(notification);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    (client, rx)
}

async fn next_notification(rx: &mut UnboundedReceiver<Notification>) -> Notification {
    tokio::time::timeout(NOTIFY_TIMEOUT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no notification within {NOTIFY_TIMEOUT:?}"))
        .expect("connection closed while waiting for a notification")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_through_transaction_pooling() {
    let addr = common::proxy();
    let (listener, mut notifications) = connect_with_notifications(addr).await;
    listener
        .batch_execute("LISTEN tools_events")
        .await
        .expect("LISTEN");
    let listener_pid: i32 = listener
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0);

    // Other clients keep the pool busy, so an unpinned listener would
    // land on another server connection for its next transactions.
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(common::connect(addr).await);
    }
    for round in 0..5 {
        for other in &others {
            other.query_one("SELECT 1", &[]).await.expect("other query");
        }
        let pid: i32 = listener
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("backend pid")
            .get(0);
        assert_eq!(
            pid, listener_pid,
            "LISTEN pins the server connection (round {round})"
        );
    }

    let notifier = common::connect(addr).await;
    notifier
        .batch_execute("NOTIFY tools_events, 'first payload'")
        .await
        .expect("NOTIFY");
    notifier
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&"tools_events", &"second, via bind"],
        )
        .await
        .expect("pg_notify");
    notifier
        .batch_execute(
            "BEGIN; NOTIFY tools_other; NOTIFY tools_events, 'third in a transaction'; COMMIT",
        )
        .await
        .expect("NOTIFY in a transaction");

    for expected in [
        "first payload",
        "second, via bind",
        "third in a transaction",
    ] {
        let notification = next_notification(&mut notifications).await;
        assert_eq!(notification.channel(), "tools_events");
        assert_eq!(notification.payload(), expected);
        assert_ne!(
            notification.process_id(),
            listener_pid,
            "sent by another backend"
        );
    }
    // Nothing arrived for tools_other (it would have come before 'third'),
    // and nothing extra since: the next notification is the next one sent.
    notifier
        .batch_execute("NOTIFY tools_events, 'last'")
        .await
        .expect("NOTIFY");
    let notification = next_notification(&mut notifications).await;
    assert_eq!(
        (notification.channel(), notification.payload()),
        ("tools_events", "last")
    );

    // The listener still runs queries and UNLISTENs.
    listener
        .batch_execute("UNLISTEN tools_events")
        .await
        .expect("UNLISTEN");
}

/// A listener that leaves must not hand its LISTEN to the next client of
/// its server connection. With `pool.size: 1` the next client necessarily
/// gets the same server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_does_not_outlive_the_client() {
    // Everything on the primary, so the SELECT below uses the same connection.
    let addr = common::start_proxy("pool: { size: 1 }\nrouting: { route: primary }\n");
    let (first, mut first_notifications) = connect_with_notifications(addr).await;
    first
        .batch_execute("LISTEN tools_leftover")
        .await
        .expect("LISTEN");
    first
        .batch_execute("NOTIFY tools_leftover, 'hello'")
        .await
        .expect("NOTIFY");
    let notification = next_notification(&mut first_notifications).await;
    assert_eq!(notification.payload(), "hello");
    let first_pid = notification.process_id();
    drop(first);

    // The next client gets the same server connection once pgsplit has
    // reset and returned it.
    let (second, mut second_notifications) = connect_with_notifications(addr).await;
    let pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0);
    assert_eq!(pid, first_pid, "pool.size 1: same server connection");
    // Notifications arrive in commit order: if the old LISTEN were still
    // active, 'leftover' would arrive before 'sentinel'.
    second
        .batch_execute("LISTEN tools_sentinel")
        .await
        .expect("LISTEN");
    second
        .batch_execute("NOTIFY tools_leftover, 'leftover'")
        .await
        .expect("NOTIFY");
    second
        .batch_execute("NOTIFY tools_sentinel, 'sentinel'")
        .await
        .expect("NOTIFY");
    let notification = next_notification(&mut second_notifications).await;
    assert_eq!(
        (notification.channel(), notification.payload()),
        ("tools_sentinel", "sentinel"),
        "the first client's LISTEN leaked to the next client"
    );
}

// ---------------------------------------------------------------------------
// pgbench

const BENCH_DATABASE: &str = "bench";

/// pgbench runs one at a time (they share the pgbench_* tables and the
/// history counts must not interleave); the first to get here initialises.
fn bench_lock() -> MutexGuard<'static, bool> {
    static LOCK: Mutex<bool> = Mutex::new(false);
    let mut initialised = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !*initialised {
        common::primary_sql(&format!(
            "CREATE DATABASE {BENCH_DATABASE} OWNER {APP_USER}"
        ));
        let output = pgbench(&["-i", "-s", "1", "-q"]);
        assert_success("pgbench -i -s 1", &output);
        assert_eq!(bench_sql("SELECT count(*) FROM pgbench_accounts"), "100000");
        assert_eq!(bench_sql("SELECT count(*) FROM pgbench_history"), "0");
        *initialised = true;
    }
    initialised
}

/// Runs pgbench through the shared proxy against the bench database.
fn pgbench(args: &[&str]) -> Output {
    let url = common::url(common::proxy(), APP_USER, APP_PASSWORD, BENCH_DATABASE);
    let mut all = args.to_vec();
    all.push(url.as_str());
    common::run_tool("pgbench", &all, APP_PASSWORD)
}

fn bench_sql(sql: &str) -> String {
    common::primary_sql_in(BENCH_DATABASE, sql)
}

/// The value after `label` on the line of pgbench's report that starts with it.
fn report_value<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in pgbench output:\n{stdout}"))
        .trim()
}

/// Checks a pgbench report: `expected` transactions (if known), no
/// failures, and a positive tps; returns the number processed.
fn check_report(what: &str, output: &Output, expected: Option<u64>) -> u64 {
    assert_success(what, output);
    let stdout = text(&output.stdout);
    let failed = report_value(&stdout, "number of failed transactions:");
    assert!(
        failed.starts_with("0 "),
        "{what}: failed transactions: {failed}\n{stdout}\n{}",
        text(&output.stderr)
    );
    let processed = report_value(&stdout, "number of transactions actually processed:");
    let (done, planned) = processed.split_once('/').unwrap_or((processed, processed));
    let done: u64 = done.parse().expect("processed count");
    if let Some(expected) = expected {
        assert_eq!(done, expected, "{what}: processed {processed}");
        assert_eq!(planned, expected.to_string(), "{what}: planned");
    }
    assert!(done > 0, "{what}: nothing processed\n{stdout}");
    let tps = report_value(&stdout, "tps =");
    let tps: f64 = tps
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: unreadable tps {tps:?}"));
    assert!(tps > 0.0, "{what}: tps {tps}");
    done
}

fn history_rows() -> u64 {
    bench_sql("SELECT count(*) FROM pgbench_history")
        .parse()
        .expect("count")
}

/// TPC-B keeps every balance total equal to the sum of the history deltas.
fn assert_balances_consistent(what: &str) {
    let sums = bench_sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), \
                (SELECT sum(tbalance) FROM pgbench_tellers), \
                (SELECT sum(bbalance) FROM pgbench_branches), \
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
    );
    let sums: Vec<&str> = sums.split('|').collect();
    assert_eq!(sums.len(), 4, "{what}: {sums:?}");
    assert!(
        sums.iter().all(|s| *s == sums[3]),
        "{what}: accounts, tellers, branches, history sums differ: {sums:?}"
    );
}

#[test]
fn pgbench_tpcb_in_every_query_mode() {
    let _lock = bench_lock();
    for mode in ["simple", "extended", "prepared"] {
        let what = format!("pgbench -M {mode} -c 8 -j 2 -t 50");
        let before = history_rows();
        let output = pgbench(&["-M", mode, "-c", "8", "-j", "2", "-t", "50", "-n"]);
        check_report(&what, &output, Some(400));
        assert_eq!(
            history_rows() - before,
            400,
            "{what}: rows added to history"
        );
        assert_balances_consistent(&what);
    }

    let what = "pgbench -S -M prepared -c 8 -j 2 -T 2";
    let output = pgbench(&[
        "-S", "-M", "prepared", "-c", "8", "-j", "2", "-T", "2", "-n",
    ]);
    check_report(what, &output, None);
}

#[test]
fn pgbench_with_a_new_connection_per_transaction() {
    let _lock = bench_lock();
    for mode in ["simple", "prepared"] {
        let what = format!("pgbench -C -S -M {mode} -c 8 -j 2 -t 20");
        let output = pgbench(&[
            "-C", "-S", "-M", mode, "-c", "8", "-j", "2", "-t", "20", "-n",
        ]);
        check_report(&what, &output, Some(160));
    }
    // Writes with reconnects: every transaction is committed exactly once.
    let before = history_rows();
    let what = "pgbench -C -M extended -c 8 -j 2 -t 10";
    let output = pgbench(&[
        "-C", "-M", "extended", "-c", "8", "-j", "2", "-t", "10", "-n",
    ]);
    check_report(what, &output, Some(80));
    assert_eq!(history_rows() - before, 80, "{what}: rows added to history");
    assert_balances_consistent(what);
}
