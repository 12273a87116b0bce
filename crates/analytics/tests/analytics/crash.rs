//! Nothing acknowledged is lost: RecordUsage under load while PostgreSQL crashes (on a
//! cluster of the test's own, with PostgreSQL's durability defaults), clients retrying
//! with the same idempotency keys.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, Instant};

use diesel_async::AsyncConnection;
use strata_runtime::ServerConfig;
use strata_testkit::cluster::TestCluster;

use super::*;

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    idempotency_key: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_usage_survives_a_postgres_crash_exactly_once() {
    let cluster = TestCluster::start();
    let redis = TestRedis::new();
    let mut config = ServerConfig::for_database("analytics", &cluster.url());
    config.migrate_on_start = true;
    config.health_interval = StdDuration::from_millis(100);
    config.db.checkout_timeout = StdDuration::from_secs(1);
    config.rate_limits = strata_runtime::layers::RateLimits::all(
        strata_testkit::TEST_RATE_LIMIT,
        StdDuration::from_secs(60),
    );
    let (server, _) = serve(config, &redis).await;

    // A user and an access token.
    let user = app::sign_up(server.channel()).await;
    let token = user.token.clone();

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer in 0..8 {
        let (acked, stop, token) = (Arc::clone(&acked), Arc::clone(&stop), token.clone());
        let mut client = AnalyticsServiceClient::new(server.channel());
        producers.push(tokio::spawn(async move {
            let mut batch_no = 0;
            while !AtomicBool::load(&stop, Ordering::SeqCst) {
                let keys: Vec<String> = (0..10)
                    .map(|k| format!("p{producer}-b{batch_no}-e{k}"))
                    .collect();
                let events: Vec<_> = keys
                    .iter()
                    .map(|key| event(key, user.id, "gpt-4o", 10, 5, "0.001", Utc::now()))
                    .collect();
                // A failed call is retried with the same keys until it is acknowledged.
                loop {
                    let mut request = bearer(
                        pb::RecordUsageRequest {
                            events: events.clone(),
                        },
                        &token,
                    );
                    request.set_timeout(StdDuration::from_secs(3));
                    if client.record_usage(request).await.is_ok() {
                        acked.lock().unwrap().extend(keys.iter().cloned());
                        break;
                    }
                    tokio::time::sleep(StdDuration::from_millis(50)).await;
                }
                batch_no += 1;
            }
        }));
    }

    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let before_crash = acked.lock().unwrap().len();
    assert!(before_crash > 0, "load was running");
    cluster.crash();
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    cluster.restart();
    // PostgreSQL accepts connections again from here: the service recovers by itself.
    let accepting = Instant::now();
    let mut probe = AnalyticsServiceClient::new(server.channel());
    let mut n = 0;
    let recovered = loop {
        let key = format!("probe-{n}");
        n += 1;
        let mut request = bearer(
            pb::RecordUsageRequest {
                events: vec![event(&key, user.id, "gpt-4o", 1, 1, "0.001", Utc::now())],
            },
            &token,
        );
        request.set_timeout(StdDuration::from_secs(2));
        if probe.record_usage(request).await.is_ok() {
            acked.lock().unwrap().insert(key);
            break accepting.elapsed();
        }
        assert!(
            accepting.elapsed() < StdDuration::from_secs(30),
            "never recovered"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    };
    assert!(
        recovered < StdDuration::from_secs(5),
        "recovered {recovered:?} after PostgreSQL accepted connections"
    );
    tokio::time::sleep(StdDuration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    for producer in producers {
        producer.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > before_crash, "load went on after the crash");
    let mut conn = AsyncPgConnection::establish(&cluster.url()).await.unwrap();
    let stored: Vec<Key> =
        diesel::sql_query("SELECT idempotency_key FROM analytics.token_usage WHERE user_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(user.id)
            .load(&mut conn)
            .await
            .unwrap();
    let stored_keys: Vec<String> = stored.into_iter().map(|k| k.idempotency_key).collect();
    let unique: HashSet<String> = stored_keys.iter().cloned().collect();
    assert_eq!(unique.len(), stored_keys.len(), "no event twice");
    let lost: Vec<_> = acked.difference(&unique).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{} events acknowledged, {} before the crash; recovered {recovered:?} after PostgreSQL came back",
        acked.len(),
        before_crash
    );
}
