//! Read/write classification of query text, so that routing can send reads
//! to replicas and everything else to the primary.
//!
//! Most statements are settled by their first keyword with the pooling
//! tokenizer (`INSERT` writes, `SHOW` reads, ...), and simple `SELECT`s are
//! settled by a scan for the few words that can make them write (`INTO`,
//! `FOR`, `WITH`, a function call). Everything else is parsed with
//! PostgreSQL's own parser (`pg_query`) and its tree is searched for
//! `SELECT ... INTO`, locking clauses, data-modifying CTEs and function
//! calls. Whenever the answer is unclear the statement counts as a write:
//! a read wrongly sent to the primary costs a little load, a write sent to a
//! replica fails.
//!
//! Known limits: user-defined operators, views and triggers can run volatile
//! functions that no look at the text reveals; and the text is lexed as with
//! `standard_conforming_strings = on` (the default since PostgreSQL 9.1).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use pg_query::protobuf::{a_const, TransactionStmtKind, VariableSetKind};
use pg_query::{Node, NodeEnum};
use serde::ser::{self, Serialize};

use crate::sql::lexer::{split_statements, tokens, Token};

/// What routing needs to know about one query string (possibly several
/// statements), computed once per distinct text and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Must run on the primary: some statement writes, locks, or could not
    /// be classified.
    pub writes: bool,
    /// Some statement could not be parsed (implies `writes`); the caller
    /// counts these.
    pub unparsed: bool,
    /// Functions called that the built-in lists do not settle (lowercased,
    /// schema-qualified as written: `"myschema.f"` or `"f"`), for the router
    /// to check against `pg_proc` volatility. Empty when `writes` is already
    /// set, and for most queries.
    pub functions: Vec<String>,
    /// The first transaction-control statement, which decides how long the
    /// routing decision lasts.
    pub transaction: TransactionControl,
    /// A `/* pgsplit:primary */` or `/* pgsplit:replica */` comment anywhere
    /// in the text, so applications can override the classifier.
    pub hint: Option<Hint>,
}

/// Transaction control seen in a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionControl {
    /// No transaction-control statement.
    None,
    /// `BEGIN` / `START TRANSACTION`; a read-only one may go to a replica.
    Begin { read_only: bool },
    /// `SET TRANSACTION READ ONLY` (or `SET transaction_read_only = on`)
    /// inside a transaction.
    SetTransactionReadOnly,
    /// `COMMIT`, `ROLLBACK`, `END`, `ABORT`, `PREPARE TRANSACTION`,
    /// `COMMIT PREPARED`, `ROLLBACK PREPARED`: the transaction is over.
    End,
}

/// A routing hint given in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// `/* pgsplit:primary */`: run on the primary whatever the statement.
    Primary,
    /// `/* pgsplit:replica */`: a replica may run it even if it calls
    /// functions of unknown volatility.
    Replica,
}

/// Classifies a query string (any number of `;`-separated statements).
/// Pure and uncached: see [`ClassificationCache`] for the cached form.
pub fn classify(sql: &str) -> Classification {
    let mut verdict = Verdict::read();
    for statement in split_statements(sql) {
        verdict.merge(classify_statement(statement));
    }
    if verdict.writes {
        verdict.functions.clear();
    }
    Classification {
        writes: verdict.writes,
        unparsed: verdict.unparsed,
        functions: verdict.functions,
        transaction: verdict.transaction,
        hint: find_hint(sql),
    }
}

/// One statement's verdict, before merging into a [`Classification`].
#[derive(Debug)]
struct Verdict {
    writes: bool,
    unparsed: bool,
    functions: Vec<String>,
    transaction: TransactionControl,
}

impl Verdict {
    fn read() -> Verdict {
        Verdict {
            writes: false,
            unparsed: false,
            functions: Vec::new(),
            transaction: TransactionControl::None,
        }
    }

    fn write() -> Verdict {
        Verdict {
            writes: true,
            ..Verdict::read()
        }
    }

    fn unparsed() -> Verdict {
        Verdict {
            writes: true,
            unparsed: true,
            ..Verdict::read()
        }
    }

    fn transaction(transaction: TransactionControl) -> Verdict {
        Verdict {
            transaction,
            ..Verdict::read()
        }
    }

    /// Adds the verdict of a later statement: any write makes it write, the
    /// first transaction control counts, functions are kept once each.
    fn merge(&mut self, other: Verdict) {
        self.writes |= other.writes;
        self.unparsed |= other.unparsed;
        if self.transaction == TransactionControl::None {
            self.transaction = other.transaction;
        }
        for function in other.functions {
            if !self.functions.contains(&function) {
                self.functions.push(function);
            }
        }
    }
}

fn classify_statement(statement: &str) -> Verdict {
    lexical(statement).unwrap_or_else(|| parsed(statement))
}

// ---------------------------------------------------------------------------
// Lexical fast path

