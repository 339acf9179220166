//! What the server sends: relaying responses in order, settling session
//! effects at `ReadyForQuery`, and coping with a server that goes away.

use std::io;
use std::time::Instant;

use super::*;

/// The server's error, reshaped as pgsplit's own: a FATAL that ended a
/// server connection is only an ERROR for the client, whose session lives on.
fn relayed_error(frame: &Frame) -> PgError {
    let fields = error_fields(frame.body());
    let code = match fields.code {
        Some(b"57P01") => SqlState::ADMIN_SHUTDOWN,
        Some(b"57P03") => SqlState::CANNOT_CONNECT_NOW,
        _ => SqlState::CONNECTION_FAILURE,
    };
    let message = fields
        .message
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    PgError::error(code, format!("server connection lost: {message}"))
}

/// Whether a server message (other than a notice or notification) needs
/// nothing from the session but forwarding, when no pgsplit reply is due:
/// not a parameter change, an error, the start of COPY FROM STDIN or the
/// end of a request, and not a completion that settles a session effect or
/// reports a rollback. The rest go through [`Session::on_server_message`].
fn is_relayed_as_is(tag: u8, body: &[u8], effects_pending: bool) -> bool {
    match tag {
        b'S' | b'E' | b'G' | b'Z' => false,
        b'C' => !effects_pending && body != b"ROLLBACK\0",
        _ => true,
    }
}

impl Session {
    /// Handles what the server sent: runs of plain replies are copied to
    /// the client as they are, the rest message by message.
    pub(super) fn process_server_input(&mut self) {
        while let Some(server) = self.server.as_mut() {
            let expected = &mut self.expected;
            let effects_pending = !self.effects_in_flight.is_empty();
            server.forward_run(&mut self.client_out, |tag, body| {
                matches!(tag, b'N' | b'A')
                    || (is_relayed_as_is(tag, body, effects_pending) && expected.relays(tag))
            });
            match server.next_buffered() {
                Ok(Some(frame)) => self.on_server_message(frame),
                Ok(None) => break,
                Err(error) => {
                    self.on_server_lost(error);
                    break;
                }
            }
        }
        self.release_due_synthetic();
    }

    pub(super) fn on_server_message(&mut self, frame: Frame) {
        let tag = frame.tag();
        match tag {
            b'N' | b'A' => {
                self.client_out.extend_from_slice(frame.bytes());
                return;
            }
            b'S' => {
                if let Some(server) = self.server.as_mut() {
                    server.note_parameter(frame.body());
                }
                self.client_out.extend_from_slice(frame.bytes());
                return;
            }
            b'E' => {
                self.on_server_error(frame);
                return;
            }
            b'C' => self.on_command_complete(frame.body()),
            b'G' => {
                self.copy_in = true;
                self.expected.forget_syncs_behind_front();
            }
            _ => {}
        }
        self.release_due_synthetic();
        match self.expected.front() {
            Some(Expected::Injected { reply, .. }) if *reply == tag => {
                self.expected.pop();
            }
            Some(Expected::CommitPosition) => self.on_commit_position_message(&frame),
            Some(Expected::Reply { ends_with, .. }) => {
                let done = ends_with.contains(tag);
                self.client_out.extend_from_slice(frame.bytes());
                if done {
                    self.expected.pop();
                }
            }
            _ => {
                if tag != b'Z' {
                    self.client_out.extend_from_slice(frame.bytes());
                    return;
                }
                self.expected.pop();
                let status = frame.body().first().copied().unwrap_or(b'I');
                if self.expected.front() == Some(&Expected::CommitPosition) {
                    // Asked for behind this unit already: wait for the answer.
                    self.held_ready = Some(frame);
                } else if status == b'I' && self.wants_commit_position() {
                    self.fetch_commit_position(frame);
                } else {
                    self.client_out.extend_from_slice(frame.bytes());
                }
                self.on_ready(status);
            }
        }
    }

    pub(super) fn on_server_error(&mut self, frame: Frame) {
        let fields = error_fields(frame.body());
        if matches!(fields.severity, Some(b"FATAL" | b"PANIC")) {
            // The server is about to close this connection; the client
            // learns why when it does.
            self.server_fatal = Some(relayed_error(&frame));
            return;
        }
        if self.expected.front() == Some(&Expected::CommitPosition) {
            self.on_commit_position_error(&frame);
            return;
        }
        self.transaction_failed = true;
        self.release_due_synthetic();
        if !matches!(
            self.expected.front(),
            Some(Expected::Query | Expected::Sync) | None
        ) {
            for unprepared in self.expected.skip_to_sync() {
                if let Some(server) = self.server.as_mut() {
                    server.prepared.remove(&unprepared.server_name);
                }
                if let Some(client_name) = unprepared.client_name {
                    self.statements
                        .remove_if_server_name(&client_name, &unprepared.server_name);
                }
            }
        }
        self.client_out.extend_from_slice(frame.bytes());
    }

