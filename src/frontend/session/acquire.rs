//! Getting a server connection for a unit of work: choosing the node,
//! falling back to another one for reads, checking a replica's replay
//! position for read-your-writes, and waiting for a primary while one is
//! being replaced.

use std::time::{Duration, Instant};

use super::*;
use crate::config::FailoverMode;

/// How often a write waiting for a primary looks again.
const PRIMARY_POLL: Duration = Duration::from_millis(20);

impl Session {
    /// A connection for a unit with `need`, counted in flight on its node,
    /// and the node's role when it was chosen.
    /// Reads try other nodes when one fails; writes (and anything bound for
    /// the primary) wait up to `failover.client_wait` while there is no
    /// usable primary, since nothing has been sent yet.
    pub(super) async fn acquire(
        &self,
        mut need: Need,
        mut min_lsn: Option<u64>,
    ) -> Result<(PooledConnection, InFlight, Role), PgError> {
        self.registration.entry.set(ClientState::Waiting, None);
        if self.shared.is_paused() {
            self.shared.wait_while_paused().await;
        }
        let router = self.shared.router.clone();
        let config = &self.config;
        let started = Instant::now();
        let deadline = started + config.failover.client_wait;
        // The first checkout judges idle connections by `started`; retries,
        // which may come after waits, read the clock again.
        let mut clock = Some(started);
        // In manual mode no primary comes back unless an operator acts:
        // writes fail at once instead of waiting for one (a switchover or
        // promotion already under way is still waited for).
        let new_primary_may_come = config.failover.mode != FailoverMode::Manual;
        let wait = || async {
            if Instant::now() + PRIMARY_POLL > deadline {
                return false;
            }
            tokio::time::sleep(PRIMARY_POLL).await;
            true
        };
        let mut failed = Vec::new();
        loop {
            let pick = match router.choose(need, &self.route, &failed, min_lsn) {
                Ok(pick) => pick,
                Err(NoNode::ChangingPrimary) if wait().await => continue,
                Err(no_node) if no_node.is_transient() && new_primary_may_come && wait().await => {
                    continue
                }
                Err(no_node) => return Err(no_node.to_error()),
            };
            let node = pick.node;
            let in_flight = router.start_transaction(node);
            // One look at the topology, after counting the transaction in.
            let topology = self.shared.topology.load();
            let on_primary = topology.primary == Some(node);
            let role = topology.role_of(node);
            if on_primary && topology.changing_primary {
                // A switchover began meanwhile: it must not see this transaction.
                drop(in_flight);
                if wait().await {
                    continue;
                }
                return Err(NoNode::ChangingPrimary.to_error());
            }
            let now = clock.take().unwrap_or_else(Instant::now);
            let error = match self.checkout(node, now).await {
                Ok(mut server) => {
                    let Some(lsn) = pick.verify_lsn else {
                        return Ok((server, in_flight, role));
                    };
                    match self.replica_has_replayed(&mut server, node, lsn).await {
                        Ok(true) => return Ok((server, in_flight, role)),
                        Ok(false) => {
                            // Not there yet: the primary has the client's writes.
                            router
                                .counters
                                .replica_behind
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            server.release();
                            failed.push(node);
                            min_lsn = None;
                            need = Need::Primary;
                            continue;
                        }
                        Err(error) => CheckoutError::Connect(ConnectError::Io {
                            node: router.node_name(node).to_owned(),
                            address: server.address.to_string(),
                            source: std::sync::Arc::new(error),
                        }),
                    }
                }
                Err(error) => error,
            };
            drop(in_flight);
            if !on_primary {
                // Nothing was sent yet: the read can go elsewhere.
                tracing::warn!(parent: &self.span, %error, node = router.node_name(node), "replica unavailable, routing the read elsewhere");
                router.node_failed(node);
                failed.push(node);
                continue;
            }
            let unreachable = matches!(&error, CheckoutError::Connect(e) if e.is_unreachable());
            if unreachable && new_primary_may_come && wait().await {
                tracing::debug!(parent: &self.span, %error, "primary unreachable; waiting for it or a new one");
                continue;
            }
            tracing::warn!(parent: &self.span, %error, "no server connection for client");
            let code = match error {
                CheckoutError::Timeout(_) => SqlState::TOO_MANY_CONNECTIONS,
                CheckoutError::Connect(_) | CheckoutError::NoSuchNode(_) => {
                    SqlState::CONNECTION_FAILURE
                }
            };
            return Err(PgError::error(code, format!("pgsplit: {error}")));
        }
    }
}
