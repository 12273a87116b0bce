//! The server's memory stays bounded under password hashing: every login hashes with a
//! 19 MiB argon2 working memory, and the process must not keep one per login.

use strata_proto::auth::LoginRequest;
use strata_proto::auth::auth_service_client::AuthServiceClient;

use super::*;

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// How much the process may grow once both hashing memories (one per core of the
/// two-core machines this runs on) are in use: whatever the number of logins after that,
/// only noise. Before the fix it grew by about 19 MiB per new blocking-pool thread arena.
const GROWTH_CEILING: u64 = 8 * 1024 * 1024;

/// What warming up may add beside the hashing memories: mimalloc's heaps and segments for
/// the worker and blocking threads that come into use (10 to 12 MiB measured on two cores
/// alone, 17 MiB while the other tests load the machine and more blocking threads start).
const WARM_UP_OVERHEAD: u64 = 24 * 1024 * 1024;
/// Ceiling of a release build in steady state under this load (the closing figures).
const RELEASE_CEILING: u64 = 64 * 1024 * 1024;

async fn logins(auth: &AuthServiceClient<tonic::transport::Channel>, count: usize) {
    let workers = 8;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let mut auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..count.div_ceil(workers) {
                let credentials = auth
                    .login(LoginRequest {
                        email: "many@example.com".into(),
                        password: "a long enough passphrase".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .credentials
                    .unwrap();
                auth.get_profile(bearer(
                    GetProfileRequest::default(),
                    &credentials.access_token,
                ))
                .await
                .unwrap();
                auth.refresh_token(RefreshTokenRequest {
                    refresh_token: credentials.refresh_token,
                })
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_through_many_logins() {
    let db = TestDb::empty().await;
    let redis = TestRedis::new();
    let served = serve("all", &db, &redis, &[]).await;
    let pid = served.child.id().unwrap();
    let started = rss(pid);
    let auth = AuthServiceClient::new(served.channel.clone());
    auth.clone()
        .sign_up(SignUpRequest {
            email: "many@example.com".into(),
            password: "a long enough passphrase".into(),
            display_name: "Many".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Warm up: every hashing memory and connection comes into use.
    logins(&auth, 16).await;
    let warm = rss(pid);
    // Debug builds hash slowly; STRATA_E2E_LOGINS raises the count, STRATA_E2E_BIN runs a
    // release build (the closing figures: 1,000 logins, target/release/strata).
    let count: usize = std::env::var("STRATA_E2E_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    logins(&auth, count).await;
    let after = rss(pid);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "RSS at start {:.1} MiB, warm {:.1} MiB, after {count} more logins {:.1} MiB",
        mib(started),
        mib(warm),
        mib(after)
    );
    // At start the process holds one hashing memory (the dummy hash); under load, one
    // per core, and nothing per login.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    assert!(
        warm <= started + (cores - 1) * 19 * 1024 * 1024 + WARM_UP_OVERHEAD,
        "warm-up took {:.1} MiB",
        mib(warm.saturating_sub(started))
    );
    assert!(
        after <= warm + GROWTH_CEILING,
        "grew {:.1} MiB over {count} logins",
        mib(after.saturating_sub(warm))
    );
    if std::env::var("STRATA_E2E_BIN").is_ok_and(|b| b.contains("release")) {
        assert!(after <= RELEASE_CEILING, "{:.1} MiB", mib(after));
    }
}
