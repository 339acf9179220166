//! Bookkeeping of what the server still owes the client.
//!
//! Every message forwarded to the server that produces a reply gets an
//! entry; pgsplit's own replies (a `ParseComplete` for a statement the
//! server connection already has) are queued in the same line so the client
//! sees responses in exactly the order it sent requests, and the replies to
//! statements pgsplit prepared behind the client's back are swallowed.

use std::collections::VecDeque;

use bytes::Bytes;

/// A statement pgsplit prepared on the server connection; if the server
/// skips or rejects the `Parse`, the connection does not have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedOnServer {
    /// The pgsplit-wide name it has on the server connection.
    pub server_name: String,
    /// The client's name for it, if the client's own `Parse` created it.
    pub client_name: Option<Vec<u8>>,
}

/// The message tags that can end a reply: at most three, unused places
/// repeating the first. Checked for every relayed server message, so it is
/// three byte comparisons rather than a search through a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTags([u8; 3]);

impl EndTags {
    /// A reply that ends with one of `tags` (one to three of them).
    pub fn of(tags: &[u8]) -> EndTags {
        let first = tags.first().copied().unwrap_or_default();
        let at = |i: usize| tags.get(i).copied().unwrap_or(first);
        EndTags([first, at(1), at(2)])
    }

    /// Whether a message with `tag` ends the reply.
    pub fn contains(self, tag: u8) -> bool {
        let [a, b, c] = self.0;
        tag == a || tag == b || tag == c
    }
}

/// One expected response (or run of responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A simple `Query` or `FunctionCall`: everything up to `ReadyForQuery`.
    Query,
    /// A `Sync`: the `ReadyForQuery` that ends an extended-protocol batch.
    Sync,
    /// An extended-protocol message whose reply ends with one of `ends_with`.
    Reply {
        /// The tags of the messages that complete the reply.
        ends_with: EndTags,
        /// Boxed, like `Injected`'s: it is rare, and entries are moved
        /// in and out of the queue for every message.
        prepared: Option<Box<PreparedOnServer>>,
    },
    /// A reply pgsplit makes itself, sent when its turn comes.
    Synthetic(Bytes),
    /// The reply (`reply` tag) to a message pgsplit sent on its own, such as
    /// the `ParseComplete` of a statement it prepared; never shown to the client.
    Injected {
        /// The tag of the one message that answers it.
        reply: u8,
        /// The statement it prepares, if it is a `Parse`: forgotten should
        /// the server skip or reject it.
        prepared: Option<Box<PreparedOnServer>>,
    },
    /// The answer to pgsplit's own query for the WAL position a write
    /// transaction committed at (read-your-writes), up to its `ReadyForQuery`.
    CommitPosition,
}

impl Expected {
    /// The reply a forwarded extended-protocol message gets, by its tag.
    pub fn reply_to(tag: u8) -> Expected {
        let ends_with = EndTags::of(match tag {
            b'P' => b"1",
            b'B' => b"2",
            b'D' => b"Tn",
            b'E' => b"CIs",
            b'C' => b"3",
            _ => b"Z",
        });
        Expected::Reply {
            ends_with,
            prepared: None,
        }
    }
}

/// The queue of expected responses, oldest first.
#[derive(Debug, Default)]
pub struct ResponseQueue {
    queue: VecDeque<Expected>,
}

impl ResponseQueue {
    /// Adds the response to a message just sent (or a synthetic reply).
    pub fn push(&mut self, expected: Expected) {
        self.queue.push_back(expected);
    }

    /// The oldest response still owed, which the next server message answers.
    pub fn front(&self) -> Option<&Expected> {
        self.queue.front()
    }

    /// Removes the oldest entry: its response is complete, or given up on.
    pub fn pop(&mut self) -> Option<Expected> {
        self.queue.pop_front()
    }

    /// Whether nothing is owed to the client.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a server message with `tag` may go straight to the client
    /// as far as this queue is concerned: the front entry waits for replies
    /// that pgsplit only relays. Pops the `Reply` entry the message
    /// completes. Not for `ReadyForQuery`, which always needs the session
    /// (it ends `Query` and `Sync` entries, which this leaves in place).
    pub fn relays(&mut self, tag: u8) -> bool {
        match self.queue.front() {
            None | Some(Expected::Query | Expected::Sync) => true,
            Some(Expected::Reply { ends_with, .. }) => {
                if ends_with.contains(tag) {
                    self.queue.pop_front();
                }
                true
            }
            Some(Expected::Synthetic(_) | Expected::Injected { .. } | Expected::CommitPosition) => {
                false
            }
        }
    }

