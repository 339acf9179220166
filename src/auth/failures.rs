//! Failed logins counted per source address, so one address cannot keep
//! guessing passwords: past `auth_failure_limit` failures within
//! `auth_failure_window` its logins are refused until the window passes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Addresses tracked at most; past this, expired entries are dropped, and
/// if all are live the oldest window goes (a flood of addresses cannot
/// grow memory without bound).
const MAX_TRACKED: usize = 10_000;

/// One address's failures in its current window.
struct Window {
    started: Instant,
    failures: usize,
}

/// Failed logins by source address.
#[derive(Default)]
pub struct LoginFailures {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl LoginFailures {
    /// Whether `address` has used up its failures (`limit` 0: no limit).
    pub fn is_blocked(&self, address: IpAddr, limit: usize, window: Duration) -> bool {
        if limit == 0 {
            return false;
        }
        let windows = lock(&self.windows);
        windows
            .get(&address)
            .is_some_and(|w| w.started.elapsed() < window && w.failures >= limit)
    }

    /// Counts a failed login from `address`.
    pub fn record(&self, address: IpAddr, window: Duration) {
        let mut windows = lock(&self.windows);
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&address) {
            windows.retain(|_, w| w.started.elapsed() < window);
            if windows.len() >= MAX_TRACKED {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    windows.remove(&oldest);
                }
            }
        }
        let entry = windows.entry(address).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if entry.started.elapsed() >= window {
            *entry = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        entry.failures += 1;
    }

    /// Addresses with failures on record.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.windows).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_an_address_after_the_limit_within_the_window_only() {
        let failures = LoginFailures::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let window = Duration::from_millis(200);
        for _ in 0..3 {
            assert!(!failures.is_blocked(a, 3, window));
            failures.record(a, window);
        }
        assert!(failures.is_blocked(a, 3, window));
        assert!(
            !failures.is_blocked(b, 3, window),
            "other addresses unaffected"
        );
        assert!(!failures.is_blocked(a, 0, window), "0 means no limit");
        std::thread::sleep(window);
        assert!(!failures.is_blocked(a, 3, window), "the window passed");
        failures.record(a, window);
        assert!(
            !failures.is_blocked(a, 2, window),
            "a new window starts at 1"
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let failures = LoginFailures::default();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            failures.record(IpAddr::from(i.to_be_bytes()), Duration::from_secs(60));
        }
        assert!(failures.tracked() <= MAX_TRACKED);
    }
}
