//! PLACEHOLDER (replaced by the pg_query classifier): first-keyword only.

use std::sync::Arc;

use crate::sql::lexer::tokens;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub writes: bool,
    pub unparsed: bool,
    pub functions: Vec<String>,
    pub transaction: TransactionControl,
    pub hint: Option<Hint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionControl {
    None,
    Begin { read_only: bool },
    SetTransactionReadOnly,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

pub fn classify(sql: &str) -> Classification {
    let first = tokens(sql).next().map(|(_, t)| t);
    let read = first.is_some_and(|t| t.is_keyword("select") || t.is_keyword("show"));
    let begin = first.is_some_and(|t| t.is_keyword("begin") || t.is_keyword("start"));
    Classification {
        writes: !read && !begin,
        unparsed: false,
        functions: Vec::new(),
        transaction: if begin {
            TransactionControl::Begin {
                read_only: sql.to_ascii_lowercase().contains("read only"),
            }
        } else {
            TransactionControl::None
        },
        hint: None,
    }
}

pub struct ClassificationCache;

impl ClassificationCache {
    pub fn new(_capacity: usize) -> Self {
        ClassificationCache
    }
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        Arc::new(classify(sql))
    }
}
