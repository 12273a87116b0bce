//! One cache of one kind of entity: see the crate docs for how it stays correct.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::stats::{CacheStats, Counters, bump};
use crate::{Registered, Shared};

/// How long and how many entries a cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Longest life of an L1 entry.
    pub l1_ttl: Duration,
    /// Most L1 entries; the least valuable are evicted beyond.
    pub l1_capacity: u64,
    /// Life of an L2 entry.
    pub l2_ttl: Duration,
}

/// Where a cached answer stands against invalidations: the flush epochs (process and
/// cache) and the key's slot, taken before its load began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    process: u64,
    cache: u64,
    slot: u64,
}

/// An L1 entry: the answer (`None`: the source has no such entity) and how long to keep it.
#[derive(Clone)]
struct Entry<V> {
    value: Option<Arc<V>>,
    ttl: Duration,
    stamp: Stamp,
}

/// Each entry lives as long as it says (see [`Entry::ttl`]).
struct EntryExpiry;

impl<V> moka::Expiry<String, Entry<V>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Entry<V>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry<V>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A pause a test puts between a load and its L2 fill.
type Hook = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// What one L2 read returns: the value, its remaining life in ms, the key's generation,
/// the cache's generation.
type L2Read = (Option<Vec<u8>>, i64, Option<String>, Option<String>);

/// Tag byte of an L2 value: the entity follows.
const PRESENT: u8 = 1;
/// Tag byte of an L2 value: the source has no such entity.
const ABSENT: u8 = 0;

/// Fills L2 only if the key's generation and the cache's are still the ones the load read
/// (KEYS: value, key generation, cache generation; ARGV: key generation read, payload, TTL
/// in ms, cache generation read). 1 when filled, 0 when refused.
const FILL: &str = r"
local generation = redis.call('GET', KEYS[2]) or ''
local cache_generation = redis.call('GET', KEYS[3]) or ''
if generation ~= ARGV[1] or cache_generation ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

pub(crate) struct Inner<V> {
    name: String,
    policy: Policy,
    shared: Arc<Shared>,
    l1: moka::future::Cache<String, Entry<V>>,
    epoch: AtomicU64,
    counters: Arc<Counters>,
    fill: redis::Script,
    pause_before_fill: Mutex<Option<Hook>>,
}

/// A two-tier cache of `V` by string key. Cheap to clone.
pub struct Tiered<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for Tiered<V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for Tiered<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("name", &self.inner.name)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl<V> Registered for Inner<V>
where
    V: prost::Message + Default + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn stats(&self) -> CacheStats {
        self.counters.snapshot(&self.name, self.l1.entry_count())
    }

    fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.l1.invalidate_all();
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.l1.run_pending_tasks())
    }
}

