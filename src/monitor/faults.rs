//! Fault injection for tests: make the monitor's checks of chosen nodes
//! fail while the nodes themselves (and replication between them) carry on,
//! as a network problem between pgsplit and one server would.

use std::sync::atomic::{AtomicBool, Ordering};

/// Per node: whether its checks fail on purpose.
#[derive(Debug)]
pub struct ProbeFaults {
    blocked: Vec<AtomicBool>,
}

impl ProbeFaults {
    /// No faults, for `nodes` nodes.
    pub fn new(nodes: usize) -> ProbeFaults {
        ProbeFaults {
            blocked: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Makes the checks of `node` fail (`true`) or work again.
    pub fn block(&self, node: usize, blocked: bool) {
        if let Some(flag) = self.blocked.get(node) {
            flag.store(blocked, Ordering::Relaxed);
        }
    }

    /// Whether checks of `node` must fail.
    pub fn is_blocked(&self, node: usize) -> bool {
        self.blocked
            .get(node)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}
