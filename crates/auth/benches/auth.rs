//! `make bench` (release build, local PostgreSQL and Redis): the auth service's figures
//! against the targets of its issue, beside a floor measured in the same run on the same
//! machine (a gRPC health check: one unary round trip with no database work).

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark binary"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_auth::config::AuthConfig;
use strata_auth::password::Passwords;
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{self as pb};
use strata_runtime::identity::{PublicKeys, TokenSettings, verify_access_token};
use strata_testkit::bench::{health_floor, ms, percentile as pct};
use strata_testkit::{TestDb, TestRedis, TestServer};

const PASSWORD: &str = "a long benchmark passphrase";

fn report(what: &str, value: f64, unit: &str, target: &str, ok: bool) {
    println!(
        "{what:<44} {value:>10.3} {unit:<3} target {target:<26} {}",
        if ok { "met" } else { "MISSED" }
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let mut config = db.server_config("bench");
    config.db.max_connections = 20;
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    let server = TestServer::start(config, |builder| {
        strata_auth::register(builder, AuthConfig::default()).unwrap();
    })
    .await;
    // Verification answers from Redis once the auth service vouches for it.
    redis
        .wait_for(strata_runtime::identity::REVOCATIONS_COMPLETE_KEY)
        .await;
    let mut client = AuthServiceClient::new(server.channel());
    let floor_p50 = health_floor(server.channel(), 2000).await;

    let mut signups = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        client
            .sign_up(pb::SignUpRequest {
                email: format!("bench{i}@example.com"),
                password: PASSWORD.into(),
                display_name: "Bench".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        signups.push(started.elapsed());
    }
    let login = |i: usize| {
        let mut client = client.clone();
        async move {
            client
                .login(pb::LoginRequest {
                    email: format!("bench{i}@example.com"),
                    password: PASSWORD.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .credentials
                .unwrap()
        }
    };
    let mut logins = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        login(i).await;
        logins.push(started.elapsed());
    }
    let login_p50 = pct(&mut logins, 0.5);
    // One argon2id hash, alone, measured warm (after the sign-ups and logins).
    let passwords = Arc::new(Passwords::new().unwrap());
    let mut hashes = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        passwords.hash(PASSWORD.to_owned()).await.unwrap();
        hashes.push(started.elapsed());
    }
    let hash_p50 = pct(&mut hashes, 0.5);

    let started = Instant::now();
    let handles: Vec<_> = (0..5).map(|i| tokio::spawn(login(i))).collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let five = started.elapsed();

    let mut credentials = login(0).await;
    let mut refreshes = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        credentials = client
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: credentials.refresh_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .credentials
            .unwrap();
        refreshes.push(started.elapsed());
    }
    let token = credentials.access_token.clone();
    let mut verifies = Vec::new();
    for _ in 0..2000 {
        let started = Instant::now();
        client
            .verify_token(pb::VerifyTokenRequest {
                token: token.clone(),
            })
            .await
            .unwrap();
        verifies.push(started.elapsed());
    }
    let mut profiles = Vec::new();
    for _ in 0..2000 {
        let mut request = tonic::Request::new(pb::GetProfileRequest::default());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let started = Instant::now();
        client.get_profile(request).await.unwrap();
        profiles.push(started.elapsed());
    }

    // Local verification, as every other service does it.
    let jwks = client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let mut keys = PublicKeys::default();
    for jwk in jwks {
        use base64::Engine as _;
        keys.insert(
            jwk.kid,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk.x)
                .unwrap(),
        );
    }
    let settings = TokenSettings::default();
    let rounds = 20_000;
    let started = Instant::now();
    for _ in 0..rounds {
        verify_access_token(&token, &keys, &settings).unwrap();
    }
    let local = started.elapsed() / rounds;

    println!(
        "\nstrata auth benchmark (release; {} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    report(
        "floor: unary RPC round trip p50 (health)",
        ms(floor_p50),
        "ms",
        "reference",
        true,
    );
    report(
        "argon2id hash alone p50",
        ms(hash_p50),
        "ms",
        "reference",
        true,
    );
    report(
        "local token verification (mean)",
        local.as_secs_f64() * 1e6,
        "µs",
        "≤ 100 µs",
        local <= Duration::from_micros(100),
    );
    let p50 = pct(&mut verifies, 0.5);
    report(
        "VerifyToken RPC p50",
        ms(p50),
        "ms",
        "≤ 0.5 ms",
        p50 <= Duration::from_micros(500),
    );
    let p50 = pct(&mut signups, 0.5);
    report(
        "SignUp p50",
        ms(p50),
        "ms",
        &format!("≤ hash + 10 = {:.1} ms", ms(hash_p50) + 10.0),
        p50 <= hash_p50 + Duration::from_millis(10),
    );
    report(
        "Login p50",
        ms(login_p50),
        "ms",
        &format!("≤ hash + 10 = {:.1} ms", ms(hash_p50) + 10.0),
        login_p50 <= hash_p50 + Duration::from_millis(10),
    );
    let (p50, p99) = (pct(&mut refreshes, 0.5), pct(&mut refreshes, 0.99));
    report(
        "RefreshToken p50",
        ms(p50),
        "ms",
        "≤ 3 ms",
        p50 <= Duration::from_millis(3),
    );
    report(
        "RefreshToken p99",
        ms(p99),
        "ms",
        "≤ 10 ms",
        p99 <= Duration::from_millis(10),
    );
    let p50 = pct(&mut profiles, 0.5);
    report(
        "GetProfile p50",
        ms(p50),
        "ms",
        "≤ 1 ms",
        p50 <= Duration::from_millis(1),
    );
    report(
        "5 concurrent logins (wall)",
        ms(five),
        "ms",
        &format!("≤ 3 × login = {:.1} ms", 3.0 * ms(login_p50)),
        five <= login_p50 * 3,
    );
    println!(
        "\nratios to the floor: VerifyToken {:.1}×, GetProfile {:.1}×",
        pct(&mut verifies, 0.5).as_secs_f64() / floor_p50.as_secs_f64(),
        pct(&mut profiles, 0.5).as_secs_f64() / floor_p50.as_secs_f64()
    );
    drop(server);
}
