//! Two auth replicas on one database and one Redis, as a deployment runs them: sessions
//! and accounts are cached in each, and a write on one is seen by the other at once.

use std::time::{Duration, Instant};

use super::*;

/// A server on `redis`, listening for cache invalidations.
async fn listening(redis: &TestRedis) -> Harness {
    let h = start_with_redis(redis).await;
    assert!(
        h.handlers
            .context()
            .caches
            .wait_listening(Duration::from_secs(5))
            .await
    );
    h
}

/// A second server on `h`'s database and Redis, listening for cache invalidations.
async fn replica(h: &Harness, redis: &TestRedis) -> (TestServer, AuthServiceClient<Channel>) {
    let mut config = h.db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    let slot = Arc::new(Mutex::new(None));
    let handlers_slot = Arc::clone(&slot);
    let server = TestServer::start(config, move |builder| {
        let handlers = strata_auth::register(builder, AuthConfig::default()).unwrap();
        *handlers_slot.lock().unwrap() = Some(handlers);
    })
    .await;
    let handlers: Arc<AuthHandlers> = slot.lock().unwrap().take().unwrap();
    assert!(
        handlers
            .context()
            .caches
            .wait_listening(Duration::from_secs(5))
            .await
    );
    let client = AuthServiceClient::new(server.channel());
    (server, client)
}

async fn display_name(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<(String, f64), tonic::Status> {
    let response = client
        .get_profile(bearer(pb::GetProfileRequest::default(), token))
        .await?;
    let queries = strata_testkit::metadata_f64(response.metadata(), "x-query-count");
    Ok((response.into_inner().user.unwrap().display_name, queries))
}

/// Polls `check` until it holds; fails if that took 100 ms or more after `since`.
async fn within_100_ms(since: Instant, what: &str, mut check: impl AsyncFnMut() -> bool) {
    while !check().await {
        assert!(
            since.elapsed() < Duration::from_millis(100),
            "{what}: not seen by the other replica within 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_write_on_one_replica_is_read_by_another_within_100_ms() {
    let redis = TestRedis::new();
    let mut a = listening(&redis).await;
    let (_b_server, mut b) = replica(&a, &redis).await;
    let (_, credentials) = sign_up(&mut a.client, "ada@example.com").await;
    let token = credentials.access_token.clone();

    // Both replicas cache the session and the account: a second read queries nothing.
    assert_eq!(display_name(&mut b, &token).await.unwrap().0, "Ada");
    assert_eq!(
        display_name(&mut b, &token).await.unwrap(),
        ("Ada".into(), 0.0)
    );
    assert_eq!(display_name(&mut a.client, &token).await.unwrap().0, "Ada");

    // A changes the profile: A reads it at once, B within 100 ms.
    a.client
        .update_profile(bearer(
            pb::UpdateProfileRequest {
                user: Some(pb::User {
                    display_name: "Grace".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &token,
        ))
        .await
        .unwrap();
    let written = Instant::now();
    assert_eq!(
        display_name(&mut a.client, &token).await.unwrap().0,
        "Grace"
    );
    within_100_ms(written, "a profile change", async || {
        display_name(&mut b, &token).await.unwrap().0 == "Grace"
    })
    .await;

    // An API key revoked on A stops working on B within 100 ms.
    let key = create_key(&mut a.client, &token, &["profile:read"])
        .await
        .unwrap()
        .secret;
    assert_eq!(display_name(&mut b, &key).await.unwrap().0, "Grace");
    assert_eq!(
        display_name(&mut b, &key).await.unwrap(),
        ("Grace".into(), 0.0)
    );
    let listed = a
        .client
        .list_api_keys(bearer(pb::ListApiKeysRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    a.client
        .revoke_api_key(bearer(
            pb::RevokeApiKeyRequest {
                api_key_id: listed[0].id.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    let revoked = Instant::now();
    within_100_ms(revoked, "an API key revocation", async || {
        display_name(&mut b, &key).await.is_err()
    })
    .await;

    // A ends the session: A refuses the token at once, B within 100 ms.
    a.client
        .logout(bearer(pb::LogoutRequest::default(), &token))
        .await
        .unwrap();
    let ended = Instant::now();
    let refused = display_name(&mut a.client, &token).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    within_100_ms(ended, "a logout", async || {
        display_name(&mut b, &token).await.is_err()
    })
    .await;
    assert_eq!(
        display_name(&mut b, &token).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // The caches counted it all.
    let stats = a.handlers.context().caches.stats().await;
    let sessions = stats.iter().find(|s| s.name == "auth_sessions").unwrap();
    assert!(sessions.l1.hits > 0 && sessions.loads > 0, "{sessions:?}");
}

#[tokio::test]
async fn cache_stats_and_clear_cache_reach_every_replica() {
    use strata_proto::admin::admin_service_client::AdminServiceClient;
    use strata_proto::admin::{self as admin_pb};

    let redis = TestRedis::new();
    let mut a = listening(&redis).await;
    let (_b_server, mut b) = replica(&a, &redis).await;
    let root = admin_credentials(&mut a, "root@example.com").await;
    let (_, credentials) = sign_up(&mut a.client, "ada@example.com").await;
    let token = credentials.access_token;
    assert_eq!(display_name(&mut b, &token).await.unwrap().0, "Ada");
    assert_eq!(
        display_name(&mut b, &token).await.unwrap(),
        ("Ada".into(), 0.0)
    );

    assert_eq!(display_name(&mut a.client, &token).await.unwrap().0, "Ada");
    assert_eq!(display_name(&mut a.client, &token).await.unwrap().0, "Ada");

    let mut admin = AdminServiceClient::new(a._server.channel());
    let stats = admin
        .get_cache_stats(bearer(
            admin_pb::GetCacheStatsRequest::default(),
            &root.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(stats.listening);
    let names: Vec<&str> = stats.caches.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["auth_api_keys", "auth_sessions", "auth_users"]);
    let users = &stats.caches[2];
    // A read the account from Redis, where B's load had put it.
    let (memory, l2) = (users.memory.unwrap(), users.redis.unwrap());
    assert_eq!(
        (memory.hits, memory.misses, memory.entries),
        (1, 1, 1),
        "{users:?}"
    );
    assert_eq!((l2.hits, users.loads), (1, 0), "{users:?}");
    assert!((0.0..=1.0).contains(&memory.hit_rate));

    // An unknown cache is named in the error, nothing is cleared.
    let unknown = admin
        .clear_cache(bearer(
            admin_pb::ClearCacheRequest {
                name: "nope".into(),
            },
            &root.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().contains("auth_users"), "{unknown:?}");

    // A change made behind the service's back (a manual fix in the database) shows on
    // replica B once A clears the cache.
    use diesel_async::SimpleAsyncConnection;
    a.db.connect()
        .await
        .batch_execute(
            "UPDATE auth.users SET display_name = 'Fixed' WHERE email = 'ada@example.com'",
        )
        .await
        .unwrap();
    assert_eq!(display_name(&mut b, &token).await.unwrap().0, "Ada");
    let cleared = admin
        .clear_cache(bearer(
            admin_pb::ClearCacheRequest {
                name: "auth_users".into(),
            },
            &root.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.names, ["auth_users"]);
    assert!(cleared.redis_entries >= 1, "{cleared:?}");
    let cleared_at = Instant::now();
    within_100_ms(cleared_at, "a cleared cache", async || {
        display_name(&mut b, &token).await.unwrap().0 == "Fixed"
    })
    .await;

    // Not for non-admins.
    let denied = admin
        .get_cache_stats(bearer(admin_pb::GetCacheStatsRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}
