//! What a session's last `Parse` text means for routing, remembered.
//!
//! Most drivers send the same text again in an unnamed `Parse` for every
//! execution (`pgbench -M extended`, JDBC before its prepare threshold),
//! and each `Parse` is looked at twice: when its unit is planned and when
//! it is forwarded. Comparing the text with the last one is cheaper than
//! a UTF-8 check, a hash and a locked lookup in the shared cache.

use std::sync::Arc;

use crate::router::classify::{Classification, ClassificationCache};
use crate::sql::{find_ignore_case, query_text};

/// Longer texts are not remembered, so an idle session keeps little memory.
const MAX_REMEMBERED_LEN: usize = 2048;

/// What routing needs to know about a `Parse` text.
#[derive(Debug, Clone)]
pub struct ParsedText {
    /// Its classification, from the shared cache.
    pub class: Arc<Classification>,
    /// It may hold a `COPY` (see `UnitTraits::may_copy`).
    pub may_copy: bool,
}

/// The last `Parse` text of one session and what it means.
#[derive(Debug, Default)]
pub struct LastParse {
    text: Vec<u8>,
    parsed: Option<ParsedText>,
}

impl LastParse {
    /// What `query` (a `Parse` message's text) means: remembered when it
    /// repeats the last text, otherwise worked out (through `cache`) and
    /// remembered.
    pub fn look_at(&mut self, cache: &ClassificationCache, query: &[u8]) -> ParsedText {
        if let Some(parsed) = self.parsed.as_ref().filter(|_| self.text == query) {
            return parsed.clone();
        }
        let parsed = ParsedText {
            class: cache.classify_repeating(&query_text(query)),
            may_copy: mentions_copy(query),
        };
        self.text.clear();
        if query.len() <= MAX_REMEMBERED_LEN {
            self.text.extend_from_slice(query);
            self.parsed = Some(parsed.clone());
        } else {
            self.text.shrink_to(MAX_REMEMBERED_LEN);
            self.parsed = None;
        }
        parsed
    }
}

/// Whether a statement text could hold a `COPY` (a cheap, conservative check).
pub fn mentions_copy(sql: &[u8]) -> bool {
    find_ignore_case(sql, b"copy").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_text_is_answered_from_memory_and_a_new_one_is_looked_at() {
        let cache = ClassificationCache::new(16);
        let mut last = LastParse::default();
        let read = last.look_at(&cache, b"SELECT a FROM t WHERE id = $1");
        assert!(!read.class.writes && !read.may_copy);
        let again = last.look_at(&cache, b"SELECT a FROM t WHERE id = $1");
        assert!(Arc::ptr_eq(&read.class, &again.class));
        let write = last.look_at(&cache, b"UPDATE t SET a = $1");
        assert!(write.class.writes);
        let copy = last.look_at(&cache, b"COPY t TO STDOUT");
        assert!(copy.may_copy, "COPY TO only reads, but it must be seen");
    }

    #[test]
    fn a_long_text_is_classified_but_not_kept() {
        let cache = ClassificationCache::new(16);
        let mut last = LastParse::default();
        let long = format!("SELECT {} FROM t", "a, ".repeat(1000) + "a");
        assert!(long.len() > MAX_REMEMBERED_LEN);
        assert!(!last.look_at(&cache, long.as_bytes()).class.writes);
        assert!(last.parsed.is_none() && last.text.capacity() <= MAX_REMEMBERED_LEN);
        // A short write after it is not mistaken for the long read.
        assert!(last.look_at(&cache, b"DELETE FROM t").class.writes);
    }
}
