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

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// PostgreSQL's whitespace (`space` in its scanner, `\v` included since
/// version 16); `is_ascii_whitespace` lacks the vertical tab.
pub fn is_sql_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
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
                while self.peek_at(0).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                Token::Word(&self.sql[start..self.pos])
            }
            c if c.is_ascii_digit() => {
                while self
                    .peek_at(0)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
                {
                    self.pos += 1;
                }
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
    let mut statements = Vec::new();
    if !sql.contains(';') {
        push_trimmed(&mut statements, sql);
        return statements;
    }
    if only_separators(sql.as_bytes()) {
        for statement in sql.split(';') {
            push_trimmed(&mut statements, statement);
        }
        return statements;
    }
    split_by_tokens(sql, statements)
}

/// The general case of [`split_statements`]: `;` tokens separate.
fn split_by_tokens<'a>(sql: &'a str, mut statements: Vec<&'a str>) -> Vec<&'a str> {
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

/// Whether every `;` in `sql` must separate statements because nothing
/// could hide one: no quote, comment or dollar quote (a `$` followed by a
/// digit is a parameter). Most texts qualify, and are then split without
/// being tokenized.
fn only_separators(sql: &[u8]) -> bool {
    sql.iter().enumerate().all(|(at, &c)| {
        let next = sql.get(at + 1);
        match c {
            b'\'' | b'"' => false,
            b'-' => next != Some(&b'-'),
            b'/' => next != Some(&b'*'),
            b'$' => next.is_some_and(u8::is_ascii_digit),
            _ => true,
        }
    })
}

/// Keeps a statement that has a token, without the whitespace around it
/// (SQL's whitespace only: `str::trim` would also strip Unicode spaces that
/// are part of a token).
fn push_trimmed<'a>(statements: &mut Vec<&'a str>, statement: &'a str) {
    if tokens(statement).next().is_some() {
        statements
            .push(statement.trim_matches(|c: char| c.is_ascii() && is_sql_whitespace(c as u8)));
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
        fn plain_texts_split_like_tokenized_ones(sql in "[a-z0-9 ;$'\"/*\t\x0b-]{0,40}") {
            proptest::prop_assert_eq!(split_statements(&sql), split_by_tokens(&sql, Vec::new()));
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
