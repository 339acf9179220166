//! Semantic checks that serde cannot express; each error names its field.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{AuthMethod, ClientTlsMode, Config, ConfigError, Role, ServerTlsMode};
use crate::protocol::md5::Md5Hash;
use crate::protocol::scram::{ScramVerifier, SCRAM_PREFIX};

const MIN_MESSAGE_SIZE: usize = 1024;
const MAX_MESSAGE_SIZE: usize = 1 << 30;
const MAX_POOL_SIZE: u32 = 10_000;
const MAX_WORKERS: usize = 1024;

/// Checks a deserialized configuration; returns the first problem found.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    check_listen("listen", &config.listen)?;
    check_listen("admin_listen", &config.admin_listen)?;
    if config.listen == config.admin_listen && !config.listen.ends_with(":0") {
        return Err(ConfigError::invalid(
            "admin_listen",
            format!("must differ from listen (both are {:?})", config.listen),
        ));
    }
    if !(1..=MAX_WORKERS).contains(&config.workers) {
        return Err(ConfigError::invalid(
            "workers",
            format!(
                "must be between 1 and {MAX_WORKERS}, got {}",
                config.workers
            ),
        ));
    }
    if config.max_client_connections == 0 {
        return Err(ConfigError::invalid(
            "max_client_connections",
            "must be greater than zero",
        ));
    }
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&config.max_message_size) {
        return Err(ConfigError::invalid(
            "max_message_size",
            format!(
                "must be between 1kB (1024) and 1GiB ({MAX_MESSAGE_SIZE}) bytes, got {}",
                config.max_message_size
            ),
        ));
    }
    let durations = [
        ("client_login_timeout", config.client_login_timeout),
        ("server_connect_timeout", config.server_connect_timeout),
        ("query_wait_timeout", config.query_wait_timeout),
        ("shutdown_timeout", config.shutdown_timeout),
        ("auth_failure_window", config.auth_failure_window),
        ("pool.idle_timeout", config.pool.idle_timeout),
        ("pool.max_lifetime", config.pool.max_lifetime),
    ];
    for (path, value) in durations {
        if value == Duration::ZERO {
            return Err(ConfigError::invalid(path, "must be greater than zero"));
        }
    }
    if !(1..=MAX_POOL_SIZE).contains(&config.pool.size) {
        return Err(ConfigError::invalid(
            "pool.size",
            format!(
                "must be between 1 and {MAX_POOL_SIZE}, got {}",
                config.pool.size
            ),
        ));
    }
    if config.pool.max_prepared_statements == 0 {
        return Err(ConfigError::invalid(
            "pool.max_prepared_statements",
            "must be at least 1",
        ));
    }
    check_tls(config)?;
    check_nodes(config)?;
    check_routing(config)?;
    check_users(config)?;
    check_monitor(config)?;
    for (i, name) in config.admin.users.iter().enumerate() {
        if config.user(name).is_none() {
            return Err(ConfigError::invalid(
                format!("admin.users[{i}]"),
                format!("{name:?} is not one of the configured users"),
            ));
        }
    }
    Ok(())
}

/// `host:port`, split at the last ':'; IPv6 hosts must be bracketed.
fn check_listen(path: &str, addr: &str) -> Result<(), ConfigError> {
    let err = |why: &str| ConfigError::invalid(path, format!("invalid address {addr:?}: {why}"));
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| err("expected host:port, e.g. \"127.0.0.1:6432\""))?;
    if host.trim().is_empty() {
        return Err(err(
            "the host is empty (use 0.0.0.0 to listen on all interfaces)",
        ));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(err(
            "IPv6 addresses must be in brackets, e.g. \"[::1]:6432\"",
        ));
    }
    if port.parse::<u16>().is_err() {
        return Err(err("the port must be a number from 0 to 65535"));
    }
    Ok(())
}

fn check_tls(config: &Config) -> Result<(), ConfigError> {
    let tls = &config.tls;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "tls.key",
                "must be set together with tls.cert",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "tls.cert",
                "must be set together with tls.key",
            ))
        }
        (None, None) if tls.mode == ClientTlsMode::Require => {
            return Err(ConfigError::invalid(
                "tls.cert",
                "tls.cert and tls.key are required when tls.mode is require",
            ))
        }
        _ => {}
    }
    if let Some(cert) = &tls.cert {
        check_file("tls.cert", cert)?;
    }
    if let Some(key) = &tls.key {
        check_file("tls.key", key)?;
    }

    let server = &config.server_tls;
    match (server.mode, &server.ca_file) {
        (ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull, None) => {
            let mode = if server.mode == ServerTlsMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            };
            Err(ConfigError::invalid(
                "server_tls.ca_file",
                format!("required when server_tls.mode is {mode}"),
            ))
        }
        (_, Some(ca)) => check_file("server_tls.ca_file", ca),
        _ => Ok(()),
    }
}

fn check_file(path: &str, file: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            path,
            format!("{} is not a regular file", file.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::invalid(
            path,
            format!("file {} does not exist", file.display()),
        )),
        Err(e) => Err(ConfigError::invalid(
            path,
            format!("cannot access {}: {e}", file.display()),
        )),
    }
}

