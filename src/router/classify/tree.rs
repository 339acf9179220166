//! The full parse with PostgreSQL's grammar (pg_query), for what keywords cannot settle.

use pg_query::protobuf::{a_const, TransactionStmtKind, VariableSetKind};
use pg_query::{Node, NodeEnum};
use serde::ser::Serialize;

use super::lexical::{falsy, truthy};
use super::walk::*;
use super::{TransactionControl, Verdict};
use crate::sql::lexer::tokens;

/// Classifies a statement from PostgreSQL's parse tree; a statement the
/// parser rejects is unparsed (and so a write).
pub(super) fn parsed(statement: &str) -> Verdict {
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
pub(super) fn summarized(statement: &str) -> Verdict {
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
pub(super) fn node_verdict(node: &NodeEnum) -> Verdict {
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
pub(super) fn query_verdict(query: Option<&Node>) -> Verdict {
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
pub(super) fn option_on(option: &Node, name: &str) -> bool {
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
pub(super) fn read_only_option(option: &Node) -> bool {
    match &option.node {
        Some(NodeEnum::DefElem(def)) if def.defname == "transaction_read_only" => {
            def.arg.as_deref().and_then(constant_bool) == Some(true)
        }
        _ => false,
    }
}

/// The boolean a constant option value spells, if it spells one.
pub(super) fn constant_bool(node: &Node) -> Option<bool> {
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
pub(super) fn scan(node: &NodeEnum) -> Verdict {
    let mut scan = Scan::default();
    let stopped = node.serialize(&mut scan).is_err();
    Verdict {
        writes: scan.writes || stopped,
        unparsed: false,
        functions: scan.functions,
        ..Verdict::read()
    }
}
