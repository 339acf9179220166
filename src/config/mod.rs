//! Proxy configuration: the YAML schema, loading with `${VAR}` interpolation,
//! and validation.
//!
//! Loading runs in four steps so that every error can name the offending
//! field path (e.g. `nodes[1].port`):
//! 1. YAML text -> `serde_json::Value` with serde-saphyr (syntax errors carry
//!    line and column),
//! 2. `${VAR}` / `${VAR:-default}` / `$$` interpolation of every string scalar,
//! 3. `Value` -> [`Config`] through `serde_path_to_error`,
//! 4. semantic validation ([`validate`]).

mod admin;
mod auth_query;
mod duration;
mod environment;
mod error;
mod failover;
mod interpolate;
mod monitor;
mod number;
mod routing;
mod size;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use auth_query::AuthQueryConfig;
pub use environment::Variables;
pub use error::ConfigError;
pub use failover::{FailoverConfig, FailoverMode};
pub use monitor::MonitorConfig;
pub use routing::{Consistency, LoadBalance, PrimaryReads, Route, RouteRule, RoutingConfig};

/// Complete proxy configuration, as read from the YAML file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address (`host:port`) clients connect to.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Address (`host:port`) of the admin/metrics endpoint.
    #[serde(default = "defaults::admin_listen")]
    pub admin_listen: String,
    /// Threads that run client sessions, each with its own single-threaded
    /// runtime (see `workers.rs` for why); default half the cores.
    #[serde(
        default = "defaults::workers",
        deserialize_with = "number::deserialize"
    )]
    pub workers: usize,
    /// Upper bound on concurrently connected clients.
    #[serde(
        default = "defaults::max_client_connections",
        deserialize_with = "number::deserialize"
    )]
    pub max_client_connections: usize,
    /// Largest protocol message (in bytes) accepted from clients or servers.
    #[serde(
        default = "defaults::max_message_size",
        deserialize_with = "size::deserialize"
    )]
    pub max_message_size: usize,
    /// How long a client may take to complete startup and authentication.
    #[serde(default = "defaults::client_login_timeout", with = "duration")]
    pub client_login_timeout: Duration,
    /// How long to wait for a TCP connection to a PostgreSQL node.
    #[serde(default = "defaults::server_connect_timeout", with = "duration")]
    pub server_connect_timeout: Duration,
    /// How long shutdown lets transactions in progress finish before
    /// closing their clients.
    #[serde(default = "defaults::shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long a client waits for a pooled server connection.
    #[serde(default = "defaults::query_wait_timeout", with = "duration")]
    pub query_wait_timeout: Duration,
    /// A client idle outside a transaction this long is disconnected
    /// (PostgreSQL's `idle_session_timeout`); `0` never.
    #[serde(default, with = "duration")]
    pub idle_client_timeout: Duration,
    /// A client idle inside a transaction this long is disconnected and its
    /// server connection rolled back and reclaimed (PostgreSQL's
    /// `idle_in_transaction_session_timeout`); `0` never.
    #[serde(default, with = "duration")]
    pub idle_in_transaction_timeout: Duration,
    /// After a failed connection or login to a node, new connections to it
    /// fail at once with the same error for this long, instead of every
    /// client hammering a server that is down; `0` retries immediately.
    #[serde(default = "defaults::server_login_retry", with = "duration")]
    pub server_login_retry: Duration,
    /// A node that stops answering (host down, network cut) is given up
    /// on after about this long, even mid-query: keepalive probes and
    /// `TCP_USER_TIMEOUT` on server connections; `0` leaves the kernel's
    /// defaults (a cut can then hang a query for many minutes).
    #[serde(default = "defaults::server_tcp_user_timeout", with = "duration")]
    pub server_tcp_user_timeout: Duration,
    /// Failed logins from one address within `auth_failure_window` after
    /// which its logins are refused until the window passes; `0` no limit.
    #[serde(
        default = "defaults::auth_failure_limit",
        deserialize_with = "number::deserialize"
    )]
    pub auth_failure_limit: usize,
    /// The window `auth_failure_limit` counts in.
    #[serde(default = "defaults::auth_failure_window", with = "duration")]
    pub auth_failure_window: Duration,
    /// How clients authenticate to the proxy.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Server connection pool settings.
    #[serde(default)]
    pub pool: PoolConfig,
    /// TLS between clients and the proxy.
    #[serde(default)]
    pub tls: TlsConfig,
    /// TLS between the proxy and PostgreSQL nodes.
    #[serde(default)]
    pub server_tls: ServerTlsConfig,
    /// PostgreSQL nodes: exactly one primary plus any number of replicas.
    pub nodes: Vec<NodeConfig>,
    /// Users allowed to log in; the same credentials are used towards the nodes.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Looks up users not listed in `users` in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<AuthQueryConfig>,
    /// Credentials for health checks / replication-lag monitoring, if enabled.
    #[serde(default)]
    pub monitor: Option<MonitorConfig>,
    /// Read/write splitting.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Promotion of a replica when the primary fails.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// Access to the admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Log format and content.
    #[serde(default)]
    pub log: LogConfig,
}

