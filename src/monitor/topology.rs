//! The picture of the cluster the monitor publishes: each node's role,
//! health and replication position. The data path reads it through an
//! `ArcSwap` without locks; the monitor replaces it whole every round.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, Role};

/// Whether a node may take traffic, as far as the monitor can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Answering checks; a replica within the lag limits.
    Up,
    /// `monitor.fail_after` checks in a row failed.
    Down,
    /// A replica too far behind the primary to serve reads.
    Lagging,
}

impl NodeState {
    /// The name used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Lagging => "lagging",
        }
    }
}

/// One row of the primary's `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationRow {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sent_lsn: Option<u64>,
    pub write_lsn: Option<u64>,
    pub flush_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub write_lag_seconds: Option<f64>,
    pub flush_lag_seconds: Option<f64>,
    pub replay_lag_seconds: Option<f64>,
    pub sync_state: Option<String>,
}

/// What is known about one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    /// The role the server reports (`pg_is_in_recovery()`), or the
    /// configured one until it has answered.
    pub role: Role,
    pub state: NodeState,
    /// Primary: `pg_current_wal_lsn()`; replica: `pg_last_wal_receive_lsn()`.
    pub wal_lsn: Option<u64>,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<u64>,
    /// Bytes of WAL the replica has yet to replay.
    pub lag_bytes: Option<u64>,
    /// How long ago the primary first wrote WAL the replica has not replayed.
    pub lag_seconds: Option<f64>,
    /// Replica: how old the last transaction it replayed is
    /// (`pg_last_xact_replay_timestamp()`); large on an idle primary, so
    /// shown for operators but not used as lag.
    pub last_replayed_commit_age: Option<f64>,
    /// How long the last check took.
    pub check_latency: Option<Duration>,
    /// Why the last check failed, if it did.
    pub last_error: Option<String>,
    /// The primary's `pg_stat_replication`.
    pub replication: Vec<ReplicationRow>,
}

/// The published picture of the whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    /// In config order: indexes match `Config::nodes`.
    pub nodes: Vec<NodeStatus>,
    /// The node that takes writes; `None` when there is none to trust.
    pub primary: Option<usize>,
    /// Reachable nodes that all claim to be primary (empty when all is well).
    pub competing_primaries: Vec<usize>,
    /// When the last monitor round finished; `None` before the first.
    pub checked_at: Option<SystemTime>,
}

impl Topology {
    /// The starting guess: configured roles, every node up.
    pub fn from_config(config: &Config) -> Topology {
        Topology {
            nodes: config
                .nodes
                .iter()
                .map(|node| NodeStatus {
                    name: node.name.clone(),
                    role: node.role,
                    state: NodeState::Up,
                    wal_lsn: None,
                    replay_lsn: None,
                    lag_bytes: None,
                    lag_seconds: None,
                    last_replayed_commit_age: None,
                    check_latency: None,
                    last_error: None,
                    replication: Vec::new(),
                })
                .collect(),
            primary: Some(config.primary_index()),
            competing_primaries: Vec::new(),
            checked_at: None,
        }
    }

    /// Whether the node may serve reads as a replica.
    pub fn is_readable_replica(&self, node: usize) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.role == Role::Replica && n.state == NodeState::Up)
    }

    /// Whether two or more nodes claim to be primary.
    pub fn split_brain(&self) -> bool {
        !self.competing_primaries.is_empty()
    }
}
