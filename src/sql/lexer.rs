//! A PostgreSQL-compatible tokenizer: comments, quoted identifiers, string
//! and dollar-quoted literals are skipped correctly so that keywords and
//! statement boundaries are found only where PostgreSQL would find them.

/// One significant token (whitespace and comments are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted identifier or keyword, as written (compare case-insensitively).
    Word(&'a str),
    /// A double-quoted identifier, without the quotes (doubled quotes kept).
    QuotedIdent(&'a str),
    /// A string, escape-string, bit-string or dollar-quoted literal, as written.
    Literal(&'a str),
    /// A number or positional parameter (`$1`).
    Number(&'a str),
    /// Any other single character: punctuation or an operator character.
    Symbol(char),
}

impl Token<'_> {
    /// True for an unquoted word equal to `keyword`, ignoring case.
    pub fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Iterates over the tokens of `sql`, along with each token's byte offset.
pub struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
}

/// Starts tokenizing `sql`.
pub fn tokens(sql: &str) -> Tokens<'_> {
    Tokens { sql, pos: 0 }
}

/// Whether `c` may start an unquoted identifier or keyword.
pub fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// PostgreSQL's whitespace (`space` in its scanner, `\v` included since
/// version 16); `is_ascii_whitespace` lacks the vertical tab.
pub fn is_sql_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// [`is_sql_whitespace`] for a `char`, for trimming statements.
pub fn is_sql_whitespace_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_sql_whitespace)
}

/// Whether `c` may continue an unquoted identifier or keyword.
pub fn is_ident_char(c: u8) -> bool {
    IDENT_CHARS[usize::from(c)]
}

/// Bytes that may continue an identifier, as a table: the tokenizer runs on
/// every query, and a lookup costs less than the comparisons.
static IDENT_CHARS: [bool; 256] = byte_class(b"_$", true);

/// Bytes where splitting must look closer: `;` and what may start a
/// literal, quoted identifier, comment or dollar quote.
static SPLIT_SPECIALS: [bool; 256] = byte_class(b";'\"-/$", false);

