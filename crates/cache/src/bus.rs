//! The invalidation channel: one publisher and one subscriber per process.
//!
//! The publisher is one task, so this process's messages leave in the order of their
//! sequence numbers; each message deletes its keys from L2, bumps their generations and
//! is published in one Lua script, so no replica hears of an invalidation before L2 has
//! forgotten the keys. Invalidations that cannot reach Redis are kept (deduplicated, at
//! most [`crate::CacheConfig::max_pending`] keys) and replayed until they do; meanwhile
//! this process does not use L2. Past the bound, the caches they touched are cleared from
//! L2 when Redis is back, since single keys can no longer be named.
//!
//! The subscriber holds a connection of its own, pings it every second, and applies each
//! message to this process's L1. It flushes every L1 when the connection is lost, when it
//! is back, and when a publisher's sequence skips a number (a message this process did
//! not receive).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};

use crate::Shared;
use crate::redis::RedisHandle;

/// The channel, under the handle's prefix.
const CHANNEL: &str = "cache:invalidations";
/// Keys per replayed script call.
const REPLAY_CHUNK: usize = 500;
/// How often the subscriber pings its connection, and how long an answer may take.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at subscribing.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Deletes L2 values, gives their keys a new generation, publishes (KEYS: value,
/// generation pairs; ARGV: generation TTL in ms, channel, message, the new generation).
/// A generation is the publisher's id and sequence number: it never repeats, even after
/// the key expired or Redis restarted empty (a counter would start again at 1 and let a
/// load that read the old row fill it back).
const INVALIDATE: &str = r"
for i = 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], ARGV[4], 'PX', ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// The key of `cache`'s own generation, which [`clear_l2`] changes so that loads in
/// flight cannot fill back what the clear removed.
pub(crate) fn cache_generation_key(redis: &RedisHandle, cache: &str) -> String {
    redis.key(&format!("cache:{cache}:generation"))
}

/// An invalidation message, as published.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Message {
    /// The publishing process.
    #[prost(bytes = "vec", tag = "1")]
    publisher: Vec<u8>,
    /// 1, 2, 3 … per publisher.
    #[prost(uint64, tag = "2")]
    seq: u64,
    /// Keys forgotten, by cache.
    #[prost(message, repeated, tag = "3")]
    keys: Vec<CacheKeys>,
    /// Caches cleared whole.
    #[prost(string, repeated, tag = "4")]
    cleared: Vec<String>,
    /// Every cache cleared.
    #[prost(bool, tag = "5")]
    cleared_all: bool,
}

/// Keys of one cache.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CacheKeys {
    #[prost(string, tag = "1")]
    cache: String,
    #[prost(string, repeated, tag = "2")]
    keys: Vec<String>,
}

/// One piece of work for the publisher.
pub(crate) struct Job {
    cache: String,
    keys: Vec<String>,
    /// (value, generation) key of each key in L2.
    l2_keys: Vec<(String, String)>,
    /// Clear this cache (`Some(None)`: every cache) instead.
    clear: Option<Option<String>>,
    done: oneshot::Sender<Delivery>,
}

/// What became of a job.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Delivery {
    /// It reached Redis (otherwise it is kept and replayed).
    pub delivered: bool,
    /// L2 entries a clear deleted.
    pub l2_deleted: u64,
}

