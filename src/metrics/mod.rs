//! What the data path counts: queries and transactions per node, role and
//! kind, query durations by role. Plain atomics indexed by node, so
//! counting costs one relaxed add; the admin side renders them (with the
//! gauges it reads from pools, sessions and the monitor) at scrape time.

pub mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use crate::config::Role;
use histogram::Histogram;

/// Index of a role in the per-role arrays.
pub fn role_index(role: Role) -> usize {
    match role {
        Role::Primary => 0,
        Role::Replica => 1,
    }
}

/// The roles in index order.
pub const ROLES: [Role; 2] = [Role::Primary, Role::Replica];

/// Counters per node; a session holds its node's while attached, so
/// counting is one relaxed add.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// `[role][0 = read, 1 = write]`
    pub queries: [[AtomicU64; 2]; 2],
    /// `[role]`
    pub transactions: [AtomicU64; 2],
}

impl NodeCounters {
    /// A query sent while the node had `role`.
    pub fn query(&self, role: Role, writes: bool) {
        self.queries[role_index(role)][usize::from(writes)].fetch_add(1, Ordering::Relaxed);
    }

    /// A transaction (or autocommit unit) finished while the node had `role`.
    pub fn transaction(&self, role: Role) {
        self.transactions[role_index(role)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the data path counts.
#[derive(Debug)]
pub struct Metrics {
    /// Indexed like the config's nodes; a reload may add nodes at the end.
    nodes: ArcSwap<Vec<Arc<NodeCounters>>>,
    /// Query durations by role.
    pub durations: [Histogram; 2],
}

impl Metrics {
    /// Counters for `nodes` nodes, all zero.
    pub fn new(nodes: usize) -> Metrics {
        let metrics = Metrics {
            nodes: ArcSwap::from_pointee(Vec::new()),
            durations: Default::default(),
        };
        metrics.grow(nodes);
        metrics
    }

    /// Makes room for `nodes` nodes (a reload added some).
    pub fn grow(&self, nodes: usize) {
        let current = self.nodes.load_full();
        if current.len() >= nodes {
            return;
        }
        let mut grown = (*current).clone();
        grown.resize_with(nodes, Default::default);
        self.nodes.store(Arc::new(grown));
    }

    /// The counters of `node`.
    pub fn node(&self, node: usize) -> Option<Arc<NodeCounters>> {
        self.nodes.load().get(node).cloned()
    }

    /// How long a query (up to its `ReadyForQuery`) took on a node of `role`.
    pub fn duration(&self, role: Role, took: Duration) {
        self.durations[role_index(role)].observe(took);
    }
}
