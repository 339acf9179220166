//! Just enough SQL lexing for pooling: splitting a query string into
//! statements and recognising the ones that change session state.
//! (Read/write classification builds on the same tokenizer.)

pub mod lexer;
pub mod session;

pub use session::{session_effect, SessionEffect};

/// The first position of `needle` (ASCII) in `haystack`, ignoring ASCII case.
pub fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
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
    use super::quote_literal;

    #[test]
    fn quotes_literals_safely() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
    }
}
