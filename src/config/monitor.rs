//! The `monitor:` section: credentials and cadence of pgsplit's own health
//! and replication checks.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, number};

/// Credentials and timing for health checks and replication monitoring.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// PostgreSQL role for monitoring queries (a superuser or `pg_monitor`).
    pub user: String,
    /// Clear-text password for `user`.
    pub password: String,
    /// How often every node is checked.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// How long one check (connect and queries) may take before it counts as failed.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed checks before a node is `down`.
    #[serde(
        default = "default_fail_after",
        deserialize_with = "number::deserialize"
    )]
    pub fail_after: u32,
    /// Consecutive good checks before a `down` node is `up` again.
    #[serde(
        default = "default_recover_after",
        deserialize_with = "number::deserialize"
    )]
    pub recover_after: u32,
}

impl MonitorConfig {
    /// Monitoring with default timing, for `user` and `password`.
    pub fn new(user: &str, password: &str) -> MonitorConfig {
        MonitorConfig {
            user: user.to_owned(),
            password: password.to_owned(),
            interval: default_interval(),
            timeout: default_timeout(),
            fail_after: default_fail_after(),
            recover_after: default_recover_after(),
        }
    }
}

impl fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("fail_after", &self.fail_after)
            .field("recover_after", &self.recover_after)
            .finish()
    }
}

fn default_interval() -> Duration {
    Duration::from_millis(500)
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_fail_after() -> u32 {
    3
}

fn default_recover_after() -> u32 {
    2
}
