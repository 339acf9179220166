//! Planning a unit of work before it starts: the whole simple query, or the
//! extended-protocol messages up to `Sync`/`Flush`, is looked at before a
//! node is chosen, so that one write anywhere in it sends it to the primary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::last_parse::{mentions_copy, LastParse};
use super::statements::ClientStatements;
use crate::config::{Route, RoutingConfig};
use crate::protocol::messages::{bind_body, parse_body};
use crate::router::classify::{Classification, ClassificationCache, Hint, TransactionControl};
use crate::router::{Need, SessionRoute};

/// Beyond this many buffered bytes without a unit boundary, pgsplit stops
/// waiting for the rest and sends the unit to the primary.
const LOOKAHEAD_LIMIT: usize = 1 << 20;

/// What a unit's statements say about where it may run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnitTraits {
    /// A statement writes, locks, or could not be classified.
    pub writes: bool,
    /// Only a function of unknown or volatile kind makes it a write.
    pub writes_by_function: bool,
    /// An explicit read-write transaction starts.
    pub begins_read_write: bool,
    /// A statement could not be classified (so the unit goes to the primary).
    pub unparsed: bool,
    /// `SET TRANSACTION READ ONLY` appears (for a deferred `BEGIN`).
    pub sets_transaction_read_only: bool,
    /// A statement may be a `COPY`: the server may then take nothing but
    /// copy data after it, so pgsplit must not queue a query of its own
    /// behind the unit.
    pub may_copy: bool,
    /// A statement changes or shows session state (see
    /// [`Classification::touches_session`]).
    pub touches_session: bool,
    /// A `pgsplit:primary` or `pgsplit:replica` comment; the last one wins.
    pub hint: Option<Hint>,
}

impl UnitTraits {
    /// Adds one statement's classification; `function_is_read_only` answers
    /// for functions the classifier could not settle.
    pub fn absorb(&mut self, class: &Classification, function_is_read_only: impl Fn(&str) -> bool) {
        // State that pins the session must be created on the primary, or
        // every later write of the session would reach a replica.
        self.writes |= class.writes || class.pins;
        self.unparsed |= class.unparsed;
        self.touches_session |= class.touches_session;
        if !class.functions.iter().all(|f| function_is_read_only(f)) {
            self.writes_by_function = true;
        }
        if class.transaction == (TransactionControl::Begin { read_only: false }) {
            self.begins_read_write = true;
        }
        if class.transaction == TransactionControl::SetTransactionReadOnly {
            self.sets_transaction_read_only = true;
        }
        if class.hint.is_some() {
            self.hint = class.hint;
        }
    }

    /// Whether the unit changes data (for read-your-writes stickiness).
    pub fn wrote(&self) -> bool {
        self.writes || self.writes_by_function
    }

    /// The need of the unit, given the session's state. Whether the
    /// session is read-only by default is asked only for a `BEGIN` (a
    /// settings lookup the other transactions need not pay for).
    pub fn need(
        &self,
        session: &SessionRoute,
        read_only_session: impl FnOnce() -> bool,
        recently_wrote: bool,
    ) -> Need {
        if self.writes || self.hint == Some(Hint::Primary) {
            return Need::Primary;
        }
        if self.begins_read_write && !read_only_session() {
            return Need::Primary;
        }
        if self.hint == Some(Hint::Replica) {
            return Need::Read;
        }
        if self.writes_by_function || (recently_wrote && session.route == Route::Auto) {
            return Need::Primary;
        }
        Need::Read
    }
}

/// Whether a client wrote recently enough that its reads stay on the primary.
pub fn within_sticky_window(routing: &RoutingConfig, last_write: Option<Instant>) -> bool {
    routing.sticky_after_write > Duration::ZERO
        && last_write.is_some_and(|at| at.elapsed() < routing.sticky_after_write)
}

/// The result of looking ahead in the client's buffer.
pub enum Lookahead {
    /// The unit is complete in the buffer (or too big to wait for).
    Planned(UnitTraits),
    /// More bytes are needed to see the end of the unit.
    Incomplete,
}

