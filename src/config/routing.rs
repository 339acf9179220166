//! The `routing:` section: how transactions are split between the primary
//! and the replicas.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Read/write splitting settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// After a client's transaction writes, its reads go to the primary for
    /// this long (read-your-writes in its simplest form); `0s` disables.
    #[serde(
        default = "default_sticky_after_write",
        deserialize_with = "duration::deserialize"
    )]
    pub sticky_after_write: Duration,
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
            read_only_functions: Vec::new(),
            write_functions: Vec::new(),
            rules: Vec::new(),
        }
    }
}

fn default_sticky_after_write() -> Duration {
    Duration::from_secs(1)
}

/// Where a session's transactions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
