//! End-to-end tests: the real `strata` binary as a child process, against a real
//! PostgreSQL and Redis, called through generated gRPC clients.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use strata_proto::admin::admin_service_client::AdminServiceClient;
use strata_proto::admin::{ComponentStatus, GetHealthRequest};
use strata_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use strata_proto::analytics::{
    CallStatus, GetUsageSummaryRequest, Operation, RecordUsageRequest, UsageEvent,
};
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{GetProfileRequest, LogoutRequest, RefreshTokenRequest, SignUpRequest};
use strata_proto::common::{Decimal, TimeRange};
use strata_testkit::{TestDb, TestRedis, admin_request, bearer};
use tokio::io::{AsyncBufReadExt, BufReader};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn strata(db_url: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(STRATA);
    // A developer's machine: the built-in key-encryption key is allowed.
    command
        .args(args)
        .env_remove("STRATA_CONFIG_FILE")
        .env("STRATA_ENV", "development");
    match db_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    command.output().expect("run strata")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-e2e-{name}-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn migrate_commands_and_their_exit_codes() {
    let db = TestDb::empty().await;
    let url = Some(db.url());

    let status = strata(url, &["migrate", "status"]);
    assert_eq!(
        status.status.code(),
        Some(3),
        "pending → 3: {}",
        text(&status)
    );
    assert!(text(&status).contains("pending"));

    let run = strata(url, &["migrate", "run"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(text(&run).contains("applied"));
    let again = strata(url, &["migrate", "run"]);
    assert!(text(&again).contains("up to date"), "{}", text(&again));

    let status = strata(url, &["migrate", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains("applied"));

    for _ in 0..2 {
        let rotate = strata(url, &["auth", "rotate-keys"]);
        assert_eq!(rotate.status.code(), Some(0), "{}", text(&rotate));
        assert!(text(&rotate).contains("signing with key"));
    }

    let revert = strata(url, &["migrate", "revert"]);
    assert_eq!(revert.status.code(), Some(0), "{}", text(&revert));
    assert!(text(&revert).contains("reverted"));
    assert_eq!(strata(url, &["migrate", "status"]).status.code(), Some(3));

    let missing = strata(None, &["migrate", "run"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("DATABASE_URL"),
        "{}",
        text(&missing)
    );
    let unreachable = strata(
        Some("postgres://nobody@127.0.0.1:1/none"),
        &["migrate", "status"],
    );
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        text(&unreachable).contains("connecting to DATABASE_URL"),
        "{}",
        text(&unreachable)
    );

    let usage = strata(url, &["migrate", "sideways"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn status_exits_4_when_an_applied_migration_file_changed() {
    let db = TestDb::empty().await;
    let dir = temp_dir("drift");
    strata_testkit::copy_dir(&strata_testkit::migrations_dir(), &dir).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let run = strata(Some(db.url()), &["migrate", "run", "--dir", dir_arg]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));

    let first = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let up = first.join("up.sql");
    std::fs::write(
        &up,
        format!("{}\n-- changed\n", std::fs::read_to_string(&up).unwrap()),
    )
    .unwrap();
    let status = strata(Some(db.url()), &["migrate", "status", "--dir", dir_arg]);
    assert_eq!(status.status.code(), Some(4), "{}", text(&status));
    assert!(text(&status).contains("DRIFTED"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generate_writes_a_timestamped_folder() {
    let dir = temp_dir("generate");
    let dir_arg = dir.to_str().unwrap();
    let out = strata(
        None,
        &["migrate", "generate", "create_widgets", "--dir", dir_arg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let folders: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1);
    let name = folders[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.ends_with("_create_widgets") && name.len() == "2026-11-23-000000_create_widgets".len(),
        "{name}"
    );
    assert!(folders[0].join("up.sql").is_file() && folders[0].join("down.sql").is_file());

    let bad = strata(None, &["migrate", "generate", "Bad-Name", "--dir", dir_arg]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("snake_case"));
    let nowhere = strata(
        None,
        &["migrate", "generate", "x", "--dir", "/nonexistent/strata"],
    );
    assert_eq!(nowhere.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn seed_usage_fills_the_ledger_and_refreshes_the_views() {
    let db = TestDb::new().await;
    let output = strata(
        Some(db.url()),
        &[
            "seed",
            "usage",
            "--rows",
            "3000",
            "--users",
            "20",
            "--projects",
            "5",
            "--days",
            "40",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("inserted 3000 usage rows"), "{out}");
    assert!(out.contains("refreshed user_token_summary"), "{out}");
    assert!(out.contains("refreshed project_stats"), "{out}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("100.0%"),
        "a progress bar"
    );
    let bad = strata(Some(db.url()), &["seed", "usage", "--rows", "0"]);
    assert_eq!(bad.status.code(), Some(1));
}

/// A running `strata serve` child process.
struct Served {
    child: tokio::process::Child,
    addr: String,
    channel: tonic::transport::Channel,
    /// Everything it wrote to stderr (its logs) so far: read continuously, so the child
    /// never blocks on a full pipe.
    logs: std::sync::Arc<std::sync::Mutex<String>>,
    /// Everything it printed to stdout so far, after the line saying where it listens.
    printed: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Served {
    /// The logs so far.
    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// What it printed so far, after the line saying where it listens.
    fn printed(&self) -> String {
        self.printed.lock().unwrap().clone()
    }
}

/// Appends every line of `from` to `to`, until `from` ends.
fn collect_lines<R>(from: R, to: &std::sync::Arc<std::sync::Mutex<String>>)
where
    R: tokio::io::AsyncBufRead + Unpin + Send + 'static,
{
    let sink = std::sync::Arc::clone(to);
    let mut lines = from.lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
}

/// Rate limits no test reaches (every test's calls come from one address).
fn generous_rate_limits() -> Vec<(&'static str, String)> {
    let limit = format!("{}/min", strata_testkit::TEST_RATE_LIMIT);
    [
        "STRATA_RATE_LIMIT_AUTHENTICATED",
        "STRATA_RATE_LIMIT_USER",
        "STRATA_RATE_LIMIT_UNAUTHENTICATED",
        "STRATA_RATE_LIMIT_SIGN_IN",
    ]
    .into_iter()
    .map(|name| (name, limit.clone()))
    .collect()
}

/// Starts `strata serve <service>` on `db` and `redis` (plus `env`; an empty value unsets
/// a variable), waits until it listens and connects a channel. Its logs and what it prints
/// are collected for the test to read ([`Served::logs`], [`Served::printed`]). `service`
/// may carry options after the service's name (`all --demo`).
async fn serve(service: &str, db: &TestDb, redis: &TestRedis, env: &[(&str, &str)]) -> Served {
    // STRATA_E2E_BIN runs another build (e.g. target/release/strata, for measurements).
    let binary = std::env::var("STRATA_E2E_BIN").unwrap_or_else(|_| STRATA.to_owned());
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("serve")
        .args(service.split_whitespace())
        // Where `make run` starts it (what it prints names paths relative to it).
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", redis.url())
        .env("STRATA_REDIS_PREFIX", redis.handle().prefix())
        .env("STRATA_LISTEN_ADDR", "127.0.0.1:0")
        .env("STRATA_ADMIN_TOKEN", strata_testkit::ADMIN_TOKEN)
        .env("STRATA_ENV", "development")
        .env("STRATA_HEALTH_INTERVAL_MS", "100")
        .env("STRATA_LOG_FORMAT", "json")
        .env_remove("STRATA_CONFIG_FILE")
        .envs(generous_rate_limits())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // An empty value removes the variable.
    for (name, value) in env {
        if value.is_empty() {
            command.env_remove(name);
        } else {
            command.env(name, value);
        }
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        let mut line = String::new();
        while lines.read_line(&mut line).await.unwrap() > 0 {
            if let Some(addr) = line.split("listening on ").nth(1) {
                return addr.trim().to_owned();
            }
            line.clear();
        }
        panic!("strata exited before listening");
    })
    .await
    .expect("strata starts listening");
    // Keep reading stdout and stderr so the child never blocks on a full pipe.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    collect_lines(lines, &printed);
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    collect_lines(BufReader::new(child.stderr.take().unwrap()), &logs);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Served {
        child,
        addr,
        channel,
        logs,
        printed,
    }
}

#[tokio::test]
async fn serve_migrates_on_start_answers_and_stops_gracefully_on_sigterm() {
    let db = TestDb::empty().await;
    let redis = TestRedis::new();
    let mut served = serve("all", &db, &redis, &[]).await;
    let (addr, channel) = (served.addr.clone(), served.channel.clone());
    assert!(!addr.ends_with(":0"));

    let mut health_client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = health_client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A user signs up; admin RPCs refuse them until they hold the ADMIN role.
    let mut auth = AuthServiceClient::new(channel.clone());
    let credentials = auth
        .sign_up(SignUpRequest {
            email: "ops@example.com".into(),
            password: "a long operator passphrase".into(),
            display_name: "Ops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    let mut admin = AdminServiceClient::new(channel.clone());
    let as_user = || bearer(GetHealthRequest {}, &credentials.access_token);
    let status = admin.get_health(as_user()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let grant = strata(Some(db.url()), &["auth", "grant-admin", "OPS@example.com"]);
    assert_eq!(grant.status.code(), Some(0), "{}", text(&grant));
    let unknown = strata(
        Some(db.url()),
        &["auth", "grant-admin", "nobody@example.com"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).contains("no user"));
    // The role is a claim of the access token: the next refresh carries it.
    let credentials = auth
        .refresh_token(RefreshTokenRequest {
            refresh_token: credentials.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    let as_user = || bearer(GetHealthRequest {}, &credentials.access_token);
    let health = admin.get_health(as_user()).await.unwrap().into_inner();
    let migrations = health.migrations.unwrap();
    assert_eq!(
        migrations.pending, 0,
        "STRATA_MIGRATE_ON_START applied everything"
    );
    assert!(migrations.applied > 0);
    assert_eq!(health.redis.unwrap().status, i32::from(ComponentStatus::Up));
    assert_eq!(health.service, "all");
    // `serve all` includes the analytics service: the admin records and reads usage.
    let mut analytics = AnalyticsServiceClient::new(channel.clone());
    let now = chrono::Utc::now().timestamp();
    let me = auth
        .get_profile(bearer(
            GetProfileRequest::default(),
            &credentials.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    let event = UsageEvent {
        idempotency_key: "e2e-1".into(),
        user_id: me,
        model: "gpt-4o".into(),
        provider: "openai".into(),
        operation: Operation::Chat.into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost: Some(Decimal {
            value: "0.0001".into(),
        }),
        status: CallStatus::Succeeded.into(),
        occur_time: Some(prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        }),
        ..Default::default()
    };
    let recorded = analytics
        .record_usage(bearer(
            RecordUsageRequest {
                events: vec![event],
            },
            &credentials.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorded.recorded_count, 1);
    let summary = analytics
        .get_usage_summary(bearer(
            GetUsageSummaryRequest {
                time_range: Some(TimeRange {
                    start_time: Some(prost_types::Timestamp {
                        seconds: now - 3600,
                        nanos: 0,
                    }),
                    end_time: Some(prost_types::Timestamp {
                        seconds: now + 60,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            },
            &credentials.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.totals.unwrap().request_count, 1);

    // With an auth service, the static admin token no longer opens admin RPCs.
    let status = admin
        .get_health(admin_request(GetHealthRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Logging out revokes the session for every verifier, after their one-second cache.
    auth.logout(bearer(LogoutRequest {}, &credentials.access_token))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = admin.get_health(as_user()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let pid = served.child.id().unwrap().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), served.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful exit: {status:?}");

    // Its last log line ("stopped") is read shortly after the exit.
    let mut stderr = served.logs();
    for _ in 0..50 {
        if stderr.contains("stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stderr = served.logs();
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('{') && l.contains("shutting down")),
        "JSON logs: {stderr}"
    );
    assert!(
        !stderr.contains(strata_testkit::ADMIN_TOKEN),
        "no secrets in logs"
    );
}

#[path = "bench.rs"]
mod bench;

#[path = "demo.rs"]
mod demo;

#[path = "hostile.rs"]
mod hostile;

/// Production, or an environment that does not say (a deployment that forgot
/// STRATA_ENV), refuses to serve auth without a key-encryption key, and to rotate keys.
#[tokio::test]
async fn auth_refuses_to_start_without_a_key_encryption_key_unless_told_development() {
    let db = TestDb::new().await;
    for environment in [Some("production"), None] {
        for args in [&["serve", "all"][..], &["auth", "rotate-keys"][..]] {
            let mut command = Command::new(STRATA);
            command
                .args(args)
                .env("DATABASE_URL", db.url())
                .env("STRATA_LISTEN_ADDR", "127.0.0.1:0")
                .env_remove("STRATA_AUTH_KEY_ENCRYPTION_KEY")
                .env_remove("STRATA_CONFIG_FILE");
            match environment {
                Some(env) => command.env("STRATA_ENV", env),
                None => command.env_remove("STRATA_ENV"),
            };
            let output = command.output().unwrap();
            assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
            assert!(
                text(&output).contains("STRATA_AUTH_KEY_ENCRYPTION_KEY"),
                "{}",
                text(&output)
            );
            assert!(!text(&output).contains("listening"));
        }
    }
}

#[path = "memory.rs"]
mod memory;

#[tokio::test]
async fn logs_into_a_pipe_are_plain_text_without_colour_codes() {
    let db = TestDb::empty().await;
    let redis = TestRedis::new();
    let served = serve("all", &db, &redis, &[("STRATA_LOG_FORMAT", "")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !served.logs().contains("serving") {
        assert!(tokio::time::Instant::now() < deadline, "{}", served.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = served.logs();
    assert!(!logs.contains('\u{1b}'), "no ANSI escape codes: {logs:?}");
    assert!(
        logs.lines()
            .any(|l| l.contains(" INFO ") && l.contains("serving")),
        "plain lines: {logs}"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with('{')),
        "not JSON: {logs}"
    );
}
