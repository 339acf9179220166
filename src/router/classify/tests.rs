//! The classifier's tables and properties.

use std::sync::Arc;

use super::builtins::*;
use super::cache::*;
use super::lexical::*;
use super::tree::*;
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
fn plain_reads_share_one_classification_and_other_texts_get_their_own() {
    let cache = ClassificationCache::new(0);
    let first = cache.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
    let second = cache.classify("select * from t where id in (1, 2)");
    assert!(Arc::ptr_eq(&first, &second));
    assert!(cache.is_plain_read(&first));
    assert_eq!(
        *first,
        classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
    );
    // A column named copy does not make a COPY; a COPY is never a plain read.
    assert!(cache.is_plain_read(&cache.classify("SELECT copy FROM t")));
    assert!(!cache.is_plain_read(&cache.classify("COPY t TO STDOUT")));
    assert!(!cache.is_plain_read(&cache.classify("SELECT 1; COPY t TO STDOUT")));
    // Same keyword path, different answers: not the shared one.
    let hinted = cache.classify("/* pgsplit:primary */ SELECT a FROM t");
    assert_eq!(hinted.hint, Some(Hint::Primary));
    assert!(!Arc::ptr_eq(&first, &hinted));
    let begin = cache.classify("BEGIN");
    assert!(!Arc::ptr_eq(&first, &begin));
    assert!(cache.classify("DELETE FROM t").writes);
}

#[test]
fn query_bytes_that_are_not_utf8_classify_like_their_lossy_text() {
    let cache = ClassificationCache::new(0);
    // Latin-1 bytes: the plain read is recognised without a UTF-8 check.
    let plain = b"SELECT nom\xe9 FROM t WHERE x = 1";
    assert!(cache.is_plain_read(&cache.classify(plain.as_slice())));
    let lossy = String::from_utf8_lossy(plain);
    assert!(cache.is_plain_read(&cache.classify(lossy.as_ref())));
    // Everything else is classified from the lossy text.
    let write = b"INSERT INTO t VALUES ('caf\xe9')";
    assert!(cache.classify(write.as_slice()).writes);
    let call = b"SELECT f\xe9(1)";
    let class = cache.classify(call.as_slice());
    assert!(!cache.is_plain_read(&class));
    assert_eq!(class.functions, ["f\u{fffd}"]);
}

#[test]
fn repeating_texts_are_cached_even_when_keywords_settle_them() {
    // Room for every text whichever shards they hash to.
    let cache = ClassificationCache::new(1000);
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let first = cache.classify_repeating(sql);
    let second = cache.classify_repeating(sql);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(*first, classify(sql));
    assert!(cache.classify_repeating("UPDATE t SET a = $1").writes);
    assert_eq!(cache.len(), 2);
    // The same answers as the uncached path, for texts that need a parse too.
    let parsed = "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d";
    assert_eq!(*cache.classify_repeating(parsed), classify(parsed));
    assert!(cache.classify_repeating(parsed).writes);
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
        index: Default::default(),
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

#[test]
fn session_pinning_statements_are_marked_on_every_path() {
    let cache = ClassificationCache::new(10);
    for sql in [
        "CREATE TEMP TABLE t (a int)",
        "SELECT pg_advisory_lock(1)",
        "LISTEN jobs",
        "SELECT 1; PREPARE p AS SELECT 1",
    ] {
        assert!(classify(sql).pins, "{sql}");
        assert!(cache.classify(sql).pins, "{sql}");
        assert!(cache.classify_repeating(sql).pins, "{sql}");
    }
    for sql in [
        "SELECT 1",
        "SELECT pg_advisory_xact_lock(1)",
        "SET search_path = a",
        // A column that happens to bear the name calls nothing.
        "SELECT pg_advisory_lock FROM held_locks",
    ] {
        assert!(!classify(sql).pins, "{sql}");
        assert!(!cache.classify(sql).pins, "{sql}");
    }
}

#[test]
fn texts_the_session_must_look_into_are_marked_on_every_path() {
    let cache = ClassificationCache::new(10);
    for sql in [
        "SET search_path = a",
        "SHOW pgsplit.route",
        "select 1; RESET ALL",
        "DEALLOCATE p",
        "LISTEN jobs",
        // A statement named with a non-breaking space: not whitespace in SQL.
        "DEALLOCATE \u{a0}",
    ] {
        assert!(classify(sql).touches_session, "{sql}");
        assert!(cache.classify(sql).touches_session, "{sql}");
        assert!(cache.classify_repeating(sql).touches_session, "{sql}");
    }
    for sql in ["SELECT 1", "INSERT INTO t VALUES (1); SELECT 2", "BEGIN"] {
        assert!(!classify(sql).touches_session, "{sql}");
        assert!(!cache.classify(sql).touches_session, "{sql}");
        assert!(!cache.classify_repeating(sql).touches_session, "{sql}");
    }
}
