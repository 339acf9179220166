//! Just enough SQL lexing for pooling: splitting a query string into
//! statements and recognising the ones that change session state.
//! (Read/write classification builds on the same tokenizer.)

pub mod lexer;
pub mod session;

pub use session::{session_effect, SessionEffect};

use std::borrow::Cow;

/// The first position of `needle` (ASCII) in `haystack`, ignoring ASCII case.
///
/// Runs on every query (hints, `COPY`, advisory locks), so it jumps between
/// occurrences of the needle's last byte (rarer in SQL than the first:
/// `y` of `copy` and `advisory`, `:` of `pgsplit:`) instead of comparing
/// at every byte.
pub fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&last, _) = needle.split_last()?;
    let span = needle.len() - 1;
    let tail = haystack.get(span..)?;
    memchr::memchr2_iter(last.to_ascii_lowercase(), last.to_ascii_uppercase(), tail)
        .find(|&at| haystack[at..=at + span].eq_ignore_ascii_case(needle))
}

/// A query text as `str`: borrowed when it is valid UTF-8 (the usual case,
/// checked at full speed), otherwise with invalid bytes replaced.
pub fn query_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Quotes text as an SQL string literal that reads the same whatever
/// `standard_conforming_strings` is (backslashes use the `E''` form).
pub fn quote_literal(value: &str) -> String {
    let doubled = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", doubled.replace('\\', "\\\\"))
    } else {
        format!("'{doubled}'")
    }
}

#[cfg(test)]
mod tests {
    use super::{find_ignore_case, query_text, quote_literal};

    #[test]
    fn finds_needles_ignoring_case() {
        assert_eq!(find_ignore_case(b"select * from t", b"FROM"), Some(9));
        assert_eq!(find_ignore_case(b"COPY t", b"copy"), Some(0));
        assert_eq!(find_ignore_case(b"x pg_try_Advisory", b"advisory"), Some(9));
        assert_eq!(find_ignore_case(b"advisor", b"advisory"), None);
        assert_eq!(find_ignore_case(b"cop", b"copy"), None);
        assert_eq!(find_ignore_case(b"", b"copy"), None);
        assert_eq!(find_ignore_case(b"abc", b""), None);
    }

    proptest::proptest! {
        /// The same answer as comparing at every position.
        #[test]
        fn finds_what_a_plain_scan_finds(haystack in "[aAdDvVyY:isoO ]{0,30}", needle in "[advisory:]{1,4}") {
            let expected = haystack
                .as_bytes()
                .windows(needle.len())
                .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
            proptest::prop_assert_eq!(find_ignore_case(haystack.as_bytes(), needle.as_bytes()), expected);
        }
    }

    #[test]
    fn query_text_borrows_valid_utf8_and_replaces_the_rest() {
        assert!(matches!(
            query_text(b"select 1"),
            std::borrow::Cow::Borrowed("select 1")
        ));
        assert_eq!(query_text(b"select \xff"), "select \u{fffd}");
    }

    #[test]
    fn quotes_literals_safely() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
    }
}
