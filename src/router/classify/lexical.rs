//! The keyword fast path: statements settled by their tokens alone.

use super::{TransactionControl, Verdict};
use crate::sql::lexer::{is_ident_char, is_sql_whitespace, run_end, tokens, Token};

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

/// The first word of a statement, where it starts, and whether opening
/// parentheses came before it; `None` if a statement starts otherwise.
/// A letter after plain whitespace (nearly every statement) is found by a
/// look at the bytes; comments and parentheses go through the tokenizer.
fn first_word(statement: &str) -> Option<(usize, &str, bool)> {
    if let Some((at, word)) = word_after_whitespace(statement) {
        return Some((at, word, false));
    }
    let mut words = tokens(statement).peekable();
    let mut parenthesised = false;
    while words.next_if(|(_, t)| *t == Token::Symbol('(')).is_some() {
        parenthesised = true;
    }
    match words.next() {
        Some((at, Token::Word(first))) => Some((at, first, parenthesised)),
        _ => None,
    }
}

/// The first word and where it starts, when only plain whitespace comes
/// before it (no comment, no parenthesis): found by a look at the bytes.
fn word_after_whitespace(statement: &str) -> Option<(usize, &str)> {
    let (at, word) = word_after_whitespace_bytes(statement.as_bytes())?;
    // The word ends before an ASCII byte or at the end: a char boundary.
    Some((at, &statement[at..at + word.len()]))
}

/// [`word_after_whitespace`] over bytes, for texts not yet checked as UTF-8.
fn word_after_whitespace_bytes(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let at = run_end(bytes, 0, is_sql_whitespace);
    if !bytes.get(at).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let end = run_end(bytes, at + 1, is_ident_char);
    Some((at, &bytes[at..end]))
}

/// Settles a statement from its tokens alone, or `None` when it needs a parse.
pub(super) fn lexical(statement: &str) -> Option<Verdict> {
    let (at, first, parenthesised) = first_word(statement)?;
    // The tokens after the first word: tokenizing can start afresh there,
    // right after a word.
    let mut words = tokens(&statement[at + first.len()..]).map(|(_, token)| token);
    let mut buf = [0u8; 16];
    let keyword = lower_keyword(first, &mut buf)?;
    if parenthesised && !matches!(keyword, "select" | "values" | "table") {
        return None;
    }
    // String patterns are tried in order: the most frequent comes first.
    match keyword {
        "select" | "values" | "table" => {
            let rest = &statement[at + first.len()..];
            return plain_select_text(rest).then(Verdict::plain_read);
        }
        "insert" | "update" | "delete" | "merge" | "create" | "alter" | "drop" | "truncate"
        | "grant" | "revoke" | "comment" | "lock" | "call" | "do" | "vacuum" | "analyze"
        | "analyse" | "reindex" | "cluster" | "refresh" | "security" | "import" | "checkpoint"
        | "listen" | "notify" | "unlisten" | "reassign" | "execute" => {
            return Some(Verdict::write())
        }
        "show" | "reset" | "discard" | "deallocate" | "fetch" | "move" | "close" | "savepoint"
        | "release" | "load" => return Some(Verdict::read()),
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
pub(super) fn opens_no_call(word: &[u8]) -> bool {
    #[rustfmt::skip]
    const KEYWORDS: [&str; 26] = [
        "all", "and", "any", "array", "case", "cast", "distinct", "else", "except", "exists",
        "from", "in", "intersect", "lateral", "not", "on", "or", "row", "select", "some", "then",
        "union", "using", "values", "when", "where",
    ];
    KEYWORDS
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
}

/// Whether `sql` is one `SELECT`, `VALUES` or `TABLE` that the byte scan
/// settles as plain: its first word comes right after whitespace (no
/// comment, so no hint), and nothing after it needs the tokenizer or makes
/// it more than a read. Its classification is then the shared plain read,
/// known without building one: most queries of a read-heavy application.
/// Bytes, not `str`: the answer is the same for the text and for its
/// lossy UTF-8 form (every byte from 0x80 up scans as part of a word), so
/// such a query needs no UTF-8 check.
pub(super) fn is_plain_read_text(sql: &[u8]) -> bool {
    let Some((at, first)) = word_after_whitespace_bytes(sql) else {
        return false;
    };
    let rest = &sql[at + first.len()..];
    [b"select".as_slice(), b"values", b"table"]
        .iter()
        .any(|keyword| first.eq_ignore_ascii_case(keyword))
        && plain_select_bytes(rest) == Some(true)
}

/// [`plain_select`] of a text: scanned byte by byte when nothing in it needs
/// the tokenizer (the usual case), otherwise token by token.
pub(super) fn plain_select_text(rest: &str) -> bool {
    plain_select_bytes(rest.as_bytes())
        .unwrap_or_else(|| plain_select(tokens(rest).map(|(_, t)| t)))
}

/// What a byte means to [`plain_select_bytes`], looked up in a table: the
/// scan runs on nearly every simple query.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScanClass {
    /// Starts an identifier or keyword (letters, `_`, non-ASCII).
    Word,
    Space,
    Digit,
    /// Always needs the tokenizer: a quote.
    Quote,
    /// Ends a statement: what follows must be empty for the scan to answer.
    Semicolon,
    /// `-`, `/` or `$`: needs the tokenizer if a comment, dollar quote follows.
    Maybe,
    Open,
    Other,
}

static SCAN_CLASSES: [ScanClass; 256] = scan_classes();

const fn scan_classes() -> [ScanClass; 256] {
    let mut table = [ScanClass::Other; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | 0x80..=0xff => ScanClass::Word,
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => ScanClass::Space,
            b'0'..=b'9' => ScanClass::Digit,
            b'\'' | b'"' => ScanClass::Quote,
            b'-' | b'/' | b'$' => ScanClass::Maybe,
            b'(' => ScanClass::Open,
            b';' => ScanClass::Semicolon,
            _ => ScanClass::Other,
        };
        c += 1;
    }
    table
}

