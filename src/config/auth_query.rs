//! The `auth_query:` section: users not listed under `users` are looked up
//! in the database, as PgBouncer's `auth_query` does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How to look up a user's password verifier in the database.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthQueryConfig {
    /// Takes the user name as `$1`; returns one row: the verifier (`NULL`
    /// refuses the login) and, optionally, whether it has expired.
    #[serde(default = "default_query")]
    pub query: String,
    /// The database the query runs in.
    #[serde(default = "default_database")]
    pub database: String,
    /// Who runs the query (reading `pg_authid` takes a superuser); the
    /// `monitor` user when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its password; the `monitor` password when `user` is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for AuthQueryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthQueryConfig")
            .field("query", &self.query)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn default_query() -> String {
    "SELECT rolpassword, rolvaliduntil < now() FROM pg_authid WHERE rolname = $1 AND rolcanlogin"
        .to_owned()
}

fn default_database() -> String {
    "postgres".to_owned()
}
