//! Which statements change session state that must survive transaction
//! pooling (`SET`, `RESET`, `DISCARD`, `DEALLOCATE`), which create state
//! that cannot move between server connections and so pin the client, and
//! which ask for a setting (`SHOW`, answered by pgsplit for its own).

use super::find_ignore_case;
use super::lexer::{tokens, Token};

/// What one statement does to the client's session, as far as pooling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// Nothing pooling needs to track.
    None,
    /// A session-level `SET`: `key` identifies the setting, `statement` is
    /// replayed verbatim on other server connections.
    Set {
        /// The setting's name as PostgreSQL folds it (`SET TIME ZONE` gives
        /// `timezone`).
        key: String,
        /// The whole statement, as the client wrote it.
        statement: String,
    },
    /// A `SET` with command tag `SET` but no lasting effect (`SET LOCAL`,
    /// `SET TRANSACTION`); tracked only to keep tags and statements aligned.
    SetTransient,
    /// `RESET key`.
    Reset {
        /// The setting's name, folded as for `Set`.
        key: String,
    },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: resets settings and drops every prepared statement.
    DiscardAll,
    /// SQL-level `DEALLOCATE name`, or `DEALLOCATE ALL` when `None`.
    Deallocate(Option<String>),
    /// State bound to one server connection (temp table, LISTEN, ...); the
    /// string says what, for the log.
    Pin(&'static str),
    /// `SHOW key` (lowercased unless quoted): changes nothing, but pgsplit
    /// answers it itself for its own parameters.
    Show {
        /// The setting's name, folded as for `Set`.
        key: String,
    },
}

/// Session-level advisory lock functions; the `_xact_` ones end with the
/// transaction and do not pin.
const SESSION_LOCK_FUNCTIONS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Works out the session effect of one statement (no trailing `;`).
pub fn session_effect(statement: &str) -> SessionEffect {
    // Most statements start with a keyword pooling does not care about and
    // take no advisory lock: settle those without tokenizing them whole.
    let Some((_, first)) = tokens(statement).next() else {
        return SessionEffect::None;
    };
    let interesting = [
        "set",
        "reset",
        "discard",
        "deallocate",
        "listen",
        "prepare",
        "create",
        "declare",
        "show",
    ]
    .iter()
    .any(|k| first.is_keyword(k));
    if !interesting && find_ignore_case(statement.as_bytes(), b"advisory").is_none() {
        return SessionEffect::None;
    }
    let words: Vec<Token> = tokens(statement).map(|(_, t)| t).collect();
    let Some(first) = words.first() else {
        return SessionEffect::None;
    };
    let keyword = |i: usize, k: &str| words.get(i).is_some_and(|t| t.is_keyword(k));
    if first.is_keyword("set") {
        set_effect(statement, &words)
    } else if first.is_keyword("reset") {
        match setting_key(&words[1..]) {
            Some(key) if key == "all" => SessionEffect::ResetAll,
            Some(key) => SessionEffect::Reset { key },
            None => SessionEffect::None,
        }
    } else if first.is_keyword("show") {
        setting_key(&words[1..]).map_or(SessionEffect::None, |key| SessionEffect::Show { key })
    } else if first.is_keyword("discard") && keyword(1, "all") {
        SessionEffect::DiscardAll
    } else if first.is_keyword("deallocate") {
        let name_at = if keyword(1, "prepare") { 2 } else { 1 };
        match words.get(name_at) {
            Some(t) if t.is_keyword("all") => SessionEffect::Deallocate(None),
            Some(t) => {
                identifier(t).map_or(SessionEffect::None, |n| SessionEffect::Deallocate(Some(n)))
            }
            None => SessionEffect::None,
        }
    } else if first.is_keyword("listen") {
        SessionEffect::Pin("LISTEN")
    } else if first.is_keyword("prepare") && !keyword(1, "transaction") {
        SessionEffect::Pin("PREPARE")
    } else if first.is_keyword("create") && creates_temporary_object(&words) {
        SessionEffect::Pin("temporary object")
    } else if first.is_keyword("declare")
        && words
            .windows(2)
            .any(|w| w[0].is_keyword("with") && w[1].is_keyword("hold"))
    {
        SessionEffect::Pin("cursor WITH HOLD")
    } else if words.windows(2).any(|w| {
        w[1] == Token::Symbol('(') && SESSION_LOCK_FUNCTIONS.iter().any(|f| w[0].is_keyword(f))
    }) {
        SessionEffect::Pin("session advisory lock")
    } else {
        SessionEffect::None
    }
}

