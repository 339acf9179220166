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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_from_a_config_file_and_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let yaml = with_cluster(|c| pgsplit::demo::config_yaml(c, &listen, ""));
    let file = write_config(&yaml);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());

    // SIGTERM: the idle client is told why, and the process exits 0.
    let status = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(status, 0);
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
    let error = client
        .simple_query("SELECT 1")
        .await
        .expect_err("connection closed");
    assert!(
        error.code() == Some(&SqlState::ADMIN_SHUTDOWN) || error.is_closed(),
        "{error}"
    );
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
