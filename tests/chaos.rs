//! Chaos under pgbench load: a replica killed mid-query, the primary
//! restarted in `failover.mode: manual`, and a storm of `SIGHUP` reloads.
//! Meanwhile a probe client checks what clients see: errors with a
//! connection-class SQLSTATE, never a hang, and service coming back.
//! (Own binary: it stops nodes. The tests take turns.)

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{app_url, proxy_config, spawn_proxy, with_cluster};
use pgsplit::cluster::APP_PASSWORD;

/// A config with `extra` YAML and a quick monitor, so node failures are
/// noticed within a second.
fn quick_config(extra: &str) -> pgsplit::config::Config {
    let mut config = proxy_config(extra);
    if let Some(monitor) = config.monitor.as_mut() {
        monitor.interval = Duration::from_millis(200);
        monitor.fail_after = 2;
        monitor.recover_after = 1;
    }
    config
}

/// The tests stop nodes of the one cluster: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longer than any single statement may take here: past it is a hang.
const HANG: Duration = Duration::from_secs(8);

fn pgbench_url(addr: SocketAddr) -> String {
    format!("postgresql://app@{addr}/app?sslmode=disable")
}

/// Creates the pgbench tables once (through pgsplit, like any client).
fn pgbench_tables(addr: SocketAddr) {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let out = common::run_tool(
            "pgbench",
            &["-i", "-s", "1", "-q", &pgbench_url(addr)],
            APP_PASSWORD,
        );
        assert!(
            out.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// pgbench in the background through `addr`.
fn start_pgbench(addr: SocketAddr, args: &[&str]) -> Child {
    let bin = with_cluster(|c| c.bin("pgbench"));
    Command::new(bin)
        .args(args)
        .arg(pgbench_url(addr))
        .env("PGPASSWORD", APP_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgbench")
}

/// Waits for pgbench to end (it must: a hang fails the test) and returns
/// how many transactions it completed, and whether no client aborted.
fn finish_pgbench(mut child: Child, within: Duration) -> (u64, bool) {
    let deadline = Instant::now() + within;
    while child.try_wait().expect("pgbench status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pgbench hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("pgbench output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no transaction count in pgbench output:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (count, out.status.success())
}

/// What the probe client saw.
#[derive(Debug, Default)]
struct Probe {
    ok: usize,
    /// SQLSTATEs of the failures (`None`: the connection was gone).
    errors: Vec<Option<String>>,
    /// Successes after the last error.
    ok_since_last_error: usize,
    slowest_failure: Duration,
}

/// Runs `sql` through `addr` over and over for `duration`, reconnecting
/// after errors; panics if any attempt hangs.
async fn probe(addr: SocketAddr, sql: &str, duration: Duration) -> Probe {
    let mut report = Probe::default();
    let deadline = Instant::now() + duration;
    let mut client = None;
    while Instant::now() < deadline {
        let started = Instant::now();
        let attempt = async {
            if client.is_none() {
                client = Some(common::try_connect(&app_url(addr)).await?);
            }
            match &client {
                Some(c) => c.simple_query(sql).await.map(drop),
                None => Ok(()),
            }
        };
        match tokio::time::timeout(HANG, attempt).await {
            Err(_) => panic!("a statement hung for {HANG:?}: {sql}"),
            Ok(Ok(())) => {
                report.ok += 1;
                report.ok_since_last_error += 1;
            }
            Ok(Err(error)) => {
                report
                    .errors
                    .push(error.code().map(|c| c.code().to_owned()));
                report.ok_since_last_error = 0;
                report.slowest_failure = report.slowest_failure.max(started.elapsed());
                client = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report
}

/// Connection-class errors: what a client may see when a server dies.
fn is_connection_error(code: &Option<String>) -> bool {
    match code {
        None => true,
        Some(code) => code.starts_with("08") || code.starts_with("57P"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_costs_no_hang_and_the_pool_recovers() {
    let _turn = SERIAL.lock().await;
    let addr = spawn_proxy(quick_config("routing: { load_balance: round_robin }\n"));
    pgbench_tables(addr);
    let bench = start_pgbench(addr, &["-S", "-c", "8", "-j", "2", "-T", "6"]);
    let probing = tokio::spawn(probe(
        addr,
        "SELECT count(*) FROM pgbench_branches",
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (killed_port, killed_at) = with_cluster(|c| {
        let replica = &c.replicas()[0];
        c.kill_node(replica).unwrap();
        (replica.port, Instant::now())
    });
    let report = probing.await.unwrap();
    let (transactions, _) = finish_pgbench(bench, Duration::from_secs(30));
    assert!(transactions > 0, "pgbench made no progress");
    assert!(report.errors.iter().all(is_connection_error), "{report:?}");
    assert!(
        report.ok_since_last_error >= 20,
        "reads recovered: {report:?}"
    );
    eprintln!(
        "replica killed {:?} before the probe ended: {report:?}, pgbench {transactions} transactions",
        killed_at.elapsed()
    );

    // Back up: the monitor readmits it and reads reach it again.
    with_cluster(|c| c.start_node(&c.replicas()[0])).unwrap();
    let client = common::connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let port = common::first_value(
            &client
                .simple_query("SELECT inet_server_port()")
                .await
                .expect("reads work"),
        );
        if port == Some(killed_port.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica got no reads"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restart_in_manual_mode_fails_writes_fast_then_heals() {
    let _turn = SERIAL.lock().await;
    let addr = spawn_proxy(quick_config("failover: { mode: manual }\n"));
    pgbench_tables(addr);
    let bench = start_pgbench(addr, &["-c", "4", "-j", "2", "-T", "6"]);
    let write = "UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1";
    let writes = tokio::spawn(probe(addr, write, Duration::from_secs(6)));
    let reads = tokio::spawn(probe(
        addr,
        "SELECT count(*) FROM pgbench_branches",
        Duration::from_secs(6),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    with_cluster(|c| c.kill_node(c.primary())).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    with_cluster(|c| c.start_node(c.primary())).unwrap();
    let writes = writes.await.unwrap();
    let reads = reads.await.unwrap();
    let (transactions, _) = finish_pgbench(bench, Duration::from_secs(30));
    eprintln!("writes {writes:?}\nreads {reads:?}\npgbench {transactions} transactions");
    assert!(!writes.errors.is_empty(), "the outage was seen: {writes:?}");
    assert!(writes.errors.iter().all(is_connection_error), "{writes:?}");
    assert!(
        writes.slowest_failure < Duration::from_secs(3),
        "writes fail fast while the primary is down: {writes:?}"
    );
    assert!(
        writes.ok_since_last_error >= 10,
        "writes work again: {writes:?}"
    );
    // Reads had replicas all along.
    assert!(reads.ok > writes.ok, "reads: {reads:?} writes: {writes:?}");
    assert!(reads.ok_since_last_error >= 10, "{reads:?}");
    // Nothing was promoted: the old primary is the primary again.
    let client = common::connect(addr).await;
    let recovery = common::first_value(
        &client
            .simple_query(
                "SELECT pg_is_in_recovery()::text FROM pgbench_branches LIMIT 1 FOR UPDATE",
            )
            .await
            .unwrap(),
    );
    assert_eq!(recovery.as_deref(), Some("false"));
}

/// A free loopback port for a pgsplit process.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_storm_under_load_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgsplit.yaml");
    let mut config = proxy_config("");
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("pgsplit.log")).unwrap();
    let mut pgsplit = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .arg("--config")
        .arg(&path)
        .env("PGSPLIT_LOG", "info")
        .stderr(log)
        .spawn()
        .expect("start pgsplit");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::try_connect(&app_url(addr)).await.is_err() {
        assert!(Instant::now() < deadline, "pgsplit did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pgbench_tables(addr);
    let bench = start_pgbench(addr, &["-S", "-c", "8", "-j", "2", "-T", "4"]);
    let pid = pgsplit.id() as libc::pid_t;
    let mut hangups = 0;
    let storm_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < storm_end {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        hangups += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (transactions, clean) = finish_pgbench(bench, Duration::from_secs(30));
    assert!(clean, "no pgbench client failed");
    assert!(transactions > 1000, "{transactions} transactions");
    assert!(pgsplit.try_wait().unwrap().is_none(), "pgsplit still runs");
    let client = common::connect(addr).await;
    client.simple_query("SELECT 1").await.unwrap();
    let _ = pgsplit.kill();
    let _ = pgsplit.wait();
    let log = std::fs::read_to_string(dir.path().join("pgsplit.log")).unwrap();
    let reloads = log.matches("configuration reloaded").count();
    eprintln!("{hangups} SIGHUPs, {reloads} reloads, {transactions} transactions");
    assert!(reloads >= 10, "reloads happened: {reloads}\n{log}");
}
