//! The `pgsplit` binary itself: `check`, and running with a config file
//! until SIGTERM, which closes idle clients the way PostgreSQL does.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{try_connect, with_cluster};
use tokio_postgres::error::SqlState;

const BIN: &str = env!("CARGO_BIN_EXE_pgsplit");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn check_accepts_the_example_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/configs/pgsplit.yaml"),
        ])
        .env("APP_PASSWORD", "secret")
        .env("PG_ADMIN_PASSWORD", "secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ok"), "{stderr}");
    // The effective config, secrets redacted.
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(effective["users"][0]["password"], "<redacted>");
    assert_eq!(effective["routing"]["max_lag"], "10s");
}

#[test]
fn check_names_the_bad_field() {
    let cases = [
        ("nodes:\n  - { name: a, host: h, port: 70000, role: primary }\nusers: [{ name: u, password: p }]\n", "nodes[0].port"),
        ("nodes:\n  - { name: a, host: h, role: primary }\nusers: [{ name: u, password: \"${PGSPLIT_TEST_UNSET_VAR}\" }]\n", "PGSPLIT_TEST_UNSET_VAR"),
        ("pool: { mode: bogus }\nnodes:\n  - { name: a, host: h, role: primary }\nusers: [{ name: u, password: p }]\n", "pool.mode"),
        ("nodes:\n  - { name: a, host: h, role: primary }\nusers: [{ name: u, password: p }]\npoool: 1\n", "poool"),
    ];
    for (yaml, field) in cases {
        let file = write_config(yaml);
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(file.path())
            .env_remove("PGSPLIT_TEST_UNSET_VAR")
            .output()
            .unwrap();
        assert!(!out.status.success(), "accepted: {yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "error for {field} was: {stderr}");
    }
}

/// A free loopback address to listen on.
fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Starts the binary, its log going to `stderr`, and waits until it
/// accepts a client.
async fn start(
    mut command: Command,
    listen: &str,
    stderr: Stdio,
) -> (std::process::Child, tokio_postgres::Client) {
    let child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let addr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match try_connect(&common::app_url(addr)).await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("pgsplit never accepted connections: {error}"),
        }
    };
    (child, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_from_a_config_file_and_stops_cleanly_on_sigterm() {
    let listen = free_address();
    let yaml = with_cluster(|c| {
        c.psql(
            c.primary(),
            pgsplit::cluster::APP_DATABASE,
            "CREATE TABLE IF NOT EXISTS shutdown_log (v text); GRANT ALL ON shutdown_log TO app",
        )
        .unwrap();
        pgsplit::demo::config_yaml(c, &listen, "")
    });
    let file = write_config(&yaml);
    let mut command = Command::new(BIN);
    command.arg("--config").arg(file.path());
    let (mut child, client) = start(command, &listen, Stdio::null()).await;
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());

    // SIGHUP reloads the file: new sessions send everything to the primary.
    let primary = with_cluster(|c| c.primary().port.to_string());
    std::fs::write(
        file.path(),
        format!("{yaml}routing: {{ route: primary }}\n"),
    )
    .unwrap();
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let reloaded = Instant::now();
    loop {
        let fresh = try_connect(&common::app_url(listen.parse().unwrap()))
            .await
            .unwrap();
        let rows = fresh.simple_query("SHOW port").await.unwrap();
        let port = common::first_value(&rows);
        if port.as_deref() == Some(primary.as_str()) {
            break;
        }
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy = common::try_connect(&common::app_url(listen.parse().unwrap()))
        .await
        .unwrap();
    busy.batch_execute("BEGIN; INSERT INTO shutdown_log VALUES ('in flight')")
        .await
        .unwrap();

    // SIGTERM: the transaction in flight may still commit; the idle client
    // is told why it is closed, and the process exits 0.
    let status = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(status, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.batch_execute("COMMIT")
        .await
        .expect("the transaction in flight commits");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "pgsplit did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let committed = with_cluster(|c| {
        c.psql(
            c.primary(),
            pgsplit::cluster::APP_DATABASE,
            "SELECT count(*) FROM shutdown_log WHERE v = 'in flight'",
        )
        .unwrap()
    });
    assert_eq!(committed, "1");
    let error = client
        .simple_query("SELECT 1")
        .await
        .expect_err("connection closed");
    assert!(
        error.code() == Some(&SqlState::ADMIN_SHUTDOWN) || error.is_closed(),
        "{error}"
    );
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(&listen).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_from_environment_variables_alone() {
    let listen = free_address();
    let (primary, replica) = with_cluster(|c| (c.primary().port, c.replicas()[0].port));
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("DB_HOST", "127.0.0.1")
        .env("DB_PORT", primary.to_string())
        .env("DB_DATABASE", "app")
        .env("DB_USERNAME", "app")
        .env("DB_PASSWORD", "app")
        .env("DB_READ_HOST_1", "127.0.0.1")
        .env("DB_READ_PORT", replica.to_string())
        .env("PGSPLIT_LISTEN", &listen)
        .env("PGSPLIT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("PGSPLIT_ROUTING__CONSISTENCY", "eventual");
    let (mut child, client) = start(command, &listen, Stdio::null()).await;
    let rows = client.simple_query("SHOW port").await.unwrap();
    let served_by = common::first_value(&rows);
    assert_eq!(
        served_by,
        Some(replica.to_string()),
        "a read goes to DB_READ_HOST_1"
    );
    let rows = client
        .simple_query("/* pgsplit:primary */ SHOW port")
        .await
        .unwrap();
    let written_by = common::first_value(&rows);
    assert_eq!(
        written_by,
        Some(primary.to_string()),
        "the primary is DB_HOST"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // `check` shows what the environment amounts to.
    let out = Command::new(BIN)
        .arg("check")
        .env_clear()
        .env("DB_HOST", "db.internal")
        .env("DB_USERNAME", "app")
        .env("DB_PASSWORD", "s3cret")
        .env("PGSPLIT_NODES__0__WEIGHT", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(effective["nodes"][0]["host"], "db.internal");
    assert_eq!(effective["nodes"][0]["weight"], 2);
    assert_eq!(effective["users"][0]["password"], "<redacted>");
    let out = Command::new(BIN).arg("check").env_clear().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configuration"));
}

/// A session's log lines carry the client's span (peer, user, database),
/// in both log formats, though the session does not enter it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_log_lines_name_the_client() {
    for format in ["text", "json"] {
        let listen = free_address();
        let extra = format!("log: {{ format: {format}, queries: true }}\n");
        let yaml = with_cluster(|c| pgsplit::demo::config_yaml(c, &listen, &extra));
        let file = write_config(&yaml);
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(file.path())
            .env("PGSPLIT_LOG", "info");
        let stderr = Stdio::from(log.reopen().unwrap());
        let (mut child, client) = start(command, &listen, stderr).await;
        client
            .simple_query("SELECT 'span check' AS marker")
            .await
            .unwrap();
        drop(client);
        child.kill().unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains('\u{1b}'), "no colour codes in a log file");
        let line = text
            .lines()
            .find(|line| line.contains("span check"))
            .unwrap_or_else(|| panic!("no query line in the {format} log:\n{text}"));
        if format == "text" {
            assert!(line.contains("client{peer=127.0.0.1:"), "{line}");
            assert!(
                line.contains(r#"user="app""#) && line.contains(r#"database="app""#),
                "{line}"
            );
        } else {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["span"]["name"], "client", "{line}");
            assert_eq!(event["span"]["user"], "app", "{line}");
            assert_eq!(event["span"]["database"], "app", "{line}");
            assert!(event.get("spans").is_none(), "no empty span list: {line}");
        }
    }
}
