//! Built-in functions known to write, or known to be harmless reads.

/// How a function call affects routing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FunctionKind {
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
pub(super) fn function_kind(parts: &[&str]) -> FunctionKind {
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
pub(super) const BUILTIN_WRITES: &[&str] = &[
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
pub(super) const BUILTIN_WRITE_PREFIXES: &[&str] = &[
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
pub(super) const BUILTIN_READS: &[&str] = &[
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
pub(super) const BUILTIN_READ_PREFIXES: &[&str] = &[
    "has_",
    "pg_get_",
    "pg_stat_get_",
    "json_",
    "jsonb_",
    "array_",
    "regexp_",
];

pub(super) fn builtin_writes(name: &str) -> bool {
    BUILTIN_WRITES.contains(&name) || BUILTIN_WRITE_PREFIXES.iter().any(|p| name.starts_with(p))
}

pub(super) fn builtin_reads(name: &str) -> bool {
    BUILTIN_READS.contains(&name) || BUILTIN_READ_PREFIXES.iter().any(|p| name.starts_with(p))
}
