//! Routing a unit of work: planning it, choosing and attaching its node,
//! and the deferred BEGIN.

use std::io;

use super::*;

/// Why a unit got no server connection ready for it.
enum NotReady {
    /// pgsplit's own error for the client.
    Rejected(PgError),
    /// The server refused (or lost the connection while applying) the
    /// session's settings.
    Settings(SyncError),
}

impl Session {
    /// Makes sure a server connection is attached; `false` means it could
    /// not be, and the client has been told why.
    pub(super) async fn ensure_server(&mut self, tag: u8) -> bool {
        if self.server.is_some() {
            return true;
        }
        if let Some(error) = self.lost_state.take() {
            // The rejected request's plan must not serve the next one.
            self.unit = None;
            self.reject(error, tag);
            return false;
        }
        let unit = self.unit.take();
        if unit.is_some_and(|unit| unit.unparsed) {
            let counters = &self.shared.router.counters;
            counters
                .unparsed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(parent: &self.span, "statement could not be classified; sent to the primary");
        }
        if let Some(unit) = unit {
            // The plan already looked at this unit's statements.
            self.transaction_wrote |= unit.wrote();
            self.last_class_writes = unit.wrote();
        }
        let need = match (unit, self.deferred_begin.is_some()) {
            (Some(unit), true) if unit.sets_transaction_read_only && !unit.wrote() => Need::Read,
            (Some(unit), false) => unit.need(
                &self.route,
                || self.read_only_session(),
                self.recently_wrote(),
            ),
            _ => Need::Primary,
        };
        let min_lsn = self.read_min_lsn(unit);
        // A cancel request ends the wait, as PostgreSQL would end the query;
        // a connection dropped halfway is closed, and nothing of the
        // client's has reached a server.
        let ready = tokio::select! {
            biased;
            ready = self.ready_server(need, min_lsn) => ready,
            () = self.cancel_key.cancelled_while_waiting() => Err(NotReady::Rejected(
                PgError::error(SqlState::QUERY_CANCELED, "canceling statement due to user request"),
            )),
        };
        // No longer waiting; attaching makes the client active.
        self.registration.entry.set(ClientState::Idle, None);
        let (server, in_flight, role) = match ready {
            Ok(ready) => ready,
            Err(NotReady::Rejected(error)) => {
                self.reject(error, tag);
                return false;
            }
            Err(NotReady::Settings(error)) => {
                self.reply(error.to_message("ERROR"));
                self.reject_tail(tag);
                return false;
            }
        };
        self.commit_position_due = unit.is_some_and(|u| self.can_pipeline_commit_position(&u));
        self.attach(server, in_flight, role);
        if let Some(begin) = self.deferred_begin.take() {
            // The client already saw BEGIN succeed: send it first, quietly.
            self.forward(&begin);
            for reply in [b'C', b'Z'] {
                self.expected.push(Expected::Injected {
                    reply,
                    prepared: None,
                });
            }
        }
        true
    }

    /// A server connection for a unit with `need`, with the session's
    /// settings applied and room for its prepared statements.
    async fn ready_server(
        &self,
        need: Need,
        min_lsn: Option<u64>,
    ) -> Result<(PooledConnection, InFlight, Role), NotReady> {
        let (mut server, in_flight, role) = self
            .acquire(need, min_lsn)
            .await
            .map_err(NotReady::Rejected)?;
        if let Err(error) = self.sync_settings(&mut server).await {
            tracing::warn!(parent: &self.span, "could not restore session settings on a server connection");
            return Err(NotReady::Settings(error));
        }
        if let Err(error) = self.trim_prepared(&mut server).await {
            tracing::warn!(parent: &self.span, %error, "server connection lost while closing prepared statements");
            return Err(NotReady::Rejected(PgError::error(
                SqlState::CONNECTION_FAILURE,
                format!("server connection lost: {error}"),
            )));
        }
        Ok((server, in_flight, role))
    }