/// Lowercases a short ASCII word into `buf`; `None` if it cannot be a keyword
/// this module knows (too long or not ASCII).
fn lower_keyword<'b>(word: &str, buf: &'b mut [u8; 16]) -> Option<&'b str> {
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
fn lexical(statement: &str) -> Option<Verdict> {
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
fn opens_no_call(word: &str) -> bool {
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
fn plain_select<'a>(rest: impl Iterator<Item = Token<'a>>) -> bool {
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
fn read_only_mode(modes: &[Token]) -> bool {
    modes
        .windows(2)
        .any(|w| w[0].is_keyword("read") && w[1].is_keyword("only"))
}

/// The transaction control of a `SET` statement (all `SET`s read).
fn set_transaction(rest: &[Token]) -> TransactionControl {
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
fn truthy(value: &str) -> bool {
    ["on", "true", "yes", "1", "t", "y"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}

/// PostgreSQL's spellings of a false boolean setting.
fn falsy(value: &str) -> bool {
    ["off", "false", "no", "0", "f", "n"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}

// ---------------------------------------------------------------------------
// Parse path

/// Classifies a statement from PostgreSQL's parse tree; a statement the
/// parser rejects is unparsed (and so a write).
fn parsed(statement: &str) -> Verdict {
    // pg_query's result post-processing has a few `panic!`s on unexpected
    // trees: never let one take down the session.
    let result = match std::panic::catch_unwind(|| pg_query::parse(statement, 0)) {
        Ok(Ok(result)) => result,
        // A tree nested deeper than the protobuf decoder allows (a long
        // chain of binary operators): the flat summary still tells.
        Ok(Err(pg_query::Error::Decode(_))) => return summarized(statement),
        _ => return Verdict::unparsed(),
    };
    let mut verdict = Verdict::read();
    for raw in &result.protobuf.stmts {
        if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            verdict.merge(node_verdict(node));
        }
    }
    verdict
}

/// Classifies a statement from `pg_query::summary` (statement types and
/// called functions, without the tree): a plain SELECT reads, anything else
/// or any word that could make it lock or write counts as a write.
fn summarized(statement: &str) -> Verdict {
    let Ok(Ok(summary)) = std::panic::catch_unwind(|| pg_query::summary(statement, 0, -1)) else {
        return Verdict::unparsed();
    };
    let selects_only = summary.statement_types.iter().all(|t| t == "SelectStmt");
    let risky = tokens(statement).any(|(_, token)| {
        ["into", "for", "insert", "update", "delete", "merge"]
            .iter()
            .any(|k| token.is_keyword(k))
    });
    if !selects_only || risky {
        return Verdict::write();
    }
    let mut names: Vec<&str> = summary.functions.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    let mut scan = Scan::default();
    for name in names {
        if scan
            .visit_call(name.split('.').map(str::to_owned).collect())
            .is_err()
        {
            return Verdict::write();
        }
    }
    Verdict {
        functions: scan.functions,
        ..Verdict::read()
    }
}

/// The verdict of one parsed statement.
fn node_verdict(node: &NodeEnum) -> Verdict {
    match node {
        NodeEnum::SelectStmt(_) => scan(node),
        NodeEnum::DeclareCursorStmt(declare) => query_verdict(declare.query.as_deref()),
        NodeEnum::ExplainStmt(explain) => {
            if explain.options.iter().any(|o| option_on(o, "analyze")) {
                query_verdict(explain.query.as_deref())
            } else {
                Verdict::read()
            }
        }
        NodeEnum::CopyStmt(copy) => {
            // COPY FROM writes; COPY TO a server file or program has effects
            // on the primary's host. COPY TO STDOUT reads (its query may not).
            if copy.is_from || copy.is_program || !copy.filename.is_empty() {
                Verdict::write()
            } else if copy.query.is_some() {
                query_verdict(copy.query.as_deref())
            } else {
                Verdict::read()
            }
        }
        // PREPARE runs nothing, but pins the session: place it like its query.
        NodeEnum::PrepareStmt(prepare) => query_verdict(prepare.query.as_deref()),
        NodeEnum::VariableSetStmt(set) => {
            let read_only = match VariableSetKind::try_from(set.kind) {
                Ok(VariableSetKind::VarSetMulti)
                    if set.name.eq_ignore_ascii_case("transaction") =>
                {
                    set.args.iter().any(read_only_option)
                }
                Ok(VariableSetKind::VarSetValue)
                    if set.name.eq_ignore_ascii_case("transaction_read_only") =>
                {
                    set.args.first().and_then(constant_bool) == Some(true)
                }
                _ => false,
            };
            if read_only {
                Verdict::transaction(TransactionControl::SetTransactionReadOnly)
            } else {
                Verdict::read()
            }
        }
        NodeEnum::TransactionStmt(stmt) => match TransactionStmtKind::try_from(stmt.kind) {
            Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
                Verdict::transaction(TransactionControl::Begin {
                    read_only: stmt.options.iter().any(read_only_option),
                })
            }
            Ok(TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback) => {
                Verdict::transaction(TransactionControl::End)
            }
            Ok(
                TransactionStmtKind::TransStmtSavepoint
                | TransactionStmtKind::TransStmtRelease
                | TransactionStmtKind::TransStmtRollbackTo,
            ) => Verdict::read(),
            _ => Verdict {
                writes: true,
                ..Verdict::transaction(TransactionControl::End)
            },
        },
        NodeEnum::VariableShowStmt(_)
        | NodeEnum::DiscardStmt(_)
        | NodeEnum::DeallocateStmt(_)
        | NodeEnum::FetchStmt(_)
        | NodeEnum::ClosePortalStmt(_)
        | NodeEnum::LoadStmt(_) => Verdict::read(),
        _ => Verdict::write(),
    }
}

/// The verdict of a statement nested in another (EXPLAIN ANALYZE, COPY,
/// DECLARE, PREPARE); a missing one counts as unparsed.
fn query_verdict(query: Option<&Node>) -> Verdict {
    match query.and_then(|q| q.node.as_ref()) {
        Some(node) => Verdict {
            transaction: TransactionControl::None,
            ..node_verdict(node)
        },
        None => Verdict::unparsed(),
    }
}

/// A `DefElem` named `name` whose value is on (no value means on; an
/// unrecognised value counts as on, the careful side for EXPLAIN ANALYZE).
fn option_on(option: &Node, name: &str) -> bool {
    match &option.node {
        Some(NodeEnum::DefElem(def)) if def.defname.eq_ignore_ascii_case(name) => {
            match def.arg.as_deref() {
                None => true,
                Some(arg) => constant_bool(arg) != Some(false),
            }
        }
        _ => false,
    }
}

/// `transaction_read_only` set to true among transaction modes.
fn read_only_option(option: &Node) -> bool {
    match &option.node {
        Some(NodeEnum::DefElem(def)) if def.defname == "transaction_read_only" => {
            def.arg.as_deref().and_then(constant_bool) == Some(true)
        }
        _ => false,
    }
}

/// The boolean a constant option value spells, if it spells one.
fn constant_bool(node: &Node) -> Option<bool> {
    let text_bool = |s: &str| {
        if truthy(s) {
            Some(true)
        } else if falsy(s) {
            Some(false)
        } else {
            None
        }
    };
    match node.node.as_ref()? {
        NodeEnum::AConst(constant) => match constant.val.as_ref()? {
            a_const::Val::Ival(i) => Some(i.ival != 0),
            a_const::Val::Boolval(b) => Some(b.boolval),
            a_const::Val::Sval(s) => text_bool(&s.sval),
            _ => None,
        },
        NodeEnum::Boolean(b) => Some(b.boolval),
        NodeEnum::Integer(i) => Some(i.ival != 0),
        NodeEnum::String(s) => text_bool(&s.sval),
        _ => None,
    }
}

/// Searches a query's whole tree for what makes it write, collecting the
/// functions it calls.
fn scan(node: &NodeEnum) -> Verdict {
    let mut scan = Scan::default();
    let stopped = node.serialize(&mut scan).is_err();
    Verdict {
        writes: scan.writes || stopped,
        unparsed: false,
        functions: scan.functions,
        transaction: TransactionControl::None,
    }
}

// ---------------------------------------------------------------------------
// Built-in functions

/// How a function call affects routing.
#[derive(Debug, PartialEq, Eq)]
enum FunctionKind {
    /// Built in, writes or takes locks, or only works on the primary.
    Writes,
    /// Built in and harmless on a replica.
    Reads,
    /// For the router to look up.
    Unknown,
}

/// Classifies a called function from its name parts as the parser gives
/// them (unquoted names already lowercased). Only unqualified and
/// `pg_catalog.` names can be built-ins.
fn function_kind(parts: &[&str]) -> FunctionKind {
    let name = match parts {
        [name] | ["pg_catalog", name] | [_, "pg_catalog", name] => *name,
        _ => return FunctionKind::Unknown,
    };
    if builtin_writes(name) {
        FunctionKind::Writes
    } else if builtin_reads(name) {
        FunctionKind::Reads
    } else {
        FunctionKind::Unknown
    }
}

/// Built-ins that change data or server state, take locks, or fail on a
/// standby (`currval`/`lastval` need this session's `nextval`).
#[rustfmt::skip]
const BUILTIN_WRITES: &[&str] = &[
    "nextval", "setval", "currval", "lastval",
    "txid_current", "pg_current_xact_id",
    "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
    "pg_switch_wal", "pg_notify", "pg_promote", "pg_reload_conf", "pg_rotate_logfile",
    "pg_terminate_backend", "pg_cancel_backend", "pg_backup_start", "pg_backup_stop",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance", "pg_sync_replication_slots", "pg_import_system_collations",
    // large objects
    "lo_create", "lo_creat", "lo_import", "lo_unlink", "lo_put", "lo_from_bytea", "lo_open",
    "lo_truncate", "lo_truncate64", "lowrite",
    // extensions
    "dblink_exec",
];

/// Prefixes of further built-ins that write (advisory locks, statistics
/// resets, replication slots and origins).
const BUILTIN_WRITE_PREFIXES: &[&str] = &[
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_stat_reset",
    "pg_create_",
    "pg_drop_replication_slot",
    "pg_replication_origin_",
    "pg_logical_slot_get_",
    "pg_logical_emit_message",
];

/// Read-only built-ins (volatile ones such as `random` included), so that
/// common queries report no functions for the router to look up.
#[rustfmt::skip]
const BUILTIN_READS: &[&str] = &[
    // volatile but harmless on a replica
    "random", "random_normal", "setseed", "clock_timestamp", "now", "statement_timestamp",
    "transaction_timestamp", "timeofday", "gen_random_uuid", "uuidv4", "uuidv7",
    "uuid_generate_v1", "uuid_generate_v4", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "pg_backend_pid", "current_setting", "set_config", "version", "txid_current_if_assigned",
    "pg_current_xact_id_if_assigned", "txid_current_snapshot", "pg_current_snapshot",
    "pg_is_in_recovery", "pg_last_wal_replay_lsn", "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp", "pg_postmaster_start_time", "pg_conf_load_time",
    "inet_client_addr", "inet_client_port", "inet_server_addr", "inet_server_port",
    "pg_blocking_pids", "pg_notification_queue_usage",
    // aggregates and window functions
    "count", "sum", "avg", "min", "max", "string_agg", "bool_and", "bool_or", "every",
    "bit_and", "bit_or", "bit_xor", "stddev", "stddev_pop", "stddev_samp", "variance",
    "var_pop", "var_samp", "corr", "covar_pop", "covar_samp", "percentile_cont",
    "percentile_disc", "mode", "grouping", "row_number", "rank", "dense_rank", "percent_rank",
    "cume_dist", "ntile", "lag", "lead", "first_value", "last_value", "nth_value",
    // strings
    "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
    "bit_length", "substr", "substring", "btrim", "ltrim", "rtrim", "trim", "position",
    "strpos", "overlay", "replace", "translate", "concat", "concat_ws", "format", "left",
    "right", "lpad", "rpad", "repeat", "reverse", "split_part", "starts_with",
    "string_to_array", "string_to_table", "ascii", "chr", "md5", "sha224", "sha256", "sha384",
    "sha512", "encode", "decode", "quote_ident", "quote_literal", "quote_nullable", "to_hex",
    "normalize", "is_normalized", "unistr", "similar_to_escape", "like_escape", "to_char",
    "to_number", "to_date", "to_timestamp",
    // numbers
    "abs", "round", "floor", "ceil", "ceiling", "trunc", "sign", "sqrt", "cbrt", "power",
    "pow", "exp", "ln", "log", "log10", "mod", "div", "pi", "degrees", "radians", "sin", "cos",
    "tan", "asin", "acos", "atan", "atan2", "width_bucket", "gcd", "lcm", "factorial", "scale",
    "greatest", "least", "coalesce", "nullif", "num_nulls", "num_nonnulls",
    // dates and times
    "date_trunc", "date_part", "date_bin", "extract", "age", "timezone", "make_date",
    "make_time", "make_timestamp", "make_timestamptz", "make_interval", "justify_days",
    "justify_hours", "justify_interval", "isfinite", "date", "overlaps",
    // sets, rows, JSON
    "unnest", "generate_series", "generate_subscripts", "cardinality", "row_to_json",
    "to_json", "to_jsonb",
    // text search
    "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
    "websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight",
    // catalog information
    "current_database", "current_schema", "current_schemas", "current_user", "session_user",
    "pg_typeof", "format_type", "obj_description", "col_description", "shobj_description",
    "to_regclass", "to_regtype", "to_regproc", "to_regnamespace", "pg_table_is_visible",
    "pg_type_is_visible", "pg_function_is_visible", "pg_relation_size",
    "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size",
    "pg_size_pretty", "pg_size_bytes", "pg_relation_filenode", "pg_encoding_to_char",
    "pg_char_to_encoding", "pg_collation_for", "pg_column_size", "pg_has_role",
    "pg_my_temp_schema", "pg_is_other_temp_schema", "pg_input_is_valid",
    "pg_xact_commit_timestamp",
];

/// Prefixes of further read-only built-ins.
const BUILTIN_READ_PREFIXES: &[&str] = &[
    "has_",
    "pg_get_",
    "pg_stat_get_",
    "json_",
    "jsonb_",
    "array_",
    "regexp_",
];

fn builtin_writes(name: &str) -> bool {
    BUILTIN_WRITES.contains(&name) || BUILTIN_WRITE_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn builtin_reads(name: &str) -> bool {
    BUILTIN_READS.contains(&name) || BUILTIN_READ_PREFIXES.iter().any(|p| name.starts_with(p))
}

// ---------------------------------------------------------------------------
// Tree scan: a serde `Serializer` that visits every node of pg_query's tree
// (its protobuf types all derive `Serialize`), so that no node type can be
// missed the way a hand-written walker over ~270 node types could miss one.

#[derive(Default)]
struct Scan {
    writes: bool,
    functions: Vec<String>,
    /// Name parts of the `FuncCall` whose `funcname` is being visited.
    collecting: Option<Vec<String>>,
}

impl Scan {
    /// Notes a node; `Err` stops the walk once the query is known to write.
    fn visit_struct(&mut self, name: &str) -> Result<(), Stop> {
        // Nested statements inside a SELECT are data-modifying CTEs.
        let writes = matches!(name, "IntoClause" | "LockingClause")
            || (name.ends_with("Stmt") && name != "SelectStmt");
        if writes {
            self.writes = true;
            return Err(Stop);
        }
        Ok(())
    }

    fn visit_call(&mut self, parts: Vec<String>) -> Result<(), Stop> {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        match function_kind(&refs) {
            FunctionKind::Writes => {
                self.writes = true;
                Err(Stop)
            }
            FunctionKind::Reads => Ok(()),
            FunctionKind::Unknown => {
                let name = parts.join(".").to_lowercase();
                if !self.functions.contains(&name) {
                    self.functions.push(name);
                }
                Ok(())
            }
        }
    }
}

/// Ends a tree scan early (or reports a serde error, which also ends it).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scan stopped")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

/// A struct, sequence or map being visited.
struct Compound<'a> {
    scan: &'a mut Scan,
    name: &'static str,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(&mut *self.scan)
    }
}

/// Implements serializer methods that ignore their value (numbers, flags).
macro_rules! ignore {
    ($($method:ident: $type:ty),* $(,)?) => {
        $(fn $method(self, _: $type) -> Result<(), Stop> {
            Ok(())
        })*
    };
}

/// Implements the sequence-like compound traits: visit every element.
macro_rules! sequence {
    ($($trait:path: $method:ident),* $(,)?) => {
        $(impl $trait for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
                self.element(value)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        })*
    };
}

impl<'a> ser::Serializer for &'a mut Scan {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ignore! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    }
    fn serialize_str(self, value: &str) -> Result<(), Stop> {
        if let Some(parts) = &mut self.collecting {
            parts.push(value.to_owned());
        }
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Stop> {
        Ok(Compound {
            scan: self,
            name: "",
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Compound<'a>, Stop> {
        self.visit_struct(name)?;
        Ok(Compound { scan: self, name })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Stop> {
        self.serialize_struct(variant, len)
    }
}

sequence! {
    ser::SerializeSeq: serialize_element,
    ser::SerializeTuple: serialize_element,
    ser::SerializeTupleStruct: serialize_field,
    ser::SerializeTupleVariant: serialize_field,
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        self.element(value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        if self.name == "FuncCall" && key == "funcname" {
            let outer = self.scan.collecting.replace(Vec::new());
            let visited = value.serialize(&mut *self.scan);
            let parts = std::mem::replace(&mut self.scan.collecting, outer).unwrap_or_default();
            visited?;
            self.scan.visit_call(parts)
        } else {
            self.element(value)
        }
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Hints

/// Finds a `pgsplit:primary` / `pgsplit:replica` hint in a comment (not in
/// a literal or identifier); `primary` wins if both appear.
fn find_hint(sql: &str) -> Option<Hint> {
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
fn token_end(sql: &str, start: usize, token: Token) -> usize {
    let end = match token {
        Token::Word(text) | Token::Literal(text) | Token::Number(text) => start + text.len(),
        Token::QuotedIdent(text) => start + text.len() + 2,
        Token::Symbol(c) => start + c.len_utf8(),
    };
    end.min(sql.len())
}

/// The first position of `needle` (lowercase ASCII) in `haystack`, ignoring
/// ASCII case.
fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

// ---------------------------------------------------------------------------
// Cache

/// Texts longer than this are classified every time rather than cached, so
/// that a few huge generated statements cannot fill memory.
const MAX_CACHED_LEN: usize = 16 * 1024;
/// Independent locks, so that sessions on different threads rarely contend.
const SHARDS: usize = 16;

/// A bounded cache of classifications keyed by the exact query text, shared
/// by all sessions: applications repeat the same texts, and a hit costs a
/// hash and a short lock instead of a parse.
pub struct ClassificationCache {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

/// One shard: a CLOCK (second-chance) cache, an approximation of LRU that
/// needs no list reordering on a hit.
struct Shard {
    index: HashMap<Arc<str>, usize>,
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
}

struct Slot {
    key: Arc<str>,
    value: Arc<Classification>,
    referenced: bool,
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shard {
    fn get(&mut self, sql: &str) -> Option<Arc<Classification>> {
        let slot = self.slots.get_mut(*self.index.get(sql)?)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Inserts unless already present; returns the cached value.
    fn insert(&mut self, sql: &str, value: Arc<Classification>) -> Arc<Classification> {
        if self.capacity == 0 {
            return value;
        }
        if let Some(existing) = self.get(sql) {
            return existing;
        }
        let key: Arc<str> = Arc::from(sql);
        let slot = Slot {
            key: key.clone(),
            value: value.clone(),
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return value;
        }
        // Sweep: clear reference bits until an unreferenced slot comes up
        // (at most one full turn plus one).
        let len = self.slots.len();
        for _ in 0..=len {
            let hand = self.hand;
            self.hand = (self.hand + 1) % len;
            let Some(victim) = self.slots.get_mut(hand) else {
                break;
            };
            if victim.referenced {
                victim.referenced = false;
                continue;
            }
            self.index.remove(&victim.key);
            *victim = slot;
            self.index.insert(key, hand);
            break;
        }
        value
    }
}

impl ClassificationCache {
    /// A cache holding at most `capacity` texts (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        let shards = SHARDS.min(capacity.max(1));
        let shards = (0..shards)
            .map(|i| {
                let capacity = capacity / shards + usize::from(i < capacity % shards);
                Mutex::new(Shard {
                    index: HashMap::with_capacity(capacity.min(1024)),
                    slots: Vec::with_capacity(capacity.min(1024)),
                    hand: 0,
                    capacity,
                })
            })
            .collect();
        ClassificationCache {
            shards,
            hasher: RandomState::new(),
        }
    }

    /// The classification of `sql`, from the cache or computed (outside any
    /// lock) and remembered.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        // A single statement the keyword fast path settles costs less than
        // a lookup (texts with literals rarely repeat), so it skips the cache.
        let statement = sql.trim_end().trim_end_matches(';');
        if !statement.contains(';') {
            if let Some(verdict) = lexical(statement) {
                return Arc::new(Classification {
                    writes: verdict.writes,
                    unparsed: verdict.unparsed,
                    functions: verdict.functions,
                    transaction: verdict.transaction,
                    hint: find_hint(sql),
                });
            }
        }
        if sql.len() > MAX_CACHED_LEN {
            return Arc::new(classify(sql));
        }
        let Some(shard) = self.shard(sql) else {
            return Arc::new(classify(sql));
        };
        if let Some(hit) = lock(shard).get(sql) {
            return hit;
        }
        let value = Arc::new(classify(sql));
        lock(shard).insert(sql, value)
    }

    /// How many texts are cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, sql: &str) -> Option<&Mutex<Shard>> {
        let hash = self.hasher.hash_one(sql) as usize;
        self.shards.get(hash % self.shards.len().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use TransactionControl as Tx;

    const R: bool = false;
    const W: bool = true;
    const N: Tx = Tx::None;
    const BEGIN_RW: Tx = Tx::Begin { read_only: false };
    const BEGIN_RO: Tx = Tx::Begin { read_only: true };
    const SET_RO: Tx = Tx::SetTransactionReadOnly;
    const END: Tx = Tx::End;

    /// (sql, writes, transaction control).
    const CASES: &[(&str, bool, Tx)] = &[
        // --- plain reads, the lexical fast path
        ("SELECT 1", R, N),
        ("SELECT * FROM t", R, N),
        ("SELECT a, b FROM t WHERE x = 1", R, N),
        ("select * from t", R, N),
        ("SeLeCt * FrOm t", R, N),
        ("  \n\t SELECT 1  ", R, N),
        ("-- leading comment\nSELECT 1", R, N),
        ("/* block */ SELECT 1", R, N),
        ("/* nested /* comment */ still */ SELECT 1", R, N),
        ("/* DELETE FROM t */ SELECT 1", R, N),
        ("-- INSERT INTO t\nSELECT 1", R, N),
        ("SELECT 'DELETE FROM t'", R, N),
        ("SELECT 'it''s; DROP TABLE t'", R, N),
        ("SELECT E'\\'; DELETE FROM t; --'", R, N),
        ("SELECT $$; INSERT INTO t VALUES (1); $$", R, N),
        ("SELECT $tag$ FOR UPDATE $tag$", R, N),
        ("SELECT \"insert\" FROM t", R, N),
        ("SELECT \"into\", \"for\" FROM \"with\"", R, N),
        ("SELECT 'x' AS \"for\"", R, N),
        ("SELECT a FROM t -- FOR UPDATE", R, N),
        ("SELECT a FROM t /* INTO x */", R, N),
        ("SELECT * FROM t WHERE a LIKE 'FOR UPDATE%'", R, N),
        ("(SELECT 1)", R, N),
        ("((SELECT a FROM t))", R, N),
        ("(SELECT 1) UNION (SELECT 2)", R, N),
        ("SELECT 1 UNION ALL SELECT 2", R, N),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", R, N),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", R, N),
        ("SELECT * FROM (SELECT 1) AS s", R, N),
        ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)", R, N),
        ("SELECT * FROM t WHERE a = ANY($1)", R, N),
        ("SELECT $1::int, $2::text", R, N),
        ("SELECT * FROM t ORDER BY a DESC LIMIT 10 OFFSET 5", R, N),
        ("SELECT DISTINCT ON (a) a, b FROM t", R, N),
        ("SELECT a FROM t JOIN u USING (id)", R, N),
        ("SELECT xmin, ctid FROM t", R, N),
        ("SELECT * FROM t WHERE a IS DISTINCT FROM b", R, N),
        ("SELECT 1 WHERE NOT EXISTS (SELECT 1)", R, N),
        ("SELECT * FROM t FETCH FIRST 5 ROWS ONLY", R, N),
        ("SELECT CURRENT_TIMESTAMP, CURRENT_USER, CURRENT_DATE", R, N),
        ("SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t", R, N),
        ("SELECT ARRAY(SELECT 1)", R, N),
        ("SELECT ROW(1, 2)", R, N),
        ("SELECT * FROM t1, LATERAL (SELECT * FROM t2 WHERE t2.id = t1.id) s", R, N),
        ("TABLE t", R, N),
        ("table t", R, N),
        ("VALUES (1)", R, N),
        ("VALUES (1, 'a'), (2, 'b')", R, N),
        ("(VALUES (1))", R, N),
        ("SELECT 1;", R, N),
        ("SELECT 1; SELECT 2", R, N),
        ("", R, N),
        ("   ", R, N),
        (";", R, N),
        (";;", R, N),
        ("-- only a comment", R, N),
        ("/* only */", R, N),
        // --- reads that need the parser
        ("SELECT count(*) FROM t", R, N),
        ("SELECT sum(a), max(b), min(c), avg(d) FROM t GROUP BY e", R, N),
        ("SELECT coalesce(a, 0), lower(b), upper(c), length(d), abs(e) FROM t", R, N),
        ("SELECT now(), clock_timestamp(), random()", R, N),
        ("SELECT gen_random_uuid()", R, N),
        ("SELECT pg_sleep(1)", R, N),
        ("SELECT current_setting('search_path')", R, N),
        ("SELECT set_config('a.b', '1', false)", R, N),
        ("SELECT version()", R, N),
        ("SELECT pg_backend_pid()", R, N),
        ("SELECT txid_current_if_assigned()", R, N),
        ("SELECT pg_catalog.now()", R, N),
        ("SELECT pg_is_in_recovery()", R, N),
        ("SELECT has_table_privilege('t', 'SELECT')", R, N),
        ("SELECT to_char(now(), 'YYYY')", R, N),
        ("SELECT date_trunc('day', ts), count(*) FROM t GROUP BY 1", R, N),
        ("SELECT trim(a), extract(year FROM d), substring(s FROM 1 FOR 2) FROM t", R, N),
        ("SELECT a AT TIME ZONE 'UTC' FROM t", R, N),
        ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", R, N),
        ("SELECT jsonb_build_object('a', 1), json_agg(t) FROM t", R, N),
        ("SELECT * FROM generate_series(1, 10) WITH ORDINALITY", R, N),
        ("SELECT CAST(a AS numeric(10,2)) FROM t", R, N),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", R, N),
        ("SELECT my_func(1)", R, N),
        ("SELECT public.f()", R, N),
        ("WITH x AS (SELECT 1) SELECT * FROM x", R, N),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
            R,
            N,
        ),
        ("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", R, N),
        ("WITH x AS MATERIALIZED (SELECT * FROM t) SELECT * FROM x", R, N),
        ("with x as (select 1) (select * from x)", R, N),
        // --- session and cursor statements
        ("SHOW search_path", R, N),
        ("SHOW ALL", R, N),
        ("show TRANSACTION ISOLATION LEVEL", R, N),
        ("SET search_path = public", R, N),
        ("SET x.y = 1", R, N),
        ("SET LOCAL statement_timeout = '5s'", R, N),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", R, N),
        ("SET ROLE admin", R, N),
        ("SET TIME ZONE 'UTC'", R, N),
        ("RESET search_path", R, N),
        ("RESET ALL", R, N),
        ("DISCARD ALL", R, N),
        ("DEALLOCATE ALL", R, N),
        ("DEALLOCATE p1", R, N),
        ("FETCH 10 FROM c", R, N),
        ("FETCH NEXT IN c", R, N),
        ("MOVE FORWARD 5 IN c", R, N),
        ("CLOSE c", R, N),
        ("CLOSE ALL", R, N),
        ("SAVEPOINT s1", R, N),
        ("RELEASE SAVEPOINT s1", R, N),
        ("ROLLBACK TO SAVEPOINT s1", R, N),
        ("ROLLBACK TO s1", R, N),
        ("LOAD 'auto_explain'", R, N),
        ("DECLARE c CURSOR FOR SELECT * FROM t", R, N),
        ("DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1", R, N),
        ("PREPARE q AS SELECT * FROM t WHERE id = $1", R, N),
        // --- EXPLAIN
        ("EXPLAIN SELECT * FROM t", R, N),
        ("EXPLAIN INSERT INTO t VALUES (1)", R, N),
        ("EXPLAIN (FORMAT JSON) DELETE FROM t", R, N),
        ("EXPLAIN (ANALYZE false) INSERT INTO t VALUES (1)", R, N),
        ("EXPLAIN (ANALYZE off, COSTS on) DELETE FROM t", R, N),
        ("EXPLAIN ANALYZE SELECT * FROM t", R, N),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM t", R, N),
        ("EXPLAIN SELECT \"analyze\" FROM t", R, N),
        ("EXPLAIN SELECT nextval('s')", R, N),
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W, N),
        ("EXPLAIN (ANALYZE) DELETE FROM t", W, N),
        ("EXPLAIN (ANALYZE true, BUFFERS) UPDATE t SET a = 1", W, N),
        ("EXPLAIN (ANALYZE 1) UPDATE t SET a = 1", W, N),
        ("EXPLAIN ANALYZE SELECT nextval('s')", W, N),
        ("EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", W, N),
        ("EXPLAIN ANALYSE SELECT * FROM t FOR UPDATE", W, N),
        ("explain analyze verbose delete from t", W, N),
        // --- COPY
        ("COPY t TO STDOUT", R, N),
        ("COPY t (a, b) TO STDOUT WITH (FORMAT csv)", R, N),
        ("COPY (SELECT * FROM t) TO STDOUT", R, N),
        ("copy (select 1) to stdout", R, N),
        ("COPY t FROM STDIN", W, N),
        ("COPY t (a) FROM STDIN WITH (FORMAT csv)", W, N),
        ("COPY t TO '/tmp/t.csv'", W, N),
        ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", W, N),
        ("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", W, N),
        ("COPY (SELECT nextval('s')) TO STDOUT", W, N),
        ("COPY (SELECT * FROM t FOR UPDATE) TO STDOUT", W, N),
        // --- writes by keyword
        ("INSERT INTO t VALUES (1)", W, N),
        ("insert into t select * from u", W, N),
        ("iNsErT INTO t VALUES (1)", W, N),
        ("  -- hi\n  INSERT INTO t VALUES (1)", W, N),
        ("/* SELECT */ INSERT INTO t VALUES (1)", W, N),
        ("/* pgsplit:replica */ DELETE FROM t", W, N),
        ("UPDATE t SET a = 1", W, N),
        ("DELETE FROM t", W, N),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", W, N),
        ("CREATE TABLE t (a int)", W, N),
        ("CREATE TABLE t2 AS SELECT * FROM t", W, N),
        ("CREATE TEMP TABLE tmp (a int)", W, N),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", W, N),
        ("CREATE VIEW v AS SELECT 1", W, N),
        ("ALTER TABLE t ADD COLUMN b int", W, N),
        ("ALTER SYSTEM SET work_mem = '64MB'", W, N),
        ("DROP TABLE t", W, N),
        ("TRUNCATE t", W, N),
        ("GRANT SELECT ON t TO u", W, N),
        ("REVOKE SELECT ON t FROM u", W, N),
        ("COMMENT ON TABLE t IS 'x'", W, N),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W, N),
        ("LOCK t", W, N),
        ("CALL p(1)", W, N),
        ("DO $$ BEGIN PERFORM 1; END $$", W, N),
        ("VACUUM t", W, N),
        ("VACUUM (ANALYZE) t", W, N),
        ("VACUUM FULL", W, N),
        ("ANALYZE t", W, N),
        ("ANALYSE", W, N),
        ("REINDEX TABLE t", W, N),
        ("CLUSTER t USING i", W, N),
        ("REFRESH MATERIALIZED VIEW mv", W, N),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W, N),
        ("SECURITY LABEL ON TABLE t IS 'x'", W, N),
        ("IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local", W, N),
        ("CHECKPOINT", W, N),
        ("LISTEN ch", W, N),
        ("NOTIFY ch, 'x'", W, N),
        ("UNLISTEN *", W, N),
        ("REASSIGN OWNED BY a TO b", W, N),
        ("EXECUTE q(1)", W, N),
        ("PREPARE q AS INSERT INTO t VALUES ($1)", W, N),
        // --- SELECT INTO and locking clauses
        ("SELECT * INTO t2 FROM t", W, N),
        ("SELECT a INTO TEMP t2 FROM t", W, N),
        ("select * into unlogged t3 from t", W, N),
        ("SELECT * FROM t FOR UPDATE", W, N),
        ("SELECT * FROM t FOR NO KEY UPDATE", W, N),
        ("SELECT * FROM t FOR SHARE", W, N),
        ("SELECT * FROM t FOR KEY SHARE", W, N),
        ("SELECT * FROM t FOR UPDATE SKIP LOCKED", W, N),
        ("SELECT * FROM t FOR UPDATE OF t NOWAIT", W, N),
        ("select * from t for update", W, N),
        ("SELECT * FROM t1 JOIN t2 ON t1.a = t2.a FOR UPDATE OF t1", W, N),
        ("TABLE t FOR UPDATE", W, N),
        ("SELECT 1 UNION SELECT 2 FOR UPDATE", W, N),
        ("(SELECT * FROM t FOR UPDATE) UNION ALL SELECT * FROM u", W, N),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", W, N),
        ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", W, N),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", W, N),
        ("DECLARE c CURSOR FOR SELECT nextval('s')", W, N),
        // --- data-modifying CTEs
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", W, N),
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", W, N),
        ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM x", W, N),
        ("WITH a AS (SELECT 1), b AS (DELETE FROM t RETURNING *) SELECT * FROM a", W, N),
        (
            "WITH a AS (WITH b AS (DELETE FROM t RETURNING *) SELECT * FROM b) SELECT * FROM a",
            W,
            N,
        ),
        ("SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) s", W, N),
        ("SELECT (WITH d AS (DELETE FROM t RETURNING 1) SELECT 1 FROM d)", W, N),
        ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", W, N),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W, N),
        ("WITH x AS (SELECT 1) SELECT * INTO t2 FROM x", W, N),
        // --- built-in functions that write, lock, or need the primary
        ("SELECT nextval('s')", W, N),
        ("SELECT setval('s', 1)", W, N),
        ("SELECT currval('s')", W, N),
        ("SELECT lastval()", W, N),
        ("SELECT pg_catalog.nextval('s')", W, N),
        ("select NEXTVAL('s')", W, N),
        ("SELECT \"nextval\"('s')", W, N),
        ("SELECT pg_advisory_lock(1)", W, N),
        ("SELECT pg_try_advisory_lock(1)", W, N),
        ("SELECT pg_advisory_xact_lock(1)", W, N),
        ("SELECT pg_advisory_unlock_all()", W, N),
        ("SELECT txid_current()", W, N),
        ("SELECT pg_current_xact_id()", W, N),
        ("SELECT pg_current_wal_lsn()", W, N),
        ("SELECT pg_switch_wal()", W, N),
        ("SELECT pg_create_restore_point('r')", W, N),
        ("SELECT pg_notify('ch', 'x')", W, N),
        ("SELECT lo_create(0)", W, N),
        ("SELECT lo_import('/tmp/x')", W, N),
        ("SELECT lo_unlink(123)", W, N),
        ("SELECT lo_put(1, 0, 'x')", W, N),
        ("SELECT lo_from_bytea(0, 'x')", W, N),
        ("SELECT lowrite(0, 'x')", W, N),
        ("SELECT pg_terminate_backend(123)", W, N),
        ("SELECT pg_cancel_backend(123)", W, N),
        ("SELECT dblink_exec('conn', 'DELETE FROM t')", W, N),
        ("SELECT pg_promote()", W, N),
        ("SELECT pg_reload_conf()", W, N),
        ("SELECT pg_stat_reset()", W, N),
        ("SELECT pg_stat_reset_shared('bgwriter')", W, N),
        ("SELECT * FROM t WHERE id = nextval('s')", W, N),
        ("SELECT * FROM nextval('s')", W, N),
        ("SELECT a, (SELECT nextval('s')) FROM t", W, N),
        ("SELECT count(*) FILTER (WHERE nextval('s') > 0) FROM t", W, N),
        ("SELECT CASE WHEN a THEN setval('s', 1) END FROM t", W, N),
        ("SELECT ARRAY[nextval('s')]", W, N),
        ("SELECT coalesce(a, nextval('s')) FROM t", W, N),
        ("SELECT * FROM t ORDER BY nextval('s')", W, N),
        ("SELECT * FROM t WHERE a IN (VALUES (nextval('s')))", W, N),
        ("VALUES (nextval('s'))", W, N),
        ("SELECT/**/nextval('s')", W, N),
        ("SELECT nextval /* c */ ('s')", W, N),
        ("WITH x AS (SELECT nextval('s')) SELECT * FROM x", W, N),
        // --- several statements
        ("SELECT 1; INSERT INTO t VALUES (1)", W, N),
        ("INSERT INTO t VALUES (1); SELECT 1", W, N),
        ("SELECT 1; SELECT nextval('s')", W, N),
        ("SELECT 'a;b'; DELETE FROM t", W, N),
        ("SELECT $$;$$; DELETE FROM t", W, N),
        ("SELECT 1 /* ; */; UPDATE t SET a = 1", W, N),
        // --- transaction control
        ("BEGIN", R, BEGIN_RW),
        ("begin", R, BEGIN_RW),
        ("BEGIN WORK", R, BEGIN_RW),
        ("BEGIN TRANSACTION", R, BEGIN_RW),
        ("BEGIN READ ONLY", R, BEGIN_RO),
        ("begin read only", R, BEGIN_RO),
        ("BEGIN READ WRITE", R, BEGIN_RW),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", R, BEGIN_RW),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", R, BEGIN_RO),
        ("START TRANSACTION", R, BEGIN_RW),
        ("START TRANSACTION READ ONLY", R, BEGIN_RO),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", R, BEGIN_RO),
        ("start transaction isolation level read committed read write", R, BEGIN_RW),
        ("/* pgsplit:replica */ BEGIN READ ONLY", R, BEGIN_RO),
        ("COMMIT", R, END),
        ("COMMIT WORK", R, END),
        ("COMMIT AND CHAIN", R, END),
        ("END", R, END),
        ("END TRANSACTION", R, END),
        ("ROLLBACK", R, END),
        ("ROLLBACK AND NO CHAIN", R, END),
        ("ABORT", R, END),
        ("PREPARE TRANSACTION 'x'", W, END),
        ("COMMIT PREPARED 'x'", W, END),
        ("ROLLBACK PREPARED 'x'", W, END),
        ("SET TRANSACTION READ ONLY", R, SET_RO),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", R, SET_RO),
        ("SET LOCAL TRANSACTION READ ONLY", R, SET_RO),
        ("SET TRANSACTION READ WRITE", R, N),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", R, N),
        ("SET transaction_read_only = on", R, SET_RO),
        ("SET transaction_read_only TO off", R, N),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", W, BEGIN_RW),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", R, BEGIN_RO),
        ("SELECT 1; COMMIT", R, END),
        ("COMMIT; BEGIN", R, END),
        ("SET TRANSACTION READ ONLY; SELECT 1", R, SET_RO),
    ];

    #[test]
    fn classifies_the_table() {
        assert!(CASES.len() >= 170, "{} cases", CASES.len());
        let mut failures = Vec::new();
        for &(sql, writes, transaction) in CASES {
            let class = classify(sql);
            if class.writes != writes || class.transaction != transaction || class.unparsed {
                failures.push(format!("{sql:?}: {class:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "misclassified:\n{}",
            failures.join("\n")
        );
    }

    /// The whole classification through pg_query, bypassing the fast paths.
    fn classify_parsed(sql: &str) -> Verdict {
        let mut verdict = Verdict::read();
        for statement in split_statements(sql) {
            verdict.merge(parsed(statement));
        }
        verdict
    }

    #[test]
    fn fast_paths_agree_with_the_parser() {
        let mut failures = Vec::new();
        for &(sql, writes, transaction) in CASES {
            let parsed = classify_parsed(sql);
            if parsed.unparsed || parsed.writes != writes || parsed.transaction != transaction {
                failures.push(format!("{sql:?}: {parsed:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "parser disagrees:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn simple_statements_skip_the_parser() {
        for sql in [
            "SELECT * FROM t",
            "SELECT a, b FROM t WHERE x = 1",
            "select a from t where b in (1, 2) and c = 'for update' order by a limit 5",
            "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
            "(SELECT 1) UNION (SELECT 2)",
            "VALUES (1), (2)",
            "TABLE t",
            "INSERT INTO t VALUES (nextval('s'))",
            "SHOW search_path",
            "SET x.y = 1",
            "BEGIN READ ONLY",
            "COMMIT",
            "EXPLAIN SELECT 1",
        ] {
            assert!(lexical(sql).is_some(), "{sql}");
        }
        for sql in [
            "SELECT nextval('s')",
            "SELECT count(*) FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * INTO t2 FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT * FROM generate_series(1, 3) WITH ORDINALITY",
            "SELECT \"F\"(1)",
            "SELECT a::numeric(10, 2) FROM t",
            "DECLARE c CURSOR FOR SELECT 1",
            "COPY t TO STDOUT",
            "EXPLAIN ANALYZE SELECT 1",
            "(BEGIN)",
            "START",
        ] {
            assert!(lexical(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn builtin_lists_are_distinct_and_disjoint() {
        for list in [BUILTIN_WRITES, BUILTIN_READS] {
            let unique: std::collections::HashSet<_> = list.iter().collect();
            assert_eq!(unique.len(), list.len());
        }
        for name in BUILTIN_READS {
            assert!(!builtin_writes(name), "{name}");
        }
        for name in BUILTIN_WRITES {
            assert!(!builtin_reads(name), "{name}");
        }
    }

    #[test]
    fn reports_unknown_functions_only() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT my_func(1)", &["my_func"]),
            ("SELECT public.f()", &["public.f"]),
            ("SELECT MySchema.MyFunc(1)", &["myschema.myfunc"]),
            ("SELECT \"MySchema\".\"F\"()", &["myschema.f"]),
            ("SELECT mydb.public.f()", &["mydb.public.f"]),
            ("SELECT \"delete\"(1)", &["delete"]),
            ("SELECT count(*) FROM t", &[]),
            (
                "SELECT sum(a), lower(b), now(), random(), length(c) FROM t",
                &[],
            ),
            ("SELECT pg_catalog.lower('A')", &[]),
            ("SELECT otherschema.lower('A')", &["otherschema.lower"]),
            ("SELECT f(1), g(2), f(3)", &["f", "g"]),
            ("SELECT * FROM my_srf(1)", &["my_srf"]),
            ("SELECT a FROM t WHERE b = some_func(c)", &["some_func"]),
            ("SELECT count(DISTINCT f(a)) FROM t", &["f"]),
            ("SELECT * FROM t ORDER BY f(a)", &["f"]),
            ("SELECT a FROM t GROUP BY a HAVING f(count(*)) > 1", &["f"]),
            ("SELECT * FROM t WHERE a IN (SELECT g(b) FROM u)", &["g"]),
            ("SELECT * FROM t LIMIT f()", &["f"]),
            ("SELECT ROW(f(1))", &["f"]),
            (
                "SELECT json_agg(f(x)) OVER (PARTITION BY g(y)) FROM t",
                &["f", "g"],
            ),
            ("SELECT a::text FROM t", &[]),
            ("WITH x AS (SELECT f()) SELECT * FROM x", &["f"]),
            ("SELECT 1; SELECT f()", &["f"]),
            ("SELECT f(); SELECT g(); SELECT f()", &["f", "g"]),
            ("EXPLAIN SELECT f()", &[]),
            ("EXPLAIN ANALYZE SELECT f()", &["f"]),
            ("DECLARE c CURSOR FOR SELECT f()", &["f"]),
            ("COPY (SELECT f()) TO STDOUT", &["f"]),
            ("PREPARE q AS SELECT f($1)", &["f"]),
            // Already writes: nothing to look up.
            ("SELECT f(); INSERT INTO t VALUES (1)", &[]),
            ("SELECT nextval('s'), f()", &[]),
            ("INSERT INTO t VALUES (f())", &[]),
        ];
        for &(sql, expected) in cases {
            assert_eq!(classify(sql).functions, expected, "{sql}");
        }
    }

    #[test]
    fn finds_hints_in_comments_only() {
        let cases: &[(&str, Option<Hint>)] = &[
            ("/* pgsplit:primary */ SELECT 1", Some(Hint::Primary)),
            ("/* pgsplit:replica */ SELECT 1", Some(Hint::Replica)),
            ("SELECT 1 /* PGSPLIT:PRIMARY */", Some(Hint::Primary)),
            ("SELECT /* pgsplit:Replica */ 1", Some(Hint::Replica)),
            ("-- pgsplit:primary\nSELECT 1", Some(Hint::Primary)),
            ("SELECT 1 -- pgsplit:replica", Some(Hint::Replica)),
            (
                "SELECT 1; /* pgsplit:replica */ SELECT 2",
                Some(Hint::Replica),
            ),
            (
                "/* pgsplit:replica */ /* pgsplit:primary */ SELECT 1",
                Some(Hint::Primary),
            ),
            (
                "/* pgsplit:primary */ /* pgsplit:replica */ SELECT 1",
                Some(Hint::Primary),
            ),
            (
                "/* app=x, pgsplit:replica */ SELECT f()",
                Some(Hint::Replica),
            ),
            (
                "/* outer /* pgsplit:primary */ */ SELECT 1",
                Some(Hint::Primary),
            ),
            ("/* pgsplit:replica */", Some(Hint::Replica)),
            ("SELECT '/* pgsplit:primary */'", None),
            ("SELECT \"pgsplit:primary\"", None),
            ("SELECT $$ /* pgsplit:primary */ $$", None),
            ("/* pgsplit:other */ SELECT 1", None),
            ("SELECT 1", None),
        ];
        for &(sql, hint) in cases {
            assert_eq!(classify(sql).hint, hint, "{sql}");
        }
        let hinted = classify("/* pgsplit:replica */ SELECT f()");
        assert!(!hinted.writes);
        assert_eq!(hinted.functions, ["f"]);
    }

    #[test]
    fn unparsable_statements_go_to_the_primary() {
        for sql in [
            "SELEC 1",
            "''",
            "42",
            "FOO BAR",
            "@@@",
            ")",
            "START",
            "START foo",
            "(BEGIN)",
            "(INSERT INTO t VALUES (1))",
            "WITH x AS (SELECT 1",
            "WITH",
            "COPY",
            "DECLARE",
            "EXPLAIN ANALYZE",
            "SELECT 1 FROM t FOR",
            "SELECT f(",
            "SELECT 1; SELEC 2",
            "SELECT f(1)\0",
        ] {
            let class = classify(sql);
            assert!(class.unparsed && class.writes, "{sql:?}: {class:?}");
        }
    }

    #[test]
    fn deep_expressions_use_the_summary() {
        // Deeper than the protobuf decoder's recursion limit.
        let chain = |term: &str| vec![term; 80].join(" || ");
        let read = classify(&format!("SELECT {} FROM t", chain("f(a)")));
        assert!(!read.writes && !read.unparsed, "{read:?}");
        assert_eq!(read.functions, ["f"]);
        let write = classify(&format!("SELECT {}", chain("nextval('s')")));
        assert!(write.writes && !write.unparsed, "{write:?}");
        let locked = classify(&format!("SELECT {} FROM t FOR UPDATE", chain("a")));
        assert!(locked.writes, "{locked:?}");
        let parens = "(".repeat(5000) + "SELECT 1" + &")".repeat(5000);
        assert_eq!(classify(&parens), classify("SELECT 1"));
        let ctes = |inner: &str| "WITH a AS (".repeat(80) + inner + &") SELECT * FROM a".repeat(80);
        let read = classify(&ctes("SELECT 1"));
        assert!(!read.writes && !read.unparsed, "{read:?}");
        let write = classify(&ctes("DELETE FROM t RETURNING 1"));
        assert!(write.writes, "{write:?}");
    }

    /// A small deterministic generator (xorshift64*), to avoid a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        const PIECES: &[&str] = &[
            "SELECT",
            "INSERT",
            "WITH",
            "FOR",
            "UPDATE",
            "INTO",
            "EXPLAIN",
            "ANALYZE",
            "COPY",
            "BEGIN",
            "READ",
            "ONLY",
            "SET",
            "TRANSACTION",
            "nextval",
            "f",
            "(",
            ")",
            "'",
            "\"",
            "$$",
            "$a$",
            "/*",
            "*/",
            "--",
            "\n",
            ";",
            " ",
            "é",
            "\\",
            "E'",
            "U&",
            "0",
            "$1",
            "*",
            ",",
            ".",
            "::",
            "\0",
            "pgsplit:primary",
            "AS",
            "FROM",
            "t",
            "[",
            "]",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..4000 {
            let sql = if round % 4 == 0 {
                let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..rng.below(24))
                    .map(|_| PIECES[rng.below(PIECES.len())])
                    .collect::<Vec<_>>()
                    .join(if round % 3 == 0 { "" } else { " " })
            };
            let class = classify(&sql);
            assert!(!class.unparsed || class.writes, "{sql:?}");
            assert!(!class.writes || class.functions.is_empty(), "{sql:?}");
        }
    }

    /// Random statements that both the fast path and the parser settle must
    /// get the same answer from both.
    #[test]
    fn fast_path_agrees_with_the_parser_on_random_statements() {
        const FIRST: &[&str] = &[
            "SELECT",
            "(SELECT",
            "VALUES",
            "TABLE",
            "EXPLAIN",
            "EXPLAIN ANALYZE",
            "BEGIN",
            "START TRANSACTION",
            "SET",
            "SET TRANSACTION",
            "ROLLBACK",
            "COMMIT",
            "SHOW",
        ];
        const REST: &[&str] = &[
            "a",
            "t",
            "1",
            "'x'",
            "*",
            ",",
            "(",
            ")",
            "FROM",
            "WHERE",
            "AND",
            "OR",
            "NOT",
            "IN",
            "EXISTS",
            "ANY",
            "=",
            "+",
            "f",
            "nextval",
            "count",
            "FOR",
            "UPDATE",
            "SHARE",
            "INTO",
            "WITH",
            "AS",
            "UNION",
            "SELECT",
            "READ",
            "ONLY",
            "WRITE",
            "TO",
            "ON",
            "LIMIT",
            "$1",
            "::",
            "int",
            "ARRAY",
            "[",
            "]",
            "CASE",
            "WHEN",
            "THEN",
            "ELSE",
            "END",
            "ROW",
            "\"x\"",
            "INSERT",
            "DELETE",
            "RETURNING",
            "ISOLATION",
            "LEVEL",
            "SERIALIZABLE",
            "DISTINCT",
        ];
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut compared = 0;
        for _ in 0..20_000 {
            let mut sql = FIRST[rng.below(FIRST.len())].to_owned();
            for _ in 0..rng.below(7) {
                sql.push(' ');
                sql.push_str(REST[rng.below(REST.len())]);
            }
            let Some(fast) = lexical(&sql) else { continue };
            let parsed = parsed(&sql);
            if parsed.unparsed {
                continue;
            }
            compared += 1;
            assert_eq!(
                (fast.writes, fast.transaction, fast.functions),
                (parsed.writes, parsed.transaction, parsed.functions),
                "{sql}"
            );
        }
        assert!(compared > 1000, "only {compared} comparable statements");
    }

    #[test]
    fn cache_hits_return_the_same_classification() {
        let cache = ClassificationCache::new(100);
        let first = cache.classify("SELECT f(1)");
        let second = cache.classify("SELECT f(1)");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*first, classify("SELECT f(1)"));
        let other = cache.classify("SELECT f(2)");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn cache_stays_within_capacity() {
        for capacity in [0, 1, 3, 10, 100] {
            let cache = ClassificationCache::new(capacity);
            for i in 0..1000 {
                let sql = format!("SELECT f({i}) FROM t");
                assert!(!cache.classify(&sql).writes);
                assert!(cache.len() <= capacity, "capacity {capacity}");
            }
            assert_eq!(cache.len(), capacity, "capacity {capacity} fills up");
        }
        let cache = ClassificationCache::new(10);
        // Settled by keywords alone: cheaper than a lookup, never cached.
        assert!(!cache.classify("SELECT a FROM t WHERE id = 1;").writes);
        assert!(cache.classify("INSERT INTO t VALUES (1)").writes);
        assert!(cache.is_empty());
        let long = format!("SELECT f('{}')", "x".repeat(MAX_CACHED_LEN));
        assert!(!cache.classify(&long).writes);
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_gives_recently_used_entries_a_second_chance() {
        let mut shard = Shard {
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            capacity: 2,
        };
        let value = |sql: &str| Arc::new(classify(sql));
        shard.insert("a", value("SELECT 1"));
        shard.insert("b", value("SELECT 2"));
        assert!(shard.get("a").is_some());
        shard.insert("c", value("SELECT 3"));
        assert!(shard.get("a").is_some());
        assert!(shard.get("b").is_none());
        assert!(shard.get("c").is_some());
        assert_eq!(shard.slots.len(), 2);
        assert_eq!(shard.index.len(), 2);
    }

    #[test]
    fn cache_is_shared_across_threads() {
        let cache = Arc::new(ClassificationCache::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let sql = format!("SELECT f({}) FROM t", (i * 7 + t) % 100);
                        assert_eq!(cache.classify(&sql).functions, ["f"]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(cache.len() <= 64);
    }
}
