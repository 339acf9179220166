//! The pooled prepared statements that exist on one server connection,
//! with their recency, so the connection can be kept under
//! `pool.max_prepared_statements` (each one costs server memory).

use foldhash::HashMap;

/// Statement names on a server connection, least recently used first out.
/// Asked on every execution of a prepared statement, hence foldhash.
#[derive(Debug, Default)]
pub struct PreparedSet {
    last_used: HashMap<String, u64>,
    clock: u64,
}

impl PreparedSet {
    /// Whether the connection has `name`; counts as a use.
    pub fn contains(&mut self, name: &str) -> bool {
        self.clock += 1;
        match self.last_used.get_mut(name) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records `name` as prepared (and used); `true` if it is new.
    pub fn insert(&mut self, name: &str) -> bool {
        if self.contains(name) {
            return false;
        }
        self.last_used.insert(name.to_owned(), self.clock);
        true
    }

    /// Forgets `name` (its `Parse` failed, or it was closed).
    pub fn remove(&mut self, name: &str) {
        self.last_used.remove(name);
    }

    /// Forgets everything (`DISCARD ALL`, `DEALLOCATE ALL`).
    pub fn clear(&mut self) {
        self.last_used.clear();
    }

    /// How many statements the connection holds.
    pub fn len(&self) -> usize {
        self.last_used.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.last_used.is_empty()
    }

    /// Removes and returns the `count` least recently used names.
    pub fn take_least_recent(&mut self, count: usize) -> Vec<String> {
        let mut by_age: Vec<(u64, String)> = self
            .last_used
            .iter()
            .map(|(name, used)| (*used, name.clone()))
            .collect();
        by_age.sort_unstable();
        let victims: Vec<String> = by_age
            .into_iter()
            .take(count)
            .map(|(_, name)| name)
            .collect();
        for name in &victims {
            self.last_used.remove(name);
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut set = PreparedSet::default();
        assert!(set.insert("a"));
        assert!(set.insert("b"));
        assert!(set.insert("c"));
        assert!(!set.insert("a"));
        assert!(set.contains("b"));
        assert_eq!(
            set.take_least_recent(2),
            vec!["c".to_string(), "a".to_string()]
        );
        assert_eq!(set.len(), 1);
        assert!(set.contains("b"));
        assert!(!set.contains("a"));
    }
}