    /// Keeps a connection under `pool.max_prepared_statements` by closing
    /// its least recently used statements (down to 90% of the limit, so
    /// this round trip is rare). Runs on an idle connection, before the
    /// unit's messages, so nothing in flight can refer to them.
    pub(super) async fn trim_prepared(&self, server: &mut PooledConnection) -> io::Result<()> {
        let limit = self.config.pool.max_prepared_statements;
        if server.prepared.len() <= limit {
            return Ok(());
        }
        let keep = limit - limit / 10;
        let excess = server.prepared.len() - keep;
        let victims = server.prepared.take_least_recent(excess);
        server.close_statements(&victims).await
    }

    /// The transaction status the client believes in.
    pub(super) fn client_status(&self) -> u8 {
        if self.server.is_some() || self.deferred_begin.is_some() {
            self.transaction_status
        } else {
            b'I'
        }
    }

    /// Answers a lone read-write `BEGIN` (the query `sql` of `frame`)
    /// without a server, when the session might still turn out read-only;
    /// `true` if it did.
    pub(super) fn defer_begin(&mut self, frame: &Frame, sql: &[u8]) -> bool {
        let deferrable = self.server.is_none()
            && self.deferred_begin.is_none()
            && self.route.route != Route::Primary
            && self
                .unit
                .is_some_and(|unit| unit.begins_read_write && !unit.wrote() && unit.hint.is_none())
            && split_statements(&query_text(sql)).len() == 1;
        if !deferrable || self.read_only_session() {
            return false;
        }
        self.unit = None;
        self.deferred_begin = Some(frame.clone());
        self.transaction_status = b'T';
        self.reply(messages::command_complete("BEGIN"));
        self.reply(messages::ready_for_query(b'T'));
        true
    }

    /// Whether the session's transactions are read-only by default
    /// (`default_transaction_read_only`), so `BEGIN` may use a replica.
    pub(super) fn read_only_session(&self) -> bool {
        self.settings
            .effective()
            .get("default_transaction_read_only")
            .is_some_and(|statement| crate::sql::session::sets_boolean_on(statement))
    }

    /// Whether the client's last write is recent enough to read it back
    /// from the primary only.
    pub(super) fn recently_wrote(&self) -> bool {
        // Only sticky sessions (or unknown commit positions) record writes.
        self.last_write.is_some()
            && self.consistency != Consistency::Eventual
            && unit::within_sticky_window(&self.shared.router.settings(), self.last_write)
    }

    /// Looks at the unit about to start, once, before a node is chosen.
    /// `false` means its end has not arrived yet.
    pub(super) fn plan_unit(&mut self) -> bool {
        if self.server.is_some() || self.unit.is_some() || self.skip_until_sync {
            return true;
        }
        let shared = self.shared.clone();
        let read_only = |f: &str| shared.functions.is_read_only(&self.database, f);
        match unit::plan(
            &self.client_in,
            &shared.classifier,
            &mut self.last_parse,
            &self.statements,
            self.unnamed_class.as_ref(),
            &read_only,
            self.config.max_message_size,
        ) {
            Lookahead::Planned(traits) => {
                self.unit = Some(traits);
                true
            }
            Lookahead::Incomplete => false,
        }
    }

    /// Notes a statement of the current transaction, for stickiness.
    pub(super) fn note_class(&mut self, class: &Classification) {
        let mut traits = UnitTraits::default();
        traits.absorb(class, |f| {
            self.shared.functions.is_read_only(&self.database, f)
        });
        self.last_class_writes = traits.wrote();
        self.transaction_wrote |= traits.wrote();
        let commits = class.transaction == TransactionControl::End;
        if commits && self.transaction_wrote && self.tracks_commit_positions() {
            // The transaction ends here: ask for its commit position right
            // behind this statement, in the same write.
            self.commit_position_due = true;
        }
    }
}
