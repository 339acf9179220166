//! Routing hints in comments: `/* pgsplit:primary */`, `/* pgsplit:replica */`.

use super::Hint;
use crate::sql::find_ignore_case;
use crate::sql::lexer::{tokens, Token};

/// Finds a `pgsplit:primary` / `pgsplit:replica` hint in a comment (not in
/// a literal or identifier); `primary` wins if both appear.
pub(super) fn find_hint(sql: &str) -> Option<Hint> {
    find_ignore_case(sql.as_bytes(), b"pgsplit:")?;
    let mut hint = None;
    let mut note = |gap: &str| {
        let gap = gap.as_bytes();
        if find_ignore_case(gap, b"pgsplit:primary").is_some() {
            hint = Some(Hint::Primary);
        } else if hint.is_none() && find_ignore_case(gap, b"pgsplit:replica").is_some() {
            hint = Some(Hint::Replica);
        }
    };
    // Comments only occur between tokens.
    let mut end = 0;
    for (start, token) in tokens(sql) {
        if start > end {
            if let Some(gap) = sql.get(end..start) {
                note(gap);
            }
        }
        end = end.max(token_end(sql, start, token));
    }
    if let Some(gap) = sql.get(end..) {
        note(gap);
    }
    hint
}

/// The byte offset just past a token that starts at `start`.
pub(super) fn token_end(sql: &str, start: usize, token: Token) -> usize {
    let end = match token {
        Token::Word(text) | Token::Literal(text) | Token::Number(text) => start + text.len(),
        Token::QuotedIdent(text) => start + text.len() + 2,
        Token::Symbol(c) => start + c.len_utf8(),
    };
    end.min(sql.len())
}
