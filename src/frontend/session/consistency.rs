//! Read-your-writes by WAL position.
//!
//! When a client's write transaction ends, pgsplit asks the same server
//! connection for `pg_current_wal_insert_lsn()` before it tells the client
//! (the client's `ReadyForQuery` is held back for that one round trip), and
//! remembers the position. The client's later reads go only to replicas
//! known to have replayed it: from the monitor's snapshot, or checked on the
//! chosen replica connection itself; otherwise to the primary.

use std::time::{Duration, Instant};

use super::*;

/// Where a write transaction's commit record ends, at the latest. The
/// insert position covers commits not yet flushed (`synchronous_commit =
/// off`) too.
const COMMIT_POSITION_SQL: &str = "SELECT pg_current_wal_insert_lsn()";
/// Asked on a replica connection when the snapshot cannot vouch for it.
const REPLAY_POSITION_SQL: &str = "SELECT pg_last_wal_replay_lsn()";
/// Pause between checks while `routing.ryw_wait` lets a read wait.
const REPLAY_POLL: Duration = Duration::from_millis(2);

impl Session {
    /// Whether the `ReadyForQuery` that ends a transaction must wait for
    /// its commit position: it wrote, read-your-writes is on, and nothing
    /// else the client sent is queued behind it on this connection.
    pub(super) fn wants_commit_position(&self) -> bool {
        self.transaction_wrote
            && self.tracks_commit_positions()
            && self.expected.is_empty()
            && self.server.is_some()
    }

    /// Holds the client's `ReadyForQuery` back and asks the server where
    /// the transaction's WAL ends.
    pub(super) fn fetch_commit_position(&mut self, ready: Frame) {
        self.held_ready = Some(ready);
        self.ask_commit_position();
    }

    /// Right behind an autocommit write unit, asks for its commit position
    /// in the same write to the server: no extra round trip, and the
    /// server backend does not go to sleep in between.
    pub(super) fn pipeline_commit_position(&mut self) {
        if std::mem::take(&mut self.commit_position_due) {
            self.ask_commit_position();
        }
    }

    /// Whether this session's writes need their commit positions: under
    /// `read_your_writes` with reads that may go to replicas. A session
    /// routed to the primary (or told to read replicas regardless) skips
    /// the extra query; its writes fall back to `sticky_after_write`,
    /// which covers a later switch to `auto`.
    pub(super) fn tracks_commit_positions(&self) -> bool {
        self.consistency == Consistency::ReadYourWrites && self.route.route == Route::Auto
    }

    /// Whether a unit about to start may have its commit position asked for
    /// right behind it: it writes outside a transaction and cannot start a
    /// COPY (after which the server takes only copy data).
    pub(super) fn can_pipeline_commit_position(&self, unit: &UnitTraits) -> bool {
        self.tracks_commit_positions()
            && unit.wrote()
            && !unit.begins_read_write
            && !unit.may_copy
            && self.deferred_begin.is_none()
    }

    fn ask_commit_position(&mut self) {
        self.commit_position = None;
        self.server_out
            .extend_from_slice(&messages::query(COMMIT_POSITION_SQL));
        self.expected.push(Expected::CommitPosition);
    }

    /// A message answering the commit-position query (`Expected::CommitPosition`
    /// is first in line).
    pub(super) fn on_commit_position_message(&mut self, frame: &Frame) {
        match frame.tag() {
            b'D' => {
                self.commit_position = messages::first_column(frame.body())
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .and_then(crate::lsn::parse);
            }
            b'Z' => {
                self.expected.pop();
                self.settle_commit_position();
                self.on_ready(frame.body().first().copied().unwrap_or(b'I'));
            }
            _ => {}
        }
    }

    /// The query failed: the position is unknown.
    pub(super) fn on_commit_position_error(&mut self, frame: &Frame) {
        let fields = error_fields(frame.body());
        let message = String::from_utf8_lossy(fields.message.unwrap_or_default()).into_owned();
        tracing::warn!(parent: &self.span, %message, "could not learn a commit's WAL position");
        self.commit_position = None;
    }

    /// Remembers the position (or, without one, falls back to keeping the
    /// client's reads on the primary for `sticky_after_write`) and lets the
    /// client's `ReadyForQuery` go.
    pub(super) fn settle_commit_position(&mut self) {
        match self.commit_position.take() {
            Some(lsn) => {
                self.last_commit_lsn = Some(lsn);
                self.min_lsn = self.min_lsn.max(Some(lsn));
            }
            None => self.last_write = Some(Instant::now()),
        }
        if let Some(ready) = self.held_ready.take() {
            self.client_out.extend_from_slice(ready.bytes());
        }
    }

    /// The server went away while the position was asked for: the commit
    /// itself succeeded, so the client still gets its `ReadyForQuery`.
    pub(super) fn abandon_commit_position(&mut self) {
        if self.held_ready.is_some() {
            self.expected.pop();
            self.commit_position = None;
            self.settle_commit_position();
        }
    }

    /// The position a read of this unit must see, if any.
    pub(super) fn read_min_lsn(&self, unit: Option<UnitTraits>) -> Option<u64> {
        let hinted_replica = unit.is_some_and(|u| u.hint == Some(Hint::Replica));
        if self.consistency != Consistency::ReadYourWrites
            || self.route.route != Route::Auto
            || hinted_replica
        {
            return None;
        }
        self.min_lsn
    }

    /// Whether the replica behind `server` has replayed `lsn`, waiting up to
    /// `routing.ryw_wait` for it.
    pub(super) async fn replica_has_replayed(
        &self,
        server: &mut PooledConnection,
        node: usize,
        lsn: u64,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + self.shared.router.settings().ryw_wait;
        loop {
            let outcome = server.run_query(REPLAY_POSITION_SQL).await?;
            let replayed = outcome
                .first_value
                .as_deref()
                .and_then(|value| std::str::from_utf8(value).ok())
                .and_then(crate::lsn::parse);
            if let Some(replayed) = replayed {
                self.shared.router.saw_replay_lsn(node, replayed);
                if replayed >= lsn {
                    return Ok(true);
                }
            }
            if Instant::now() + REPLAY_POLL > deadline {
                return Ok(false);
            }
            tokio::time::sleep(REPLAY_POLL).await;
        }
    }
}
