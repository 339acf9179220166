//! Prepared statements under transaction pooling.
//!
//! A client's named statements are given pgsplit-wide server names, one per
//! distinct `Parse` body, so the same statement from many clients is
//! prepared once per server connection and two clients' `S_1` never clash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::router::classify::Classification;
use crate::sql::SessionEffect;
use crate::sync::lock;

/// A client's prepared statement and what is needed to prepare it anywhere.
#[derive(Debug)]
pub struct PreparedStatement {
    /// The name it has on server connections.
    pub server_name: String,
    /// The `Parse` body after the statement name: query text and types.
    pub parse_rest: Bytes,
    /// What executing it does to the session (a prepared `SET`, say).
    pub effect: SessionEffect,
    /// Whether it reads or writes, for routing the units that bind it.
    pub class: Arc<Classification>,
    /// The text may hold a `COPY` (see `UnitTraits::may_copy`): worked out
    /// once at `Parse`, not on every `Bind`.
    pub may_copy: bool,
}

/// Distinct `Parse` bodies remembered before the interning table starts over.
const MAX_INTERNED: usize = 100_000;

/// Interns `Parse` bodies into server statement names, process-wide.
#[derive(Default)]
pub struct StatementNames {
    names: Mutex<HashMap<Bytes, String>>,
    next: AtomicU64,
}

impl StatementNames {
    /// The server name for a `Parse` body, the same for identical bodies.
    pub fn name_for(&self, parse_rest: &Bytes) -> String {
        let mut names = lock(&self.names);
        if let Some(name) = names.get(parse_rest) {
            return name.clone();
        }
        if names.len() >= MAX_INTERNED {
            // Forgetting is safe: names are never reused, so a body seen
            // again just gets a fresh name (and one more server statement).
            names.clear();
        }
        let name = format!("pgsplit_{}", self.next.fetch_add(1, Ordering::Relaxed));
        names.insert(parse_rest.clone(), name.clone());
        name
    }
}

/// One client's statements by the names the client gave them. Looked up
/// on every `Bind`, so hashed with foldhash (randomly seeded per map), not
/// SipHash: a tenth of the instructions for a short name.
#[derive(Default)]
pub struct ClientStatements {
    by_name: foldhash::HashMap<Vec<u8>, Arc<PreparedStatement>>,
}

impl ClientStatements {
    /// The statement the client named `name`, if it prepared one.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        self.by_name.get(name)
    }

    /// Records a statement the client prepared, replacing one of the same name.
    pub fn insert(&mut self, name: Vec<u8>, statement: Arc<PreparedStatement>) {
        self.by_name.insert(name, statement);
    }

    /// Forgets a statement; returns whether the client had it.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// Forgets a statement only if it still maps to `server_name` (undoing a
    /// `Parse` that failed on the server).
    pub fn remove_if_server_name(&mut self, name: &[u8], server_name: &str) {
        if self
            .by_name
            .get(name)
            .is_some_and(|s| s.server_name == server_name)
        {
            self.by_name.remove(name);
        }
    }

    /// Forgets every statement (after `DISCARD ALL` or `DEALLOCATE ALL`).
    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_bodies_share_a_name_and_different_ones_do_not() {
        let names = StatementNames::default();
        let a = Bytes::from_static(b"SELECT 1\0\0\0");
        let b = Bytes::from_static(b"SELECT 2\0\0\0");
        assert_eq!(names.name_for(&a), names.name_for(&a.clone()));
        assert_ne!(names.name_for(&a), names.name_for(&b));
    }
}
