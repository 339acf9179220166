//! The shared, bounded classification cache.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;
use foldhash::HashMap;

use crate::sql::lexer::is_sql_whitespace_char;
use crate::sql::query_text;
use crate::sync::lock;

use super::lexical::{is_plain_read_text, lexical};
use super::{classify, Classification, SessionUse};

/// Texts longer than this are classified every time rather than cached, so
/// that a few huge generated statements cannot fill memory.
pub(super) const MAX_CACHED_LEN: usize = 16 * 1024;
/// Independent locks, so that sessions on different threads rarely contend.
pub(super) const SHARDS: usize = 16;

/// A bounded cache of classifications keyed by the exact query text, shared
/// by all sessions: applications repeat the same texts, and a hit costs a
/// hash and a short lock instead of a parse. The hash is foldhash, seeded
/// at random per cache and per shard (so clients cannot aim collisions at
/// it), at a tenth of SipHash's cost for a typical query text.
pub struct ClassificationCache {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// The classification of a plain read (most `SELECT`s), shared: handing
    /// out a reference costs less than allocating a copy per query.
    plain_read: Arc<Classification>,
}

/// One shard: a CLOCK (second-chance) cache, an approximation of LRU that
/// needs no list reordering on a hit.
pub(super) struct Shard {
    pub(super) index: HashMap<Arc<str>, usize>,
    pub(super) slots: Vec<Slot>,
    pub(super) hand: usize,
    pub(super) capacity: usize,
}

pub(super) struct Slot {
    pub(super) key: Arc<str>,
    pub(super) value: Arc<Classification>,
    pub(super) referenced: bool,
}

impl Shard {
    pub(super) fn get(&mut self, sql: &str) -> Option<Arc<Classification>> {
        let slot = self.slots.get_mut(*self.index.get(sql)?)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Inserts unless already present; returns the cached value.
    pub(super) fn insert(&mut self, sql: &str, value: Arc<Classification>) -> Arc<Classification> {
        if self.capacity == 0 {
            return value;
        }
        if let Some(existing) = self.get(sql) {
            return existing;
        }
        let key: Arc<str> = Arc::from(sql);
        let slot = Slot {
            key: key.clone(),
            value: value.clone(),
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return value;
        }
        // Sweep: clear reference bits until an unreferenced slot comes up
        // (at most one full turn plus one).
        let len = self.slots.len();
        for _ in 0..=len {
            let hand = self.hand;
            self.hand = (self.hand + 1) % len;
            let Some(victim) = self.slots.get_mut(hand) else {
                break;
            };
            if victim.referenced {
                victim.referenced = false;
                continue;
            }
            self.index.remove(&victim.key);
            *victim = slot;
            self.index.insert(key, hand);
            break;
        }
        value
    }
}

impl ClassificationCache {
    /// A cache holding at most `capacity` texts (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        let shards = SHARDS.min(capacity.max(1));
        let shards = (0..shards)
            .map(|i| {
                let capacity = capacity / shards + usize::from(i < capacity % shards);
                Mutex::new(Shard {
                    index: HashMap::with_capacity_and_hasher(
                        capacity.min(1024),
                        RandomState::default(),
                    ),
                    slots: Vec::with_capacity(capacity.min(1024)),
                    hand: 0,
                    capacity,
                })
            })
            .collect();
        ClassificationCache {
            shards,
            hasher: RandomState::default(),
            plain_read: Arc::new(classify("SELECT")),
        }
    }

    /// The classification of `sql`, from the cache or computed (outside any
    /// lock) and remembered. It takes bytes as they came from the wire
    /// (or a `str`): a plain read is recognised before any UTF-8 check,
    /// which only the other texts need.
    pub fn classify(&self, sql: &(impl AsRef<[u8]> + ?Sized)) -> Arc<Classification> {
        let bytes = sql.as_ref();
        if is_plain_read_text(bytes) {
            return self.plain_read.clone();
        }
        let text = query_text(bytes);
        let sql: &str = &text;
        // A single statement the keyword fast path settles costs less than
        // a lookup (texts with literals rarely repeat), so it skips the cache.
        if let Some(quick) = quick_classification(sql) {
            if quick == *self.plain_read {
                return self.plain_read.clone();
            }
            return Arc::new(quick);
        }
        self.cached(sql, || classify(sql))
    }

    /// Whether `class` is the shared classification of a plain read: one
    /// statement, a `SELECT` (or `VALUES`, `TABLE`) that its tokens settled
    /// as calling nothing. Such a text is no `COPY`, has no session effect
    /// and no hint, so callers need not look at it for those.
    pub fn is_plain_read(&self, class: &Arc<Classification>) -> bool {
        Arc::ptr_eq(class, &self.plain_read)
    }

    /// Like [`classify`](Self::classify), for texts that usually repeat
    /// (an extended-protocol `Parse` carries parameters, not literals): the
    /// cache is asked first, so a repeated text costs one lookup.
    pub fn classify_repeating(&self, sql: &str) -> Arc<Classification> {
        self.cached(sql, || {
            quick_classification(sql).unwrap_or_else(|| classify(sql))
        })
    }

    fn cached(&self, sql: &str, compute: impl FnOnce() -> Classification) -> Arc<Classification> {
        if sql.len() > MAX_CACHED_LEN {
            return Arc::new(compute());
        }
        let Some(shard) = self.shard(sql) else {
            return Arc::new(compute());
        };
        if let Some(hit) = lock(shard).get(sql) {
            return hit;
        }
        let value = Arc::new(compute());
        lock(shard).insert(sql, value)
    }

    /// How many texts are cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, sql: &str) -> Option<&Mutex<Shard>> {
        let hash = self.hasher.hash_one(sql) as usize;
        self.shards.get(hash % self.shards.len().max(1))
    }
}

/// A single statement settled by the keyword fast path, if it is one.
fn quick_classification(sql: &str) -> Option<Classification> {
    // Trimmed as `split_statements` trims: SQL's whitespace, not Unicode's.
    let statement = sql
        .trim_end_matches(is_sql_whitespace_char)
        .trim_end_matches(';');
    if statement.contains(';') {
        return None;
    }
    let verdict = lexical(statement)?;
    let session = SessionUse::of(statement, &verdict);
    Some(verdict.into_classification(sql, session))
}