/// Scans the complete messages at the front of `buf` up to the end of the
/// first unit, classifying every statement in it (`Parse` texts through
/// the session's `last_parse`).
pub fn plan(
    buf: &[u8],
    cache: &ClassificationCache,
    last_parse: &mut LastParse,
    statements: &ClientStatements,
    unnamed: Option<&Arc<Classification>>,
    function_is_read_only: &dyn Fn(&str) -> bool,
    max_message_size: usize,
) -> Lookahead {
    let mut traits = UnitTraits::default();
    let mut unnamed = unnamed.cloned();
    let mut parsed_unnamed = false;
    let mut offset = 0;
    loop {
        let rest = &buf[offset..];
        let Some(header) = rest.get(..5) else {
            return incomplete(buf, traits);
        };
        let tag = header[0];
        let length = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let length = match usize::try_from(length) {
            Ok(length) if (4..=max_message_size).contains(&length) => length,
            _ => return Lookahead::Planned(traits), // malformed: framing refuses it
        };
        let Some(body) = rest.get(5..1 + length) else {
            return incomplete(buf, traits);
        };
        match tag {
            b'Q' => {
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                let class = cache.classify(sql);
                if !cache.is_plain_read(&class) {
                    traits.may_copy |= mentions_copy(sql);
                }
                traits.absorb(&class, function_is_read_only);
                return Lookahead::Planned(traits);
            }
            b'P' => {
                if let Some(parse) = parse_body(body) {
                    let parsed = last_parse.look_at(cache, parse.query);
                    traits.may_copy |= parsed.may_copy;
                    traits.absorb(&parsed.class, function_is_read_only);
                    if parse.name.is_empty() {
                        unnamed = Some(parsed.class);
                        parsed_unnamed = true;
                    }
                }
            }
            b'B' => {
                let class = match bind_body(body) {
                    Some((_, name, _)) if !name.is_empty() => {
                        let statement = statements.get(name);
                        traits.may_copy |= statement.is_none_or(|s| s.may_copy);
                        statement.map(|s| s.class.clone())
                    }
                    _ => {
                        // An unnamed statement parsed in an earlier unit: its text is gone.
                        traits.may_copy |= !parsed_unnamed;
                        unnamed.clone()
                    }
                };
                if let Some(class) = class {
                    traits.absorb(&class, function_is_read_only);
                }
            }
            b'F' => {
                traits.writes = true;
                return Lookahead::Planned(traits);
            }
            b'D' | b'E' | b'C' | b'd' | b'c' | b'f' => {}
            // Sync, Flush and Terminate end the unit; anything else is
            // refused by the session, so there is nothing more to plan.
            _ => return Lookahead::Planned(traits),
        }
        offset += 1 + length;
    }
}

fn incomplete(buf: &[u8], traits: UnitTraits) -> Lookahead {
    if buf.len() > LOOKAHEAD_LIMIT {
        // Not all of it was looked at: assume the worst of the rest.
        Lookahead::Planned(UnitTraits {
            writes: true,
            touches_session: true,
            ..traits
        })
    } else {
        Lookahead::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(buf: &[u8]) -> Lookahead {
        let cache = ClassificationCache::new(16);
        let statements = ClientStatements::default();
        let mut last_parse = LastParse::default();
        plan(
            buf,
            &cache,
            &mut last_parse,
            &statements,
            None,
            &|_| false,
            64 << 20,
        )
    }

    #[test]
    fn a_unit_too_big_to_wait_for_is_assumed_to_write_and_touch_the_session() {
        // The start of a 2 MiB query: SET first, the rest not yet arrived.
        let mut buf = vec![b'Q'];
        buf.extend_from_slice(&(2i32 << 20).to_be_bytes());
        buf.extend_from_slice(b"SET search_path TO a; SELECT '");
        buf.resize(LOOKAHEAD_LIMIT + 1, b'x');
        let Lookahead::Planned(traits) = plan_of(&buf) else {
            panic!("a buffer over the lookahead limit is planned");
        };
        assert!(traits.writes && traits.touches_session);
        buf.truncate(LOOKAHEAD_LIMIT);
        assert!(matches!(plan_of(&buf), Lookahead::Incomplete));
    }

    #[test]
    fn a_whole_query_is_planned_from_its_statements() {
        let query = |sql: &str| {
            let mut buf = vec![b'Q'];
            buf.extend_from_slice(&(sql.len() as i32 + 5).to_be_bytes());
            buf.extend_from_slice(sql.as_bytes());
            buf.push(0);
            buf
        };
        let Lookahead::Planned(select) = plan_of(&query("SELECT 1")) else {
            panic!("a whole query is planned");
        };
        assert!(!select.writes && !select.touches_session);
        let Lookahead::Planned(set) = plan_of(&query("SET search_path TO a")) else {
            panic!("a whole query is planned");
        };
        assert!(set.touches_session);
        // A plain SELECT cannot start COPY; anything else naming it may.
        for (sql, may_copy) in [
            ("SELECT copy FROM t", false),
            ("COPY t FROM STDIN", true),
            ("SELECT 1; COPY t FROM STDIN", true),
            ("SELECT f(copy) FROM t", true),
        ] {
            let Lookahead::Planned(traits) = plan_of(&query(sql)) else {
                panic!("a whole query is planned");
            };
            assert_eq!(traits.may_copy, may_copy, "{sql}");
        }
    }
}