    pub(super) fn on_command_complete(&mut self, body: &[u8]) {
        let tag = body.strip_suffix(b"\0").unwrap_or(body);
        if tag == b"ROLLBACK" {
            // Undoes this transaction's settings (a failed COMMIT reports ROLLBACK too).
            self.transaction_failed = true;
        }
        let matches = self
            .effects_in_flight
            .front()
            .and_then(completion_tag)
            .is_some_and(|expected| expected == tag);
        if !matches {
            return;
        }
        let Some(effect) = self.effects_in_flight.pop_front() else {
            return;
        };
        if matches!(
            effect,
            SessionEffect::DiscardAll | SessionEffect::Deallocate(None)
        ) {
            // Every statement on this server connection is gone, ours included.
            if let Some(server) = self.server.as_mut() {
                server.prepared.clear();
            }
            self.statements.clear();
        }
        self.effects_done.push(effect);
    }

    /// `ReadyForQuery` arrived and nothing older is owed: settle the
    /// transaction's session effects and, between transactions, give the
    /// server connection back.
    pub(super) fn on_ready(&mut self, status: u8) {
        self.transaction_status = status;
        self.effects_in_flight.clear();
        // One clock read for the request's duration and the release.
        let now = Instant::now();
        if let Some(started) = self.query_started.take() {
            self.shared
                .metrics
                .duration(self.server_role, now.saturating_duration_since(started));
            // More of the client's requests wait (not pgsplit's own query).
            if self.expected.outstanding_ready() > 0 {
                self.query_started = Some(now);
            }
        }
        if status != b'I' {
            return;
        }
        if let Some(counters) = self.counters.as_ref().filter(|_| self.expected.is_empty()) {
            counters.transaction(self.server_role);
        }
        if !self.expected.is_empty() && self.transaction_wrote {
            // More of the client's requests (or the commit-position query)
            // follow on this connection; the last `ReadyForQuery` settles the write.
        } else if std::mem::take(&mut self.transaction_wrote)
            && (self.consistency == Consistency::Sticky
                || (self.consistency == Consistency::ReadYourWrites
                    && !self.tracks_commit_positions()))
        {
            self.last_write = Some(now);
        }
        let effects = std::mem::take(&mut self.effects_done);
        let failed = std::mem::replace(&mut self.transaction_failed, false);
        if !effects.is_empty() {
            if failed {
                // Rolled back; the server's state is no longer known for sure.
                if let Some(server) = self.server.as_mut() {
                    server.applied_settings = None;
                }
            } else {
                for effect in &effects {
                    self.settings.apply(effect);
                }
                let settings = self.settings.effective().clone();
                if let Some(server) = self.server.as_mut() {
                    server.applied_settings = Some(settings);
                }
            }
        }
        let reusable = self.expected.is_empty() && self.pinned.is_none();
        if reusable && self.pool_mode() == PoolMode::Transaction {
            if let Some(server) = self.detach() {
                server.release_at(now);
            }
            self.finish_if_idle_during_shutdown();
        }
    }

    /// The server connection broke: answer whatever the client still waits
    /// for with an error, so it never hangs, and carry on without it.
    pub(super) fn on_server_lost(&mut self, error: io::Error) {
        let Some(server) = self.detach() else {
            return;
        };
        self.abandon_commit_position();
        tracing::warn!(parent: &self.span, %error, node = server.pool().node_name(), "server connection lost");
        drop(server);
        let error = self.server_fatal.take().unwrap_or_else(|| {
            PgError::error(
                SqlState::CONNECTION_FAILURE,
                format!("server connection lost: {error}"),
            )
        });
        let owed_ready = self.expected.outstanding_ready();
        let owed_anything = !self.expected.is_empty();
        let had_state = self.transaction_status != b'I'
            || self.pinned.is_some()
            || self.pool_mode() == PoolMode::Session;
        self.expected.clear();
        self.effects_in_flight.clear();
        self.effects_done.clear();
        self.transaction_failed = false;
        self.transaction_status = b'I';
        self.pinned = None;
        self.copy_in = false;
        if owed_anything {
            for _ in 0..owed_ready {
                self.client_out.extend_from_slice(&error.to_message());
                self.client_out
                    .extend_from_slice(&messages::ready_for_query(b'I'));
            }
            if owed_ready == 0 {
                self.client_out.extend_from_slice(&error.to_message());
                self.skip_until_sync = true;
            }
        } else if had_state {
            self.lost_state = Some(error);
        }
    }
}
