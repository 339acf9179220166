//! `/metrics`: the Prometheus text format, rendered at scrape time from the
//! data path's atomics, the pools, the client registry and the monitor's
//! snapshot. (Rendering it here keeps the data path free of a metrics
//! library's locks; tests parse the output with a real parser.)

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;

use crate::frontend::clients::ClientState;
use crate::metrics::histogram::BUCKETS;
use crate::metrics::ROLES;
use crate::monitor::NodeState;
use crate::proxy::Shared;

/// The text being written.
struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(shared: &Shared) -> String {
    let mut e = Exposition { out: String::new() };
    let topology = shared.topology.load_full();
    let config = shared.config();
    // Nodes a reload removed are left out; the others keep their indexes.
    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    let live: Vec<(usize, &str)> = config
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.removed)
        .map(|(i, n)| (i, n.name.as_str()))
        .collect();

    e.family("pgsplit_build_info", "gauge", "pgsplit's version.");
    e.sample(
        "pgsplit_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    let clients = shared.clients.list();
    e.family(
        "pgsplit_client_connections",
        "gauge",
        "Client connections by state (login: not logged in yet).",
    );
    for state in ClientState::ALL {
        let count = clients.iter().filter(|c| c.state() == state).count();
        e.sample(
            "pgsplit_client_connections",
            &[("state", state.as_str())],
            count,
        );
    }
    let logging_in = shared.client_count().saturating_sub(clients.len());
    e.sample(
        "pgsplit_client_connections",
        &[("state", "login")],
        logging_in,
    );

    let mut per_node: BTreeMap<usize, crate::backend::PoolStats> = BTreeMap::new();
    for (key, pool) in shared.pools.all() {
        let stats = pool.stats();
        let total = per_node.entry(key.node).or_default();
        total.size += stats.size;
        total.active += stats.active;
        total.idle += stats.idle;
        total.waiting += stats.waiting;
    }
    e.family(
        "pgsplit_server_connections",
        "gauge",
        "Server connections by node, role and state.",
    );
    for &(node, name) in &live {
        let stats = per_node.get(&node).copied().unwrap_or_default();
        let Some(status) = topology.nodes.get(node) else {
            continue;
        };
        let role = status.role.as_str();
        for (state, count) in [("active", stats.active), ("idle", stats.idle)] {
            e.sample(
                "pgsplit_server_connections",
                &[("node", name), ("role", role), ("state", state)],
                count,
            );
        }
    }
    e.family(
        "pgsplit_pool_waiting_clients",
        "gauge",
        "Clients waiting for a server connection, by node.",
    );
    for &(node, name) in &live {
        let waiting = per_node.get(&node).map_or(0, |s| s.waiting);
        e.sample("pgsplit_pool_waiting_clients", &[("node", name)], waiting);
    }

    e.family(
        "pgsplit_queries_total",
        "counter",
        "Statements sent to servers, by node, role and kind.",
    );
    for &(node, name) in &live {
        for (role_at, role) in ROLES.iter().map(|r| r.as_str()).enumerate() {
            for (kind_at, kind) in ["read", "write"].iter().enumerate() {
                let count = shared
                    .metrics
                    .node(node)
                    .map_or(0, |c| c.queries[role_at][kind_at].load(Ordering::Relaxed));
                e.sample(
                    "pgsplit_queries_total",
                    &[("node", name), ("role", role), ("type", kind)],
                    count,
                );
            }
        }
    }
    e.family(
        "pgsplit_transactions_total",
        "counter",
        "Transactions (and autocommit statements) finished, by node and role.",
    );
    for &(node, name) in &live {
        for (role_at, role) in ROLES.iter().map(|r| r.as_str()).enumerate() {
            let count = shared
                .metrics
                .node(node)
                .map_or(0, |c| c.transactions[role_at].load(Ordering::Relaxed));
            e.sample(
                "pgsplit_transactions_total",
                &[("node", name), ("role", role)],
                count,
            );
        }
    }
    e.family(
        "pgsplit_query_duration_seconds",
        "histogram",
        "Time from sending a query to its ReadyForQuery, by role.",
    );
    for (role_at, role) in ROLES.iter().map(|r| r.as_str()).enumerate() {
        let snapshot = shared.metrics.durations[role_at].snapshot();
        for (bound, count) in BUCKETS.iter().zip(snapshot.cumulative) {
            e.sample(
                "pgsplit_query_duration_seconds_bucket",
                &[("role", role), ("le", &bound.to_string())],
                count,
            );
        }
        e.sample(
            "pgsplit_query_duration_seconds_bucket",
            &[("role", role), ("le", "+Inf")],
            snapshot.count,
        );
        e.sample(
            "pgsplit_query_duration_seconds_sum",
            &[("role", role)],
            snapshot.sum_seconds,
        );
        e.sample(
            "pgsplit_query_duration_seconds_count",
            &[("role", role)],
            snapshot.count,
        );
    }

    e.family(
        "pgsplit_replication_lag_bytes",
        "gauge",
        "WAL a replica has yet to replay.",
    );
    for (node, status) in topology.configured().filter(|(i, _)| *i < names.len()) {
        if let Some(lag) = status.lag_bytes {
            e.sample(
                "pgsplit_replication_lag_bytes",
                &[("node", names[node])],
                lag,
            );
        }
    }
    e.family(
        "pgsplit_replication_lag_seconds",
        "gauge",
        "How long ago the primary wrote the oldest WAL a replica has not replayed.",
    );
    for (node, status) in topology.configured().filter(|(i, _)| *i < names.len()) {
        if let Some(lag) = status.lag_seconds {
            e.sample(
                "pgsplit_replication_lag_seconds",
                &[("node", names[node])],
                lag,
            );
        }
    }
    e.family(
        "pgsplit_node_up",
        "gauge",
        "1 when the node answered its last check.",
    );
    for (node, status) in topology.configured().filter(|(i, _)| *i < names.len()) {
        let up = u8::from(status.last_error.is_none() && status.state != NodeState::Down);
        e.sample(
            "pgsplit_node_up",
            &[("node", names[node]), ("role", status.role.as_str())],
            up,
        );
    }
    e.family(
        "pgsplit_node_state",
        "gauge",
        "1 for the state each node is in.",
    );
    for (node, status) in topology.configured().filter(|(i, _)| *i < names.len()) {
        for state in NodeState::ALL {
            let current = u8::from(status.state == state);
            e.sample(
                "pgsplit_node_state",
                &[("node", names[node]), ("state", state.as_str())],
                current,
            );
        }
    }

    let counters = &shared.router.counters;
    e.family(
        "pgsplit_routing_fallbacks_total",
        "counter",
        "Reads that could not go where routing first chose, by reason.",
    );
    for (reason, count) in counters.fallbacks() {
        e.sample(
            "pgsplit_routing_fallbacks_total",
            &[("reason", reason)],
            count,
        );
    }
    e.family(
        "pgsplit_classification_unparsed_total",
        "counter",
        "Units sent to the primary because a statement could not be parsed.",
    );
    e.sample(
        "pgsplit_classification_unparsed_total",
        &[],
        counters.unparsed.load(Ordering::Relaxed),
    );
    e.family(
        "pgsplit_failovers_total",
        "counter",
        "Failovers and switchovers pgsplit carried out.",
    );
    e.sample("pgsplit_failovers_total", &[], topology.failovers);
    e.family(
        "pgsplit_split_brain",
        "gauge",
        "1 while several nodes claim to be primary.",
    );
    e.sample("pgsplit_split_brain", &[], u8::from(topology.split_brain()));
    e.family(
        "pgsplit_node_events_total",
        "counter",
        "Node events (down, up, lagging, fenced, promoted, followed, rejoined, ...).",
    );
    for (event, count) in shared.events.snapshot() {
        e.sample("pgsplit_node_events_total", &[("event", event)], count);
    }
    e.family(
        "pgsplit_paused",
        "gauge",
        "1 while new transactions are held (PAUSE).",
    );
    e.sample("pgsplit_paused", &[], u8::from(shared.is_paused()));
    e.out
}
