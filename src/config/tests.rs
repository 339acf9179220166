//! Tests for loading, interpolation, deserialization errors and validation.

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = "
nodes:
  - { name: pg1, host: db1, role: primary }
users:
  - { name: app, password: secret }
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Config {
    match Config::from_yaml(text, &no_env) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Parses `text` with `env` and returns the error message.
fn error_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    match Config::from_yaml(text, env) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn error(text: &str) -> String {
    error_with(text, &no_env)
}

/// `MINIMAL` plus extra top-level keys.
fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

fn assert_contains(message: &str, needle: &str) {
    assert!(
        message.contains(needle),
        "message {message:?} does not contain {needle:?}"
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL);
    assert_eq!(c.listen, "127.0.0.1:6432");
    assert_eq!(c.admin_listen, "127.0.0.1:9930");
    assert_eq!(c.max_client_connections, 1000);
    assert_eq!(c.max_message_size, 64 * 1024 * 1024);
    assert_eq!(c.client_login_timeout, Duration::from_secs(15));
    assert_eq!(c.server_connect_timeout, Duration::from_secs(5));
    assert_eq!(c.query_wait_timeout, Duration::from_secs(30));
    assert_eq!(c.auth_method, AuthMethod::ScramSha256);
    assert_eq!(c.pool, PoolConfig::default());
    assert_eq!(c.pool.mode, PoolMode::Transaction);
    assert_eq!(c.pool.size, 20);
    assert_eq!(c.pool.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.pool.max_lifetime, Duration::from_secs(3600));
    assert_eq!(c.tls, TlsConfig::default());
    assert_eq!(c.tls.mode, ClientTlsMode::Allow);
    assert_eq!(c.server_tls.mode, ServerTlsMode::Disable);
    assert_eq!(c.server_tls.ca_file, None);
    assert_eq!(
        c.nodes,
        vec![NodeConfig {
            name: "pg1".into(),
            host: "db1".into(),
            port: 5432,
            role: Role::Primary,
            weight: 1,
            tags: Vec::new(),
            promote: true,
            priority: 0,
            removed: false,
        }]
    );
    assert_eq!(c.monitor, None);
}

#[test]
fn full_config_parses() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let ca = dir.path().join("ca.crt");
    for f in [&cert, &key, &ca] {
        std::fs::write(f, "pem").unwrap();
    }
    let text = format!(
        r#"
listen: "0.0.0.0:7432"
admin_listen: "[::1]:9000"
max_client_connections: 50
max_message_size: 16MB
client_login_timeout: 2s
server_connect_timeout: 250ms
query_wait_timeout: 1.5s
auth_method: md5
pool:
  mode: session
  size: 5
  idle_timeout: 1m
  max_lifetime: 1d
tls:
  mode: require
  cert: {cert}
  key: {key}
server_tls:
  mode: verify-full
  ca_file: {ca}
nodes:
  - name: replica-a
    host: 10.0.0.2
    role: replica
  - name: main
    host: 10.0.0.1
    port: 6000
    role: primary
users:
  - name: app
    password: "${{APP_PW}}"
  - name: report
    password: "r3p0rt"
monitor:
  user: mon
  password: "${{MON_PW:-monpw}}"
"#,
        cert = cert.display(),
        key = key.display(),
        ca = ca.display()
    );
    let env = |name: &str| (name == "APP_PW").then(|| "app-secret".to_owned());
    let c = match Config::from_yaml(&text, &env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.listen, "0.0.0.0:7432");
    assert_eq!(c.admin_listen, "[::1]:9000");
    assert_eq!(c.max_client_connections, 50);
    assert_eq!(c.max_message_size, 16 << 20);
    assert_eq!(c.client_login_timeout, Duration::from_secs(2));
    assert_eq!(c.server_connect_timeout, Duration::from_millis(250));
    assert_eq!(c.query_wait_timeout, Duration::from_millis(1500));
    assert_eq!(c.auth_method, AuthMethod::Md5);
    assert_eq!(
        c.pool,
        PoolConfig {
            mode: PoolMode::Session,
            size: 5,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(86_400),
            max_prepared_statements: 200,
        }
    );
    assert_eq!(c.tls.mode, ClientTlsMode::Require);
    assert_eq!(c.tls.cert.as_deref(), Some(cert.as_path()));
    assert_eq!(c.tls.key.as_deref(), Some(key.as_path()));
    assert_eq!(c.server_tls.mode, ServerTlsMode::VerifyFull);
    assert_eq!(c.server_tls.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(c.nodes.len(), 2);
    assert_eq!(c.nodes[0].port, 5432);
    assert_eq!(c.nodes[1].port, 6000);
    assert_eq!(c.primary_index(), 1);
    assert_eq!(c.nodes[c.primary_index()].name, "main");
    assert_eq!(
        c.user("app").map(|u| u.password.as_str()),
        Some("app-secret")
    );
    assert_eq!(
        c.user("report").map(|u| u.password.as_str()),
        Some("r3p0rt")
    );
    assert!(c.user("nobody").is_none());
    assert_eq!(c.monitor, Some(MonitorConfig::new("mon", "monpw")));
}

#[test]
fn example_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/pgsplit.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let env = |name: &str| match name {
        "APP_PASSWORD" => Some("app-pw".to_owned()),
        "PG_ADMIN_PASSWORD" => Some("admin-pw".to_owned()),
        _ => None,
    };
    let c = match Config::from_yaml(&text, &env) {
        Ok(c) => c,
        Err(e) => panic!("{path}: {e}"),
    };
    // The example documents the defaults: it must equal the minimal config
    // with the same nodes, users and monitor.
    let mut defaults = parse(MINIMAL);
    defaults.nodes = c.nodes.clone();
    defaults.users = c.users.clone();
    defaults.monitor = c.monitor.clone();
    assert_eq!(c, defaults);
    assert_eq!(c.nodes.len(), 2);
    assert_eq!(c.nodes[c.primary_index()].name, "pg1");
    assert_eq!(c.nodes[1].port, 5433);
    assert_eq!(c.nodes[1].role, Role::Replica);
    assert_eq!(c.user("app").map(|u| u.password.as_str()), Some("app-pw"));
    assert_eq!(c.monitor.map(|m| m.password), Some("admin-pw".to_owned()));

    let only_admin = |name: &str| (name == "PG_ADMIN_PASSWORD").then(|| "pw".to_owned());
    assert_eq!(
        error_with(&text, &only_admin),
        "users[0].password: environment variable APP_PASSWORD is not set"
    );
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgsplit.yaml");
    std::fs::write(&file, MINIMAL).unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(c.users[0].name, "app");

    let missing = dir.path().join("nope.yaml");
    let message = Config::load(&missing).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "could not read {}: No such file or directory",
            missing.display()
        )
    );
    assert!(matches!(
        Config::load(Path::new("/nonexistent/x.yaml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn debug_redacts_passwords() {
    let c = parse(&with("monitor: { user: mon, password: hunter2 }"));
    let debug = format!("{c:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert_contains(&debug, "password: \"<redacted>\"");
    assert_contains(&debug, "name: \"app\"");
    assert_contains(&debug, "user: \"mon\"");
}

#[test]
fn enums_parse_all_spellings() {
    for (text, want) in [
        ("scram-sha-256", AuthMethod::ScramSha256),
        ("md5", AuthMethod::Md5),
        ("trust", AuthMethod::Trust),
    ] {
        assert_eq!(
            parse(&with(&format!("auth_method: {text}"))).auth_method,
            want
        );
    }
    for (text, want) in [
        ("disable", ServerTlsMode::Disable),
        ("prefer", ServerTlsMode::Prefer),
        ("require", ServerTlsMode::Require),
    ] {
        let c = parse(&with(&format!("server_tls: {{ mode: {text} }}")));
        assert_eq!(c.server_tls.mode, want);
    }
    let c = parse(&with("tls: { mode: disable }"));
    assert_eq!(c.tls.mode, ClientTlsMode::Disable);
}

// ---- YAML-level errors ----

#[test]
fn syntax_errors_have_line_and_column() {
    let message = error("listen: 127.0.0.1:6432\npool:\n  mode: [transaction\n");
    assert_contains(&message, "invalid YAML");
    assert_contains(&message, "line 3");
    assert_contains(&message, "column");

    let message = error("nodes: []\nnodes: []\n");
    assert_contains(&message, "duplicate mapping key: nodes at line 2");
    assert!(!message.contains("DuplicateKeyPolicy"), "{message}");
}

#[test]
fn empty_or_non_mapping_documents_are_rejected() {
    assert_contains(&error(""), "empty");
    assert_contains(&error("# only a comment\n"), "empty");
    assert_contains(&error("- a\n- b\n"), "must be a mapping");
    assert_contains(&error("just a string"), "must be a mapping");
}

// ---- typed deserialization errors carry the field path ----

#[test]
fn unknown_fields_are_named() {
    let message = error(&with("poool: { size: 3 }"));
    assert_contains(
        &message,
        "unknown field `poool` at top level, expected one of",
    );
    assert!(!message.starts_with("poool"), "{message}");

    assert_contains(
        &error(&with("pool: { sise: 3 }")),
        "pool: unknown field `sise`, expected one of `mode`, `size`",
    );
    let message = error(
        "nodes:\n  - { name: pg1, host: h, role: primary, wieght: 2 }\nusers: [{ name: a, password: b }]\n",
    );
    assert_contains(&message, "nodes[0]: unknown field `wieght`");
}

#[test]
fn type_errors_are_named() {
    let message = error(
        "nodes:\n  - { name: pg1, host: h, role: primary }\n  - { name: pg2, host: h, port: 70000, role: replica }\nusers: [{ name: a, password: b }]\n",
    );
    assert_eq!(
        message,
        "nodes[1].port: invalid value: integer `70000`, expected u16"
    );
    assert_eq!(
        error(&with("pool: { mode: bogus }")),
        "pool.mode: unknown variant `bogus`, expected `transaction` or `session`"
    );
    assert_contains(
        &error(&with("auth_method: plain")),
        "auth_method: unknown variant `plain`",
    );
    assert_contains(
        &error(&with("server_tls: { mode: verify }")),
        "server_tls.mode: unknown variant `verify`",
    );
    assert_contains(
        &error(
            "nodes:\n  - { name: pg1, host: h, role: leader }\nusers: [{ name: a, password: b }]\n",
        ),
        "nodes[0].role: unknown variant `leader`, expected `primary` or `replica`",
    );
    assert_contains(
        &error("nodes:\n  - { name: pg1, role: primary }\nusers: [{ name: a, password: b }]\n"),
        "nodes[0]: missing field `host`",
    );
    assert_contains(
        &error("users: [{ name: a, password: b }]\n"),
        "missing field `nodes` at top level",
    );
    assert_contains(
        &error("nodes:\n  - { name: pg1, host: h, role: primary }\nusers: [{ name: a, password: 12345 }]\n"),
        "users[0].password: invalid type: integer `12345`, expected a string",
    );
    assert_contains(
        &error(&with("pool: { size: -1 }")),
        "pool.size: invalid value",
    );
    assert_contains(
        &error(&with("pool: { size: many }")),
        "pool.size: invalid value",
    );
    assert_contains(
        &error(&with("pool: { size: 2.5 }")),
        "pool.size: invalid type",
    );
    assert_contains(&error(&with("pool: 3")), "pool: invalid type");
    assert_contains(
        &error(&with("max_client_connections: [1]")),
        "max_client_connections: invalid type",
    );
}

#[test]
fn numbers_accept_numeric_strings_from_env() {
    let text = "
max_client_connections: \"${MAX_CLIENTS:-77}\"
pool: { size: \"${POOL_SIZE}\" }
nodes:
  - { name: pg1, host: h, port: \"${PG_PORT}\", role: primary }
users: [{ name: a, password: b }]
";
    let env = |name: &str| match name {
        "PG_PORT" => Some("5555".to_owned()),
        "POOL_SIZE" => Some("7".to_owned()),
        _ => None,
    };
    let c = Config::from_yaml(text, &env).unwrap();
    assert_eq!(c.nodes[0].port, 5555);
    assert_eq!(c.pool.size, 7);
    assert_eq!(c.max_client_connections, 77);

    let env = |name: &str| (name == "PG_PORT" || name == "POOL_SIZE").then(|| "99999".to_owned());
    assert_eq!(
        error_with(text, &env),
        "nodes[0].port: invalid value: string \"99999\", expected u16"
    );
}

// ---- durations and sizes ----

#[test]
fn durations_need_units() {
    let c = parse(&with(
        "client_login_timeout: 1.5s\nserver_connect_timeout: 500us\nquery_wait_timeout: 2m",
    ));
    assert_eq!(c.client_login_timeout, Duration::from_millis(1500));
    assert_eq!(c.server_connect_timeout, Duration::from_micros(500));
    assert_eq!(c.query_wait_timeout, Duration::from_secs(120));

    let message = error(&with("client_login_timeout: 15"));
    assert_contains(&message, "client_login_timeout: duration 15 needs a unit");
    assert_contains(
        &error(&with("pool: { idle_timeout: 10 }")),
        "pool.idle_timeout: duration 10 needs a unit",
    );
    assert_contains(
        &error(&with("query_wait_timeout: 3 weeks")),
        "query_wait_timeout: invalid duration \"3 weeks\": unknown unit \"weeks\"",
    );
    assert_contains(
        &error(&with("server_connect_timeout: fast")),
        "server_connect_timeout: invalid duration \"fast\"",
    );
    assert_contains(
        &error(&with("pool: { max_lifetime: 0s }")),
        "pool.max_lifetime: must be greater than zero",
    );
    assert_contains(
        &error(&with("query_wait_timeout: 0ms")),
        "query_wait_timeout: must be greater than zero",
    );
}

#[test]
fn message_sizes() {
    for (text, want) in [
        ("64MiB", 64 << 20),
        ("16MB", 16 << 20),
        ("512kB", 512 << 10),
        ("1GiB", 1 << 30),
        ("1024", 1024),
        ("\"4096\"", 4096),
    ] {
        let c = parse(&with(&format!("max_message_size: {text}")));
        assert_eq!(c.max_message_size, want, "{text}");
    }
    assert_contains(
        &error(&with("max_message_size: 1023")),
        "max_message_size: must be between",
    );
    assert_contains(
        &error(&with("max_message_size: 2GB")),
        "max_message_size: must be between",
    );
    assert_contains(
        &error(&with("max_message_size: 64 parsecs")),
        "max_message_size: invalid size \"64 parsecs\": unknown unit",
    );
    assert_contains(
        &error(&with("max_message_size: -5")),
        "max_message_size: invalid value: integer `-5`",
    );
    assert_contains(
        &error(&with("max_message_size: 1.5MB")),
        "max_message_size: invalid size \"1.5MB\": must be a whole number",
    );
}

// ---- environment interpolation ----

#[test]
fn env_interpolation() {
    let text = "
listen: \"${HOST:-0.0.0.0}:${PORT}\"
pool: { mode: \"${POOL_MODE:-session}\" }
nodes:
  - { name: pg1, host: \"${DB_HOST}\", role: primary }
users:
  - { name: app, password: \"pre-${SECRET}-$${NOT_A_VAR}-$$-${EMPTY:-fallback}-${SECRET}\" }
  - { name: other, password: \"pa$word\" }
";
    let env = |name: &str| match name {
        "PORT" => Some("7000".to_owned()),
        "DB_HOST" => Some("db.internal".to_owned()),
        "SECRET" => Some("s3cr3t".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let c = Config::from_yaml(text, &env).unwrap();
    assert_eq!(c.listen, "0.0.0.0:7000");
    assert_eq!(c.pool.mode, PoolMode::Session);
    assert_eq!(c.nodes[0].host, "db.internal");
    assert_eq!(
        c.users[0].password,
        "pre-s3cr3t-${NOT_A_VAR}-$-fallback-s3cr3t"
    );
    assert_eq!(c.users[1].password, "pa$word");
}

#[test]
fn missing_env_names_field_and_variable() {
    let text = "
nodes:
  - { name: pg1, host: h, role: primary }
users:
  - { name: app, password: \"${APP_PASSWORD}\" }
";
    let err = Config::from_yaml(text, &no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "users[0].password: environment variable APP_PASSWORD is not set"
    );
    assert!(matches!(
        err,
        ConfigError::MissingEnv { ref path, ref var } if path == "users[0].password" && var == "APP_PASSWORD"
    ));
    assert_contains(
        &error(&with("monitor: { user: m, password: \"x${MON\" }")),
        "monitor.password: unterminated \"${\"",
    );
    assert_contains(
        &error(&with("listen: \"${1BAD}:6432\"")),
        "listen: invalid reference \"${1BAD}\"",
    );
}

// ---- validation ----

#[test]
fn node_validation() {
    let users = "users: [{ name: a, password: b }]\n";
    assert_contains(
        &error(&format!("nodes: []\n{users}")),
        "nodes: at least one node",
    );
    assert_eq!(
        error(&format!(
            "nodes:\n  - {{ name: pg1, host: h, role: primary }}\n  - {{ name: pg2, host: h, port: 5433, role: replica }}\n  - {{ name: pg1, host: h, port: 5434, role: replica }}\n{users}"
        )),
        "nodes[2].name: duplicate node name \"pg1\""
    );
    assert_eq!(
        error(&format!(
            "nodes:\n  - {{ name: pg1, host: h, role: primary }}\n  - {{ name: pg2, host: h, role: primary }}\n{users}"
        )),
        "nodes: exactly one node must have role primary (found 2)"
    );
    assert_contains(
        &error(&format!(
            "nodes:\n  - {{ name: pg1, host: h, role: replica }}\n{users}"
        )),
        "nodes: exactly one node must have role primary (found 0)",
    );
    assert_contains(
        &error(&format!(
            "nodes:\n  - {{ name: \"\", host: h, role: primary }}\n{users}"
        )),
        "nodes[0].name: must not be empty",
    );
    assert_contains(
        &error(&format!(
            "nodes:\n  - {{ name: pg1, host: \" \", role: primary }}\n{users}"
        )),
        "nodes[0].host: must not be empty",
    );
    assert_contains(
        &error(&format!(
            "nodes:\n  - {{ name: pg1, host: h, port: 0, role: primary }}\n{users}"
        )),
        "nodes[0].port: must be between 1 and 65535",
    );
}

#[test]
fn user_validation() {
    let nodes = "nodes: [{ name: pg1, host: h, role: primary }]\n";
    assert_contains(
        &error(&format!("{nodes}users: []\n")),
        "users: at least one user",
    );
    assert_contains(
        &error(&format!(
            "{nodes}users: [{{ name: a, password: x }}, {{ name: a, password: y }}]\n"
        )),
        "users[1].name: duplicate user name \"a\"",
    );
    assert_contains(
        &error(&format!("{nodes}users: [{{ name: \"\", password: x }}]\n")),
        "users[0].name: must not be empty",
    );
    // Passwords stay mandatory with trust: they are needed to log in to the nodes.
    assert_contains(
        &error(&format!(
            "{nodes}auth_method: trust\nusers: [{{ name: a, password: \"\" }}]\n"
        )),
        "users[0].password: must not be empty",
    );
    assert_contains(
        &error(&with("monitor: { user: \"\", password: x }")),
        "monitor.user: must not be empty",
    );
    assert_contains(
        &error(&with("monitor: { user: m, password: \"\" }")),
        "monitor.password: must not be empty",
    );
}

#[test]
fn general_validation() {
    for (extra, needle) in [
        (
            "pool: { size: 0 }",
            "pool.size: must be between 1 and 10000, got 0",
        ),
        (
            "pool: { size: 10001 }",
            "pool.size: must be between 1 and 10000",
        ),
        (
            "max_client_connections: 0",
            "max_client_connections: must be greater than zero",
        ),
        (
            "listen: \"6432\"",
            "listen: invalid address \"6432\": expected host:port",
        ),
        (
            "listen: \":6432\"",
            "listen: invalid address \":6432\": the host is empty",
        ),
        (
            "listen: \"localhost:http\"",
            "listen: invalid address \"localhost:http\": the port",
        ),
        ("listen: \"localhost:65536\"", "listen: invalid address"),
        (
            "listen: \"::1:6432\"",
            "listen: invalid address \"::1:6432\": IPv6 addresses must be in brackets",
        ),
        (
            "admin_listen: \"localhost\"",
            "admin_listen: invalid address",
        ),
        (
            "admin_listen: \"127.0.0.1:6432\"",
            "admin_listen: must differ from listen",
        ),
    ] {
        assert_contains(&error(&with(extra)), needle);
    }
    // Ephemeral ports (tests) may coincide.
    let c = parse(&with("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0"));
    assert_eq!(c.listen, c.admin_listen);
    parse(&with(
        "listen: \"[::]:6432\"\nadmin_listen: \"localhost:9930\"",
    ));
}

#[test]
fn tls_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("k.pem");
    std::fs::write(&cert, "x").unwrap();
    std::fs::write(&key, "x").unwrap();
    let missing = dir.path().join("missing.pem");
    let (cert, key, missing) = (cert.display(), key.display(), missing.display());

    parse(&with(&format!(
        "tls: {{ mode: require, cert: {cert}, key: {key} }}"
    )));
    parse(&with(&format!("tls: {{ cert: {cert}, key: {key} }}")));
    assert_contains(
        &error(&with("tls: { mode: require }")),
        "tls.cert: tls.cert and tls.key are required when tls.mode is require",
    );
    assert_contains(
        &error(&with(&format!("tls: {{ cert: {cert} }}"))),
        "tls.key: must be set together with tls.cert",
    );
    assert_contains(
        &error(&with(&format!("tls: {{ key: {key} }}"))),
        "tls.cert: must be set together with tls.key",
    );
    assert_contains(
        &error(&with(&format!("tls: {{ cert: {missing}, key: {key} }}"))),
        &format!("tls.cert: file {missing} does not exist"),
    );
    assert_contains(
        &error(&with(&format!("tls: {{ cert: {cert}, key: {missing} }}"))),
        &format!("tls.key: file {missing} does not exist"),
    );
    assert_contains(
        &error(&with(&format!(
            "tls: {{ cert: {cert}, key: {} }}",
            dir.path().display()
        ))),
        "tls.key: ",
    );
    assert_contains(
        &error(&with("tls: { mode: allow, cert: 5 }")),
        "tls.cert: invalid type",
    );

    assert_contains(
        &error(&with("server_tls: { mode: verify-ca }")),
        "server_tls.ca_file: required when server_tls.mode is verify-ca",
    );
    assert_contains(
        &error(&with("server_tls: { mode: verify-full }")),
        "server_tls.ca_file: required when server_tls.mode is verify-full",
    );
    assert_contains(
        &error(&with(&format!(
            "server_tls: {{ mode: verify-ca, ca_file: {missing} }}"
        ))),
        &format!("server_tls.ca_file: file {missing} does not exist"),
    );
    let c = parse(&with(&format!(
        "server_tls: {{ mode: verify-ca, ca_file: {cert} }}"
    )));
    assert_eq!(c.server_tls.mode, ServerTlsMode::VerifyCa);
}

#[test]
fn yaml_scalars_are_not_reinterpreted() {
    // YAML 1.1 booleans and leading-zero numbers stay strings.
    let text = "
nodes: [{ name: \"on\", host: h, role: primary }]
users:
  - { name: \"yes\", password: 0123 }
  - { name: off, password: no }
";
    let c = parse(text);
    assert_eq!(c.nodes[0].name, "on");
    assert_eq!(c.users[0].password, "0123");
    assert_eq!(c.users[1].name, "off");
    assert_eq!(c.users[1].password, "no");
}

#[test]
fn primary_index_and_user_lookup() {
    let c = parse(
        "
nodes:
  - { name: r1, host: h, role: replica }
  - { name: r2, host: h, role: replica }
  - { name: p, host: h, role: primary }
users: [{ name: a, password: b }, { name: c, password: d }]
",
    );
    assert_eq!(c.primary_index(), 2);
    assert_eq!(c.user("c").map(|u| u.password.as_str()), Some("d"));
    assert_eq!(c.user("A"), None);
}

#[test]
fn monitor_and_consistency_settings() {
    let c = parse(&with(
        "monitor: { user: m, password: p, interval: 100ms, fail_after: 5 }\nrouting: { consistency: eventual, ryw_wait: 50ms, max_lag_bytes: 1MiB, max_lag: 3s }",
    ));
    let monitor = c.monitor.unwrap();
    assert_eq!(monitor.interval, Duration::from_millis(100));
    assert_eq!(monitor.timeout, Duration::from_secs(1));
    assert_eq!((monitor.fail_after, monitor.recover_after), (5, 2));
    assert_eq!(c.routing.consistency, Consistency::Eventual);
    assert_eq!(c.routing.ryw_wait, Duration::from_millis(50));
    assert_eq!(c.routing.max_lag_bytes, 1024 * 1024);
    assert_eq!(c.routing.max_lag, Duration::from_secs(3));
    let defaults = parse(MINIMAL).routing;
    assert_eq!(defaults.consistency, Consistency::ReadYourWrites);
    assert_eq!(defaults.max_lag_bytes, 16 * 1024 * 1024);

    for (extra, field) in [
        (
            "monitor: { user: m, password: p, interval: 0s }",
            "monitor.interval",
        ),
        (
            "monitor: { user: m, password: p, timeout: 0s }",
            "monitor.timeout",
        ),
        (
            "monitor: { user: m, password: p, fail_after: 0 }",
            "monitor.fail_after",
        ),
        (
            "monitor: { user: m, password: p, recover_after: 0 }",
            "monitor.recover_after",
        ),
        ("routing: { max_lag: 0s }", "routing.max_lag"),
        ("routing: { max_lag_bytes: 0 }", "routing.max_lag_bytes"),
        ("routing: { consistency: strong }", "routing.consistency"),
    ] {
        assert_contains(&error(&with(extra)), field);
    }
}

#[test]
fn failover_and_admin_settings() {
    let c = parse(MINIMAL);
    assert_eq!(c.failover.mode, FailoverMode::Auto);
    assert_eq!(c.failover.timeout, Duration::from_secs(3));
    assert_eq!(c.failover.client_wait, Duration::from_secs(10));
    assert_eq!(c.admin.token, None);
    assert!(c.nodes[0].promote);
    let c = parse(
        "nodes:\n  - { name: pg1, host: db1, role: primary }\n  - { name: pg2, host: db2, role: replica, promote: false, priority: 3 }\nusers: [{ name: app, password: secret }]\nfailover: { mode: external, timeout: 5s, rejoin_command: /bin/true }\nadmin: { token: s3cret }\n",
    );
    assert_eq!(c.failover.mode, FailoverMode::External);
    assert_eq!(c.failover.rejoin_command.as_deref(), Some("/bin/true"));
    assert_eq!((c.nodes[1].promote, c.nodes[1].priority), (false, 3));
    assert!(!format!("{:?}", c.admin).contains("s3cret"));
    for (extra, field) in [
        ("failover: { mode: sometimes }", "failover.mode"),
        ("failover: { timeout: 0s }", "failover.timeout"),
        ("failover: { client_wait: 0s }", "failover.client_wait"),
        ("admin: { password: x }", "admin"),
    ] {
        assert_contains(&error(&with(extra)), field);
    }
}

#[test]
fn an_md5_hash_as_password_needs_auth_method_md5() {
    let users = |password: &str| {
        format!(
            "nodes:\n  - {{ name: pg1, host: db1, role: primary }}\nusers:\n  - {{ name: app, password: \"{password}\" }}\n"
        )
    };
    let hash = "md5f7f4a1f9b24c4b3d4e8e1a1b2c3d4e5f";
    assert_contains(
        &error(&users(hash)),
        "users[0].password: is an md5 hash, which cannot check SCRAM-SHA-256 logins",
    );
    for method in ["md5", "trust"] {
        let c = parse(&format!("{}auth_method: {method}\n", users(hash)));
        assert_eq!(c.users[0].password, hash);
    }
    // Not 32 lowercase hex digits: a password like any other.
    for password in [
        "md5F7F4A1F9B24C4B3D4E8E1A1B2C3D4E5F",
        "md5f7f4a1f9b24c4b3d4e8e1a1b2c3d4e5",
    ] {
        assert_eq!(parse(&users(password)).users[0].password, password);
    }
}
