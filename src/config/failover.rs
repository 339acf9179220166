//! The `failover:` section: whether and how pgsplit promotes a replica when
//! the primary fails, and what clients and operators experience meanwhile.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Failover settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Who promotes a replica when the primary fails.
    #[serde(default)]
    pub mode: FailoverMode,
    /// How long the primary must be unreachable (and lost by the replicas
    /// too) before it counts as failed.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// How long a new write waits for a primary (failover, switchover)
    /// before it gets an error.
    #[serde(default = "default_client_wait", with = "duration")]
    pub client_wait: Duration,
    /// How long the other replicas get to stream from a new primary before
    /// they are marked `needs_rejoin`.
    #[serde(default = "default_follow_timeout", with = "duration")]
    pub follow_timeout: Duration,
    /// Run (with `sh -c`) to bring a fenced former primary back as a
    /// replica, e.g. `pg_rewind` and a restart; `PGSPLIT_*` variables name
    /// the node and the current primary.
    #[serde(default)]
    pub rejoin_command: Option<String>,
    /// Run after a switchover to stop or demote the former primary.
    #[serde(default)]
    pub demote_command: Option<String>,
    /// Run on every node event (down, promoted, followed, fenced, rejoined),
    /// for alerting.
    #[serde(default)]
    pub notify_command: Option<String>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            mode: FailoverMode::default(),
            timeout: default_timeout(),
            client_wait: default_client_wait(),
            follow_timeout: default_follow_timeout(),
            rejoin_command: None,
            demote_command: None,
            notify_command: None,
        }
    }
}

/// Who promotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// pgsplit detects the failure and promotes the best replica.
    #[default]
    Auto,
    /// pgsplit promotes only when told to (admin API).
    Manual,
    /// Something else promotes (Patroni, CloudNativePG, RDS); pgsplit
    /// follows. The mode for running several pgsplit instances.
    External,
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_client_wait() -> Duration {
    Duration::from_secs(10)
}

fn default_follow_timeout() -> Duration {
    Duration::from_secs(30)
}
