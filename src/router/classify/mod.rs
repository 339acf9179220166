//! Read/write classification of query text, so that routing can send reads
//! to replicas and everything else to the primary.
//!
//! Most statements are settled by their first keyword with the pooling
//! tokenizer (`INSERT` writes, `SHOW` reads, ...), and simple `SELECT`s are
//! settled by a scan for the few words that can make them write (`INTO`,
//! `FOR`, `WITH`, a function call). Everything else is parsed with
//! PostgreSQL's own parser (`pg_query`) and its tree is searched for
//! `SELECT ... INTO`, locking clauses, data-modifying CTEs and function
//! calls. Whenever the answer is unclear the statement counts as a write:
//! a read wrongly sent to the primary costs a little load, a write sent to a
//! replica fails.
//!
//! Known limits: user-defined operators, views and triggers can run volatile
//! functions that no look at the text reveals; and the text is lexed as with
//! `standard_conforming_strings = on` (the default since PostgreSQL 9.1).

mod builtins;
mod cache;
mod hint;
mod lexical;
#[cfg(test)]
mod tests;
mod tree;
mod walk;

use crate::sql::lexer::split_statements;
use crate::sql::{session_effect, SessionEffect};

pub use cache::ClassificationCache;
use hint::find_hint;
use lexical::lexical;
use tree::parsed;

/// What routing needs to know about one query string (possibly several
/// statements), computed once per distinct text and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Must run on the primary: some statement writes, locks, or could not
    /// be classified.
    pub writes: bool,
    /// Some statement could not be parsed (implies `writes`); the caller
    /// counts these.
    pub unparsed: bool,
    /// Functions called that the built-in lists do not settle (lowercased,
    /// schema-qualified as written: `"myschema.f"` or `"f"`), for the router
    /// to check against `pg_proc` volatility. Empty when `writes` is already
    /// set, and for most queries.
    pub functions: Vec<String>,
    /// The first transaction-control statement, which decides how long the
    /// routing decision lasts.
    pub transaction: TransactionControl,
    /// A `/* pgsplit:primary */` or `/* pgsplit:replica */` comment anywhere
    /// in the text, so applications can override the classifier.
    pub hint: Option<Hint>,
    /// A statement creates state bound to its server connection (a
    /// temporary table, `LISTEN`, ...). It pins the session, so it must be
    /// made on the primary: the session's later writes will go there too.
    pub pins: bool,
    /// Some statement has a [`SessionEffect`] (`SET`, `SHOW`, `DEALLOCATE`,
    /// a pinning one, ...), so the session must look at the statements one
    /// by one; for all other texts it need not split them at all.
    pub touches_session: bool,
}

/// Transaction control seen in a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionControl {
    /// No transaction-control statement.
    None,
    /// `BEGIN` / `START TRANSACTION`; a read-only one may go to a replica.
    Begin {
        /// `READ ONLY` was given.
        read_only: bool,
    },
    /// `SET TRANSACTION READ ONLY` (or `SET transaction_read_only = on`)
    /// inside a transaction.
    SetTransactionReadOnly,
    /// `COMMIT`, `ROLLBACK`, `END`, `ABORT`, `PREPARE TRANSACTION`,
    /// `COMMIT PREPARED`, `ROLLBACK PREPARED`: the transaction is over.
    End,
}

/// A routing hint given in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// `/* pgsplit:primary */`: run on the primary whatever the statement.
    Primary,
    /// `/* pgsplit:replica */`: a replica may run it even if it calls
    /// functions of unknown volatility.
    Replica,
}

/// Classifies a query string (any number of `;`-separated statements).
/// Pure and uncached: see [`ClassificationCache`] for the cached form.
pub fn classify(sql: &str) -> Classification {
    let mut verdict = Verdict::read();
    let mut session = SessionUse::default();
    for statement in split_statements(sql) {
        let statement_verdict = classify_statement(statement);
        session.merge(SessionUse::of(statement, &statement_verdict));
        verdict.merge(statement_verdict);
    }
    verdict.into_classification(sql, session)
}

/// What a text's statements mean for the client session: the
/// [`Classification::pins`] and [`Classification::touches_session`] flags.
#[derive(Debug, Default, Clone, Copy)]
struct SessionUse {
    pins: bool,
    touches: bool,
}

impl SessionUse {
    /// What `statement`, classified as `verdict`, means for the session.
    fn of(statement: &str, verdict: &Verdict) -> SessionUse {
        if verdict.calls_nothing {
            return SessionUse::default();
        }
        let effect = session_effect(statement);
        SessionUse {
            pins: matches!(effect, SessionEffect::Pin(_)),
            touches: effect != SessionEffect::None,
        }
    }

    fn merge(&mut self, other: SessionUse) {
        self.pins |= other.pins;
        self.touches |= other.touches;
    }
}

/// One statement's verdict, before merging into a [`Classification`].
#[derive(Debug)]
struct Verdict {
    writes: bool,
    unparsed: bool,
    functions: Vec<String>,
    transaction: TransactionControl,
    /// A `SELECT`, `VALUES` or `TABLE` its tokens settled as plain: it
    /// calls no function, so it takes no advisory lock and has no session
    /// effect, and [`session_effect`] need not look at it.
    calls_nothing: bool,
}

impl Verdict {
    fn read() -> Verdict {
        Verdict {
            writes: false,
            unparsed: false,
            functions: Vec::new(),
            transaction: TransactionControl::None,
            calls_nothing: false,
        }
    }

    fn plain_read() -> Verdict {
        Verdict {
            calls_nothing: true,
            ..Verdict::read()
        }
    }

    fn write() -> Verdict {
        Verdict {
            writes: true,
            ..Verdict::read()
        }
    }

    fn unparsed() -> Verdict {
        Verdict {
            writes: true,
            unparsed: true,
            ..Verdict::read()
        }
    }

    fn transaction(transaction: TransactionControl) -> Verdict {
        Verdict {
            transaction,
            ..Verdict::read()
        }
    }

    /// The classification of `sql`, whose statements merged into this
    /// verdict, and what they mean for the session.
    fn into_classification(mut self, sql: &str, session: SessionUse) -> Classification {
        if self.writes {
            self.functions.clear();
        }
        Classification {
            writes: self.writes,
            unparsed: self.unparsed,
            functions: self.functions,
            transaction: self.transaction,
            hint: find_hint(sql),
            pins: session.pins,
            touches_session: session.touches,
        }
    }

    /// Adds the verdict of a later statement: any write makes it write, the
    /// first transaction control counts, functions are kept once each.
    fn merge(&mut self, other: Verdict) {
        self.writes |= other.writes;
        self.unparsed |= other.unparsed;
        if self.transaction == TransactionControl::None {
            self.transaction = other.transaction;
        }
        for function in other.functions {
            if !self.functions.contains(&function) {
                self.functions.push(function);
            }
        }
    }
}

fn classify_statement(statement: &str) -> Verdict {
    lexical(statement).unwrap_or_else(|| parsed(statement))
}
