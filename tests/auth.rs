//! Authentication hardening: SCRAM verifiers and md5 hashes instead of
//! passwords in the config, `auth_query` with `rolvaliduntil`, and the
//! failed-login limit per source address.

mod common;

use std::net::SocketAddr;
use std::str::FromStr;

use common::{primary_sql, proxy_config, spawn_proxy, try_connect, url};
use pgsplit::cluster::{APP_MD5_PASSWORD, APP_MD5_USER, APP_PASSWORD, APP_USER};
use pgsplit::config::{AuthQueryConfig, Config};
use pgsplit::protocol::md5::Md5Hash;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// A login role on the cluster, with CONNECT on the app database.
fn create_role(name: &str, password: &str) {
    primary_sql(&format!(
        "DO $$ BEGIN CREATE ROLE {name} LOGIN PASSWORD '{password}'; \
         EXCEPTION WHEN duplicate_object THEN ALTER ROLE {name} PASSWORD '{password}'; END $$"
    ));
    primary_sql(&format!("GRANT CONNECT ON DATABASE app TO {name}"));
}

fn verifier_of(role: &str) -> String {
    primary_sql(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ))
}

fn code(error: &tokio_postgres::Error) -> Option<&SqlState> {
    error.code()
}

async fn current_user(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<String, tokio_postgres::Error> {
    let client = try_connect(&url(addr, user, password, "app")).await?;
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_verifier_in_the_config_logs_clients_and_servers_in() {
    create_role("verifier_user", "v3rifier");
    let verifier = verifier_of("verifier_user");
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let with_verifier = |extra: &str| {
        let mut config = proxy_config(extra);
        config.users.push(pgsplit::config::UserConfig {
            name: "verifier_user".into(),
            password: verifier.clone(),
            max_connections: None,
        });
        config
    };

    // Under trust nobody proves the password, so pgsplit cannot log in to
    // the servers with a verifier alone, and says so.
    let trusting = spawn_proxy(with_verifier("auth_method: trust\n"));
    let error = current_user(trusting, "verifier_user", "anything")
        .await
        .expect_err("no password to log in to the server with");
    let message = db_message(&error);
    assert!(message.contains("SCRAM verifier"), "{message}");

    // With SCRAM (even when md5 is configured, as PostgreSQL does) the
    // client's proof lets pgsplit log in to every node.
    for extra in ["", "auth_method: md5\n"] {
        let addr = spawn_proxy(with_verifier(extra));
        let error = current_user(addr, "verifier_user", "wrong")
            .await
            .expect_err("wrong password");
        assert_eq!(code(&error), Some(&SqlState::INVALID_PASSWORD), "{error}");
        assert_eq!(
            current_user(addr, "verifier_user", "v3rifier")
                .await
                .unwrap(),
            "verifier_user"
        );
        // Reads on replicas log in there with the same key.
        let client = try_connect(&url(addr, "verifier_user", "v3rifier", "app"))
            .await
            .unwrap();
        for _ in 0..4 {
            client.query_one("SELECT 1", &[]).await.unwrap();
        }
    }
}

/// `config` with `user`'s password replaced by `secret`.
fn with_secret(mut config: Config, user: &str, secret: &str) -> Config {
    let entry = config
        .users
        .iter_mut()
        .find(|u| u.name == user)
        .expect("the demo config lists the user");
    entry.password = secret.to_owned();
    config
}

fn db_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_md5_hash_in_the_config_logs_clients_and_servers_in() {
    // The md5 role's pg_authid entry, as an operator would copy it.
    let hash = verifier_of(APP_MD5_USER);
    assert!(Md5Hash::parse(&hash).is_some(), "{hash}");
    let addr = spawn_proxy(with_secret(
        proxy_config("auth_method: md5\n"),
        APP_MD5_USER,
        &hash,
    ));
    let error = current_user(addr, APP_MD5_USER, "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(code(&error), Some(&SqlState::INVALID_PASSWORD), "{error}");
    // The nodes ask for md5, which the hash answers, on the primary and
    // on the replicas that serve the reads.
    let client = try_connect(&url(addr, APP_MD5_USER, APP_MD5_PASSWORD, "app"))
        .await
        .expect("the md5 user logs in with its password");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS md5_hash_t(x int); INSERT INTO md5_hash_t VALUES (1)",
        )
        .await
        .expect("a write on the primary");
    for _ in 0..4 {
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("a read");
        assert_eq!(row.get::<_, String>(0), APP_MD5_USER);
    }

    // A node that asks for SCRAM cannot be answered with an md5 hash;
    // the client is told why instead of seeing a bare login failure.
    let app_hash = format!("md5{}", md5_digits(APP_USER, APP_PASSWORD));
    let addr = spawn_proxy(with_secret(
        proxy_config("auth_method: md5\n"),
        APP_USER,
        &app_hash,
    ));
    let error = current_user(addr, APP_USER, APP_PASSWORD)
        .await
        .expect_err("the server wants SCRAM");
    let message = db_message(&error);
    assert!(message.contains("md5 hash"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_md5_hashes_check_md5_logins_only() {
    let mut config = auth_query_config();
    config.users.retain(|u| u.name != APP_MD5_USER);
    // Under SCRAM an md5 hash cannot check the proof: refused as
    // PostgreSQL refuses it.
    let scram = spawn_proxy(config.clone());
    let error = current_user(scram, APP_MD5_USER, APP_MD5_PASSWORD)
        .await
        .expect_err("no SCRAM verifier");
    assert_eq!(code(&error), Some(&SqlState::INVALID_PASSWORD), "{error}");

    config.auth_method = pgsplit::config::AuthMethod::Md5;
    let md5 = spawn_proxy(config);
    assert_eq!(
        current_user(md5, APP_MD5_USER, APP_MD5_PASSWORD)
            .await
            .unwrap(),
        APP_MD5_USER
    );
    let error = current_user(md5, APP_MD5_USER, "wrong").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::INVALID_PASSWORD), "{error}");
}

/// The hex digits PostgreSQL stores after `md5` for `user`'s `password`.
fn md5_digits(user: &str, password: &str) -> String {
    let stored = primary_sql(&format!("SELECT md5('{password}' || '{user}')"));
    assert_eq!(stored.len(), 32, "{stored}");
    stored
}

fn auth_query_config() -> Config {
    let mut config = proxy_config("");
    config.auth_query = Some(serde_json::from_str::<AuthQueryConfig>("{}").expect("defaults"));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_looks_users_up_and_honours_valid_until() {
    create_role("looked_up", "first");
    let addr = spawn_proxy(auth_query_config());
    assert_eq!(
        current_user(addr, "looked_up", "first").await.unwrap(),
        "looked_up"
    );
    let error = current_user(addr, "looked_up", "wrong").await.unwrap_err();
    assert_eq!(code(&error), Some(&SqlState::INVALID_PASSWORD), "{error}");

    // A password change in the database applies to the next login.
    primary_sql("ALTER ROLE looked_up PASSWORD 'second'");
    assert!(current_user(addr, "looked_up", "first").await.is_err());
    assert_eq!(
        current_user(addr, "looked_up", "second").await.unwrap(),
        "looked_up"
    );

    primary_sql("ALTER ROLE looked_up VALID UNTIL '2000-01-01'");
    let error = current_user(addr, "looked_up", "second").await.unwrap_err();
    assert_eq!(
        code(&error),
        Some(&SqlState::INVALID_PASSWORD),
        "expired: {error}"
    );
    primary_sql("ALTER ROLE looked_up VALID UNTIL 'infinity'");
    assert_eq!(
        current_user(addr, "looked_up", "second").await.unwrap(),
        "looked_up"
    );

    let error = current_user(addr, "nobody_here", "x").await.unwrap_err();
    assert_eq!(
        code(&error),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{error}"
    );
    primary_sql("ALTER ROLE looked_up NOLOGIN");
    assert!(current_user(addr, "looked_up", "second").await.is_err());
    primary_sql("ALTER ROLE looked_up LOGIN");
    // Configured users still log in from the config.
    assert_eq!(current_user(addr, "app", "app").await.unwrap(), "app");
}

/// Logs in from `source` (any 127.x address reaches the loopback proxy).
async fn login_from(
    source: &str,
    addr: SocketAddr,
    password: &str,
) -> Result<(), tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let config = tokio_postgres::Config::from_str(&url(addr, "app", password, "app")).unwrap();
    let (client, connection) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_source_address() {
    let addr = spawn_proxy(proxy_config(
        "auth_failure_limit: 3\nauth_failure_window: 1m\n",
    ));
    for _ in 0..3 {
        let error = login_from("127.0.0.2", addr, "guess").await.unwrap_err();
        assert_eq!(code(&error), Some(&SqlState::INVALID_PASSWORD), "{error}");
    }
    // Now even the right password is refused from that address...
    let error = login_from("127.0.0.2", addr, "app").await.unwrap_err();
    assert_eq!(
        code(&error),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{error}"
    );
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("too many failed login attempts"),
        "{message}"
    );
    // ...while other addresses log in as usual.
    login_from("127.0.0.3", addr, "app").await.unwrap();
    login_from("127.0.0.1", addr, "app").await.unwrap();
}
