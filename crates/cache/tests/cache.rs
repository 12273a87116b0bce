//! The two-tier cache against a real PostgreSQL (the source) and a real Redis: replicas
//! are separate `Caches` on one Redis prefix, as two processes would be.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use strata_cache::{CacheConfig, Caches, Policy, RedisHandle, Tiered};
use strata_storage::Db;
use strata_storage::instrument::{QueryStats, scope};
use strata_testkit::redis_server::RedisServer;
use strata_testkit::{LogCapture, TestDb, TestRedis};

/// The cached entity.
#[derive(Clone, PartialEq, prost::Message, QueryableByName)]
struct Item {
    #[prost(string, tag = "1")]
    #[diesel(sql_type = Text)]
    name: String,
    #[prost(int64, tag = "2")]
    #[diesel(sql_type = BigInt)]
    version: i64,
}

const POLICY: Policy = Policy {
    l1_ttl: Duration::from_secs(60),
    l1_capacity: 1000,
    l2_ttl: Duration::from_secs(300),
};

async fn items(db: &TestDb) {
    let mut conn = db.connect().await;
    conn.batch_execute(
        "CREATE TABLE items (name text PRIMARY KEY, version bigint NOT NULL); \
         INSERT INTO items VALUES ('a', 1), ('b', 1)",
    )
    .await
    .unwrap();
}

async fn set_version(db: &TestDb, name: &str, version: i64) {
    let mut conn = db.connect().await;
    sql_query("UPDATE items SET version = $2 WHERE name = $1")
        .bind::<Text, _>(name)
        .bind::<BigInt, _>(version)
        .execute(&mut conn)
        .await
        .unwrap();
}

/// The row, from the database (through the pool, so queries are counted).
async fn load(db: &Db, name: &str) -> Result<Option<Item>, strata_storage::Error> {
    let mut conn = db.get().await?;
    Ok(sql_query("SELECT name, version FROM items WHERE name = $1")
        .bind::<Text, _>(name)
        .get_result::<Item>(&mut conn)
        .await
        .map(Some)
        .or_else(|e| match e {
            diesel::result::Error::NotFound => Ok(None),
            e => Err(e),
        })?)
}

async fn version(cache: &Tiered<Item>, db: &Db, name: &str) -> Option<i64> {
    cache
        .get_or_load(name, || load(db, name))
        .await
        .unwrap()
        .map(|item| item.version)
}

/// A replica: caches of its own on `redis`, listening.
async fn replica(redis: &RedisHandle) -> (Caches, Tiered<Item>) {
    replica_with(redis, CacheConfig::default()).await
}

/// A database with the items table, a Redis, and two replicas sharing them.
async fn two_replicas() -> (
    TestDb,
    TestRedis,
    (Caches, Tiered<Item>),
    (Caches, Tiered<Item>),
) {
    let db = TestDb::new().await;
    items(&db).await;
    let redis = TestRedis::new();
    let a = replica(redis.handle()).await;
    let b = replica(redis.handle()).await;
    (db, redis, a, b)
}

/// A replica with `config`.
async fn replica_with(redis: &RedisHandle, config: CacheConfig) -> (Caches, Tiered<Item>) {
    let caches = Caches::start(Some(redis.clone()), config);
    let items = caches.tiered::<Item>("items", POLICY);
    assert!(caches.wait_listening(Duration::from_secs(5)).await);
    (caches, items)
}

/// A handle on a Redis of the test's own, quick to notice it is gone.
fn private(server: &RedisServer) -> RedisHandle {
    RedisHandle::connect_lazy(&server.url(), "t:", Duration::from_millis(200)).unwrap()
}

#[tokio::test]
async fn a_hundred_concurrent_misses_of_one_key_make_one_query() {
    let db = TestDb::new().await;
    items(&db).await;
    let redis = TestRedis::new();
    let (_caches, cache) = replica(redis.handle()).await;
    let pool = db.db();
    let slow_load = || async {
        // Long enough that every caller arrives while it runs.
        let mut conn = pool.get().await?;
        sql_query("SELECT name, version FROM items, pg_sleep(0.2) WHERE name = 'a'")
            .get_result::<Item>(&mut conn)
            .await
            .map(Some)
            .map_err(strata_storage::Error::from)
    };
    let stats = Arc::new(QueryStats::default());
    let answers = scope(
        Arc::clone(&stats),
        futures_util::future::join_all((0..100).map(|_| cache.get_or_load("a", slow_load))),
    )
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().unwrap().as_ref().unwrap().version == 1)
    );
    assert_eq!(stats.count(), 1, "one query for a hundred callers");
    assert_eq!(cache.stats().loads, 1);

    // Warm: no query at all.
    let again = scope(Arc::clone(&stats), version(&cache, pool, "a")).await;
    assert_eq!(again, Some(1));
    assert_eq!(stats.count(), 1);
    assert_eq!(cache.stats().l1.hits, 1);

    // A missing row is an answer too, cached like any other.
    assert_eq!(version(&cache, pool, "zzz").await, None);
    assert_eq!(
        scope(Arc::clone(&stats), version(&cache, pool, "zzz")).await,
        None
    );
    assert_eq!(stats.count(), 1);
}

