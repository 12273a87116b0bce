//! Logout and revocation survive Redis losing its data: Redis is an accelerator, and a
//! revocation it does not hold is answered from the database, everywhere, at every moment.

use std::time::Duration;

use strata_testkit::redis_server::RedisServer;

use super::*;

const PREFIX: &str = "t:";

const MARKER: &str = "t:revoked:complete";

/// The auth service (Redis at `redis`) and another service verifying through it, once
/// the auth service vouches for Redis; and two users' sessions, one to end and one live.
async fn suite(redis: &RedisServer) -> (Harness, TestServer, Credentials, Credentials) {
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url()));
    config.redis_prefix = PREFIX.into();
    let mut h = start_on(db, config, Arc::new(SystemClock)).await;
    let auth_url = format!("http://{}", h._server.addr());
    let other = other_service(&h.db, &auth_url, &redis.url(), PREFIX).await;
    eventually("Redis vouched complete", async || {
        redis.exists(MARKER).await
    })
    .await;
    let (_, gone) = sign_up(&mut h.client, "gone@example.com").await;
    let (_, live) = sign_up(&mut h.client, "live@example.com").await;
    (h, other, gone, live)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// For `period`, over and over: the revoked token is refused by the other service and by
/// VerifyToken, and the live one is accepted by both.
async fn answers_stay_right(
    h: &mut Harness,
    other: &TestServer,
    revoked: &Credentials,
    live: &Credentials,
    period: Duration,
) -> usize {
    let (revoked, live) = (revoked.access_token.as_str(), live.access_token.as_str());
    let until = tokio::time::Instant::now() + period;
    let mut rounds = 0;
    while tokio::time::Instant::now() < until {
        let status = health_as(other, Some(revoked)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "revoked, at the other service"
        );
        let status = h
            .client
            .verify_token(pb::VerifyTokenRequest {
                token: revoked.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "revoked, at VerifyToken"
        );
        // A user's token passes authentication (the admin RPC then wants the role).
        let status = health_as(other, Some(live)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "live, at the other service: {status:?}"
        );
        h.client
            .verify_token(pb::VerifyTokenRequest { token: live.into() })
            .await
            .expect("live, at VerifyToken");
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rounds
}

async fn outbox_len(db: &TestDb) -> i64 {
    count(db, "SELECT count(*) AS n FROM auth.revocation_outbox").await
}

#[tokio::test]
async fn a_logout_stays_refused_after_redis_loses_every_key() {
    let redis = RedisServer::start().await;
    let (mut h, other, gone, live) = suite(&redis).await;
    h.client
        .logout(bearer(pb::LogoutRequest {}, &gone.access_token))
        .await
        .unwrap();

    redis.flushall().await;
    assert!(!redis.exists(MARKER).await);
    let rounds = answers_stay_right(&mut h, &other, &gone, &live, Duration::from_secs(3)).await;
    assert!(rounds > 10);
    // Within a second or so Redis holds the revocation again, re-seeded from the database.
    let key = format!("{PREFIX}revoked:session:{}", gone.session_id);
    eventually("re-seeded", async || {
        redis.exists(&key).await && redis.exists(MARKER).await
    })
    .await;
    answers_stay_right(&mut h, &other, &gone, &live, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_logout_while_redis_is_down_is_published_when_it_returns_empty() {
    let mut redis = RedisServer::start().await;
    let (mut h, other, gone, live) = suite(&redis).await;
    // Both verifiers have seen both sessions live (and cached it) before the outage.
    health_as(&other, Some(&gone.access_token))
        .await
        .unwrap_err();
    health_as(&other, Some(&live.access_token))
        .await
        .unwrap_err();

    redis.stop();
    h.client
        .logout(bearer(pb::LogoutRequest {}, &gone.access_token))
        .await
        .expect("the database takes the logout; Redis is not needed");
    assert_eq!(outbox_len(&h.db).await, 1, "kept for publishing");
    answers_stay_right(&mut h, &other, &gone, &live, Duration::from_secs(2)).await;

    redis.restart().await;
    answers_stay_right(&mut h, &other, &gone, &live, Duration::from_secs(3)).await;
    let key = format!("{PREFIX}revoked:session:{}", gone.session_id);
    eventually("published from the outbox", async || {
        redis.exists(&key).await && outbox_len(&h.db).await == 0
    })
    .await;
    assert!(redis.exists(MARKER).await);
}

/// Redis out of memory refuses the revocation but still answers reads: verifiers must not
/// keep trusting the marker it held before; once Redis takes writes again, the outbox
/// publishes the revocation.
#[tokio::test]
async fn a_logout_redis_cannot_store_is_refused_at_once() {
    let redis = RedisServer::start().await;
    let (mut h, other, gone, live) = suite(&redis).await;
    health_as(&other, Some(&gone.access_token))
        .await
        .unwrap_err();
    redis.config_set("maxmemory", "1").await;
    h.client
        .logout(bearer(pb::LogoutRequest {}, &gone.access_token))
        .await
        .unwrap();
    answers_stay_right(&mut h, &other, &gone, &live, Duration::from_secs(2)).await;
    assert!(!redis.exists(MARKER).await, "withdrawn");

    redis.config_set("maxmemory", "0").await;
    let key = format!("{PREFIX}revoked:session:{}", gone.session_id);
    eventually("published from the outbox", async || {
        redis.exists(&key).await && redis.exists(MARKER).await && outbox_len(&h.db).await == 0
    })
    .await;
    answers_stay_right(&mut h, &other, &gone, &live, Duration::from_secs(1)).await;
}
