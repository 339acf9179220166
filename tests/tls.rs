//! TLS on both sides: clients to pgsplit (`tls`), pgsplit to the nodes
//! (`server_tls`, with libpq's sslmode semantics). Certificates are made
//! with the openssl command line for each run.

mod common;

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{primary_sql, run_tool, start_proxy, try_connect, with_cluster};
use tokio_postgres::error::SqlState;

struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Makes `<name>.key` and `<name>.crt` in `dir`: a certificate for the DNS
/// name `host`, signed by `ca` (X.509 v3, as rustls requires).
fn issue_certificate(dir: &Path, name: &str, host: &str, ca: &Path, ca_key: &Path) {
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let subject = format!("/CN={host}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ],
    );
    let extensions = format!("{name}.ext");
    std::fs::write(
        dir.join(&extensions),
        format!("subjectAltName=DNS:{host}\n"),
    )
    .unwrap();
    let (ca, ca_key) = (ca.to_str().unwrap(), ca_key.to_str().unwrap());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "1",
            "-extfile",
            &extensions,
        ],
    );
}

/// A CA, a server certificate it signed for the name `wrong.example` only
/// (so host-name verification of 127.0.0.1 must fail), and an unrelated CA.
/// The primary is switched to TLS with that certificate.
fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, subject) in [("ca", "/CN=pgsplit-test-ca"), ("other-ca", "/CN=other-ca")] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-subj",
                    subject,
                ],
            );
        }
        issue_certificate(
            d,
            "server",
            "wrong.example",
            &d.join("ca.crt"),
            &d.join("ca.key"),
        );
        // PostgreSQL must own its key (mode 0600); so must the dir be reachable.
        let owner = with_cluster(|c| std::fs::metadata(&c.primary().data_dir).unwrap());
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in ["server.crt", "server.key"] {
            chown(d.join(file), Some(owner.uid()), Some(owner.gid())).unwrap();
        }
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let cert = d.join("server.crt");
        let key = d.join("server.key");
        primary_sql(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            cert.display()
        ));
        primary_sql(&format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            key.display()
        ));
        primary_sql("ALTER SYSTEM SET ssl = on");
        primary_sql("SELECT pg_reload_conf()");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while primary_sql("SHOW ssl") != "on" {
            assert!(
                std::time::Instant::now() < deadline,
                "primary did not enable ssl"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Certs {
            ca: d.join("ca.crt"),
            other_ca: d.join("other-ca.crt"),
            cert,
            key,
            _dir: dir,
        }
    })
}

const SERVER_SIDE_TLS: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