/// How pgsplit logs (the level comes from `PGSPLIT_LOG`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    #[serde(default)]
    pub format: LogFormat,
    /// Log every statement's text (with its literals) at info level.
    #[serde(default)]
    pub queries: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, the default.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Server connection pool settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// When a server connection is returned to the pool.
    #[serde(default)]
    pub mode: PoolMode,
    /// Maximum number of server connections per (node, user) pair.
    #[serde(
        default = "defaults::pool_size",
        deserialize_with = "number::deserialize"
    )]
    pub size: u32,
    /// Idle server connections older than this are closed.
    #[serde(default = "defaults::idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Server connections are closed (when idle) after this age.
    #[serde(default = "defaults::max_lifetime", with = "duration")]
    pub max_lifetime: Duration,
    /// Pooled prepared statements kept per server connection; the least
    /// recently used are closed beyond this (each costs server memory).
    #[serde(
        default = "defaults::max_prepared_statements",
        deserialize_with = "number::deserialize"
    )]
    pub max_prepared_statements: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::default(),
            size: defaults::pool_size(),
            idle_timeout: defaults::idle_timeout(),
            max_lifetime: defaults::max_lifetime(),
            max_prepared_statements: defaults::max_prepared_statements(),
        }
    }
}

/// Pooling granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is held only for the duration of a transaction.
    #[default]
    Transaction,
    /// A server connection is held for the whole client session.
    Session,
}

/// Client authentication method offered by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (recommended).
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Legacy MD5 password hashing.
    #[serde(rename = "md5")]
    Md5,
    /// No client password check (the configured password is still used towards the servers).
    #[serde(rename = "trust")]
    Trust,
}

/// TLS settings for client connections.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Whether clients may or must use TLS.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM certificate chain presented to clients.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Client-side TLS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Refuse TLS requests from clients.
    Disable,
    /// Accept TLS when a certificate is configured, plaintext otherwise.
    #[default]
    Allow,
    /// Reject clients that do not use TLS.
    Require,
}

/// TLS settings for connections to PostgreSQL nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// How strictly TLS is used and verified towards the nodes.
    #[serde(default)]
    pub mode: ServerTlsMode,
    /// PEM CA bundle used by the `verify-*` modes.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Server-side TLS policy (same meaning as libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Never use TLS.
    #[default]
    Disable,
    /// Use TLS if the server supports it, without verification.
    Prefer,
    /// Require TLS, without certificate verification.
    Require,
    /// Require TLS and verify the certificate chain against `ca_file`.
    VerifyCa,
    /// Like `verify-ca`, and also check that the certificate matches the host name.
    VerifyFull,
}

/// One PostgreSQL node behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name used in logs and admin output.
    pub name: String,
    /// Host name or IP address, or (an absolute path, as libpq reads it)
    /// the directory of the node's Unix socket, for a server on this host.
    pub host: String,
    /// TCP port.
    #[serde(
        default = "defaults::node_port",
        deserialize_with = "number::deserialize"
    )]
    pub port: u16,
    /// Whether writes (primary) or only reads (replica) may go to this node.
    pub role: Role,
    /// Share of reads relative to other nodes (load balancing), at least 1.
    #[serde(
        default = "defaults::node_weight",
        deserialize_with = "number::deserialize"
    )]
    pub weight: u32,
    /// Labels routing rules can select replicas by (e.g. `analytics`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether failover may promote this node (`false` for a delayed or
    /// remote replica).
    #[serde(default = "defaults::promote")]
    pub promote: bool,
    /// Among equally caught-up replicas, the highest priority is promoted.
    #[serde(default, deserialize_with = "number::deserialize")]
    pub priority: u32,
    /// Taken out by a reload: the node keeps its place (indexes stay
    /// stable while pgsplit runs) but gets no traffic and no checks.
    #[serde(skip)]
    pub removed: bool,
}

/// Role of a node in read/write splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives writes and transactions; exactly one per configuration.
    Primary,
    /// Receives read-only queries.
    Replica,
}

/// A user allowed to connect; the credentials are also used to log in to the nodes.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// PostgreSQL role name.
    pub name: String,
    /// Clear-text password (usually supplied via `${VAR}`), or a SCRAM
    /// verifier (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`)
    /// or md5 hash (`md5` and 32 hex digits, for `auth_method: md5`), as
    /// `pg_authid.rolpassword` holds them, so no password is stored.
    pub password: String,
    /// Most clients this user may have connected at once (PostgreSQL's
    /// `CONNECTION LIMIT`); unset: only `max_client_connections` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Role {
    /// The name used in the config, metrics, the API and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

