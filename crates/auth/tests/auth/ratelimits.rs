//! The rate-limit layer as clients see it, on the auth service (which has every kind of
//! call: by address, by user, by API key): metadata on every answer, the refusal's details,
//! `retry-after` honoured, one limit shared by two replicas, trusted proxies, and the
//! per-process fallback while Redis is away.

use std::sync::Arc;
use std::time::Duration;

use strata_proto::admin::admin_service_client::AdminServiceClient;
use strata_proto::admin::{self as admin_pb};
use strata_ratelimit::Policy;
use strata_runtime::layers::{IpNet, RateLimits};
use strata_testkit::redis_server::RedisServer;
use tonic::metadata::MetadataMap;
use tonic_types::StatusExt as _;

use super::*;

/// `limit` per `period` named `name`.
fn policy(name: &str, limit: u32, period: Duration) -> Option<Arc<Policy>> {
    Some(Arc::new(Policy::new(name, limit, period)))
}

/// Limits no test reaches, for the policies a test does not look at.
fn generous() -> RateLimits {
    RateLimits::all(strata_testkit::TEST_RATE_LIMIT, Duration::from_secs(60))
}

/// A server on a fresh database sharing limits through `redis_url` under `prefix`.
async fn limited(redis_url: &str, prefix: &str, limits: RateLimits) -> Harness {
    let db = TestDb::new().await;
    let config = limited_config(&db, redis_url, prefix, limits);
    start_on(db, config, Arc::new(SystemClock)).await
}

fn limited_config(db: &TestDb, redis_url: &str, prefix: &str, limits: RateLimits) -> ServerConfig {
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis_url.to_owned()));
    config.redis_prefix = prefix.to_owned();
    config.rate_limits = limits;
    config
}

fn text<'a>(metadata: &'a MetadataMap, name: &str) -> &'a str {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {metadata:?}"))
}

/// The `QuotaFailure` of a refusal: (subject, quota id, quota value) of each violation.
fn quota(status: &tonic::Status) -> Vec<(String, String, i64)> {
    status
        .get_error_details()
        .quota_failure()
        .map(|q| {
            q.violations
                .iter()
                .map(|v| (v.subject.clone(), v.quota_id.clone(), v.quota_value))
                .collect()
        })
        .unwrap_or_default()
}

async fn profile(
    client: &mut AuthServiceClient<Channel>,
    credential: &str,
) -> Result<tonic::Response<pb::GetProfileResponse>, tonic::Status> {
    client
        .get_profile(bearer(pb::GetProfileRequest::default(), credential))
        .await
}

#[tokio::test]
async fn every_answer_says_what_is_left_and_a_refusal_says_when_to_come_back() {
    let redis = TestRedis::new();
    let limits = RateLimits {
        authenticated: policy("authenticated", 4, Duration::from_secs(60)),
        sign_in: policy("sign_in", 3, Duration::from_secs(6)),
        ..generous()
    };
    let mut h = limited(redis.url(), redis.handle().prefix(), limits).await;

    // Sign-up and login are limited per address, by the stricter sign-in limit; an
    // answer that is an error carries the metadata too.
    let (user, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let wrong = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "not the password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let m = wrong.metadata();
    assert_eq!(text(m, "ratelimit-policy"), "\"sign_in\";q=3;w=6");
    assert_eq!(text(m, "ratelimit"), "\"sign_in\";r=1;t=4");
    assert_eq!(
        (
            text(m, "x-ratelimit-limit"),
            text(m, "x-ratelimit-remaining"),
            text(m, "x-ratelimit-reset")
        ),
        ("3", "1", "4")
    );
    assert!(m.get("retry-after").is_none());
    let ok = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    assert_eq!(text(ok.metadata(), "x-ratelimit-remaining"), "0");

    // The fourth within two seconds is refused, saying which limit, whose, and when.
    let refused = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("sign_in"),
        "{}",
        refused.message()
    );
    let delay = retry_after(&refused).unwrap();
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    assert_eq!(text(refused.metadata(), "retry-after"), "2");
    assert_eq!(text(refused.metadata(), "x-ratelimit-remaining"), "0");
    assert_eq!(
        quota(&refused),
        [("ip:127.0.0.1".to_owned(), "sign_in".to_owned(), 3)]
    );
    // A token of one's own does not lift the per-address limit on signing in.
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", credentials.access_token)
            .parse()
            .unwrap(),
    );
    let with_token = h.client.login(request).await.unwrap_err();
    assert_eq!(with_token.code(), Code::ResourceExhausted, "{with_token:?}");
    assert_eq!(quota(&with_token)[0].0, "ip:127.0.0.1");
    // Once the advertised delay has passed, the call goes through.
    tokio::time::sleep(delay).await;
    login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap();

    // A signed-in caller has a budget of their own, whatever their address.
    let token = credentials.access_token;
    for left in (0..4).rev() {
        let answer = profile(&mut h.client, &token).await.unwrap();
        assert_eq!(
            text(answer.metadata(), "ratelimit-policy"),
            "\"authenticated\";q=4;w=60"
        );
        assert_eq!(
            text(answer.metadata(), "x-ratelimit-remaining"),
            left.to_string()
        );
    }
    let refused = profile(&mut h.client, &token).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        quota(&refused),
        [(format!("user:{}", user.id), "authenticated".to_owned(), 4)]
    );
    let delay = retry_after(&refused).unwrap();
    assert!(
        delay > Duration::from_secs(14) && delay <= Duration::from_secs(15),
        "one call every 15 s: {delay:?}"
    );
    assert_eq!(text(refused.metadata(), "retry-after"), "15");

    // Health is never limited and carries no rate-limit metadata.
    let mut health = tonic_health::pb::health_client::HealthClient::new(h._server.channel());
    for _ in 0..20 {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        assert!(answer.metadata().get("ratelimit").is_none());
    }
}