async fn server_side_tls_in_use(extra: &str) -> Result<String, tokio_postgres::Error> {
    // Only the primary has TLS switched on.
    let addr = start_proxy(&format!("{extra}routing: {{ route: primary }}\n"));
    let client = try_connect(&common::app_url(addr)).await?;
    let row = client.query_one(SERVER_SIDE_TLS, &[]).await?;
    Ok(row.get::<_, bool>(0).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_modes_encrypt_and_verify_like_libpq() {
    let certs = certs();
    assert_eq!(server_side_tls_in_use("").await.unwrap(), "false");
    assert_eq!(
        server_side_tls_in_use("server_tls: { mode: prefer }\n")
            .await
            .unwrap(),
        "true"
    );
    assert_eq!(
        server_side_tls_in_use("server_tls: { mode: require }\n")
            .await
            .unwrap(),
        "true"
    );
    let verify_ca = format!(
        "server_tls: {{ mode: verify-ca, ca_file: \"{}\" }}\n",
        certs.ca.display()
    );
    assert_eq!(server_side_tls_in_use(&verify_ca).await.unwrap(), "true");

    // The certificate names wrong.example, not 127.0.0.1: verify-full refuses it.
    let verify_full = format!(
        "server_tls: {{ mode: verify-full, ca_file: \"{}\" }}\n",
        certs.ca.display()
    );
    let error = server_side_tls_in_use(&verify_full).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");

    // A CA that did not sign the certificate: verify-ca refuses it.
    let wrong_ca = format!(
        "server_tls: {{ mode: verify-ca, ca_file: \"{}\" }}\n",
        certs.other_ca.display()
    );
    let error = server_side_tls_in_use(&wrong_ca).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::CONNECTION_FAILURE), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_required_refuses_plaintext_and_serves_psql_over_tls() {
    let certs = certs();
    let addr = start_proxy(&format!(
        "tls: {{ mode: require, cert: \"{}\", key: \"{}\" }}\n",
        certs.cert.display(),
        certs.key.display()
    ));
    let error = try_connect(&common::app_url(addr))
        .await
        .expect_err("plaintext must be refused");
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{error}"
    );

    let url = format!("postgresql://app@{addr}/app?sslmode=require");
    let out = run_tool("psql", &["-XAtq", &url, "-c", "SELECT 'over tls'"], "app");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");

    // libpq verifies the chain when asked (the name does not matter for verify-ca).
    let url = format!(
        "postgresql://app@{addr}/app?sslmode=verify-ca&sslrootcert={}",
        certs.ca.display()
    );
    let out = run_tool("psql", &["-XAtq", &url, "-c", "SELECT 1"], "app");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// psql through `addr` with `options` in the URL; the output or the error.
fn psql_over_tls(addr: std::net::SocketAddr, options: &str) -> Result<String, String> {
    let url = format!("postgresql://app@{addr}/app?{options}");
    let out = run_tool("psql", &["-XAtq", &url, "-c", "SELECT 'ok'"], "app");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_channel_binding_works_for_tls_clients() {
    let certs = certs();
    let addr = start_proxy(&format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        certs.cert.display(),
        certs.key.display()
    ));
    // libpq binds to pgsplit's certificate (SCRAM-SHA-256-PLUS) and refuses
    // to go on without it when told to.
    assert_eq!(
        psql_over_tls(addr, "sslmode=require&channel_binding=require").as_deref(),
        Ok("ok")
    );
    // Without TLS there is nothing to bind to: libpq refuses, pgsplit still
    // serves plain SCRAM.
    assert!(psql_over_tls(addr, "sslmode=disable&channel_binding=require").is_err());
    assert_eq!(
        psql_over_tls(addr, "sslmode=disable&channel_binding=prefer").as_deref(),
        Ok("ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_rotated_certificates() {
    let certs = certs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A second certificate, from the other CA.
    let other_ca_key = certs.other_ca.with_extension("key");
    issue_certificate(d, "next", "next.example", &certs.other_ca, &other_ca_key);
    let (live_cert, live_key) = (d.join("live.crt"), d.join("live.key"));
    std::fs::copy(&certs.cert, &live_cert).unwrap();
    std::fs::copy(&certs.key, &live_key).unwrap();
    let mut config = common::proxy_config(&format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        live_cert.display(),
        live_key.display()
    ));
    config.listen = "127.0.0.1:0".into();
    let path = d.join("pgsplit.yaml");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let proxy = common::spawn_proxy_from_file(&path);
    let trusting = |ca: &Path| format!("sslmode=verify-ca&sslrootcert={}", ca.display());
    assert_eq!(
        psql_over_tls(proxy.addr, &trusting(&certs.ca)).as_deref(),
        Ok("ok")
    );
    assert!(psql_over_tls(proxy.addr, &trusting(&certs.other_ca)).is_err());

    // Rotated in place, as cert-manager does; a reload picks it up.
    std::fs::copy(d.join("next.crt"), &live_cert).unwrap();
    std::fs::copy(d.join("next.key"), &live_key).unwrap();
    let (status, body) = common::admin_post(proxy.admin, "/api/reload", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        psql_over_tls(proxy.addr, &trusting(&certs.other_ca)).as_deref(),
        Ok("ok")
    );
    assert!(psql_over_tls(proxy.addr, &trusting(&certs.ca)).is_err());

    // A broken key is refused by the reload, and the certificate in force stays.
    std::fs::write(&live_key, "not a key").unwrap();
    let (status, body) = common::admin_post(proxy.admin, "/api/reload", "");
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("tls.key"), "{body}");
    assert_eq!(
        psql_over_tls(proxy.addr, &trusting(&certs.other_ca)).as_deref(),
        Ok("ok")
    );
}