impl Config {
    /// Reads and validates a YAML file; `${VAR}` is taken from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_layered(Some(path), &std::env::vars().collect())
    }

    /// The configuration from a file (or, without one, from `DB_*`
    /// variables), with `PGSPLIT_*` overrides from `vars` applied and
    /// `${VAR}` resolved from `vars`.
    pub fn load_layered(path: Option<&Path>, vars: &Variables) -> Result<Config, ConfigError> {
        let mut value = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_path_buf(),
                    error,
                })?;
                parse_yaml(&text)?
            }
            None => environment::from_database_variables(vars)?.ok_or_else(|| {
                ConfigError::invalid(
                    "",
                    "no configuration: give --config FILE, or set PGSPLIT_CONFIG, or DB_HOST and DB_USERNAME",
                )
            })?,
        };
        environment::apply_overrides(&mut value, vars)?;
        Config::from_value(value, &|name| vars.get(name).cloned())
    }

    /// Parses YAML text; `env` resolves `${VAR}` (so tests need not touch the real environment).
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::from_value(parse_yaml(text)?, env)
    }

    /// Interpolates, deserializes and validates a parsed document.
    fn from_value(
        mut value: serde_json::Value,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        interpolate::interpolate_value(&mut value, "", env)?;
        let config: Config =
            serde_path_to_error::deserialize(value).map_err(ConfigError::from_deserialize)?;
        validate::validate(&config)?;
        Ok(config)
    }

    /// The primary node (validation guarantees exactly one) — returns its index in `nodes`.
    ///
    /// For a hand-built, unvalidated `Config` without a primary this returns 0.
    pub fn primary_index(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| n.role == Role::Primary)
            .unwrap_or(0)
    }

    /// The effective configuration as JSON with passwords and tokens
    /// replaced, for `pgsplit check`, `/api/config` and `SHOW CONFIG`.
    pub fn redacted(&self) -> serde_json::Value {
        fn redact(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, field) in map.iter_mut() {
                        if matches!(key.as_str(), "password" | "token") && !field.is_null() {
                            *field = serde_json::Value::String("<redacted>".to_owned());
                        } else {
                            redact(field);
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
                _ => {}
            }
        }
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut value);
        if let Some(serde_json::Value::Array(nodes)) = value.get_mut("nodes") {
            let mut removed = self.nodes.iter().map(|n| n.removed);
            nodes.retain(|_| !removed.next().unwrap_or(false));
        }
        value
    }

    /// Looks up a configured user by name (used during client authentication).
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// YAML text to a JSON value whose top level is a mapping.
fn parse_yaml(text: &str) -> Result<serde_json::Value, ConfigError> {
    let options = serde_saphyr::options! {
        // `yes`/`no`/`on`/`off` stay strings (YAML 1.2 core schema).
        strict_booleans: true,
        // `0123` stays a string (e.g. a password), not the number 123.
        leading_zero_numbers_as_strings: true,
        // One-line errors ("... at line L, column C") instead of a snippet.
        with_snippet: false,
    };
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Syntax {
            // Drop advice aimed at the programmer, not the operator.
            message: e
                .to_string()
                .replace(", set DuplicateKeyPolicy in Options if acceptable", ""),
        })?;
    match &value {
        serde_json::Value::Object(_) => Ok(value),
        serde_json::Value::Null => Err(ConfigError::invalid("", "the configuration is empty")),
        other => Err(ConfigError::invalid(
            "",
            format!(
                "the top level must be a mapping of settings, found {}",
                error::kind_of(other)
            ),
        )),
    }
}

/// Default values, shared by serde and the `Default` impls.
mod defaults {
    use std::time::Duration;

    pub(super) fn listen() -> String {
        "127.0.0.1:6432".to_owned()
    }
    pub(super) fn admin_listen() -> String {
        "127.0.0.1:9930".to_owned()
    }
    pub(super) fn max_client_connections() -> usize {
        1000
    }
    pub(super) fn max_message_size() -> usize {
        64 * 1024 * 1024
    }
    pub(super) fn client_login_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub(super) fn server_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn query_wait_timeout() -> Duration {
        Duration::from_secs(30)
    }
    /// Half the cores: the proxy shares machines with PostgreSQL and its
    /// clients, and one worker already forwards tens of thousands of
    /// transactions per second.
    pub(super) fn workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }
    pub(super) fn server_login_retry() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn server_tcp_user_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn auth_failure_limit() -> usize {
        10
    }
    pub(super) fn auth_failure_window() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn pool_size() -> u32 {
        20
    }
    pub(super) fn idle_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub(super) fn max_lifetime() -> Duration {
        Duration::from_secs(60 * 60)
    }
    pub(super) fn node_port() -> u16 {
        5432
    }
    pub(super) fn max_prepared_statements() -> usize {
        200
    }
    pub(super) fn node_weight() -> u32 {
        1
    }
    pub(super) fn promote() -> bool {
        true
    }
}
