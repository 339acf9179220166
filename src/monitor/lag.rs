//! Replication lag from the primary's point of view.
//!
//! Bytes: the primary's WAL position minus the replica's replay position.
//! Time: how long ago the primary first reported a position the replica has
//! not replayed yet, from the primary's positions sampled every round. An
//! idle primary writes no WAL, so a replica that replayed everything has no
//! lag however old its last replayed transaction is (which is where
//! `now() - pg_last_xact_replay_timestamp()` goes wrong).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::health::Lag;

/// Samples kept at most; at the default interval that is over eight minutes.
const MAX_SAMPLES: usize = 1024;

/// The primary's recent WAL positions, oldest first, one per change.
#[derive(Debug, Default)]
pub struct WalHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl WalHistory {
    /// Records the primary's position at `at`; only changes are kept.
    pub fn record(&mut self, at: Instant, lsn: u64) {
        if self.samples.back().is_some_and(|&(_, last)| last >= lsn) {
            return;
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, lsn));
    }

    /// Forgets everything (the primary changed: its WAL is another history).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The primary's latest known position.
    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|&(_, lsn)| lsn)
    }

    /// The lag of a replica that replayed up to `replay_lsn`, at `now`.
    pub fn lag(&self, replay_lsn: u64, now: Instant) -> Option<Lag> {
        let latest = self.latest()?;
        if replay_lsn >= latest {
            return Some(Lag {
                bytes: 0,
                seconds: 0.0,
            });
        }
        // The first position past the replay point is when the lag began;
        // if even the oldest sample is past it, the lag is at least that old.
        let since = self
            .samples
            .iter()
            .find(|&&(_, lsn)| lsn > replay_lsn)
            .map_or(now, |&(at, _)| at);
        Some(Lag {
            bytes: latest - replay_lsn,
            seconds: now.saturating_duration_since(since).as_secs_f64(),
        })
    }

    /// Drops samples older than `keep`, except the newest.
    pub fn trim(&mut self, now: Instant, keep: Duration) {
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|&(at, _)| now.saturating_duration_since(at) > keep)
        {
            self.samples.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_primary_means_no_lag_and_time_counts_from_the_first_unreplayed_write() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        assert_eq!(history.lag(0, start), None);
        history.record(start, 100);
        // Nothing new for a minute: a caught-up replica has no lag.
        let later = start + Duration::from_secs(60);
        history.record(later, 100);
        assert_eq!(history.lag(100, later).map(|l| l.seconds), Some(0.0));
        history.record(later + Duration::from_secs(1), 150);
        history.record(later + Duration::from_secs(2), 200);
        let now = later + Duration::from_secs(3);
        let lag = history.lag(100, now).unwrap();
        assert_eq!(lag.bytes, 100);
        assert!((lag.seconds - 2.0).abs() < 1e-9, "{lag:?}");
        let lag = history.lag(160, now).unwrap();
        assert_eq!(lag.bytes, 40);
        assert!((lag.seconds - 1.0).abs() < 1e-9, "{lag:?}");
    }

    #[test]
    fn trimming_keeps_the_latest_position() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        history.record(start, 1);
        history.record(start + Duration::from_secs(1), 2);
        history.trim(start + Duration::from_secs(100), Duration::from_secs(10));
        assert_eq!(history.latest(), Some(2));
        // A replica behind everything kept has lagged at least since then.
        let lag = history.lag(0, start + Duration::from_secs(100)).unwrap();
        assert!(lag.seconds >= 99.0);
    }
}
