//! Configuration from the environment, so the settings an application
//! already has work as they are:
//! - without a config file, Laravel-style `DB_HOST`, `DB_PORT`,
//!   `DB_USERNAME`, `DB_PASSWORD`, `DB_READ_HOST_1..N` (or a comma-separated
//!   `DB_READ_HOST`), `DB_READ_PORT`, `DB_STICKY` and `DB_SSLMODE` describe
//!   the cluster;
//! - with or without a file, every `PGSPLIT_<KEY>` variable overrides a key,
//!   `__` separating levels: `PGSPLIT_LISTEN`, `PGSPLIT_ROUTING__CONSISTENCY`,
//!   `PGSPLIT_NODES__1__WEIGHT`. Values are strings (`true`/`false` are
//!   booleans, and a value starting with `[` or `{` is read as YAML).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::ConfigError;

/// `PGSPLIT_` variables that are not config keys.
const NOT_KEYS: [&str; 3] = ["PGSPLIT_CONFIG", "PGSPLIT_LOG", "PGSPLIT_PG_BIN"];

/// The environment, sorted (so overrides apply in a stable order).
pub type Variables = BTreeMap<String, String>;

/// A config built from `DB_*` variables, or `None` without `DB_HOST`.
pub(super) fn from_database_variables(vars: &Variables) -> Result<Option<Value>, ConfigError> {
    let Some(host) = vars.get("DB_HOST") else {
        return Ok(None);
    };
    let get = |name: &str| vars.get(name).map(String::as_str);
    let port = get("DB_PORT").unwrap_or("5432");
    let read_port = get("DB_READ_PORT").unwrap_or(port);
    let user = get("DB_USERNAME")
        .ok_or_else(|| ConfigError::invalid("DB_USERNAME", "must be set along with DB_HOST"))?;
    let password = get("DB_PASSWORD").unwrap_or_default();
    let mut replicas: Vec<&str> = get("DB_READ_HOST")
        .map(|hosts| {
            hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    replicas.extend((1..).map_while(|i| get(&format!("DB_READ_HOST_{i}"))));
    let mut nodes =
        vec![json!({ "name": "primary", "host": host, "port": port, "role": "primary" })];
    for (i, replica) in replicas.iter().enumerate() {
        nodes.push(json!({
            "name": format!("replica{}", i + 1),
            "host": replica,
            "port": read_port,
            "role": "replica",
        }));
    }
    let mut config = json!({
        "nodes": nodes,
        "users": [{ "name": user, "password": password }],
        "monitor": { "user": user, "password": password },
    });
    if let Some(sticky) = get("DB_STICKY") {
        let consistency = match sticky.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => "read_your_writes",
            "false" | "0" | "no" | "off" => "eventual",
            _ => {
                return Err(ConfigError::invalid(
                    "DB_STICKY",
                    format!("expected true or false, got {sticky:?}"),
                ))
            }
        };
        config["routing"] = json!({ "consistency": consistency });
    }
    if let Some(mode) = get("DB_SSLMODE") {
        // libpq's `allow` tries plaintext first; `prefer` is the nearest.
        let mode = if mode == "allow" { "prefer" } else { mode };
        config["server_tls"] = json!({ "mode": mode });
    }
    Ok(Some(config))
}

/// Applies `PGSPLIT_*` overrides to `config`.
pub(super) fn apply_overrides(config: &mut Value, vars: &Variables) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(key) = name.strip_prefix("PGSPLIT_") else {
            continue;
        };
        if NOT_KEYS.contains(&name.as_str()) || key.is_empty() {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        let value = parse_value(name, raw)?;
        set(config, &path, value).map_err(|message| ConfigError::invalid(name, message))?;
    }
    Ok(())
}

fn parse_value(name: &str, raw: &str) -> Result<Value, ConfigError> {
    match raw.trim() {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        text if text.starts_with('[') || text.starts_with('{') => serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::invalid(name, format!("not valid YAML: {e}"))),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// Sets `value` at `path`, creating mappings on the way; a number indexes
/// an existing list.
fn set(target: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *target = value;
        return Ok(());
    };
    if target.is_null() {
        *target = Value::Object(Map::new());
    }
    let slot = match target {
        Value::Object(map) => map.entry(first.clone()).or_insert(Value::Null),
        Value::Array(items) => {
            let index: usize = first
                .parse()
                .map_err(|_| format!("{first:?} is not a list index"))?;
            let len = items.len();
            items
                .get_mut(index)
                .ok_or_else(|| format!("index {index} is past the end of a list of {len}"))?
        }
        _ => {
            return Err(format!(
                "cannot set {first:?} inside a value that is not a mapping"
            ))
        }
    };
    set(slot, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn laravel_variables_describe_the_cluster() {
        let v = vars(&[
            ("DB_HOST", "db-primary"),
            ("DB_PORT", "5433"),
            ("DB_USERNAME", "app"),
            ("DB_PASSWORD", "secret"),
            ("DB_READ_HOST_1", "db-r1"),
            ("DB_READ_HOST_2", "db-r2"),
            ("DB_READ_PORT", "6543"),
            ("DB_STICKY", "false"),
            ("DB_SSLMODE", "require"),
        ]);
        let config = from_database_variables(&v).unwrap().unwrap();
        assert_eq!(config["nodes"][0]["host"], "db-primary");
        assert_eq!(config["nodes"][0]["port"], "5433");
        assert_eq!(config["nodes"][2]["host"], "db-r2");
        assert_eq!(config["nodes"][2]["port"], "6543");
        assert_eq!(config["users"][0]["password"], "secret");
        assert_eq!(config["routing"]["consistency"], "eventual");
        assert_eq!(config["server_tls"]["mode"], "require");
        assert_eq!(from_database_variables(&vars(&[])).unwrap(), None);
        assert!(from_database_variables(&vars(&[("DB_HOST", "h")])).is_err());
    }

    #[test]
    fn pgsplit_variables_override_nested_keys() {
        let mut config = json!({ "nodes": [{ "name": "a" }, { "name": "b" }] });
        let v = vars(&[
            ("PGSPLIT_LISTEN", "0.0.0.0:6432"),
            ("PGSPLIT_ROUTING__CONSISTENCY", "eventual"),
            ("PGSPLIT_NODES__1__WEIGHT", "3"),
            ("PGSPLIT_NODES__1__PROMOTE", "false"),
            ("PGSPLIT_ROUTING__READ_ONLY_FUNCTIONS", "[f, g]"),
            ("PGSPLIT_CONFIG", "/etc/pgsplit.yaml"),
            ("OTHER", "x"),
        ]);
        apply_overrides(&mut config, &v).unwrap();
        assert_eq!(config["listen"], "0.0.0.0:6432");
        assert_eq!(config["routing"]["consistency"], "eventual");
        assert_eq!(config["nodes"][1]["weight"], "3");
        assert_eq!(config["nodes"][1]["promote"], false);
        assert_eq!(config["routing"]["read_only_functions"], json!(["f", "g"]));
        assert!(config.get("config").is_none());
        let error =
            apply_overrides(&mut config, &vars(&[("PGSPLIT_NODES__5__WEIGHT", "1")])).unwrap_err();
        assert!(
            error.to_string().contains("PGSPLIT_NODES__5__WEIGHT"),
            "{error}"
        );
    }
}
