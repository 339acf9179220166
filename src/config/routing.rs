//! The `routing:` section: how transactions are split between the primary
//! and the replicas.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, size};

/// Read/write splitting settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The route of sessions no rule matches: `auto` splits reads from writes.
    #[serde(default)]
    pub route: Route,
    /// How a replica is picked among those that may serve a read.
    #[serde(default)]
    pub load_balance: LoadBalance,
    /// Whether the primary serves reads too.
    #[serde(default)]
    pub primary_reads: PrimaryReads,
    /// With `consistency: sticky` (or when `read_your_writes` could not learn
    /// a commit's position), a client's reads go to the primary for this
    /// long after it wrote; `0s` disables.
    #[serde(default = "default_sticky_after_write", with = "duration")]
    pub sticky_after_write: Duration,
    /// What a client may read from a replica after it wrote.
    #[serde(default)]
    pub consistency: Consistency,
    /// How long a read may wait for a replica to replay the client's last
    /// write before going to the primary (`read_your_writes`); `0s`: not at all.
    #[serde(default, with = "duration")]
    pub ryw_wait: Duration,
    /// A replica further behind the primary than this many bytes of WAL gets
    /// no reads; it is readmitted below half of it.
    #[serde(
        default = "default_max_lag_bytes",
        deserialize_with = "size::deserialize"
    )]
    pub max_lag_bytes: usize,
    /// A replica further behind than this in time gets no reads; it is
    /// readmitted below half of it.
    #[serde(default = "default_max_lag", with = "duration")]
    pub max_lag: Duration,
    /// Volatile functions known not to write, so `SELECT f()` may use a replica.
    #[serde(default)]
    pub read_only_functions: Vec<String>,
    /// Functions that always send their statement to the primary.
    #[serde(default)]
    pub write_functions: Vec<String>,
    /// Per-user / per-application defaults, first match wins.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            route: Route::default(),
            load_balance: LoadBalance::default(),
            primary_reads: PrimaryReads::default(),
            sticky_after_write: default_sticky_after_write(),
            consistency: Consistency::default(),
            ryw_wait: Duration::ZERO,
            max_lag_bytes: default_max_lag_bytes(),
            max_lag: default_max_lag(),
            read_only_functions: Vec::new(),
            write_functions: Vec::new(),
            rules: Vec::new(),
        }
    }
}

fn default_sticky_after_write() -> Duration {
    Duration::from_secs(1)
}

fn default_max_lag_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_max_lag() -> Duration {
    Duration::from_secs(10)
}

/// What reads a client may be served after its own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Any healthy replica within the lag limits, even right after a write.
    Eventual,
    /// Reads stay on the primary for `sticky_after_write` after a write.
    Sticky,
    /// Reads go only to replicas that replayed the client's last commit.
    #[default]
    ReadYourWrites,
}

/// Where a session's transactions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Reads to replicas, writes to the primary.
    #[default]
    Auto,
    /// Everything to the primary.
    Primary,
    /// Reads to replicas; writes still go to the primary (never to a replica).
    Replica,
}

/// Replica selection policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    /// Fewest transactions in flight, relative to the node's weight.
    #[default]
    LeastConnections,
    /// In turn, each node as often as its weight says.
    RoundRobin,
    /// At random, in proportion to the weights.
    Random,
}

/// When the primary serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryReads {
    /// Never: a read fails if no replica can serve it.
    Never,
    /// Only when no replica can.
    #[default]
    Fallback,
    /// Always, balanced like a replica.
    Always,
}

/// A default route for some users or applications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Matches this user (any user when absent).
    #[serde(default)]
    pub user: Option<String>,
    /// Matches this `application_name` (any when absent).
    #[serde(default)]
    pub application_name: Option<String>,
    /// The route for matching sessions.
    #[serde(default)]
    pub route: Route,
    /// Reads go only to replicas carrying this tag (e.g. `analytics`).
    #[serde(default)]
    pub tag: Option<String>,
}
