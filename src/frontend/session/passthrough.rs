//! Extended-protocol messages that go to the attached server as they are.
//!
//! Once a server connection is attached, `Execute`, `Sync`, a `Bind` of
//! the unnamed statement and a `Describe` of a portal or of the unnamed
//! statement need nothing from their bytes but forwarding and a line of
//! bookkeeping. They move from the client's buffer to the server's without
//! a [`Frame`] each; the general path (`on_client_message`) shares the
//! bookkeeping below and handles everything else, including malformed
//! messages.

use bytes::Buf;

use super::*;

/// What a message forwarded in place was, for its bookkeeping.
enum Passed {
    Execute,
    Sync,
    UnnamedBind,
    Describe,
}

impl Session {
    /// Forwards the message at the front of the client's buffer if it is
    /// one of the above, whole and well-formed, and a server connection is
    /// attached (and nothing is being skipped up to `Sync`). `false` leaves
    /// it to the general path.
    pub(super) fn forward_in_place(&mut self, limit: usize) -> bool {
        if self.server.is_none() || self.skip_until_sync {
            return false;
        }
        let Ok(Some(size)) = frame::whole_message_len(&self.client_in, limit) else {
            return false;
        };
        let message = &self.client_in[..size];
        let body = &message[5..];
        let passed = match message[0] {
            b'E' => Passed::Execute,
            b'S' => Passed::Sync,
            b'B' if messages::bind_body(body).is_some_and(|(_, name, _)| name.is_empty()) => {
                Passed::UnnamedBind
            }
            b'D' if messages::describe_or_close_body(body)
                .is_some_and(|(kind, name)| kind == b'P' || name.is_empty()) =>
            {
                Passed::Describe
            }
            _ => return false,
        };
        self.server_out.extend_from_slice(message);
        self.client_in.advance(size);
        match passed {
            Passed::Execute => self.execute_forwarded(),
            Passed::Sync => self.sync_forwarded(),
            Passed::UnnamedBind => self.unnamed_bind_forwarded(),
            Passed::Describe => self.expected.push(Expected::reply_to(b'D')),
        }
        true
    }

    /// Bookkeeping for an `Execute` sent to the attached server.
    pub(super) fn execute_forwarded(&mut self) {
        self.count_query();
        self.expected.push(Expected::reply_to(b'E'));
        if completion_tag(&self.bound_effect).is_some() {
            self.effects_in_flight.push_back(self.bound_effect.clone());
        }
    }

    /// Bookkeeping for a `Sync` sent to the attached server.
    pub(super) fn sync_forwarded(&mut self) {
        if !self.copy_in {
            self.start_timer();
            self.expected.push(Expected::Sync);
            self.pipeline_commit_position();
        }
    }

    /// Bookkeeping for a `Bind` of the unnamed statement sent to the
    /// attached server: the portal runs what the last unnamed `Parse` held.
    pub(super) fn unnamed_bind_forwarded(&mut self) {
        self.bound_effect = self.unnamed_effect.clone();
        self.expected.push(Expected::reply_to(b'B'));
    }
}
