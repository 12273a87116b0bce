//! `make bench` (release build, local PostgreSQL and Redis): the analytics service's
//! figures against the targets of its issue, beside limits measured in the same run on
//! the same machine (a gRPC health check, and `pgbench -S -M prepared` when installed).
//!
//! The ledger lives in a database of its own, `strata_bench_analytics`, seeded once to
//! `STRATA_BENCH_USAGE_ROWS` rows (default 10,000,000; the seeding takes minutes the
//! first time) and reused by later runs. Each run adds the rows its ingest benchmark
//! records.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary"
)]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use strata_analytics::config::AnalyticsConfig;
use strata_analytics::seed::{SeedOptions, seed_user};
use strata_analytics::views::{Contention, Outcome, Refresher, ViewName};
use strata_auth::config::AuthConfig;
use strata_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use strata_proto::analytics::{self as pb, usage_scope::Subject};
use strata_proto::common::{Decimal, TimeRange};
use strata_runtime::config::Secret;
use strata_runtime::identity::Role;
use strata_storage::migrate::Migrations;
use strata_testkit::bench::{health_floor, ms, percentile as pct};
use strata_testkit::{TestRedis, TestServer, bearer, env_or_infra, with_database};
use uuid::Uuid;

const BENCH_DB: &str = "strata_bench_analytics";
const INGEST_SECONDS: u64 = 15;
const INGEST_PRODUCERS: usize = 4;
const SUMMARY_CALLS: usize = 400;
const INGEST_MODELS: [&str; 4] = [
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-sonnet",
    "mistral-large",
];

fn report(what: &str, value: f64, unit: &str, target: &str, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    };
    println!("{what:<52} {value:>12.3} {unit:<6} {target:<22} {verdict}");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// The bench database, created, migrated and seeded to `rows` when needed.
async fn bench_database(base_url: &str, rows: u64) -> String {
    let mut admin = AsyncPgConnection::establish(base_url).await.unwrap();
    let exists = count(
        &mut admin,
        &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{BENCH_DB}'"),
    )
    .await;
    if exists == 0 {
        admin
            .batch_execute(&format!("CREATE DATABASE {BENCH_DB}"))
            .await
            .unwrap();
    }
    let url = with_database(base_url, BENCH_DB);
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    Migrations::embedded()
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let have = count(
        &mut conn,
        "SELECT count(*) AS n FROM analytics.usage_keys WHERE producer_id = '5eed0000-0000-4000-8000-000000000000'",
    )
    .await;
    let have = u64::try_from(have).unwrap();
    if have < rows {
        let missing = rows - have;
        eprintln!("seeding {missing} usage rows into {BENCH_DB} (once; reused by later runs)");
        let config = strata_runtime::ServerConfig::for_database("strata-bench", &url).db;
        let started = Instant::now();
        strata_analytics::seed::seed(
            &config,
            SeedOptions {
                rows: missing,
                ..SeedOptions::default()
            },
            2,
            |done, total| {
                eprint!(
                    "\r  {done}/{total} rows ({:.0} rows/s)   ",
                    done as f64 / started.elapsed().as_secs_f64().max(1e-9)
                );
                let _ = std::io::stderr().flush();
            },
        )
        .await
        .unwrap();
        eprintln!();
        report(
            "seed: rows/s (INSERT … SELECT, 2 writers)",
            missing as f64 / started.elapsed().as_secs_f64(),
            "rows/s",
            "",
            None,
        );
        conn.batch_execute("VACUUM ANALYZE analytics.token_usage, analytics.usage_keys")
            .await
            .unwrap();
    }
    url
}