impl<V> Tiered<V>
where
    V: prost::Message + Default + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(name: &str, policy: Policy, shared: Arc<Shared>) -> Self {
        let counters = Arc::new(Counters::default());
        let evicted = Arc::clone(&counters);
        let l1 = moka::future::Cache::builder()
            .name(name)
            .max_capacity(policy.l1_capacity)
            .expire_after(EntryExpiry)
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    bump(&evicted.l1_evictions);
                }
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                policy,
                shared,
                l1,
                epoch: AtomicU64::new(0),
                counters,
                fill: redis::Script::new(FILL),
                pause_before_fill: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn registration(&self) -> Arc<dyn Registered> {
        Arc::clone(&self.inner) as Arc<dyn Registered>
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its statistics.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// For tests of races: `hook` runs after every load from the source and before its
    /// L2 fill, with the key.
    #[doc(hidden)]
    pub fn pause_before_fill(
        &self,
        hook: impl Fn(String) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        if let Ok(mut slot) = self.inner.pause_before_fill.lock() {
            *slot = Some(Arc::new(hook));
        }
    }

    fn stamp(&self, key: &str) -> Stamp {
        let (process, slot) = self.inner.shared.stamp(&self.inner.name, key);
        Stamp {
            process,
            cache: self.inner.epoch.load(Ordering::Acquire),
            slot,
        }
    }

    fn l2_key(&self, key: &str) -> (String, String) {
        let redis = self.inner.shared.redis.as_ref();
        let base = format!("cache:{}:", self.inner.name);
        let value = format!("{base}v:{key}");
        let generation = format!("{base}g:{key}");
        match redis {
            Some(r) => (r.key(&value), r.key(&generation)),
            None => (value, generation),
        }
    }

    /// The entity under `key`: from L1, else L2, else `load` (the source), whose answer
    /// fills both tiers (an absent entity, `None`, is cached too). Concurrent misses of
    /// one key in this process share one load; a failed load is not cached and its error
    /// is shared with the callers that waited for it.
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, load: F) -> Result<Option<Arc<V>>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
        E: Send + Sync + 'static,
    {
        let counters = &self.inner.counters;
        if let Some(entry) = self.inner.l1.get(key).await {
            if entry.stamp == self.stamp(key) {
                bump(&counters.l1_hits);
                return Ok(entry.value);
            }
            // Invalidated while (or since) it loaded: never served.
            self.inner.l1.invalidate(key).await;
        }
        bump(&counters.l1_misses);
        let mut load = Some(load);
        let entry = self.load_shared(key, &mut load).await?;
        // Another caller's entry, loaded before an invalidation of this key, is not an
        // answer to give now (rare: a write raced this read). Load again, once, the
        // waiters sharing that load too.
        if load.is_some() && entry.stamp != self.stamp(key) {
            self.inner.l1.invalidate(key).await;
            return Ok(self.load_shared(key, &mut load).await?.value);
        }
        Ok(entry.value)
    }

    /// The entry of `key` through L1's coalescing: this caller's `load` fills it (and is
    /// taken) unless another caller's load of the same key is under way or done.
    async fn load_shared<E, F, Fut>(
        &self,
        key: &str,
        load: &mut Option<F>,
    ) -> Result<Entry<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
        E: Send + Sync + 'static,
    {
        let stamp = self.stamp(key);
        self.inner
            .l1
            .try_get_with_by_ref(key, async {
                match load.take() {
                    Some(load) => self.fill(key, stamp, load).await,
                    None => Ok(Entry {
                        value: None,
                        ttl: Duration::ZERO,
                        stamp,
                    }),
                }
            })
            .await
    }

    /// L2, else the source; the entry to keep in L1 (with its TTL).
    async fn fill<E, F, Fut>(&self, key: &str, stamp: Stamp, load: F) -> Result<Entry<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let inner = &self.inner;
        let counters = &inner.counters;
        let policy = inner.policy;
        let l2 = inner.shared.l2();
        let (value_key, generation_key) = self.l2_key(key);
        let cache_generation_key = l2.map(|r| crate::bus::cache_generation_key(r, &inner.name));
        // The generations the fill will expect, when L2 answered a miss.
        let mut generation = None;
        if let (Some(redis), Some(cache_generation_key)) = (l2, &cache_generation_key) {
            let mut pipe = redis::pipe();
            pipe.cmd("GET")
                .arg(&value_key)
                .cmd("PTTL")
                .arg(&value_key)
                .cmd("GET")
                .arg(&generation_key)
                .cmd("GET")
                .arg(cache_generation_key);
            let answer: Result<L2Read, _> = redis.query_pipeline("cache read", &pipe).await;
            match answer {
                Ok((Some(bytes), pttl, _, _)) if pttl > 0 => match decode::<V>(&bytes) {
                    Some(value) => {
                        bump(&counters.l2_hits);
                        let l2_left = Duration::from_millis(pttl.unsigned_abs());
                        return Ok(Entry {
                            value,
                            ttl: policy.l1_ttl.min(l2_left),
                            stamp,
                        });
                    }
                    None => {
                        // Not ours to read (another version's encoding): reload and replace.
                        bump(&counters.l2_misses);
                        generation = None;
                    }
                },
                Ok((_, _, seen, cache_seen)) => {
                    bump(&counters.l2_misses);
                    generation = Some((seen.unwrap_or_default(), cache_seen.unwrap_or_default()));
                }
                Err(_) => bump(&counters.l2_errors),
            }
        }
        let started = Instant::now();
        let loaded = load().await;
        counters.load_nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        bump(&counters.loads);
        let value = match loaded {
            Ok(value) => value,
            Err(e) => {
                bump(&counters.load_errors);
                return Err(e);
            }
        };
        let hook = inner.pause_before_fill.lock().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            hook(key.to_owned()).await;
        }
        let degraded = policy.l1_ttl.min(inner.shared.config.degraded_l1_ttl);
        let ttl = match (l2, generation, cache_generation_key) {
            (Some(redis), Some((generation, cache_generation)), Some(cache_generation_key)) => {
                let filled: Result<i64, _> = redis
                    .invoke(
                        "cache fill",
                        inner
                            .fill
                            .key(&value_key)
                            .key(&generation_key)
                            .key(&cache_generation_key)
                            .arg(generation)
                            .arg(encode(value.as_ref()))
                            .arg(u64::try_from(policy.l2_ttl.as_millis()).unwrap_or(u64::MAX))
                            .arg(cache_generation),
                    )
                    .await;
                match filled {
                    Ok(1) => policy.l1_ttl.min(policy.l2_ttl),
                    Ok(_) => {
                        // Invalidated while it loaded: the answer goes to this caller only.
                        bump(&counters.refused_fills);
                        Duration::ZERO
                    }
                    Err(_) => degraded,
                }
            }
            // A single process without Redis: every invalidation is local.
            _ if inner.shared.redis.is_none() => policy.l1_ttl,
            _ => degraded,
        };
        Ok(Entry {
            value: value.map(Arc::new),
            ttl,
            stamp,
        })
    }

    /// Forgets `keys` everywhere, after the write that changed them committed: in this
    /// process before it returns, in L2 (giving each key a new generation, so loads that
    /// read the old row cannot fill it back), and in every other replica's L1 through the
    /// invalidation channel. Never fails: when Redis is away the invalidation is kept and
    /// replayed, and this process stops using L2 until it has been; the answer says
    /// whether it reached Redis. Queued before the first await, so a caller cancelled
    /// after its write committed cannot lose it.
    pub async fn invalidate<K: AsRef<str>>(&self, keys: &[K]) -> bool {
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        if keys.is_empty() {
            return true;
        }
        let shared = &self.inner.shared;
        shared.forget(&self.inner.name, &keys);
        let delivery = shared.redis.is_some().then(|| {
            let l2_keys = keys.iter().map(|k| self.l2_key(k)).collect();
            shared
                .publisher
                .invalidate(&self.inner.name, keys.clone(), l2_keys)
        });
        for key in &keys {
            self.inner.l1.invalidate(key).await;
        }
        let Some(delivery) = delivery else {
            return true;
        };
        let delivered = delivery.await.is_ok_and(|d| d.delivered);
        // A read of this process between the first forget and the script's DEL may have
        // found the old value in L2: forget again, now that L2 no longer holds it.
        shared.forget(&self.inner.name, &keys);
        for key in &keys {
            self.inner.l1.invalidate(key).await;
        }
        delivered
    }
}

/// The L2 bytes of an answer.
fn encode<V: prost::Message>(value: Option<&V>) -> Vec<u8> {
    match value {
        Some(v) => {
            let mut bytes = Vec::with_capacity(1 + v.encoded_len());
            bytes.push(PRESENT);
            v.encode(&mut bytes).unwrap_or_default();
            bytes
        }
        None => vec![ABSENT],
    }
}

/// The answer in L2 bytes; `None` when they cannot be read.
#[expect(clippy::option_option, reason = "unreadable, absent, present")]
fn decode<V: prost::Message + Default>(bytes: &[u8]) -> Option<Option<Arc<V>>> {
    match bytes.split_first() {
        Some((&ABSENT, [])) => Some(None),
        Some((&PRESENT, rest)) => V::decode(rest).ok().map(|v| Some(Arc::new(v))),
        _ => None,
    }
}
