//! Query text as the router and the pooler see it: read/write
//! classification (including the pg_query parse), statement splitting, and
//! the session-state effects of each statement.
//!
//! Invariants: an unparsed query counts as a write; a write lists no
//! functions to check; each split statement is a trimmed piece of the
//! input with a token, in order; a query string writes when one of its
//! statements does on its own, and only then; the cache's keyword fast path
//! never calls a write a read and sees the same session effects.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsplit::router::classify::{classify, ClassificationCache, TransactionControl};
use pgsplit::sql::lexer::{is_sql_whitespace, split_statements, tokens};
use pgsplit::sql::session::{session_effect, sets_boolean_on, setting_value, SessionEffect};

fuzz_target!(
    init: {
        // pgsplit catches the panics pg_query's result post-processing can
        // raise (and counts the statement as an unparsable write), but
        // libfuzzer-sys's hook aborts on any panic, caught or not. Let panics
        // raised in pg_query's own code unwind to pgsplit's catch_unwind;
        // every other panic still aborts, with the usual report.
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_pg_query = info
                .location()
                .is_some_and(|l| l.file().contains("/pg_query-"));
            if !in_pg_query {
                abort(info);
            }
        }));
    },
    |data: &[u8]| {
        let Ok(sql) = std::str::from_utf8(data) else {
            return;
        };
        let classification = classify(sql);
        assert!(!classification.unparsed || classification.writes);
        assert!(!classification.writes || classification.functions.is_empty());

        // No cache: every call takes the fast path or the full one afresh.
        let fast = ClassificationCache::new(0).classify(sql);
        assert!(!classification.writes || fast.writes, "fast path reads {sql:?}");
        assert_eq!(fast.touches_session, classification.touches_session);
        assert_eq!(fast.pins, classification.pins);
        assert_eq!(fast.transaction, classification.transaction);

        let statements = split_statements(sql);
        let mut after = 0;
        let mut any_effect = false;
        let mut any_writes = false;
        let mut any_unparsed = false;
        for statement in &statements {
            let sql_space = |c: char| c.is_ascii() && is_sql_whitespace(c as u8);
            assert_eq!(statement.trim_matches(sql_space), *statement);
            assert!(tokens(statement).next().is_some(), "empty statement {statement:?}");
            let start = statement.as_ptr() as usize - sql.as_ptr() as usize;
            assert!(start >= after && start + statement.len() <= sql.len());
            assert_eq!(&sql[start..start + statement.len()], *statement);
            after = start + statement.len();

            let alone = classify(statement);
            any_writes |= alone.writes;
            any_unparsed |= alone.unparsed;

            any_effect |= session_effect(statement) != SessionEffect::None;
            let _ = setting_value(statement);
            let _ = sets_boolean_on(statement);
            for (offset, _) in tokens(statement) {
                assert!(statement.is_char_boundary(offset));
            }
        }
        // A write anywhere sends the whole string to the primary.
        assert!(!any_writes || classification.writes);
        assert!(!any_unparsed || classification.unparsed);
        // And only a write does.
        assert_eq!(classification.writes, any_writes);
        assert_eq!(classification.unparsed, any_unparsed);
        assert_eq!(classification.touches_session, any_effect);
        if statements.is_empty() {
            assert_eq!(classification.transaction, TransactionControl::None);
        }
    }
);