#[tokio::test]
async fn a_load_that_read_the_old_row_cannot_fill_it_back_after_the_invalidation() {
    let (db, _redis, (_a, cache_a), (_b, cache_b)) = two_replicas().await;
    let pool = db.db();

    // A misses and reads version 1, then pauses before filling L2.
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
    let loaded_tx = std::sync::Mutex::new(Some(loaded_tx));
    let release = Arc::new(tokio::sync::Notify::new());
    let hold = Arc::clone(&release);
    // Only the first load pauses.
    cache_a.pause_before_fill(move |_key| {
        let first = loaded_tx.lock().unwrap().take();
        let hold = Arc::clone(&hold);
        Box::pin(async move {
            if let Some(tx) = first {
                let _ = tx.send(());
                hold.notified().await;
            }
        })
    });
    let reader = {
        let (cache_a, db_url) = (cache_a.clone(), pool.clone());
        tokio::spawn(async move { version(&cache_a, &db_url, "a").await })
    };
    loaded_rx.await.unwrap();

    // B commits version 2 and invalidates; then A fills.
    set_version(&db, "a", 2).await;
    cache_b.invalidate(&["a"]).await;
    release.notify_one();
    assert_eq!(
        reader.await.unwrap(),
        Some(1),
        "A's caller gets what A read"
    );
    assert_eq!(cache_a.stats().refused_fills, 1);

    // Neither L2 nor A's L1 kept version 1.
    assert_eq!(version(&cache_b, pool, "a").await, Some(2));
    assert_eq!(
        cache_b.stats().l2.hits,
        0,
        "B found nothing in L2 and loaded"
    );
    assert_eq!(version(&cache_a, pool, "a").await, Some(2));
}

