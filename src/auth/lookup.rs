//! `auth_query`: users the config does not list are looked up in the
//! database on each login, so their password changes apply at once and
//! `rolvaliduntil` is honoured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Credentials;
use crate::backend::query_client::{self, QueryTarget};
use crate::backend::tls::ServerTls;
use crate::config::Config;
use crate::monitor::{NodeState, SharedTopology};
use crate::protocol::{PgError, SqlState};
use crate::sync::lock;

/// A looked-up user.
pub struct LookedUp {
    /// What the login is checked against (and pools log in with).
    pub credentials: Arc<Credentials>,
    /// The password is past its `VALID UNTIL`: the login must fail.
    pub expired: bool,
}

/// Runs the `auth_query` over one query connection, kept open between
/// logins and reopened when it breaks or the primary moves.
pub struct AuthQuery {
    tls: Option<ServerTls>,
    topology: SharedTopology,
    /// The open connection and the node it goes to.
    client: tokio::sync::Mutex<Option<(usize, tokio_postgres::Client)>>,
    /// Credentials by user, with the verifier they were built from: an
    /// unchanged verifier keeps its object (and the key learnt with it).
    known: Mutex<HashMap<String, (String, Arc<Credentials>)>>,
}

impl AuthQuery {
    /// A lookup service over the nodes of `topology`.
    pub fn new(tls: Option<ServerTls>, topology: SharedTopology) -> AuthQuery {
        AuthQuery {
            tls,
            topology,
            client: tokio::sync::Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials last looked up for `user` (pools log in with them).
    pub fn known(&self, user: &str) -> Option<Arc<Credentials>> {
        lock(&self.known).get(user).map(|(_, c)| c.clone())
    }

    /// Looks `user` up: `Ok(None)` when the query returns no row.
    pub async fn lookup(&self, config: &Config, user: &str) -> Result<Option<LookedUp>, PgError> {
        let Some(settings) = &config.auth_query else {
            return Ok(None);
        };
        let failed = |detail: String| {
            tracing::warn!(user, %detail, "auth_query failed");
            PgError::fatal(
                SqlState::CONNECTION_FAILURE,
                format!("pgsplit: could not look up user \"{user}\": {detail}"),
            )
        };
        let mut slot = self.client.lock().await;
        let node = self
            .query_node()
            .ok_or_else(|| failed("no node is up".into()))?;
        if slot
            .as_ref()
            .is_none_or(|(n, client)| *n != node || client.is_closed())
        {
            let target = self
                .target(config, node)
                .ok_or_else(|| failed("node unknown".into()))?;
            let client = query_client::connect(&target, config.server_connect_timeout)
                .await
                .map_err(|e| failed(e.to_string()))?;
            *slot = Some((node, client));
        }
        let Some((_, client)) = slot.as_ref() else {
            return Err(failed("no connection".into()));
        };
        let row = tokio::time::timeout(
            config.server_connect_timeout,
            client.query_opt(settings.query.as_str(), &[&user]),
        )
        .await
        .map_err(|_| failed("timed out".into()))?;
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                *slot = None;
                return Err(failed(error.to_string()));
            }
        };
        drop(slot);
        let Some(row) = row else {
            return Ok(None);
        };
        let secret: Option<String> = row.try_get(0).map_err(|e| failed(e.to_string()))?;
        let expired = if row.len() > 1 {
            row.try_get::<_, Option<bool>>(1)
                .map_err(|e| failed(e.to_string()))?
                .unwrap_or(false)
        } else {
            false
        };
        let refused = || {
            PgError::fatal(
                SqlState::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            )
        };
        let Some(secret) = secret else {
            tracing::info!(user, "auth_query: the user has no password");
            return Err(refused());
        };
        let credentials = self.remember(user, secret).map_err(|problem| {
            tracing::warn!(user, problem, "auth_query returned an unusable password");
            refused()
        })?;
        Ok(Some(LookedUp {
            credentials,
            expired,
        }))
    }

    /// The credentials for `secret`, reusing the previous object when the
    /// verifier did not change.
    fn remember(&self, user: &str, secret: String) -> Result<Arc<Credentials>, &'static str> {
        if let Some((known_secret, credentials)) = lock(&self.known).get(user) {
            if *known_secret == secret {
                return Ok(credentials.clone());
            }
        }
        let credentials = Arc::new(Credentials::from_secret(user, &secret)?);
        lock(&self.known).insert(user.to_owned(), (secret, credentials.clone()));
        Ok(credentials)
    }

    /// The primary, or any node that is up (a physical replica has the
    /// same `pg_authid`).
    fn query_node(&self) -> Option<usize> {
        let topology = self.topology.load();
        topology.primary.or_else(|| {
            topology
                .configured()
                .find(|(_, n)| n.state == NodeState::Up)
                .map(|(i, _)| i)
        })
    }

    fn target(&self, config: &Config, node: usize) -> Option<QueryTarget> {
        let settings = config.auth_query.as_ref()?;
        let node_config = config.nodes.get(node)?;
        let (user, password) = match (&settings.user, &settings.password, &config.monitor) {
            (Some(user), Some(password), _) => (user.clone(), password.clone()),
            (_, _, Some(monitor)) => (monitor.user.clone(), monitor.password.clone()),
            _ => return None,
        };
        Some(QueryTarget {
            node_name: node_config.name.clone(),
            host: node_config.host.clone(),
            port: node_config.port,
            user,
            password,
            database: settings.database.clone(),
            application_name: "pgsplit-auth",
            tls: self.tls.clone(),
        })
    }
}
