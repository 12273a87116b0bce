//! Sign-in throttling, shared by replicas through Redis and kept per process without it.

use super::*;

async fn fail_logins(client: &mut AuthServiceClient<Channel>, email: &str, times: usize) {
    for _ in 0..times {
        let status = login(client, email, "wrong horse battery staple")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn five_failures_lock_the_account_until_the_lock_expires() {
    let clock = Arc::new(ManualClock::new());
    let db = TestDb::new().await;
    let config = db.server_config("auth");
    let mut h = start_on(db, config, clock.clone()).await;
    sign_up(&mut h.client, "ada@example.com").await;

    fail_logins(&mut h.client, "ada@example.com", 4).await;
    login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .expect("4 failures do not lock");
    fail_logins(&mut h.client, "ada@example.com", 5).await;

    // Locked: even the right password is refused, exactly like a wrong one, plus RetryInfo.
    let locked = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    let wrong = login(
        &mut h.client,
        "nobody@example.com",
        "wrong horse battery staple",
    )
    .await
    .unwrap_err();
    assert_eq!(
        (locked.code(), locked.message()),
        (wrong.code(), wrong.message())
    );
    assert_eq!(
        retry_after(&locked),
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(retry_after(&wrong), None);

    clock.advance(std::time::Duration::from_secs(29));
    assert!(
        login(&mut h.client, "ada@example.com", PASSWORD)
            .await
            .is_err()
    );
    clock.advance(std::time::Duration::from_secs(2));
    login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .expect("the lock expired");

    // Unknown emails lock the same way: a lockout says nothing about existence.
    fail_logins(&mut h.client, "ghost@example.com", 5).await;
    let status = login(&mut h.client, "ghost@example.com", "anything at all")
        .await
        .unwrap_err();
    assert!(retry_after(&status).is_some());
}

#[tokio::test]
async fn lockouts_are_shared_by_replicas_through_redis() {
    let redis = TestRedis::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    let url = db.url().to_owned();
    let mut a = start_on(db, config.clone(), clock.clone()).await;
    sign_up(&mut a.client, "ada@example.com").await;
    // A second replica on the same database and Redis.
    let mut replica_config = config;
    replica_config.db =
        strata_storage::DbConfig::new(url, "auth-b", strata_storage::Environment::Development);
    let server_b = TestServer::start(replica_config, |builder| {
        strata_auth::register_handlers(
            builder,
            Arc::new(
                AuthHandlers::with_clock(
                    builder.context(),
                    AuthConfig::default(),
                    Arc::new(SystemClock),
                    ThrottlePolicy::default(),
                )
                .unwrap(),
            ),
        );
    })
    .await;
    let mut b = AuthServiceClient::new(server_b.channel());

    fail_logins(&mut a.client, "ada@example.com", 5).await;
    let status = login(&mut b, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        retry_after(&status).is_some(),
        "replica B sees A's lockout: {status:?}"
    );
}

#[tokio::test]
async fn throttling_falls_back_to_the_process_when_redis_is_down() {
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(
        "redis://127.0.0.1:1".into(),
    ));
    let mut h = start_on(db, config, Arc::new(SystemClock)).await;
    sign_up(&mut h.client, "ada@example.com").await;
    fail_logins(&mut h.client, "ada@example.com", 5).await;
    let status = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(retry_after(&status).is_some(), "{status:?}");
}