/// A byte table marking `extra`, plus ASCII letters, digits and non-ASCII
/// bytes when `word_bytes`.
const fn byte_class(extra: &[u8], word_bytes: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = word_bytes && (b.is_ascii_alphanumeric() || b >= 0x80);
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// The end of the run of bytes from `from` on that satisfy `in_run`.
pub fn run_end(bytes: &[u8], from: usize, in_run: impl Fn(u8) -> bool) -> usize {
    // An index loop: it compiles to fewer instructions per byte than
    // `position` on an iterator, and it runs over most bytes of most queries.
    let mut end = from;
    while end < bytes.len() && in_run(bytes[end]) {
        end += 1;
    }
    end
}

impl<'a> Tokens<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.sql.as_bytes()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes().get(self.pos + offset).copied()
    }

    /// Skips whitespace and comments (`--` to end of line, nested `/* */`).
    fn skip_trivia(&mut self) {
        let bytes = self.bytes();
        // Most tokens are followed by one space and then another token.
        if bytes.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
        if bytes
            .get(self.pos)
            .is_none_or(|&c| !is_sql_whitespace(c) && c != b'-' && c != b'/')
        {
            return;
        }
        loop {
            match (self.peek_at(0), self.peek_at(1)) {
                (Some(c), _) if is_sql_whitespace(c) => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    while self.pos < bytes.len() && bytes[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let mut depth = 0usize;
                    while self.pos < bytes.len() {
                        if bytes[self.pos..].starts_with(b"/*") {
                            depth += 1;
                            self.pos += 2;
                        } else if bytes[self.pos..].starts_with(b"*/") {
                            depth -= 1;
                            self.pos += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            self.pos += 1;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// Advances past a quoted run ending in `quote`, where a doubled quote
    /// (and, in escape strings, a backslash) does not end it.
    fn skip_quoted(&mut self, quote: u8, backslash_escapes: bool) {
        let bytes = self.bytes();
        self.pos += 1;
        while self.pos < bytes.len() {
            let c = bytes[self.pos];
            if backslash_escapes && c == b'\\' {
                self.pos += 2;
            } else if c == quote {
                if bytes.get(self.pos + 1) == Some(&quote) {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = bytes.len();
    }

    /// If a dollar-quote opener (`$$` or `$tag$`) starts here, returns its length.
    fn dollar_quote_opener(&self) -> Option<usize> {
        let rest = &self.bytes()[self.pos..];
        let mut end = 1;
        if rest.get(1).is_some_and(|&c| is_ident_start(c)) {
            while rest
                .get(end)
                .is_some_and(|&c| is_ident_char(c) && c != b'$')
            {
                end += 1;
            }
        }
        (rest.get(end) == Some(&b'$')).then_some(end + 1)
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (usize, Token<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.skip_trivia();
        let bytes = self.bytes();
        let start = self.pos;
        let c = *bytes.get(start)?;
        let token = match c {
            b'\'' => {
                self.skip_quoted(b'\'', false);
                Token::Literal(&self.sql[start..self.pos])
            }
            b'"' => {
                self.skip_quoted(b'"', false);
                let end = self.pos.saturating_sub(1).max(start + 1);
                Token::QuotedIdent(self.sql.get(start + 1..end).unwrap_or(""))
            }
            b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N' | b'u' | b'U'
                if self.peek_at(1) == Some(b'\'') =>
            {
                self.pos += 1;
                self.skip_quoted(b'\'', matches!(c, b'e' | b'E'));
                Token::Literal(&self.sql[start..self.pos])
            }
            b'$' => {
                if let Some(len) = self.dollar_quote_opener() {
                    let tag = &bytes[start..start + len];
                    let body_start = start + len;
                    let close = bytes[body_start..]
                        .windows(len)
                        .position(|w| w == tag)
                        .map_or(bytes.len(), |p| body_start + p + len);
                    self.pos = close;
                    Token::Literal(&self.sql[start..self.pos])
                } else {
                    self.pos += 1;
                    while self.peek_at(0).is_some_and(|c| c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    if self.pos == start + 1 {
                        Token::Symbol('$')
                    } else {
                        Token::Number(&self.sql[start..self.pos])
                    }
                }
            }
            c if is_ident_start(c) => {
                self.pos = run_end(bytes, start + 1, is_ident_char);
                Token::Word(&self.sql[start..self.pos])
            }
            c if c.is_ascii_digit() => {
                self.pos = run_end(bytes, start + 1, |c| {
                    c.is_ascii_alphanumeric() || c == b'.' || c == b'_'
                });
                Token::Number(&self.sql[start..self.pos])
            }
            _ => {
                let ch = self.sql[start..].chars().next()?;
                self.pos += ch.len_utf8();
                Token::Symbol(ch)
            }
        };
        Some((start, token))
    }
}

/// Splits a query string into its statements (trimmed, without the `;`),
/// ignoring semicolons inside literals, identifiers and comments.
pub fn split_statements(sql: &str) -> Vec<&str> {
    split_plain(sql).unwrap_or_else(|| split_by_tokens(sql))
}

/// Splits in one pass over the bytes, without tokenizing, when nothing in
/// the text could hide a `;` (most texts): `None` at the first quote,
/// comment or dollar quote (a `$` followed by a digit is a parameter).
fn split_plain(sql: &str) -> Option<Vec<&str>> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::with_capacity(1);
    let mut start = 0;
    for (at, &c) in bytes.iter().enumerate() {
        if !SPLIT_SPECIALS[usize::from(c)] {
            continue;
        }
        let next = bytes.get(at + 1);
        match c {
            b';' => {
                push_plain(&mut statements, &sql[start..at]);
                start = at + 1;
            }
            b'\'' | b'"' => return None,
            b'-' if next == Some(&b'-') => return None,
            b'/' if next == Some(&b'*') => return None,
            b'$' if !next.is_some_and(u8::is_ascii_digit) => return None,
            _ => {}
        }
    }
    push_plain(&mut statements, &sql[start..]);
    Some(statements)
}

/// Keeps a statement of a text without comments unless it is only
/// whitespace (SQL's whitespace: `str::trim` would also strip Unicode
/// spaces that are part of a token).
fn push_plain<'a>(statements: &mut Vec<&'a str>, statement: &'a str) {
    let trimmed = statement.trim_matches(is_sql_whitespace_char);
    if !trimmed.is_empty() {
        statements.push(trimmed);
    }
}

/// The general case of [`split_statements`]: `;` tokens separate.
fn split_by_tokens(sql: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let mut start = 0;
    for (offset, token) in tokens(sql) {
        if token == Token::Symbol(';') {
            push_trimmed(&mut statements, &sql[start..offset]);
            start = offset + 1;
        }
    }
    push_trimmed(&mut statements, &sql[start..]);
    statements
}

/// Keeps a statement that has a token, without the whitespace around it
/// (SQL's whitespace only: `str::trim` would also strip Unicode spaces that
/// are part of a token).
fn push_trimmed<'a>(statements: &mut Vec<&'a str>, statement: &'a str) {
    if tokens(statement).next().is_some() {
        statements.push(statement.trim_matches(is_sql_whitespace_char));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertical_tab_is_whitespace_and_unicode_spaces_are_not() {
        // Found by the classify fuzz target.
        assert_eq!(split_statements("SELECT 1;\x0b-- \0"), vec!["SELECT 1"]);
        assert_eq!(
            split_statements("SET\x0bsearch_path = x"),
            vec!["SET\x0bsearch_path = x"]
        );
        let first: Vec<_> = tokens("SET\x0bsearch_path").map(|(_, t)| t).collect();
        assert_eq!(first.len(), 2);
        // U+00A0 is not SQL whitespace: it stays part of the statement.
        assert_eq!(
            split_statements("SELECT 1;\u{a0}"),
            vec!["SELECT 1", "\u{a0}"]
        );
    }

    proptest::proptest! {
        /// Splitting without tokenizing gives what the tokenizer gives.
        #[test]
        fn plain_texts_split_like_tokenized_ones(sql in "[a-zA-Z0-9 ;$'\"/*\t\x0b\u{a0}é-]{0,40}") {
            proptest::prop_assert_eq!(split_statements(&sql), split_by_tokens(&sql));
        }
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "SELECT 'a;b'; /* x; /* nested; */ y; */ SELECT \"c;d\"; -- tail;\n SELECT $q$;$q$, E'\\';';;";
        assert_eq!(
            split_statements(sql),
            vec![
                "SELECT 'a;b'",
                "/* x; /* nested; */ y; */ SELECT \"c;d\"",
                "-- tail;\n SELECT $q$;$q$, E'\\';'",
            ]
        );
    }

    #[test]
    fn tokenizes_words_literals_and_parameters() {
        let found: Vec<Token> = tokens("set search_path = 'a', \"B\" $1 $$x$$")
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            found,
            vec![
                Token::Word("set"),
                Token::Word("search_path"),
                Token::Symbol('='),
                Token::Literal("'a'"),
                Token::Symbol(','),
                Token::QuotedIdent("B"),
                Token::Number("$1"),
                Token::Literal("$$x$$"),
            ]
        );
    }

    #[test]
    fn survives_unterminated_input() {
        for sql in ["'abc", "\"abc", "/* abc", "$$abc", "E'\\", "$", "é"] {
            let _ = split_statements(sql);
            let _: Vec<_> = tokens(sql).collect();
        }
    }
}