fn check_nodes(config: &Config) -> Result<(), ConfigError> {
    if config.nodes.is_empty() {
        return Err(ConfigError::invalid(
            "nodes",
            "at least one node (the primary) must be configured",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, node) in config.nodes.iter().enumerate() {
        require_non_empty(&format!("nodes[{i}].name"), &node.name)?;
        if seen.insert(node.name.as_str(), i).is_some() {
            return Err(ConfigError::invalid(
                format!("nodes[{i}].name"),
                format!("duplicate node name {:?}", node.name),
            ));
        }
        require_non_empty(&format!("nodes[{i}].host"), &node.host)?;
        if node.port == 0 {
            return Err(ConfigError::invalid(
                format!("nodes[{i}].port"),
                "must be between 1 and 65535",
            ));
        }
        if node.weight == 0 {
            return Err(ConfigError::invalid(
                format!("nodes[{i}].weight"),
                "must be at least 1",
            ));
        }
    }
    let primaries = config
        .nodes
        .iter()
        .filter(|n| n.role == Role::Primary)
        .count();
    if primaries != 1 {
        return Err(ConfigError::invalid(
            "nodes",
            format!("exactly one node must have role primary (found {primaries})"),
        ));
    }
    Ok(())
}

fn check_routing(config: &Config) -> Result<(), ConfigError> {
    for (i, rule) in config.routing.rules.iter().enumerate() {
        if rule.user.is_none() && rule.application_name.is_none() {
            return Err(ConfigError::invalid(
                format!("routing.rules[{i}]"),
                "needs a user or an application_name to match",
            ));
        }
        if let Some(tag) = &rule.tag {
            if !config.nodes.iter().any(|n| n.tags.contains(tag)) {
                return Err(ConfigError::invalid(
                    format!("routing.rules[{i}].tag"),
                    format!("no node has the tag {tag:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_monitor(config: &Config) -> Result<(), ConfigError> {
    if config.routing.max_lag == Duration::ZERO {
        return Err(ConfigError::invalid(
            "routing.max_lag",
            "must be greater than zero",
        ));
    }
    if config.routing.max_lag_bytes == 0 {
        return Err(ConfigError::invalid(
            "routing.max_lag_bytes",
            "must be greater than zero",
        ));
    }
    for (path, value) in [
        ("failover.timeout", config.failover.timeout),
        ("failover.client_wait", config.failover.client_wait),
        ("failover.follow_timeout", config.failover.follow_timeout),
    ] {
        if value == Duration::ZERO {
            return Err(ConfigError::invalid(path, "must be greater than zero"));
        }
    }
    let Some(monitor) = &config.monitor else {
        return Ok(());
    };
    require_non_empty("monitor.user", &monitor.user)?;
    if monitor.password.is_empty() {
        return Err(ConfigError::invalid(
            "monitor.password",
            "must not be empty",
        ));
    }
    for (path, value) in [
        ("monitor.interval", monitor.interval),
        ("monitor.timeout", monitor.timeout),
    ] {
        if value == Duration::ZERO {
            return Err(ConfigError::invalid(path, "must be greater than zero"));
        }
    }
    for (path, value) in [
        ("monitor.fail_after", monitor.fail_after),
        ("monitor.recover_after", monitor.recover_after),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(path, "must be at least 1"));
        }
    }
    Ok(())
}

fn check_users(config: &Config) -> Result<(), ConfigError> {
    if config.users.is_empty() && config.auth_query.is_none() {
        return Err(ConfigError::invalid(
            "users",
            "at least one user must be configured (or auth_query)",
        ));
    }
    if let Some(auth_query) = &config.auth_query {
        if !auth_query.query.contains("$1") {
            return Err(ConfigError::invalid(
                "auth_query.query",
                "must take the user name as $1",
            ));
        }
        match (&auth_query.user, &auth_query.password, &config.monitor) {
            (Some(_), Some(_), _) | (None, None, Some(_)) => {}
            (Some(_), None, _) => {
                return Err(ConfigError::invalid(
                    "auth_query.password",
                    "is required with auth_query.user",
                ))
            }
            (None, Some(_), _) => {
                return Err(ConfigError::invalid(
                    "auth_query.user",
                    "is required with auth_query.password",
                ))
            }
            (None, None, None) => {
                return Err(ConfigError::invalid(
                    "auth_query.user",
                    "is required without a monitor section (whose user runs the query otherwise)",
                ))
            }
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, user) in config.users.iter().enumerate() {
        require_non_empty(&format!("users[{i}].name"), &user.name)?;
        if seen.insert(user.name.as_str(), i).is_some() {
            return Err(ConfigError::invalid(
                format!("users[{i}].name"),
                format!("duplicate user name {:?}", user.name),
            ));
        }
        // Required even with auth_method trust: the proxy logs in to the nodes with it.
        if user.password.is_empty() {
            return Err(ConfigError::invalid(
                format!("users[{i}].password"),
                "must not be empty",
            ));
        }
        if user.password.starts_with(SCRAM_PREFIX) {
            ScramVerifier::parse(&user.password)
                .map_err(|problem| ConfigError::invalid(format!("users[{i}].password"), problem))?;
        }
        if config.auth_method == AuthMethod::ScramSha256 && Md5Hash::parse(&user.password).is_some()
        {
            return Err(ConfigError::invalid(
                format!("users[{i}].password"),
                "is an md5 hash, which cannot check SCRAM-SHA-256 logins: \
                 give the password or a SCRAM verifier, or set auth_method: md5",
            ));
        }
        if user.max_connections == Some(0) {
            return Err(ConfigError::invalid(
                format!("users[{i}].max_connections"),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
    }
    Ok(())
}

fn require_non_empty(path: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(path, "must not be empty"));
    }
    Ok(())
}