/// The value a `SET name = value` / `SET name TO value` statement gives,
/// unquoted and lowercased (for the few settings pgsplit interprets).
pub fn setting_value(statement: &str) -> Option<String> {
    let mut words = tokens(statement).map(|(_, t)| t);
    words.find(|t| *t == Token::Symbol('=') || t.is_keyword("to"))?;
    let value = match words.next()? {
        Token::Word(w) => w.to_owned(),
        Token::Literal(l) => l
            .trim_start_matches(['e', 'E'])
            .trim_matches('\'')
            .replace("''", "'"),
        Token::QuotedIdent(w) => w.to_owned(),
        Token::Number(n) => n.to_owned(),
        Token::Symbol(_) => return None,
    };
    Some(value.to_ascii_lowercase())
}

/// Whether a `SET` statement turns a boolean setting on, as PostgreSQL
/// reads booleans (`on`, `true`, `yes`, `1` and their prefixes).
pub fn sets_boolean_on(statement: &str) -> bool {
    setting_value(statement)
        .is_some_and(|v| matches!(v.as_str(), "on" | "true" | "t" | "yes" | "y" | "1"))
}

fn creates_temporary_object(words: &[Token]) -> bool {
    let mut rest = &words[1..];
    if rest.first().is_some_and(|t| t.is_keyword("or")) {
        rest = rest.get(2..).unwrap_or(&[]);
    }
    if rest
        .first()
        .is_some_and(|t| t.is_keyword("global") || t.is_keyword("local"))
    {
        rest = &rest[1..];
    }
    rest.first()
        .is_some_and(|t| t.is_keyword("temp") || t.is_keyword("temporary"))
}

fn set_effect(statement: &str, words: &[Token]) -> SessionEffect {
    let mut rest = &words[1..];
    match rest.first() {
        Some(t) if t.is_keyword("local") => return SessionEffect::SetTransient,
        Some(t) if t.is_keyword("transaction") => return SessionEffect::SetTransient,
        Some(t) if t.is_keyword("constraints") => return SessionEffect::None,
        Some(t) if t.is_keyword("session") => {
            if rest.get(1).is_some_and(|t| t.is_keyword("characteristics")) {
                return SessionEffect::Set {
                    key: "session characteristics".into(),
                    statement: statement.to_owned(),
                };
            }
            rest = &rest[1..];
        }
        _ => {}
    }
    match setting_key(rest) {
        Some(key) => SessionEffect::Set {
            key,
            statement: statement.to_owned(),
        },
        None => SessionEffect::None,
    }
}

/// The canonical name of the setting a `SET`/`RESET` names, folding the
/// special syntaxes (`TIME ZONE`, `NAMES`, `SCHEMA`, `SESSION AUTHORIZATION`)
/// onto the parameter they change.
fn setting_key(words: &[Token]) -> Option<String> {
    let first = words.first()?;
    let second = words.get(1);
    let special = if first.is_keyword("time") && second.is_some_and(|t| t.is_keyword("zone")) {
        Some("timezone")
    } else if first.is_keyword("names") {
        Some("client_encoding")
    } else if first.is_keyword("schema") {
        Some("search_path")
    } else if first.is_keyword("session") && second.is_some_and(|t| t.is_keyword("authorization")) {
        Some("session_authorization")
    } else {
        None
    };
    if let Some(key) = special {
        return Some(key.to_owned());
    }
    let mut key = identifier(first)?;
    let mut i = 1;
    while words.get(i) == Some(&Token::Symbol('.')) {
        key.push('.');
        key.push_str(&identifier(words.get(i + 1)?)?);
        i += 2;
    }
    Some(key)
}

