//! The suite's Redis handle ([`redis`]) and its two-tier cache ([`Caches`], [`Tiered`]).
//!
//! A [`Tiered`] cache holds one kind of entity: an L1 in the process (moka, with its own
//! TTL and size bound) in front of an L2 in Redis (values encoded with prost, shared by
//! every replica), in front of the loader the caller passes to
//! [`Tiered::get_or_load`] (the database). Concurrent misses of one key in a process share
//! one load. Writers call [`Tiered::invalidate`] after their transaction commits.
//!
//! # Correct under races
//!
//! - **No stale write-back.** Every key has a generation in Redis, bumped by each
//!   invalidation. A load reads the generation in the same round trip as its L2 miss and
//!   fills L2 only if the generation is still the one it read (one Lua script, atomic): a
//!   load that read the database before a writer's commit and fills after its
//!   invalidation is refused.
//! - **The writer reads its own write at once.** [`Tiered::invalidate`] forgets the keys
//!   in this process before it returns, and has deleted them from L2 (unless Redis is
//!   away, see below).
//! - **Other replicas within milliseconds.** Invalidations are published on one Redis
//!   channel by each process's publisher, in order, with the publisher's id and a
//!   sequence number. Every process subscribes; a message forgets its keys in L1. A
//!   replica that sees a gap in a publisher's sequence, or that loses its subscription,
//!   flushes every L1 instead of serving what it may have missed.
//! - **No L1 entry outlives its L2 source**: an entry filled from L2 expires with the L2
//!   entry (`PTTL`, read in the same round trip), and one filled from the loader with the
//!   L2 entry it wrote.
//! - **No L1 entry outlives an invalidation it raced with**: each entry carries the
//!   invalidation stamp of its key's slot (and the flush epoch) from before its load
//!   began; an entry whose slot was invalidated since is a miss, however the insert and
//!   the invalidation interleaved.
//!
//! # Redis away
//!
//! Reads go to L1 and the loader, with identical answers and no errors; L1 entries live
//! at most [`CacheConfig::degraded_l1_ttl`] while invalidations cannot be received (every
//! L1 is flushed when the subscription is lost, and again when it is back). Invalidations
//! that could not reach Redis are kept (deduplicated, bounded) and replayed before L2 is
//! used again; if too many pile up, the caches they touched are cleared from L2 instead.
//! The handle reconnects by itself and logs one warning per outage.

pub mod redis;

mod bus;
mod stats;
mod tiered;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use crate::redis::{RedisError, RedisHandle};
pub use stats::{CacheStats, TierStats};
pub use tiered::{Policy, Tiered};

/// Settings shared by every cache of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Longest life of an L1 entry while invalidations cannot be received.
    pub degraded_l1_ttl: Duration,
    /// How long a key's generation is kept after its last invalidation: longer than any
    /// load may take (loads are bounded by the statement timeout).
    pub generation_ttl: Duration,
    /// Most invalidations kept for replay while Redis is away; beyond, the caches they
    /// touched are cleared from L2 when it is back.
    pub max_pending: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            degraded_l1_ttl: Duration::from_secs(1),
            generation_ttl: Duration::from_secs(3600),
            max_pending: 100_000,
        }
    }
}

/// The caches of a process: they share the Redis handle, the invalidation channel, and
/// the stamps that make L1 entries safe under races. Cheap to clone.
#[derive(Clone)]
pub struct Caches {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("l2", &self.shared.redis.is_some())
            .field("listening", &self.shared.listening())
            .finish_non_exhaustive()
    }
}

/// Slots of invalidation stamps: a key's slot counts the invalidations of every key
/// hashed to it. 65,536 slots (512 KiB) keep unrelated invalidations from costing entries
/// their life.
const SLOTS: usize = 1 << 16;

/// One cache as the registry sees it.
trait Registered: Send + Sync {
    fn name(&self) -> &str;
    fn stats(&self) -> CacheStats;
    fn flush(&self);
    /// Lets L1 finish its pending bookkeeping, so its entry count is current.
    fn settle(&self) -> futures_util::future::BoxFuture<'_, ()>;
}

pub(crate) struct Shared {
    redis: Option<RedisHandle>,
    config: CacheConfig,
    /// Flushes of every L1 so far: an entry from an earlier epoch is a miss.
    epoch: AtomicU64,
    /// Invalidation stamps by slot (see [`SLOTS`]).
    slots: Box<[AtomicU64]>,
    /// Whether the subscription is live and every invalidation of this process reached
    /// Redis: only then is L2 used and L1 kept for its full TTL.
    subscribed: AtomicBool,
    pending_count: AtomicU64,
    /// Every cache by name (a name may be taken twice: two sets of handlers on one
    /// context, in tests; both are flushed and counted together).
    caches: Mutex<HashMap<String, Vec<Weak<dyn Registered>>>>,
    publisher: bus::Publisher,
    /// The background tasks, stopped when the last handle goes.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

impl Shared {
    /// Whether invalidations are being received and none of ours is waiting for Redis.
    fn listening(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.pending_count.load(Ordering::Acquire) == 0
    }

    /// The Redis handle, when L2 may be used now.
    fn l2(&self) -> Option<&RedisHandle> {
        self.redis.as_ref().filter(|_| self.listening())
    }