#[tokio::test]
async fn each_api_key_has_its_budget_and_the_user_one_over_all_of_them() {
    let redis = TestRedis::new();
    let limits = RateLimits {
        authenticated: policy("authenticated", 3, Duration::from_secs(60)),
        user: policy("user", 7, Duration::from_secs(60)),
        ..generous()
    };
    let mut h = limited(redis.url(), redis.handle().prefix(), limits).await;
    let (user, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let key = h
            .client
            .create_api_key(bearer(
                pb::CreateApiKeyRequest {
                    name: name.into(),
                    scopes: vec!["profile:read".into()],
                    ..Default::default()
                },
                &credentials.access_token,
            ))
            .await
            .unwrap()
            .into_inner();
        keys.push((key.api_key.unwrap().id, key.secret));
    }
    // The session made 2 calls of the user's 7. The first key: its own 3, then refused.
    for _ in 0..3 {
        profile(&mut h.client, &keys[0].1).await.unwrap();
    }
    let refused = profile(&mut h.client, &keys[0].1).await.unwrap_err();
    assert_eq!(
        quota(&refused),
        [(
            format!("api_key:{}", keys[0].0),
            "authenticated".to_owned(),
            3
        )]
    );
    // The second key has a budget of its own, but the user's is spent after 2 more.
    for _ in 0..2 {
        profile(&mut h.client, &keys[1].1).await.unwrap();
    }
    let refused = profile(&mut h.client, &keys[1].1).await.unwrap_err();
    assert_eq!(
        quota(&refused),
        [(format!("user:{}", user.id), "user".to_owned(), 7)]
    );
}

