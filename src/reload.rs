//! Reloading the configuration (`SIGHUP`, `POST /api/reload`, `RELOAD` in
//! the console) without dropping a client.
//!
//! The new file is read and validated first; any error is reported (naming
//! the field) and the configuration in force stays. What the running
//! process built from its start-up configuration (listening sockets, the
//! worker threads, the server TLS mode, the monitor's credentials and
//! timing) cannot change this way. Pools take new sizes and timeouts in
//! place; a new `pool.mode` applies to sessions that start after it. Certificates, keys and the CA file are read again.
//! Nodes keep their place in the list while pgsplit runs, so nothing
//! indexed by node needs to move: a node still present (same name, host and
//! port) keeps its place, a removed one stays as a placeholder that gets no
//! traffic, and new ones are added at the end.

use std::sync::Arc;

use crate::config::{Config, NodeConfig, Variables};
use crate::monitor::Request;
use crate::proxy::{client_tls, pool_settings, Shared};

/// Re-reads the configuration and applies it; says what changed.
pub async fn reload(shared: &Shared) -> Result<String, String> {
    let _turn = shared.reloading.lock().await;
    let vars: Variables = std::env::vars().collect();
    let new = Config::load_layered(shared.config_path(), &vars).map_err(|e| e.to_string())?;
    let old = shared.config();
    unchanged_at_run_time(&old, &new)?;
    let primary = shared.topology.load().primary;
    let (arranged, added, removed) = arrange_nodes(&old, new, primary)?;
    // Certificates are read again even if their paths did not change:
    // rotation usually replaces the files in place.
    let client_tls = client_tls(&arranged).map_err(|e| format!("{e:#}"))?;
    let server_tls =
        crate::backend::tls::from_config(&arranged.server_tls).map_err(|e| format!("{e:#}"))?;
    if let (Some(in_force), Some(fresh)) = (&shared.server_tls, &server_tls) {
        in_force.replace_with(fresh);
    }
    shared.tls.store(client_tls.map(Arc::new));
    let arranged = Arc::new(arranged);
    let changed_users: Vec<&str> = arranged
        .users
        .iter()
        .filter(|user| {
            old.user(&user.name)
                .is_none_or(|previous| previous.password != user.password)
        })
        .map(|user| user.name.as_str())
        .collect();
    shared.replace_config(arranged.clone());
    for user in changed_users {
        let secret = shared.credentials(user).and_then(|c| c.server_secret());
        shared.pools.set_secret(user, secret);
    }
    shared
        .pools
        .apply(pool_settings(&arranged, shared.server_tls.clone()));
    shared.router.reload(&arranged);
    shared.metrics.grow(arranged.nodes.len());
    if arranged.monitor.is_some() {
        shared
            .monitor
            .ask(Request::Reload {
                config: arranged.clone(),
            })
            .await?;
    } else {
        let mut topology = (*shared.topology.load_full()).clone();
        topology.follow_config(&arranged);
        shared.topology.store(Arc::new(topology));
    }
    for (index, node) in arranged.nodes.iter().enumerate() {
        if node.removed {
            shared.pools.close_idle(index);
        }
    }
    let summary = format!(
        "configuration reloaded ({} nodes added, {} removed)",
        added.len(),
        removed.len()
    );
    tracing::info!(?added, ?removed, "{summary}");
    Ok(summary)
}

/// Refuses changes to what was built at start-up.
fn unchanged_at_run_time(old: &Config, new: &Config) -> Result<(), String> {
    let fixed = [
        ("listen", old.listen != new.listen),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("workers", old.workers != new.workers),
        (
            "server_tls.mode",
            old.server_tls.mode != new.server_tls.mode,
        ),
        ("monitor", old.monitor != new.monitor),
    ];
    match fixed.iter().find(|(_, changed)| *changed) {
        Some((key, _)) => Err(format!(
            "{key}: cannot change while pgsplit runs (restart it); the configuration in force stays"
        )),
        None => Ok(()),
    }
}

