//! Routing: which node serves a transaction.
//!
//! The session asks once per transaction (the unit of transaction pooling),
//! so splitting reads from writes only has to change the answer here.

use crate::config::Config;

/// Chooses the node for each transaction.
#[derive(Debug, Clone)]
pub struct Router {
    primary: usize,
}

impl Router {
    /// Starts from the configured primary.
    pub fn new(config: &Config) -> Router {
        Router {
            primary: config.primary_index(),
        }
    }

    /// The node (index into `nodes`) that serves the next transaction.
    /// Every transaction goes to the primary until read/write splitting
    /// lands; that is always safe.
    pub fn node_for_transaction(&self) -> usize {
        self.primary
    }
}