    fn slot(&self, cache: &str, key: &str) -> &AtomicU64 {
        use std::hash::Hasher as _;
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(cache.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(key.as_bytes());
        let i = usize::try_from(hasher.finish() % SLOTS as u64).unwrap_or(0);
        &self.slots[i]
    }

    /// The process-wide part of `key`'s stamp now: the flush epoch and the key's slot.
    fn stamp(&self, cache: &str, key: &str) -> (u64, u64) {
        (
            self.epoch.load(Ordering::Acquire),
            self.slot(cache, key).load(Ordering::Acquire),
        )
    }

    /// Forgets `keys` of `cache` in this process: their L1 entries, and those of loads
    /// in flight, no longer match their stamps (and are dropped when next looked up).
    fn forget(&self, cache: &str, keys: &[String]) {
        for key in keys {
            self.slot(cache, key).fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Flushes the L1 of `cache` (every cache with `None`) in this process.
    fn flush(&self, cache: Option<&str>) {
        if cache.is_none() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        for registered in self.registered(cache) {
            registered.flush();
        }
    }

    /// The live caches named `name` (every cache with `None`).
    fn registered(&self, name: Option<&str>) -> Vec<Arc<dyn Registered>> {
        let Ok(caches) = self.caches.lock() else {
            return Vec::new();
        };
        caches
            .iter()
            .filter(|(n, _)| name.is_none_or(|name| name == n.as_str()))
            .flat_map(|(_, all)| all.iter().filter_map(Weak::upgrade))
            .collect()
    }

    fn all(&self) -> Vec<Arc<dyn Registered>> {
        self.registered(None)
    }
}

/// What [`Caches::clear`] cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cleared {
    /// L1 entries dropped in this process.
    pub l1_entries: u64,
    /// L2 entries deleted from Redis.
    pub l2_entries: u64,
}

/// No cache of that name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no cache named {0:?}")]
pub struct UnknownCache(pub String);

impl Caches {
    /// Caches sharing `redis` (none: L1 and the loader only). Starts the invalidation
    /// publisher and subscriber on the current tokio runtime; they stop when the last
    /// clone is dropped.
    pub fn start(redis: Option<RedisHandle>, config: CacheConfig) -> Self {
        let (publisher, queue) = bus::Publisher::new();
        let shared = Arc::new(Shared {
            redis,
            config,
            epoch: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            subscribed: AtomicBool::new(false),
            pending_count: AtomicU64::new(0),
            caches: Mutex::new(HashMap::new()),
            publisher,
            tasks: Mutex::new(Vec::new()),
        });
        if shared.redis.is_some() {
            let tasks = bus::spawn(&shared, queue);
            if let Ok(mut slot) = shared.tasks.lock() {
                *slot = tasks;
            }
        }
        Self { shared }
    }

    /// A cache named `name` (letters, digits, `_` and `-`) of values `V`, with `policy`.
    /// Invalidations and clears of a name reach every cache of that name.
    ///
    /// # Panics
    /// If the name is not of that alphabet: a programming error, found at start.
    pub fn tiered<V>(&self, name: &str, policy: Policy) -> Tiered<V>
    where
        V: prost::Message + Default + Clone + Send + Sync + 'static,
    {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "cache name {name:?}: letters, digits, _ and - only"
        );
        let cache = Tiered::new(name, policy, Arc::clone(&self.shared));
        let registered: Arc<dyn Registered> = cache.registration();
        let mut caches = self
            .shared
            .caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all = caches.entry(name.to_owned()).or_default();
        all.retain(|c| c.strong_count() > 0);
        all.push(Arc::downgrade(&registered));
        cache
    }

    /// Statistics of every cache, by name.
    pub async fn stats(&self) -> Vec<CacheStats> {
        let caches = self.shared.all();
        for cache in &caches {
            cache.settle().await;
        }
        let mut all: Vec<CacheStats> = Vec::new();
        for stats in caches.iter().map(|c| c.stats()) {
            match all.iter_mut().find(|s| s.name == stats.name) {
                Some(same) => same.add(&stats),
                None => all.push(stats),
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The names of every cache.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .all()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Clears `cache` (every cache with `None`) in L2 and in the L1 of every replica.
    pub async fn clear(&self, cache: Option<&str>) -> Result<Cleared, UnknownCache> {
        if let Some(name) = cache
            && self.shared.registered(Some(name)).is_empty()
        {
            return Err(UnknownCache(name.to_owned()));
        }
        // Every entry of the caches cleared (moka counts lazily: taken before the flush).
        let l1_entries: u64 = self
            .stats()
            .await
            .iter()
            .filter(|s| cache.is_none_or(|name| s.name == name))
            .map(|s| s.l1.entries)
            .sum();
        self.shared.flush(cache);
        let l2_entries = match &self.shared.redis {
            Some(_) => self
                .shared
                .publisher
                .clear(cache)
                .await
                .map_or(0, |d| d.l2_deleted),
            None => 0,
        };
        Ok(Cleared {
            l1_entries,
            l2_entries,
        })
    }

    /// Whether invalidations from other replicas are being received (L2 in use).
    pub fn listening(&self) -> bool {
        self.shared.listening()
    }

    /// Waits until [`Caches::listening`] (tests and start-up checks), at most `limit`.
    pub async fn wait_listening(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.listening() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}
