//! The keyword fast path: statements settled by their tokens alone.

use super::{TransactionControl, Verdict};
use crate::sql::lexer::{tokens, Token};

/// Lowercases a short ASCII word into `buf`; `None` if it cannot be a keyword
/// this module knows (too long or not ASCII).
pub(super) fn lower_keyword<'b>(word: &str, buf: &'b mut [u8; 16]) -> Option<&'b str> {
    let bytes = word.as_bytes();
    let target = buf.get_mut(..bytes.len())?;
    for (out, &b) in target.iter_mut().zip(bytes) {
        if !b.is_ascii() {
            return None;
        }
        *out = b.to_ascii_lowercase();
    }
    std::str::from_utf8(target).ok()
}

/// Settles a statement from its tokens alone, or `None` when it needs a parse.
pub(super) fn lexical(statement: &str) -> Option<Verdict> {
    let mut words = tokens(statement).map(|(_, token)| token).peekable();
    let mut parenthesised = false;
    while words.next_if_eq(&Token::Symbol('(')).is_some() {
        parenthesised = true;
    }
    let Some(Token::Word(first)) = words.next() else {
        return None;
    };
    let mut buf = [0u8; 16];
    let keyword = lower_keyword(first, &mut buf)?;
    if parenthesised && !matches!(keyword, "select" | "values" | "table") {
        return None;
    }
    match keyword {
        "insert" | "update" | "delete" | "merge" | "create" | "alter" | "drop" | "truncate"
        | "grant" | "revoke" | "comment" | "lock" | "call" | "do" | "vacuum" | "analyze"
        | "analyse" | "reindex" | "cluster" | "refresh" | "security" | "import" | "checkpoint"
        | "listen" | "notify" | "unlisten" | "reassign" | "execute" => {
            return Some(Verdict::write())
        }
        "show" | "reset" | "discard" | "deallocate" | "fetch" | "move" | "close" | "savepoint"
        | "release" | "load" => return Some(Verdict::read()),
        "select" | "values" | "table" => return plain_select(words).then(Verdict::read),
        // Without ANALYZE, EXPLAIN plans but does not run the statement.
        "explain" => {
            return (!words.any(|t| t.is_keyword("analyze") || t.is_keyword("analyse")))
                .then(Verdict::read)
        }
        _ => {}
    }
    // Transaction control and SET: short statements.
    let rest: Vec<Token> = words.collect();
    let word_at = |i: usize, k: &str| rest.get(i).is_some_and(|t| t.is_keyword(k));
    let verdict = match keyword {
        "prepare" if word_at(0, "transaction") => Verdict {
            writes: true,
            ..Verdict::transaction(TransactionControl::End)
        },
        "set" => Verdict::transaction(set_transaction(&rest)),
        "begin" => Verdict::transaction(TransactionControl::Begin {
            read_only: read_only_mode(&rest),
        }),
        "start" if word_at(0, "transaction") => Verdict::transaction(TransactionControl::Begin {
            read_only: read_only_mode(&rest),
        }),
        "commit" | "rollback" if word_at(0, "prepared") => Verdict {
            writes: true,
            ..Verdict::transaction(TransactionControl::End)
        },
        // ROLLBACK TO SAVEPOINT: the transaction goes on.
        "rollback" if rest.iter().any(|t| t.is_keyword("to")) => Verdict::read(),
        "commit" | "rollback" | "end" | "abort" => Verdict::transaction(TransactionControl::End),
        _ => return None,
    };
    Some(verdict)
}

/// Words before `(` that do not make it a function call (reserved keywords
/// that cannot name a function); the parenthesised part is scanned anyway.
pub(super) fn opens_no_call(word: &str) -> bool {
    #[rustfmt::skip]
    const KEYWORDS: [&str; 26] = [
        "all", "and", "any", "array", "case", "cast", "distinct", "else", "except", "exists",
        "from", "in", "intersect", "lateral", "not", "on", "or", "row", "select", "some", "then",
        "union", "using", "values", "when", "where",
    ];
    KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// True when the rest of a `SELECT`/`VALUES`/`TABLE` has none of `INTO`,
/// `FOR` (locking), `WITH` (maybe a data-modifying CTE) or a function call:
/// such a statement only reads and calls nothing, without a parse.
pub(super) fn plain_select<'a>(rest: impl Iterator<Item = Token<'a>>) -> bool {
    let mut previous: Option<Token> = None;
    for token in rest {
        match token {
            Token::Word(w)
                if w.eq_ignore_ascii_case("into")
                    || w.eq_ignore_ascii_case("for")
                    || w.eq_ignore_ascii_case("with") =>
            {
                return false
            }
            Token::Symbol('(') => match previous {
                Some(Token::Word(w)) if !opens_no_call(w) => return false,
                Some(Token::QuotedIdent(_)) => return false,
                _ => {}
            },
            _ => {}
        }
        previous = Some(token);
    }
    true
}

/// `READ ONLY` among transaction modes (`BEGIN`, `START TRANSACTION`,
/// `SET TRANSACTION`).
pub(super) fn read_only_mode(modes: &[Token]) -> bool {
    modes
        .windows(2)
        .any(|w| w[0].is_keyword("read") && w[1].is_keyword("only"))
}

/// The transaction control of a `SET` statement (all `SET`s read).
pub(super) fn set_transaction(rest: &[Token]) -> TransactionControl {
    let mut i = 0;
    // SET [LOCAL | SESSION] TRANSACTION ...; but SET SESSION CHARACTERISTICS
    // AS TRANSACTION only sets a session default.
    if rest
        .first()
        .is_some_and(|t| t.is_keyword("local") || t.is_keyword("session"))
        && rest
            .get(1)
            .is_some_and(|t| t.is_keyword("transaction") || t.is_keyword("transaction_read_only"))
    {
        i = 1;
    }
    match rest.get(i) {
        Some(t) if t.is_keyword("transaction") && read_only_mode(&rest[i..]) => {
            TransactionControl::SetTransactionReadOnly
        }
        Some(t) if t.is_keyword("transaction_read_only") => {
            let value = match rest.get(i + 1) {
                Some(t) if *t == Token::Symbol('=') || t.is_keyword("to") => rest.get(i + 2),
                _ => None,
            };
            let on = match value {
                Some(Token::Word(w)) | Some(Token::Number(w)) => truthy(w),
                Some(Token::Literal(l)) => truthy(l.trim_matches('\'')),
                _ => false,
            };
            if on {
                TransactionControl::SetTransactionReadOnly
            } else {
                TransactionControl::None
            }
        }
        _ => TransactionControl::None,
    }
}

/// PostgreSQL's spellings of a true boolean setting.
pub(super) fn truthy(value: &str) -> bool {
    ["on", "true", "yes", "1", "t", "y"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}

/// PostgreSQL's spellings of a false boolean setting.
pub(super) fn falsy(value: &str) -> bool {
    ["off", "false", "no", "0", "f", "n"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}