/// Same node: same name at the same address.
fn same_node(a: &NodeConfig, b: &NodeConfig) -> bool {
    a.name == b.name && a.host == b.host && a.port == b.port
}

/// `new` with its nodes placed where the running process has them; returns
/// the names added and removed.
fn arrange_nodes(
    old: &Config,
    mut new: Config,
    primary: Option<usize>,
) -> Result<(Config, Vec<String>, Vec<String>), String> {
    let mut incoming = std::mem::take(&mut new.nodes);
    let mut nodes = Vec::with_capacity(old.nodes.len() + incoming.len());
    let mut removed = Vec::new();
    for (index, current) in old.nodes.iter().enumerate() {
        match incoming.iter().position(|n| same_node(n, current)) {
            Some(found) if !current.removed => nodes.push(incoming.remove(found)),
            _ => {
                if !current.removed {
                    if Some(index) == primary {
                        return Err(format!(
                            "nodes: {} is the primary and cannot be removed (switch over first)",
                            current.name
                        ));
                    }
                    removed.push(current.name.clone());
                }
                nodes.push(NodeConfig {
                    removed: true,
                    ..current.clone()
                });
            }
        }
    }
    let added = incoming.iter().map(|n| n.name.clone()).collect();
    nodes.extend(incoming);
    new.nodes = nodes;
    Ok((new, added, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(nodes: &str) -> Config {
        let yaml = format!("nodes:\n{nodes}users: [{{ name: u, password: p }}]\n");
        Config::from_yaml(&yaml, &|_| None).unwrap()
    }

    #[test]
    fn nodes_keep_their_places() {
        let old = config("  - { name: a, host: h, role: primary }\n  - { name: b, host: h, role: replica }\n  - { name: c, host: h, role: replica }\n");
        let new = config("  - { name: a, host: h, role: primary }\n  - { name: d, host: h, role: replica }\n  - { name: c, host: h, role: replica, weight: 5 }\n");
        let (arranged, added, removed) = arrange_nodes(&old, new, Some(0)).unwrap();
        let names: Vec<(&str, bool)> = arranged
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.removed))
            .collect();
        assert_eq!(
            names,
            [("a", false), ("b", true), ("c", false), ("d", false)]
        );
        assert_eq!(arranged.nodes[2].weight, 5);
        assert_eq!(
            (added, removed),
            (vec!["d".to_owned()], vec!["b".to_owned()])
        );
        // A node that moved to another address is a new node.
        let moved = config("  - { name: a, host: h, role: primary }\n  - { name: b, host: other, role: replica }\n  - { name: c, host: h, role: replica }\n");
        let (arranged, _, removed) = arrange_nodes(&old, moved, Some(0)).unwrap();
        assert_eq!(arranged.nodes.len(), 4);
        assert_eq!(removed, ["b"]);
    }

    #[test]
    fn the_primary_and_start_up_settings_stay() {
        let old = config(
            "  - { name: a, host: h, role: primary }\n  - { name: b, host: h, role: replica }\n",
        );
        let without_primary = config("  - { name: b, host: h, role: primary }\n");
        let error = arrange_nodes(&old, without_primary, Some(0)).unwrap_err();
        assert!(error.contains("a is the primary"), "{error}");
        let mut moved = old.clone();
        moved.listen = "127.0.0.1:1".into();
        assert!(unchanged_at_run_time(&old, &moved)
            .unwrap_err()
            .starts_with("listen"));
        assert!(unchanged_at_run_time(&old, &old.clone()).is_ok());
        // Pools are resized in place, and a new mode applies to new sessions.
        let mut resized = old.clone();
        resized.pool.size = 3;
        resized.pool.mode = crate::config::PoolMode::Session;
        resized.server_tcp_user_timeout = std::time::Duration::from_secs(5);
        assert!(unchanged_at_run_time(&old, &resized).is_ok());
    }
}
