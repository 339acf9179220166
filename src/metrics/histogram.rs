//! A latency histogram made of atomics, so recording on the data path
//! never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts of observations per bucket (not cumulative), their sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy for rendering.
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket, as Prometheus wants them.
    pub cumulative: [u64; BUCKETS.len()],
    /// The total of all observations, in seconds (Prometheus `_sum`).
    pub sum_seconds: f64,
    /// How many observations there were, including those above the last
    /// bucket (Prometheus `_count`, the `+Inf` bucket).
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values, bucket counts made cumulative.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS.len()];
        let mut running = 0;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            *slot = running;
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_slow_ones_only_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[3], 2);
        assert_eq!(s.cumulative[BUCKETS.len() - 1], 2);
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 60.0033).abs() < 1e-6);
    }
}