    /// Takes the synthetic replies that are due now (nothing is owed
    /// before them), in order.
    pub fn take_due_synthetic(&mut self, mut emit: impl FnMut(Bytes)) {
        while let Some(Expected::Synthetic(_)) = self.queue.front() {
            if let Some(Expected::Synthetic(bytes)) = self.queue.pop_front() {
                emit(bytes);
            }
        }
    }

    /// After an error in an extended-protocol batch the server ignores
    /// everything up to the next `Sync`: drops those entries and returns the
    /// statements that therefore were not prepared.
    pub fn skip_to_sync(&mut self) -> Vec<PreparedOnServer> {
        let mut unprepared = Vec::new();
        while let Some(front) = self.queue.front() {
            if matches!(
                front,
                Expected::Sync | Expected::Query | Expected::CommitPosition
            ) {
                break;
            }
            match self.queue.pop_front() {
                Some(Expected::Reply {
                    prepared: Some(p), ..
                })
                | Some(Expected::Injected {
                    prepared: Some(p), ..
                }) => unprepared.push(*p),
                _ => {}
            }
        }
        unprepared
    }

    /// COPY FROM STDIN began (`CopyInResponse`): the server ignores any
    /// `Sync` it receives in copy-in mode, so the `Sync`s the client sent
    /// behind the COPY will get no `ReadyForQuery`.
    pub fn forget_syncs_behind_front(&mut self) {
        let mut index = 0;
        self.queue.retain(|expected| {
            index += 1;
            index == 1 || *expected != Expected::Sync
        });
    }

    /// How many `ReadyForQuery` messages the client still waits for.
    pub fn outstanding_ready(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| matches!(e, Expected::Sync | Expected::Query))
            .count()
    }

    /// Forgets everything owed (the server connection was lost).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_skips_entries_up_to_sync_and_reports_unprepared_statements() {
        let mut q = ResponseQueue::default();
        let stmt = PreparedOnServer {
            server_name: "s1".into(),
            client_name: Some(b"a".to_vec()),
        };
        q.push(Expected::reply_to(b'B'));
        q.push(Expected::Synthetic(Bytes::from_static(b"1")));
        q.push(Expected::Injected {
            reply: b'1',
            prepared: Some(Box::new(stmt.clone())),
        });
        q.push(Expected::Sync);
        q.push(Expected::reply_to(b'E'));
        assert_eq!(q.skip_to_sync(), vec![stmt]);
        assert_eq!(q.front(), Some(&Expected::Sync));
        assert_eq!(q.outstanding_ready(), 1);
    }

    #[test]
    fn end_tags_hold_exactly_the_tags_given() {
        let tags = EndTags::of(b"CIs");
        assert!(b"CIs".iter().all(|&t| tags.contains(t)));
        assert!(!tags.contains(b'D') && !tags.contains(0));
        let one = EndTags::of(b"1");
        assert!(one.contains(b'1') && !one.contains(b'2') && !one.contains(0));
    }

    #[test]
    fn relays_client_replies_and_stops_at_pgsplits_own() {
        let mut q = ResponseQueue::default();
        q.push(Expected::reply_to(b'B'));
        q.push(Expected::Synthetic(Bytes::from_static(b"x")));
        q.push(Expected::Query);
        assert!(q.relays(b'2'), "BindComplete ends the Bind's reply");
        assert!(!q.relays(b'T'), "pgsplit's reply is due first");
        q.pop();
        assert!(q.relays(b'D'));
        assert_eq!(q.front(), Some(&Expected::Query), "rows do not end a query");
        q.push(Expected::CommitPosition);
        q.pop();
        assert!(!q.relays(b'D'), "the commit position is pgsplit's to read");
    }

    #[test]
    fn copy_in_forgets_the_syncs_queued_behind_it() {
        let mut q = ResponseQueue::default();
        q.push(Expected::reply_to(b'E'));
        q.push(Expected::Sync);
        q.forget_syncs_behind_front();
        assert_eq!(q.outstanding_ready(), 0);
        assert_eq!(q.front(), Some(&Expected::reply_to(b'E')));
    }

    #[test]
    fn synthetic_replies_are_released_only_when_first_in_line() {
        let mut q = ResponseQueue::default();
        q.push(Expected::reply_to(b'B'));
        q.push(Expected::Synthetic(Bytes::from_static(b"x")));
        let mut out = Vec::new();
        q.take_due_synthetic(|b| out.push(b));
        assert!(out.is_empty());
        q.pop();
        q.take_due_synthetic(|b| out.push(b));
        assert_eq!(out, vec![Bytes::from_static(b"x")]);
        assert!(q.is_empty());
    }
}