/// The handle writers send invalidations through.
pub(crate) struct Publisher {
    queue: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Job>) {
        let (queue, jobs) = mpsc::unbounded_channel();
        (Self { queue }, jobs)
    }

    /// Queues an invalidation of `keys` of `cache` at once (so a caller cancelled later
    /// cannot lose it); the answer says whether it reached Redis or was kept for replay.
    pub fn invalidate(
        &self,
        cache: &str,
        keys: Vec<String>,
        l2_keys: Vec<(String, String)>,
    ) -> oneshot::Receiver<Delivery> {
        self.enqueue(cache, keys, l2_keys, None)
    }

    /// Queues a clear of `cache` (every cache with `None`): from L2, then from every
    /// replica's L1.
    pub fn clear(&self, cache: Option<&str>) -> oneshot::Receiver<Delivery> {
        self.enqueue(
            cache.unwrap_or_default(),
            Vec::new(),
            Vec::new(),
            Some(cache.map(str::to_owned)),
        )
    }

    fn enqueue(
        &self,
        cache: &str,
        keys: Vec<String>,
        l2_keys: Vec<(String, String)>,
        clear: Option<Option<String>>,
    ) -> oneshot::Receiver<Delivery> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            cache: cache.to_owned(),
            keys,
            l2_keys,
            clear,
            done,
        };
        // Only fails once the publisher is gone with the process's caches.
        let _ = self.queue.send(job);
        answer
    }
}

/// Starts the publisher and the subscriber.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    jobs: mpsc::UnboundedReceiver<Job>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(publish(Arc::downgrade(shared), jobs)),
        tokio::spawn(subscribe(Arc::downgrade(shared))),
    ]
}

/// Invalidations that did not reach Redis, to replay.
#[derive(Default)]
struct Pending {
    /// (value key, generation key) by cache and key.
    keys: HashMap<String, HashMap<String, (String, String)>>,
    /// Caches whose keys overflowed the bound: cleared from L2 instead.
    overflowed: HashSet<String>,
    count: usize,
}