/// Whether a word is `FOR`, `INTO` or `WITH`, in any case.
fn stops_plain_select(word: &[u8]) -> bool {
    // Setting bit 5 lowercases ASCII letters (and leaves these words' other
    // bytes, all letters, comparable).
    match *word {
        [a, b, c] => [a | 0x20, b | 0x20, c | 0x20] == *b"for",
        [a, b, c, d] => {
            let lower = [a | 0x20, b | 0x20, c | 0x20, d | 0x20];
            lower == *b"into" || lower == *b"with"
        }
        _ => false,
    }
}

/// The answer of [`plain_select`] in one pass over the bytes, or `None` at
/// the first byte that needs the tokenizer: a quote (literal or quoted
/// identifier), a comment, a `$` that does not start a parameter, or a `;`
/// followed by more than whitespace and `;` (another statement).
fn plain_select_bytes(text: &[u8]) -> Option<bool> {
    // The word right before, unless something else came after it.
    let mut previous_word: Option<&[u8]> = None;
    let mut at = 0;
    while let Some(&c) = text.get(at) {
        match SCAN_CLASSES[usize::from(c)] {
            ScanClass::Word => {
                let end = run_end(text, at + 1, is_ident_char);
                let word = &text[at..end];
                if stops_plain_select(word) {
                    return Some(false);
                }
                previous_word = Some(word);
                at = end;
            }
            ScanClass::Space => at += 1,
            ScanClass::Quote => return None,
            ScanClass::Semicolon => {
                let rest = text.get(at..).unwrap_or_default();
                return rest
                    .iter()
                    .all(|&c| c == b';' || is_sql_whitespace(c))
                    .then_some(true);
            }
            ScanClass::Maybe => {
                let next = text.get(at + 1).copied();
                match (c, next) {
                    (b'-', Some(b'-')) | (b'/', Some(b'*')) => return None,
                    // A parameter is `$` and digits.
                    (b'$', Some(b'0'..=b'9')) => {
                        at = run_end(text, at + 1, |c| c.is_ascii_digit());
                    }
                    (b'$', _) => return None,
                    _ => at += 1,
                }
                previous_word = None;
            }
            ScanClass::Open => {
                if previous_word.is_some_and(|w| !opens_no_call(w)) {
                    return Some(false);
                }
                previous_word = None;
                at += 1;
            }
            // A number is one token, however long.
            ScanClass::Digit => {
                at = run_end(text, at + 1, |c| {
                    c.is_ascii_alphanumeric() || c == b'.' || c == b'_'
                });
                previous_word = None;
            }
            ScanClass::Other => {
                previous_word = None;
                at += 1;
            }
        }
    }
    Some(true)
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
                Some(Token::Word(w)) if !opens_no_call(w.as_bytes()) => return false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_scan_settles_usual_selects_and_leaves_quotes_to_the_tokenizer() {
        let scan = |sql: &str| plain_select_bytes(sql.as_bytes());
        assert_eq!(scan(" abalance FROM t WHERE aid = 4711"), Some(true));
        assert_eq!(scan(" * FROM t WHERE a IN (1, 2) AND b = $1"), Some(true));
        assert_eq!(scan(" count(*) FROM t"), Some(false));
        assert_eq!(scan(" s.f (1)"), Some(false));
        assert_eq!(scan(" a FROM t FOR UPDATE"), Some(false));
        assert_eq!(scan(" 1 INTO x"), Some(false));
        assert_eq!(scan(" a FROM t WHERE b = 'x'"), None);
        assert_eq!(scan(" \"f\"(1)"), None);
        assert_eq!(scan(" 1 -- into"), None);
        assert_eq!(scan(" $$x$$"), None);
    }

    #[test]
    fn plain_read_texts_are_single_plain_selects_without_comments() {
        assert!(is_plain_read_text(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"
        ));
        assert!(is_plain_read_text(b" values (1, 2) ; ;\n"));
        assert!(is_plain_read_text(b"TABLE t"));
        assert!(!is_plain_read_text(b"SELECT 1; SELECT 2"));
        assert!(!is_plain_read_text(b"/* pgsplit:primary */ SELECT 1"));
        assert!(!is_plain_read_text(b"SELECT 1 -- pgsplit:primary"));
        assert!(!is_plain_read_text(b"SELECT nextval('s')"));
        assert!(!is_plain_read_text(b"SELECT a FROM t FOR UPDATE"));
        assert!(!is_plain_read_text(b"SELECTa FROM t"));
        assert!(!is_plain_read_text(b"(SELECT 1)"));
        assert!(!is_plain_read_text(b"INSERT INTO t VALUES (1)"));
    }

    proptest::proptest! {
        /// Whenever the quick check passes, the full classification is the
        /// plain read's.
        #[test]
        fn plain_read_texts_classify_as_plain_reads(
            sql in r#"[ \t]*(select|Values|TABLE)( |\t|;|\(|\)|,|=|-|/|\*|'|"|\$1|\$|1|select|into|for|with|f|x_1|--c\n|/\*c\*/|pgsplit:primary|begin|insert|é)*"#
        ) {
            if is_plain_read_text(sql.as_bytes()) {
                proptest::prop_assert_eq!(
                    super::super::classify(&sql),
                    super::super::classify("SELECT"),
                    "{}",
                    sql
                );
            }
        }

        /// The first word found by a look at the bytes is the tokenizer's.
        #[test]
        fn first_word_agrees_with_the_tokens(
            sql in r#"( |\t|\(|--x\n|/\*c\*/|select|Begin|e'x'|U&"i"|_a|é|1|\$1|x\$y|;)*"#
        ) {
            let by_tokens = {
                let mut words = tokens(&sql).peekable();
                let mut parenthesised = false;
                while words.next_if(|(_, t)| *t == Token::Symbol('(')).is_some() {
                    parenthesised = true;
                }
                match words.next() {
                    Some((at, Token::Word(first))) => Some((at, first, parenthesised)),
                    _ => None,
                }
            };
            // A letter before a quote starts a literal for the tokenizer
            // (`e'x'`); the byte look takes the letter as a word, which is
            // no keyword, so both settle nothing.
            let fast = first_word(&sql);
            if let (Some((_, word, _)), None) = (fast, by_tokens) {
                let mut buf = [0u8; 16];
                let keyword = lower_keyword(word, &mut buf);
                proptest::prop_assert!(keyword.is_none_or(|k| k.len() == 1), "{}", sql);
            } else {
                proptest::prop_assert_eq!(fast, by_tokens, "{}", sql);
            }
        }

        /// Whenever the byte scan answers, the tokenizer agrees.
        #[test]
        fn byte_scan_agrees_with_the_tokens(
            sql in r#"( |\(|\)|,|\.|=|-|/|\*|'|"|\$|\$1|1|1e5|é|into|for|with|In|select|f|x_1|a\$b|\t)*"#
        ) {
            if let Some(answer) = plain_select_bytes(sql.as_bytes()) {
                let by_tokens = plain_select(tokens(&sql).map(|(_, t)| t));
                proptest::prop_assert_eq!(answer, by_tokens, "{}", sql);
            }
        }
    }
}
