//! A node's state from its check results: `down` only after several
//! failures in a row and back `up` after several successes, `lagging` above
//! the lag limits and readmitted only below half of them, so that one slow
//! check or a lag hovering at the limit does not make routing flap.

use std::time::Duration;

use super::topology::NodeState;

/// The thresholds a node's checks are judged by.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Failed checks in a row that make a node `down` (`monitor.fail_after`).
    pub fail_after: u32,
    /// Good checks in a row that bring it back `up` (`monitor.recover_after`).
    pub recover_after: u32,
    /// A replica further behind than this is `lagging` (`routing.max_lag_bytes`).
    pub max_lag_bytes: u64,
    /// A replica further behind in time is `lagging` (`routing.max_lag`).
    pub max_lag: Duration,
}

/// How far a replica is behind, when the monitor could work it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// WAL the replica has yet to replay.
    pub bytes: u64,
    /// How long ago the primary first wrote WAL the replica has not replayed.
    pub seconds: f64,
}

/// One node's consecutive results and current state.
#[derive(Debug, Clone)]
pub struct Health {
    state: NodeState,
    failures: u32,
    successes: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: NodeState::Up,
            failures: 0,
            successes: 0,
        }
    }
}

impl Health {
    /// The state after the latest results.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// A check failed.
    pub fn failed(&mut self, limits: &Thresholds) -> NodeState {
        self.successes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= limits.fail_after {
            self.state = NodeState::Down;
        }
        self.state
    }

    /// A check succeeded; `lag` is `None` for a primary or when unknown
    /// (the lag part of the state is then left as it was).
    pub fn succeeded(&mut self, lag: Option<Lag>, limits: &Thresholds) -> NodeState {
        self.failures = 0;
        self.successes = self.successes.saturating_add(1);
        if self.state == NodeState::Down {
            if self.successes < limits.recover_after {
                return self.state;
            }
            self.state = NodeState::Up;
        }
        match lag {
            Some(lag) if over(lag, limits, 1.0) => self.state = NodeState::Lagging,
            Some(lag) if !over(lag, limits, 0.5) => self.state = NodeState::Up,
            Some(_) => {}
            None if self.state == NodeState::Lagging => {}
            None => self.state = NodeState::Up,
        }
        self.state
    }

    /// The node is known not to need lag limits (it is the primary).
    pub fn clear_lag(&mut self) {
        if self.state == NodeState::Lagging {
            self.state = NodeState::Up;
        }
    }
}

/// Whether `lag` exceeds `fraction` of the limits.
fn over(lag: Lag, limits: &Thresholds, fraction: f64) -> bool {
    lag.bytes as f64 > limits.max_lag_bytes as f64 * fraction
        || lag.seconds > limits.max_lag.as_secs_f64() * fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds {
        fail_after: 3,
        recover_after: 2,
        max_lag_bytes: 1000,
        max_lag: Duration::from_secs(10),
    };

    fn lag(bytes: u64, seconds: f64) -> Option<Lag> {
        Some(Lag { bytes, seconds })
    }

    #[test]
    fn down_after_consecutive_failures_and_up_after_successes() {
        let mut h = Health::default();
        assert_eq!(h.failed(&LIMITS), NodeState::Up);
        assert_eq!(h.succeeded(None, &LIMITS), NodeState::Up);
        assert_eq!(h.failed(&LIMITS), NodeState::Up);
        assert_eq!(h.failed(&LIMITS), NodeState::Up);
        assert_eq!(h.failed(&LIMITS), NodeState::Down);
        assert_eq!(h.succeeded(None, &LIMITS), NodeState::Down);
        assert_eq!(h.failed(&LIMITS), NodeState::Down);
        assert_eq!(h.succeeded(None, &LIMITS), NodeState::Down);
        assert_eq!(h.succeeded(None, &LIMITS), NodeState::Up);
    }

    #[test]
    fn lagging_above_the_limit_and_readmitted_below_half() {
        let mut h = Health::default();
        assert_eq!(h.succeeded(lag(1000, 0.0), &LIMITS), NodeState::Up);
        assert_eq!(h.succeeded(lag(1001, 0.0), &LIMITS), NodeState::Lagging);
        assert_eq!(h.succeeded(lag(600, 0.0), &LIMITS), NodeState::Lagging);
        assert_eq!(h.succeeded(None, &LIMITS), NodeState::Lagging);
        assert_eq!(h.succeeded(lag(500, 4.0), &LIMITS), NodeState::Up);
        assert_eq!(h.succeeded(lag(0, 10.5), &LIMITS), NodeState::Lagging);
        h.clear_lag();
        assert_eq!(h.state(), NodeState::Up);
    }

    #[test]
    fn a_recovering_node_is_judged_on_lag_once_up() {
        let mut h = Health::default();
        for _ in 0..3 {
            h.failed(&LIMITS);
        }
        assert_eq!(h.succeeded(lag(5000, 0.0), &LIMITS), NodeState::Down);
        assert_eq!(h.succeeded(lag(5000, 0.0), &LIMITS), NodeState::Lagging);
    }
}