impl Pending {
    fn add(&mut self, job: &Job, max: usize) {
        for (key, l2) in job.keys.iter().zip(&job.l2_keys) {
            if self.count >= max {
                self.overflowed.insert(job.cache.clone());
                return;
            }
            let keys = self.keys.entry(job.cache.clone()).or_default();
            if keys.insert(key.clone(), l2.clone()).is_none() {
                self.count += 1;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0 && self.overflowed.is_empty()
    }
}

struct Sender {
    id: Vec<u8>,
    seq: u64,
    script: redis::Script,
    channel: String,
    generation_ttl_ms: u64,
}

impl Sender {
    /// A value no other invalidation ever used: this publisher's id and sequence number.
    fn generation(&self) -> String {
        let id: String = self.id.iter().map(|b| format!("{b:02x}")).collect();
        format!("{id}:{}", self.seq)
    }

    /// Runs the script for `keys` of `cache` (and `cleared` caches), with the next
    /// sequence number. A number is used even when the script fails: the gap tells the
    /// other replicas they missed something.
    async fn send(
        &mut self,
        redis: &RedisHandle,
        keys: Vec<CacheKeys>,
        l2_keys: &[(String, String)],
        cleared: (Vec<String>, bool),
    ) -> bool {
        self.seq += 1;
        let message = Message {
            publisher: self.id.clone(),
            seq: self.seq,
            keys,
            cleared: cleared.0,
            cleared_all: cleared.1,
        };
        let mut invocation = self.script.prepare_invoke();
        for (value, generation) in l2_keys {
            invocation.key(value).key(generation);
        }
        invocation
            .arg(self.generation_ttl_ms)
            .arg(&self.channel)
            .arg(prost::Message::encode_to_vec(&message))
            .arg(self.generation());
        redis
            .invoke::<i64>("cache invalidation", &invocation)
            .await
            .is_ok()
    }
}

async fn publish(shared: Weak<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let (redis, max_pending, generation_ttl) = match shared.upgrade() {
        Some(s) => match &s.redis {
            Some(r) => (r.clone(), s.config.max_pending, s.config.generation_ttl),
            None => return,
        },
        None => return,
    };
    let mut sender = Sender {
        id: uuid::Uuid::new_v4().as_bytes().to_vec(),
        seq: 0,
        script: redis::Script::new(INVALIDATE),
        channel: redis.key(CHANNEL),
        generation_ttl_ms: u64::try_from(generation_ttl.as_millis()).unwrap_or(u64::MAX),
    };
    let mut pending = Pending::default();
    loop {
        let job = if pending.is_empty() {
            match jobs.recv().await {
                Some(job) => Some(job),
                None => return,
            }
        } else {
            // Replay at least every 200 ms while something waits.
            match tokio::time::timeout(Duration::from_millis(200), jobs.recv()).await {
                Ok(Some(job)) => Some(job),
                Ok(None) => return,
                Err(_) => None,
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut answer = None;
        if let Some(job) = job {
            let mut delivery = Delivery::default();
            // Behind earlier failures, a new job waits its turn with them.
            if pending.is_empty() {
                delivery = run(&shared, &redis, &mut sender, &job).await;
            }
            if !delivery.delivered {
                pending.add(&job, max_pending);
                match &job.clear {
                    Some(Some(name)) => {
                        pending.overflowed.insert(name.clone());
                    }
                    Some(None) => pending
                        .overflowed
                        .extend(shared.all().iter().map(|c| c.name().to_owned())),
                    None => {}
                }
            }
            answer = Some((job.done, delivery));
        }
        if !pending.is_empty() {
            replay(&shared, &redis, &mut sender, &mut pending).await;
        }
        // Stored before the writer hears back: a writer whose invalidation is pending
        // must not read L2 (it may still hold what the write replaced).
        shared.pending_count.store(
            pending.count as u64 + pending.overflowed.len() as u64,
            Ordering::Release,
        );
        if let Some((done, delivery)) = answer {
            let _ = done.send(delivery);
        }
    }
}

/// Runs one job: an invalidation, or a clear (L2 first, then the message).
async fn run(shared: &Shared, redis: &RedisHandle, sender: &mut Sender, job: &Job) -> Delivery {
    match &job.clear {
        None => {
            let keys = vec![CacheKeys {
                cache: job.cache.clone(),
                keys: job.keys.clone(),
            }];
            let delivered = sender
                .send(redis, keys, &job.l2_keys, (Vec::new(), false))
                .await;
            Delivery {
                delivered,
                l2_deleted: 0,
            }
        }
        Some(cache) => {
            let names = match cache {
                Some(name) => vec![name.clone()],
                None => shared.all().iter().map(|c| c.name().to_owned()).collect(),
            };
            let Some(l2_deleted) = clear_l2(redis, &names).await else {
                return Delivery::default();
            };
            let cleared = match cache {
                Some(name) => (vec![name.clone()], false),
                None => (Vec::new(), true),
            };
            let delivered = sender.send(redis, Vec::new(), &[], cleared).await;
            Delivery {
                delivered,
                l2_deleted,
            }
        }
    }
}

/// Sends what is pending, chunk by chunk, until Redis refuses.
async fn replay(shared: &Shared, redis: &RedisHandle, sender: &mut Sender, pending: &mut Pending) {
    for cache in pending.overflowed.clone() {
        if clear_l2(redis, std::slice::from_ref(&cache))
            .await
            .is_none()
            || !sender
                .send(redis, Vec::new(), &[], (vec![cache.clone()], false))
                .await
        {
            return;
        }
        pending.overflowed.remove(&cache);
        if let Some(keys) = pending.keys.remove(&cache) {
            pending.count -= keys.len();
        }
    }
    let caches: Vec<String> = pending.keys.keys().cloned().collect();
    for cache in caches {
        while let Some(keys) = pending.keys.get(&cache) {
            let chunk: Vec<(String, (String, String))> = keys
                .iter()
                .take(REPLAY_CHUNK)
                .map(|(k, l2)| (k.clone(), l2.clone()))
                .collect();
            if chunk.is_empty() {
                pending.keys.remove(&cache);
                break;
            }
            let names = vec![CacheKeys {
                cache: cache.clone(),
                keys: chunk.iter().map(|(k, _)| k.clone()).collect(),
            }];
            let l2: Vec<(String, String)> = chunk.iter().map(|(_, l2)| l2.clone()).collect();
            if !sender.send(redis, names, &l2, (Vec::new(), false)).await {
                return;
            }
            if let Some(keys) = pending.keys.get_mut(&cache) {
                for (key, _) in &chunk {
                    if keys.remove(key).is_some() {
                        pending.count -= 1;
                    }
                }
            }
        }
    }
    if pending.is_empty() {
        tracing::info!(
            l2.listening = shared.subscribed.load(Ordering::Acquire),
            "cache invalidations kept during the redis outage are delivered"
        );
    }
}

/// Deletes every L2 entry of `caches`; how many, or `None` when Redis failed.
async fn clear_l2(redis: &RedisHandle, caches: &[String]) -> Option<u64> {
    let mut deleted = 0u64;
    for cache in caches {
        // First a new generation for the whole cache: loads in flight, which read the
        // old one, cannot fill back what is deleted below.
        let generation = uuid::Uuid::new_v4().simple().to_string();
        let _: () = redis
            .query(
                "cache clear",
                redis::cmd("SET")
                    .arg(cache_generation_key(redis, cache))
                    .arg(generation),
            )
            .await
            .ok()?;
        let pattern = format!("{}*", glob_escape(&redis.key(&format!("cache:{cache}:"))));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis
                .query(
                    "cache clear",
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await
                .ok()?;
            // Values only: the keys' generations stay.
            let values: Vec<&String> = keys
                .iter()
                .filter(|k| k.contains(&format!("cache:{cache}:v:")))
                .collect();
            if !values.is_empty() {
                let n: u64 = redis
                    .query("cache clear", redis::cmd("UNLINK").arg(&values))
                    .await
                    .ok()?;
                deleted += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Some(deleted)
}

/// `s` with the glob characters of Redis's `MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

async fn subscribe(shared: Weak<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(redis) = shared.upgrade().and_then(|s| s.redis.clone()) else {
            return;
        };
        let channel = redis.key(CHANNEL);
        let connected = tokio::time::timeout(PING_EVERY * 2, async {
            let mut pubsub = redis.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                redis.failed("cache invalidations", &e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                redis.failed("cache invalidations", &"subscribing timed out");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        redis.answered();
        {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            // Whatever was published while we were not listening is unknown.
            shared.flush(None);
            shared.subscribed.store(true, Ordering::Release);
        }
        let (mut sink, mut stream) = pubsub.split();
        let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(shared) = shared.upgrade() else { return };
                    apply(&shared, &mut last, message.get_payload_bytes());
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(PING_EVERY, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        break;
                    }
                    if shared.strong_count() == 0 {
                        return;
                    }
                }
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.subscribed.store(false, Ordering::Release);
        // Entries kept for the full TTL would outlive invalidations we cannot hear.
        shared.flush(None);
        redis.failed("cache invalidations", &"subscription lost");
    }
}

/// Applies one message to this process's L1.
fn apply(shared: &Shared, last: &mut HashMap<Vec<u8>, u64>, payload: &[u8]) {
    let Ok(message) = <Message as prost::Message>::decode(payload) else {
        tracing::warn!("unreadable cache invalidation; flushing every L1");
        shared.flush(None);
        return;
    };
    if last.len() > 10_000 {
        // Publishers come and go; forgetting them all only costs one flush.
        last.clear();
        shared.flush(None);
    }
    let previous = last.insert(message.publisher.clone(), message.seq);
    if previous.is_some_and(|p| message.seq != p + 1) {
        tracing::warn!(
            publisher.seq = message.seq,
            publisher.previous = previous,
            "a cache invalidation was missed; flushing every L1"
        );
        shared.flush(None);
    }
    for keys in &message.keys {
        shared.forget(&keys.cache, &keys.keys);
    }
    if message.cleared_all {
        shared.flush(None);
    }
    for cache in &message.cleared {
        shared.flush(Some(cache));
    }
}
