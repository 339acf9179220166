//! `idle_client_timeout` and `idle_in_transaction_timeout`: a client that
//! sends nothing for too long is disconnected with PostgreSQL's error, and
//! a transaction it left open is rolled back so its server connection goes
//! back to the pool.
//!
//! One timer per session, re-armed lazily: traffic only records the time;
//! when the timer fires it checks how long the session has really been
//! idle and sleeps again for the rest.

use std::time::{Duration, Instant};

use super::*;

/// The idle limits in force for one session (read when it starts).
#[derive(Debug, Clone, Copy)]
pub(super) struct IdleLimits {
    /// Outside a transaction; zero: none.
    pub client: Duration,
    /// Inside a transaction; zero: none.
    pub in_transaction: Duration,
}

impl IdleLimits {
    pub(super) fn from_config(config: &crate::config::Config) -> IdleLimits {
        IdleLimits {
            client: config.idle_client_timeout,
            in_transaction: config.idle_in_transaction_timeout,
        }
    }

    /// Whether either limit is set (otherwise no timer runs at all).
    pub(super) fn any(&self) -> bool {
        !self.client.is_zero() || !self.in_transaction.is_zero()
    }

    /// The shorter limit that is set: how soon anything can expire.
    fn shortest(&self) -> Duration {
        [self.client, self.in_transaction]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::MAX)
    }
}

impl Session {
    /// The limit that applies in the session's current state: `None` while
    /// a request is in progress (a long query is not idleness).
    fn idle_limit(&self, limits: IdleLimits) -> Option<Duration> {
        if !self.expected.is_empty() || self.copy_in {
            return None;
        }
        let limit = if self.transaction_status == b'I' {
            limits.client
        } else {
            limits.in_transaction
        };
        (!limit.is_zero()).then_some(limit)
    }

    /// When the timer should next look, given the last traffic.
    pub(super) fn idle_deadline(&self, limits: IdleLimits, last_activity: Instant) -> Instant {
        /// Far enough to mean never, near enough not to overflow.
        const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
        let wait = self
            .idle_limit(limits)
            .unwrap_or(limits.shortest())
            .min(NEVER);
        (last_activity + wait).max(Instant::now() + Duration::from_millis(1))
    }

    /// The timer fired: ends the session if it has been idle too long.
    /// Returns `false` when it has not, and the timer must be re-armed.
    pub(super) fn on_idle_timer(&mut self, limits: IdleLimits, last_activity: Instant) -> bool {
        let Some(limit) = self.idle_limit(limits) else {
            return false;
        };
        if last_activity.elapsed() < limit {
            return false;
        }
        let error = if self.transaction_status == b'I' {
            PgError::fatal(
                SqlState::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle-session timeout",
            )
        } else {
            PgError::fatal(
                SqlState::IDLE_IN_TRANSACTION_TIMEOUT,
                "terminating connection due to idle-in-transaction timeout",
            )
        };
        tracing::info!(parent: &self.span, %error, idle = ?last_activity.elapsed(), "closing idle client");
        self.client_out.extend_from_slice(&error.to_message());
        self.finished = true;
        true
    }

    /// Whether a timer armed for outside a transaction would fire too late
    /// now that one is open.
    pub(super) fn idle_deadline_too_late(
        &self,
        limits: IdleLimits,
        last_activity: Instant,
        armed: Instant,
    ) -> bool {
        self.idle_limit(limits)
            .is_some_and(|limit| armed > last_activity + limit)
    }
}
