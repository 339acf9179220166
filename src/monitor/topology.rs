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
    /// A former primary replaced by failover or switchover: no traffic
    /// until an operator rejoins it.
    Fenced,
    /// A replica that could not follow the new primary: no reads until
    /// it is rebuilt or rejoined.
    NeedsRejoin,
    /// Taken out of the configuration by a reload.
    Removed,
}

impl NodeState {
    /// Every state, for metrics that list each.
    pub const ALL: [NodeState; 5] = [
        NodeState::Up,
        NodeState::Down,
        NodeState::Lagging,
        NodeState::Fenced,
        NodeState::NeedsRejoin,
    ];

    /// The name used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Lagging => "lagging",
            NodeState::Fenced => "fenced",
            NodeState::NeedsRejoin => "needs_rejoin",
            NodeState::Removed => "removed",
        }
    }
}

/// One row of the primary's `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationRow {
    /// The name the replica connected with (`application_name` in its
    /// `primary_conninfo`, by default its `cluster_name`).
    pub application_name: String,
    /// The replica's IP address; `None` over a Unix socket.
    pub client_addr: Option<String>,
    /// The WAL sender's state: `streaming`, `catchup`, ...
    pub state: Option<String>,
    /// Last WAL position sent to the replica.
    pub sent_lsn: Option<u64>,
    /// Last position the replica wrote to disk.
    pub write_lsn: Option<u64>,
    /// Last position the replica flushed to durable storage.
    pub flush_lsn: Option<u64>,
    /// Last position the replica replayed.
    pub replay_lsn: Option<u64>,
    /// `write_lag`: how long recent WAL took to be written on the replica.
    pub write_lag_seconds: Option<f64>,
    /// `flush_lag`: how long recent WAL took to be flushed on the replica.
    pub flush_lag_seconds: Option<f64>,
    /// `replay_lag`: how long recent WAL took to be replayed on the replica.
    pub replay_lag_seconds: Option<f64>,
    /// `async`, `sync`, `potential` or `quorum`.
    pub sync_state: Option<String>,
}

/// A replica's WAL receiver (`pg_stat_wal_receiver`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalReceiver {
    /// `streaming`, `waiting`, ...; `None` when no receiver runs.
    pub status: Option<String>,
    /// Seconds since the last message from its upstream.
    pub silence_seconds: Option<f64>,
    /// The host the receiver streams from, as the replica sees it.
    pub sender_host: Option<String>,
    /// The port the receiver streams from.
    pub sender_port: Option<i32>,
    /// The replica's `wal_receiver_timeout`, in seconds.
    pub timeout_seconds: f64,
}

/// What is known about one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// The node's name from the config.
    pub name: String,
    /// The role the server reports (`pg_is_in_recovery()`), or the
    /// configured one until it has answered.
    pub role: Role,
    /// Whether it may take traffic (see [`NodeState`]).
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
    /// A replica's WAL receiver.
    pub receiver: Option<WalReceiver>,
}

impl NodeStatus {
    /// A node nothing is known about yet but its name and expected role.
    pub fn unchecked(name: &str, role: Role) -> NodeStatus {
        NodeStatus {
            name: name.to_owned(),
            role,
            state: NodeState::Up,
            wal_lsn: None,
            replay_lsn: None,
            lag_bytes: None,
            lag_seconds: None,
            last_replayed_commit_age: None,
            check_latency: None,
            last_error: None,
            replication: Vec::new(),
            receiver: None,
        }
    }
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
    /// A failover or switchover is under way: new writes wait for it.
    pub changing_primary: bool,
    /// Failovers and switchovers pgsplit carried out since it started.
    pub failovers: u64,
    /// The last one, for operators.
    pub last_failover: Option<FailoverReport>,
}

/// What a failover or switchover did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailoverReport {
    /// The old primary, by name.
    pub from: String,
    /// The node promoted in its place, by name.
    pub to: String,
    /// `failover` or `switchover`.
    pub kind: &'static str,
    /// When the new primary was put in place.
    pub finished_at: SystemTime,
    /// From deciding to promote until writes could go to the new primary.
    pub duration_seconds: f64,
    /// WAL the promoted node had not received from the old primary, as far
    /// as pgsplit saw (writes lost with asynchronous replication).
    pub wal_bytes_behind: Option<u64>,
}

impl Topology {
    /// The role node `index` has in this picture (a node unknown here, one
    /// a reload just added, counts as a replica).
    pub fn role_of(&self, index: usize) -> Role {
        self.nodes.get(index).map_or(Role::Replica, |n| n.role)
    }

    /// The starting guess: configured roles, every node up.
    pub fn from_config(config: &Config) -> Topology {
        Topology {
            nodes: config
                .nodes
                .iter()
                .map(|node| NodeStatus::unchecked(&node.name, node.role))
                .collect(),
            primary: Some(config.primary_index()),
            competing_primaries: Vec::new(),
            checked_at: None,
            changing_primary: false,
            failovers: 0,
            last_failover: None,
        }
    }

    /// Whether the node may serve reads as a replica.
    pub fn is_readable_replica(&self, node: usize) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.role == Role::Replica && n.state == NodeState::Up)
    }

    /// Follows a reloaded configuration: nodes it added are appended
    /// (unchecked yet), nodes it removed are marked so.
    pub fn follow_config(&mut self, config: &Config) {
        for (index, node) in config.nodes.iter().enumerate() {
            if index >= self.nodes.len() {
                self.nodes
                    .push(NodeStatus::unchecked(&node.name, node.role));
            }
            if node.removed {
                self.nodes[index].state = NodeState::Removed;
            }
        }
    }

    /// The nodes still configured, with their indexes.
    pub fn configured(&self) -> impl Iterator<Item = (usize, &NodeStatus)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state != NodeState::Removed)
    }

    /// Whether two or more nodes claim to be primary.
    pub fn split_brain(&self) -> bool {
        !self.competing_primaries.is_empty()
    }
}