#[tokio::test]
async fn two_replicas_together_admit_the_limit_and_no_more() {
    let redis = TestRedis::new();
    let limits = RateLimits {
        authenticated: policy("authenticated", 10, Duration::from_secs(60)),
        ..generous()
    };
    let mut a = limited(redis.url(), redis.handle().prefix(), limits.clone()).await;
    let config = limited_config(&a.db, redis.url(), redis.handle().prefix(), limits);
    let b = TestServer::start(config, |builder| {
        strata_auth::register(builder, AuthConfig::default()).unwrap();
    })
    .await;
    let (_, credentials) = sign_up(&mut a.client, "ada@example.com").await;
    let token = credentials.access_token;
    let clients = [a.client.clone(), AuthServiceClient::new(b.channel())];
    let calls = (0..40).map(|i| {
        let mut client = clients[i % 2].clone();
        let token = token.clone();
        async move { profile(&mut client, &token).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let admitted = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(admitted, 10, "two replicas, one limit");
    assert!(
        answers
            .iter()
            .filter_map(|a| a.as_ref().err())
            .all(|s| s.code() == Code::ResourceExhausted)
    );
}

/// Three calls that fail authentication but count against the address's limit, sent with
/// `x-forwarded-for: <forwarded>`; the last answer.
async fn refresh_from(client: &mut AuthServiceClient<Channel>, forwarded: &str) -> tonic::Status {
    let mut request = tonic::Request::new(pb::RefreshTokenRequest {
        refresh_token: "not a refresh token".into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", forwarded.parse().unwrap());
    client.refresh_token(request).await.unwrap_err()
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let redis = TestRedis::new();
    let limits = |trusted: Vec<IpNet>| RateLimits {
        unauthenticated: policy("unauthenticated", 2, Duration::from_secs(60)),
        trusted_proxies: trusted,
        ..generous()
    };
    // The peer (127.0.0.1) is not a trusted proxy: a spoofed header changes nothing.
    let mut h = limited(
        redis.url(),
        &format!("{}a:", redis.handle().prefix()),
        limits(vec![]),
    )
    .await;
    for _ in 0..2 {
        let status = refresh_from(&mut h.client, "198.51.100.1").await;
        assert_ne!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    let spoofed = refresh_from(&mut h.client, "198.51.100.2").await;
    assert_eq!(spoofed.code(), Code::ResourceExhausted, "{spoofed:?}");
    assert_eq!(quota(&spoofed)[0].0, "ip:127.0.0.1");

    // Behind a trusted proxy, each forwarded client has a budget of its own.
    let trusted = RateLimits::parse_proxies("127.0.0.0/8").unwrap();
    let mut h = limited(
        redis.url(),
        &format!("{}b:", redis.handle().prefix()),
        limits(trusted),
    )
    .await;
    for _ in 0..2 {
        let status = refresh_from(&mut h.client, "203.0.113.5, 198.51.100.1").await;
        assert_ne!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    let over = refresh_from(&mut h.client, "198.51.100.1").await;
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert_eq!(quota(&over)[0].0, "ip:198.51.100.1");
    let other = refresh_from(&mut h.client, "198.51.100.2").await;
    assert_ne!(other.code(), Code::ResourceExhausted, "{other:?}");
}

async fn rate_limiter_health(h: &Harness, admin: &str) -> admin_pb::RateLimiterHealth {
    AdminServiceClient::new(h._server.channel())
        .get_health(bearer(admin_pb::GetHealthRequest::default(), admin))
        .await
        .unwrap()
        .into_inner()
        .rate_limiter
        .unwrap()
}

#[test]
fn without_redis_each_process_limits_on_its_own_says_so_and_logs_it_once() {
    let capture = strata_testkit::LogCapture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber(tracing::Level::INFO));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut redis = RedisServer::start().await;
        let limits = RateLimits {
            authenticated: policy("authenticated", 4, Duration::from_secs(60)),
            ..generous()
        };
        let mut h = limited(&redis.url(), "t:", limits).await;
        let admin = admin_credentials(&mut h, "root@example.com")
            .await
            .access_token;
        let (_, credentials) = sign_up(&mut h.client, "ada@example.com").await;
        let token = credentials.access_token;
        let up = i32::from(admin_pb::ComponentStatus::Up);
        assert_eq!(rate_limiter_health(&h, &admin).await.status, up);

        redis.stop();
        // Still limited, by this process alone (the only replica seen: the whole limit).
        for _ in 0..4 {
            profile(&mut h.client, &token).await.unwrap();
        }
        let refused = profile(&mut h.client, &token).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(retry_after(&refused).unwrap() > Duration::from_secs(10));
        let health = rate_limiter_health(&h, &admin).await;
        assert_eq!(health.status, i32::from(admin_pb::ComponentStatus::Down));
        assert_eq!(health.replicas, 1);

        // Redis back (empty): shared limits again, without a restart.
        redis.restart().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = profile(&mut h.client, &token).await;
            if answer.is_ok() && !h.handlers.context().limiter.degraded() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never shared again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(rate_limiter_health(&h, &admin).await.status, up);
    });
    let text = capture.text();
    assert_eq!(
        text.matches("rate limits are per process").count(),
        1,
        "one warning per outage: {text}"
    );
    assert_eq!(
        text.matches("rate limits are shared by every replica again")
            .count(),
        1
    );
}