/// `pgbench -S -M prepared` TPS on the same server, when pgbench is installed.
fn pgbench_tps(base_url: &str) -> Option<f64> {
    let url = with_database(base_url, "strata_bench_pgbench");
    let run = |args: &[&str]| {
        std::process::Command::new("pgbench")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let _ = std::process::Command::new("psql")
        .args([base_url, "-qc", "CREATE DATABASE strata_bench_pgbench"])
        .output();
    if run(&["-n", "-S", "-t", "1", &url]).is_none() {
        run(&["-i", "-q", "-s", "10", &url])?;
    }
    let output = run(&[
        "-n", "-S", "-M", "prepared", "-c", "4", "-j", "2", "-T", "5", &url,
    ])?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
}

async fn run() {
    let base_url = env_or_infra("DATABASE_URL").expect("DATABASE_URL or make infra-up");
    let rows: u64 = std::env::var("STRATA_BENCH_USAGE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let url = bench_database(&base_url, rows).await;
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let total_rows = count(&mut conn, "SELECT count(*) AS n FROM analytics.token_usage").await;
    println!("analytics bench on {total_rows} usage rows ({BENCH_DB})");

    let redis = TestRedis::new();
    let mut config = strata_runtime::ServerConfig::for_database("bench", &url);
    config.db.max_connections = 20;
    config.migrate_on_start = false;
    config.rate_limits = strata_runtime::layers::RateLimits::all(u32::MAX, Duration::from_secs(60));
    config.redis_url = Some(Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    let refresher = Refresher::new(config.db.clone(), Duration::from_secs(3600), "bench");
    let server = TestServer::start(config, |builder| {
        strata_auth::register(builder, AuthConfig::default()).unwrap();
        strata_analytics::register(
            builder,
            AnalyticsConfig {
                scheduler: false,
                ..AnalyticsConfig::default()
            },
        );
    })
    .await;
    // The tokens below name sessions the database does not have: verifiers accept them
    // once the auth service vouches for Redis's revocations.
    redis
        .wait_for(strata_runtime::identity::REVOCATIONS_COMPLETE_KEY)
        .await;
    let client = AnalyticsServiceClient::new(server.channel());

    // Limits measured now, on this machine.
    let floor_p50 = health_floor(server.channel(), 2000).await;
    report(
        "floor: gRPC health check p50",
        ms(floor_p50),
        "ms",
        "",
        None,
    );
    let pgbench = pgbench_tps(&base_url);
    if let Some(tps) = pgbench {
        report(
            "limit: pgbench -S -M prepared (4 clients)",
            tps,
            "TPS",
            "",
            None,
        );
    }

    // Tokens: an admin (to read any user's usage) and a service account for ingest.
    let ring = strata_auth::keys::load_or_create(
        &mut conn,
        AuthConfig::default().access_ttl,
        &AuthConfig::default().key_encryption,
    )
    .await
    .unwrap();
    let token = |role: Role, user: Uuid| {
        strata_auth::tokens::issue_access_token(
            &ring.signer,
            &AuthConfig::default(),
            user,
            Uuid::now_v7(),
            role,
            Utc::now(),
        )
        .unwrap()
        .0
    };
    let admin = token(Role::Admin, Uuid::now_v7());

    // Views as a scheduler would have left them: refreshed.
    for view in ViewName::ALL {
        refresher
            .refresh(view, Contention::Wait(Duration::from_secs(600)), None)
            .await
            .unwrap();
    }

    let heavy = seed_user(0);
    let typical = seed_user(1000);
    let heavy_rows = count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM analytics.token_usage WHERE user_id = '{heavy}' \
             AND occurred_at >= now() - interval '30 days'"
        ),
    )
    .await;
    println!("heaviest user: {heavy_rows} calls in the last 30 days");
    let summaries = |label: &'static str| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            for (who, user) in [("heaviest user", heavy), ("typical user", typical)] {
                for group in [pb::GroupBy::Unspecified, pb::GroupBy::Model] {
                    let mut client = client.clone();
                    let mut samples = Vec::new();
                    for _ in 0..SUMMARY_CALLS {
                        let now = Utc::now();
                        let request = pb::GetUsageSummaryRequest {
                            scope: Some(pb::UsageScope {
                                subject: Some(Subject::UserId(user.to_string())),
                            }),
                            time_range: Some(TimeRange {
                                start_time: Some(prost_types::Timestamp {
                                    seconds: (now - chrono::Duration::days(30)).timestamp(),
                                    nanos: 0,
                                }),
                                end_time: Some(prost_types::Timestamp {
                                    seconds: now.timestamp(),
                                    nanos: 0,
                                }),
                            }),
                            bucket_width: pb::BucketWidth::Day.into(),
                            group_by: group.into(),
                        };
                        let started = Instant::now();
                        client
                            .get_usage_summary(bearer(request, &admin))
                            .await
                            .unwrap();
                        samples.push(started.elapsed());
                    }
                    let p95 = pct(&mut samples, 0.95);
                    let grouping = if group == pb::GroupBy::Model {
                        ", by model"
                    } else {
                        ""
                    };
                    report(
                        &format!("GetUsageSummary 30 d, {who}{grouping} p95 ({label})"),
                        ms(p95),
                        "ms",
                        "<= 20 ms (was 200 ms)",
                        Some(ms(p95) <= 20.0),
                    );
                    report(
                        "    p50",
                        ms(pct(&mut samples, 0.5)),
                        "ms",
                        &format!("{:.1}x floor", ms(pct(&mut samples, 0.5)) / ms(floor_p50)),
                        None,
                    );
                }
            }
        }
    };
    summaries("view fresh").await;

    // Ingest: producers send batches of 1000 new events back to back.
    let service = token(Role::Admin, Uuid::now_v7());
    let recorded = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(INGEST_SECONDS);
    let started = Instant::now();
    let mut batch_times = Vec::new();
    let mut tasks = Vec::new();
    for producer in 0..INGEST_PRODUCERS {
        let mut client = client.clone();
        let service = service.clone();
        let recorded = Arc::clone(&recorded);
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut batch = 0u64;
            while Instant::now() < deadline {
                let now = Utc::now();
                let events = (0..1000u32)
                    .map(|i| pb::UsageEvent {
                        idempotency_key: format!(
                            "bench-{}-{producer}-{batch}-{i}",
                            now.timestamp_micros()
                        ),
                        user_id: seed_user(
                            (i * 7919 + u32::try_from(batch % 1000).unwrap()) % 2000,
                        )
                        .to_string(),
                        project_id: String::new(),
                        conversation_id: String::new(),
                        // A mix of models, as real traffic has: a single one piles up at
                        // the newest end of the ledger and skews the model plans below.
                        model: INGEST_MODELS[i as usize % INGEST_MODELS.len()].into(),
                        provider: "openai".into(),
                        operation: pb::Operation::Chat.into(),
                        prompt_tokens: 1200,
                        completion_tokens: 300,
                        cost: Some(Decimal {
                            value: "0.00036".into(),
                        }),
                        latency: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 800_000_000,
                        }),
                        status: pb::CallStatus::Succeeded.into(),
                        occur_time: Some(prost_types::Timestamp {
                            seconds: now.timestamp(),
                            nanos: 0,
                        }),
                        ..Default::default()
                    })
                    .collect();
                let sent = Instant::now();
                let response = client
                    .record_usage(bearer(pb::RecordUsageRequest { events }, &service))
                    .await
                    .unwrap()
                    .into_inner();
                times.push(sent.elapsed());
                recorded.fetch_add(
                    u64::try_from(response.recorded_count).unwrap(),
                    Ordering::Relaxed,
                );
                batch += 1;
            }
            times
        }));
    }
    for task in tasks {
        batch_times.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let events = AtomicU64::load(&recorded, Ordering::Relaxed);
    let rate = events as f64 / elapsed.as_secs_f64();
    report(
        &format!("RecordUsage sustained, {INGEST_PRODUCERS} producers x 1000/batch"),
        rate,
        "ev/s",
        ">= 50000 ev/s",
        Some(rate >= 50_000.0),
    );
    report(
        "    one batch of 1000, p50",
        ms(pct(&mut batch_times, 0.5)),
        "ms",
        &pgbench.map_or(String::new(), |tps| {
            format!("{:.2} rows per pgbench tx", rate / tps)
        }),
        None,
    );

    // Real time: the summaries again, now with the ingested rows after the watermark.
    summaries("+ rows after watermark").await;

    // Refresh of each view at this size (CONCURRENTLY, as the scheduler does).
    for view in ViewName::ALL {
        match refresher
            .refresh(view, Contention::Wait(Duration::from_secs(600)), None)
            .await
            .unwrap()
        {
            Outcome::Refreshed {
                row_count,
                duration,
                ..
            } => report(
                &format!("refresh {} ({row_count} rows)", view.as_str()),
                duration.as_secs_f64(),
                "s",
                "reported",
                None,
            ),
            other => println!("refresh {}: {other:?}", view.as_str()),
        }
    }

    // The plans behind the numbers, at this size: each query shape of the store and the
    // index it must use.
    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = Text)]
        #[diesel(column_name = "QUERY PLAN")]
        line: String,
    }
    let now = Utc::now();
    let month_ago = now - chrono::Duration::days(30);
    let project = strata_analytics::seed::seed_project(0);
    let shapes = [
        (
            "summary: view rows of one user",
            format!(
                "SELECT s.day, sum(s.total_tokens) FROM analytics.user_token_summary s \
                 WHERE s.user_id = '{heavy}' AND s.day >= '{}' AND s.day < '{}' GROUP BY 1",
                month_ago.date_naive(),
                now.date_naive()
            ),
            "user_token_summary_key",
        ),
        (
            "summary: rows after the watermark",
            format!(
                "SELECT sum(u.total_tokens) FROM (SELECT * FROM analytics.token_usage u \
                 WHERE u.user_id = '{heavy}' AND u.received_at > '{}' OFFSET 0) u \
                 WHERE u.occurred_at >= '{month_ago}' AND u.occurred_at < '{now}'",
                now - chrono::Duration::minutes(5)
            ),
            "user_id_received_at",
        ),
        (
            "hour summary / ListUsage of one user",
            format!(
                "SELECT * FROM analytics.token_usage u WHERE u.user_id = '{typical}' \
                 AND u.occurred_at <= '{now}' ORDER BY u.occurred_at DESC, u.id DESC LIMIT 50"
            ),
            "user_id_occurred_at_id",
        ),
        (
            "ListUsage of one user and operation",
            format!(
                "SELECT * FROM analytics.token_usage u WHERE u.user_id = '{typical}' \
                 AND u.operation = 'completion' ORDER BY u.occurred_at DESC, u.id DESC LIMIT 50"
            ),
            "user_id_operation_occurred_at",
        ),
        (
            "summary / ListUsage of one project",
            format!(
                "SELECT count(*) FROM analytics.token_usage u WHERE u.project_id = '{project}' \
                 AND u.occurred_at >= '{month_ago}'"
            ),
            "project_id_occurred_at",
        ),
        (
            "ListUsage of one model (all users)",
            "SELECT * FROM analytics.token_usage u WHERE u.model = 'mistral-large' \
             ORDER BY u.occurred_at DESC, u.id DESC LIMIT 50"
                .to_owned(),
            "model_occurred_at",
        ),
        (
            "ListUsage of all users",
            "SELECT * FROM analytics.token_usage u ORDER BY u.occurred_at DESC, u.id DESC LIMIT 50"
                .to_owned(),
            "pkey",
        ),
    ];
    println!("plans (EXPLAIN ANALYZE at {total_rows} rows):");
    for (label, sql, index) in shapes {
        let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}"))
            .load(&mut conn)
            .await
            .unwrap();
        let text: Vec<&str> = plan.iter().map(|l| l.line.as_str()).collect();
        let uses = text.iter().any(|l| l.contains(index));
        let time = text
            .iter()
            .find(|l| l.starts_with("Execution Time"))
            .map_or("", |l| l.trim_start_matches("Execution Time: "));
        println!(
            "    {label:<40} {:<34} {time:>12}  {}",
            format!("*{index}*"),
            if uses { "uses it" } else { "DOES NOT USE IT" }
        );
        if !uses {
            for line in text {
                println!("        {line}");
            }
        }
    }
    drop(server);
}