/// An identifier as PostgreSQL folds it: unquoted words lowercased.
fn identifier(token: &Token) -> Option<String> {
    match token {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::QuotedIdent(w) => Some(w.replace("\"\"", "\"")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, statement: &str) -> SessionEffect {
        SessionEffect::Set {
            key: key.into(),
            statement: statement.into(),
        }
    }

    #[test]
    fn show_names_its_parameter() {
        let shown = |sql| match session_effect(sql) {
            SessionEffect::Show { key } => Some(key),
            _ => None,
        };
        assert_eq!(
            shown("SHOW pgsplit.last_lsn").as_deref(),
            Some("pgsplit.last_lsn")
        );
        assert_eq!(
            shown("show \"PgSplit\".route").as_deref(),
            Some("PgSplit.route")
        );
        assert_eq!(shown("SHOW time zone").as_deref(), Some("timezone"));
        assert_eq!(shown("SELECT 1"), None);
        assert_eq!(shown("SHOW"), None);
    }

    #[test]
    fn recognises_session_settings() {
        let s = "SET search_path TO app, public";
        assert_eq!(session_effect(s), set("search_path", s));
        let s = "set SESSION statement_timeout = '5s'";
        assert_eq!(session_effect(s), set("statement_timeout", s));
        let s = "SET TIME ZONE 'UTC'";
        assert_eq!(session_effect(s), set("timezone", s));
        let s = "SET myapp.\"User\" = 1";
        assert_eq!(session_effect(s), set("myapp.User", s));
        assert_eq!(
            session_effect("SET LOCAL work_mem = '1MB'"),
            SessionEffect::SetTransient
        );
        assert_eq!(
            session_effect("SET TRANSACTION READ ONLY"),
            SessionEffect::SetTransient
        );
        assert_eq!(
            session_effect("SET CONSTRAINTS ALL DEFERRED"),
            SessionEffect::None
        );
    }

    #[test]
    fn recognises_resets_discard_and_deallocate() {
        assert_eq!(session_effect("RESET ALL"), SessionEffect::ResetAll);
        assert_eq!(
            session_effect("reset Search_Path"),
            SessionEffect::Reset {
                key: "search_path".into()
            }
        );
        assert_eq!(
            session_effect("RESET TIME ZONE"),
            SessionEffect::Reset {
                key: "timezone".into()
            }
        );
        assert_eq!(session_effect("DISCARD ALL"), SessionEffect::DiscardAll);
        assert_eq!(
            session_effect("DEALLOCATE PREPARE s1"),
            SessionEffect::Deallocate(Some("s1".into()))
        );
        assert_eq!(
            session_effect("deallocate all"),
            SessionEffect::Deallocate(None)
        );
    }

    #[test]
    fn reads_setting_values() {
        assert_eq!(
            setting_value("SET pgsplit.route = replica").as_deref(),
            Some("replica")
        );
        assert_eq!(
            setting_value("set pgsplit.route to 'Primary'").as_deref(),
            Some("primary")
        );
        assert!(sets_boolean_on("SET default_transaction_read_only TO 'on'"));
        assert!(sets_boolean_on("SET default_transaction_read_only = true"));
        assert!(!sets_boolean_on("SET default_transaction_read_only = off"));
        assert_eq!(setting_value("SET x"), None);
    }

    #[test]
    fn recognises_state_that_pins_a_connection() {
        for sql in [
            "LISTEN jobs",
            "PREPARE q AS SELECT 1",
            "CREATE TEMP TABLE t (id int)",
            "create global temporary table t (id int)",
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_catalog.PG_TRY_ADVISORY_LOCK /* id */ (1)",
        ] {
            assert!(
                matches!(session_effect(sql), SessionEffect::Pin(_)),
                "{sql}"
            );
        }
        for sql in [
            "SELECT pg_advisory_xact_lock(1)",
            "CREATE TABLE temp (id int)",
            "PREPARE TRANSACTION 'x'",
            "SELECT 'LISTEN'",
            "SELECT pg_advisory_lock FROM held_locks",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert_eq!(session_effect(sql), SessionEffect::None, "{sql}");
        }
    }
}
