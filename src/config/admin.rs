//! The `admin:` section: who may change things through the admin API.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Access to the admin API and console.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token required by the API's mutating endpoints (switchover,
    /// promote, rejoin, ...). Without one they are served to loopback
    /// clients only.
    #[serde(default)]
    pub token: Option<String>,
    /// Users (from `users:`) who may open the admin console (database
    /// `pgsplit`), besides the `monitor` user.
    #[serde(default)]
    pub users: Vec<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("users", &self.users)
            .finish()
    }
}
