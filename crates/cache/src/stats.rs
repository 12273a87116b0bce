//! What each cache counts, for `AdminService.GetCacheStats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One tier of one cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Answers found in this tier.
    pub hits: u64,
    /// Look-ups this tier could not answer.
    pub misses: u64,
    /// Entries dropped to stay within the size bound (L1 only).
    pub evictions: u64,
    /// Entries held now (L1 only: Redis is shared, its entries are not counted per call).
    pub entries: u64,
    /// Look-ups that failed (L2: Redis away or answering errors).
    pub errors: u64,
}

impl TierStats {
    fn add(&mut self, other: &TierStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.evictions += other.evictions;
        self.entries += other.entries;
        self.errors += other.errors;
    }

    /// Hits over look-ups (0 before any).
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// One cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Its name.
    pub name: String,
    /// The in-process tier.
    pub l1: TierStats,
    /// The Redis tier.
    pub l2: TierStats,
    /// Loads from the source (the database), after both tiers missed.
    pub loads: u64,
    /// Loads that failed.
    pub load_errors: u64,
    /// Time spent in loads.
    pub load_time: Duration,
    /// L2 fills refused because the key was invalidated while it loaded.
    pub refused_fills: u64,
}

impl CacheStats {
    /// Adds the figures of another cache of the same name.
    pub(crate) fn add(&mut self, other: &CacheStats) {
        self.l1.add(&other.l1);
        self.l2.add(&other.l2);
        self.loads += other.loads;
        self.load_errors += other.load_errors;
        self.load_time += other.load_time;
        self.refused_fills += other.refused_fills;
    }
}

/// The counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub l1_hits: AtomicU64,
    pub l1_misses: AtomicU64,
    pub l1_evictions: AtomicU64,
    pub l2_hits: AtomicU64,
    pub l2_misses: AtomicU64,
    pub l2_errors: AtomicU64,
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
    pub load_nanos: AtomicU64,
    pub refused_fills: AtomicU64,
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self, name: &str, l1_entries: u64) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            name: name.to_owned(),
            l1: TierStats {
                hits: get(&self.l1_hits),
                misses: get(&self.l1_misses),
                evictions: get(&self.l1_evictions),
                entries: l1_entries,
                errors: 0,
            },
            l2: TierStats {
                hits: get(&self.l2_hits),
                misses: get(&self.l2_misses),
                evictions: 0,
                entries: 0,
                errors: get(&self.l2_errors),
            },
            loads: get(&self.loads),
            load_errors: get(&self.load_errors),
            load_time: Duration::from_nanos(get(&self.load_nanos)),
            refused_fills: get(&self.refused_fills),
        }
    }
}