#[tokio::test]
async fn the_writer_reads_its_write_at_once_and_another_replica_within_100_ms() {
    let (db, _redis, (_a, cache_a), (_b, cache_b)) = two_replicas().await;
    let pool = db.db();
    assert_eq!(version(&cache_a, pool, "a").await, Some(1));
    assert_eq!(version(&cache_b, pool, "a").await, Some(1));
    assert_eq!(
        cache_b.stats().l2.hits,
        1,
        "B's first read came from A's fill"
    );
    assert_eq!(version(&cache_b, pool, "b").await, Some(1));

    set_version(&db, "a", 2).await;
    cache_a.invalidate(&["a"]).await;
    let written = Instant::now();
    assert_eq!(
        version(&cache_a, pool, "a").await,
        Some(2),
        "read your write"
    );
    loop {
        if version(&cache_b, pool, "a").await == Some(2) {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_millis(100),
            "replica B still reads version 1 after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Untouched keys keep their entries: "b" is still in B's L1.
    let before = cache_b.stats();
    assert_eq!(version(&cache_b, pool, "b").await, Some(1));
    let after = cache_b.stats();
    assert_eq!(after.l1.hits, before.l1.hits + 1);
    assert_eq!(after.loads, before.loads);
}

/// A message of the invalidation channel, as a foreign publisher would send it.
#[derive(Clone, PartialEq, prost::Message)]
struct Message {
    #[prost(bytes = "vec", tag = "1")]
    publisher: Vec<u8>,
    #[prost(uint64, tag = "2")]
    seq: u64,
}

#[tokio::test]
async fn a_gap_in_a_publishers_sequence_flushes_l1() {
    let db = TestDb::new().await;
    items(&db).await;
    let redis = TestRedis::new();
    let (_a, cache) = replica(redis.handle()).await;
    let pool = db.db();
    assert_eq!(version(&cache, pool, "a").await, Some(1));
    // The row changes; the writer's invalidation deletes it from L2, but its message
    // never reaches this replica.
    set_version(&db, "a", 2).await;
    let _: i64 = redis::cmd("DEL")
        .arg(redis.handle().key("cache:items:v:a"))
        .query_async(&mut redis.handle().connection())
        .await
        .unwrap();
    let publish = |seq: u64| {
        let message = prost::Message::encode_to_vec(&Message {
            publisher: vec![7; 16],
            seq,
        });
        let handle = redis.handle().clone();
        async move {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(handle.key("cache:invalidations"))
                .arg(message)
                .query_async(&mut handle.connection())
                .await
                .unwrap();
        }
    };
    publish(1).await;
    publish(2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        version(&cache, pool, "a").await,
        Some(1),
        "no gap, no flush"
    );
    // Message 3 never arrives: 4 shows the gap.
    publish(4).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while version(&cache, pool, "a").await != Some(2) {
        assert!(Instant::now() < deadline, "the gap did not flush L1");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn redis_killed_reads_keep_working_and_recover_with_one_warning() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber(tracing::Level::WARN));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = TestDb::new().await;
        items(&db).await;
        let mut server = RedisServer::start().await;
        let config = CacheConfig {
            degraded_l1_ttl: Duration::from_millis(200),
            ..CacheConfig::default()
        };
        let (caches, cache) = replica_with(&private(&server), config).await;
        let pool = db.db();
        assert_eq!(version(&cache, pool, "a").await, Some(1));
        // Changed by a replica whose invalidation this one will never hear: Redis dies.
        set_version(&db, "a", 7).await;
        server.stop();
        // The subscriber notices within its ping interval, and flushes L1: whatever it
        // kept for the full TTL could outlive invalidations it can no longer hear.
        let deadline = Instant::now() + Duration::from_secs(5);
        while caches.listening() {
            assert!(
                Instant::now() < deadline,
                "the lost subscription went unnoticed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..50 {
            assert_eq!(version(&cache, pool, "a").await, Some(7));
        }
        // A write during the outage: read at once by the writer.
        set_version(&db, "a", 2).await;
        cache.invalidate(&["a"]).await;
        assert_eq!(version(&cache, pool, "a").await, Some(2));
        // L1 lives at most the degraded TTL meanwhile: another process's write (no
        // invalidation can reach us) shows within it.
        set_version(&db, "a", 3).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(version(&cache, pool, "a").await, Some(3));

        server.restart().await;
        assert!(
            caches.wait_listening(Duration::from_secs(10)).await,
            "the cache did not reconnect by itself"
        );
        // L2 in use again (the restarted Redis is empty: a miss, then a fill), and L1
        // entries for their full TTL.
        let before = cache.stats();
        assert_eq!(version(&cache, pool, "a").await, Some(3));
        assert_eq!(cache.stats().l2.misses, before.l2.misses + 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(version(&cache, pool, "a").await, Some(3));
        assert_eq!(cache.stats().l1.hits, before.l1.hits + 1);
    });
    let text = capture.text();
    let warnings = text.matches("redis unavailable").count();
    assert_eq!(warnings, 1, "one warning per outage: {text}");
}

#[tokio::test]
async fn clear_cache_empties_l2_and_every_replicas_l1() {
    let db = TestDb::new().await;
    items(&db).await;
    let redis = TestRedis::new();
    let (caches_a, cache_a) = replica(redis.handle()).await;
    let (_b, cache_b) = replica(redis.handle()).await;
    let pool = db.db();
    assert_eq!(version(&cache_a, pool, "a").await, Some(1));
    assert_eq!(version(&cache_b, pool, "a").await, Some(1));
    assert_eq!(version(&cache_b, pool, "b").await, Some(1));
    // Changed behind the caches' back (a manual fix in the database).
    set_version(&db, "a", 5).await;
    set_version(&db, "b", 5).await;
    let cleared = caches_a.clear(Some("items")).await.unwrap();
    assert_eq!(cleared.l2_entries, 2);
    let deadline = Instant::now() + Duration::from_secs(2);
    while version(&cache_b, pool, "b").await != Some(5) {
        assert!(Instant::now() < deadline, "replica B kept its L1");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(version(&cache_a, pool, "a").await, Some(5));
    assert!(caches_a.clear(Some("nope")).await.is_err());
}

#[tokio::test]
async fn invalidations_beyond_the_replay_bound_clear_the_cache_and_l2_comes_back() {
    let db = TestDb::new().await;
    items(&db).await;
    let mut server = RedisServer::start().await;
    let config = CacheConfig {
        max_pending: 2,
        ..CacheConfig::default()
    };
    let (caches, cache) = replica_with(&private(&server), config).await;
    let pool = db.db();
    assert_eq!(version(&cache, pool, "a").await, Some(1));
    server.stop();
    // Five invalidations while Redis is away, the bound is two.
    for key in ["a", "b", "c", "d", "e"] {
        assert!(
            !cache.invalidate(&[key]).await,
            "Redis is away: kept for replay"
        );
    }
    server.restart().await;
    assert!(
        caches.wait_listening(Duration::from_secs(10)).await,
        "L2 never came back after the overflow"
    );
    assert_eq!(version(&cache, pool, "a").await, Some(1));
}

#[tokio::test]
async fn a_writer_cancelled_after_its_commit_still_invalidates_every_replica() {
    let (db, _redis, (_a, cache_a), (_b, cache_b)) = two_replicas().await;
    let pool = db.db();
    assert_eq!(version(&cache_b, pool, "a").await, Some(1));
    set_version(&db, "a", 2).await;
    // The handler is dropped (its client went away) right after starting the call.
    let invalidation = cache_a.invalidate(&["a"]);
    drop(tokio::time::timeout(Duration::ZERO, invalidation).await);
    let deadline = Instant::now() + Duration::from_secs(1);
    while version(&cache_b, pool, "a").await != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the cancelled invalidation was lost"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
