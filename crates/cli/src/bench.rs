//! `strata bench`: the suite under load, side by side with this machine's limits.
//!
//! It starts the suite the way users run it (this binary, `strata serve all`, a process of
//! its own, on a database of its own), measures the limits in the same run with the same
//! load generator (`strata_bench`): the tonic hello-world, `pgbench -S -M prepared` and
//! TPC-B against the same PostgreSQL, `redis-benchmark` GET against the same Redis, one
//! argon2id hash at Strata's parameters; then runs each scenario and writes
//! `report.md` and `report.json` to the output directory, with the suite's log
//! (`suite.log`: slow queries, warnings). A scenario with failed calls is
//! reported as failed, never as fast.

mod content;
mod conversations;
mod flamegraph;
mod workflows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt as _;
use strata_bench::hello::{self, Hello};
use strata_bench::load::{self, Load, Report};
use strata_proto::admin::admin_service_client::AdminServiceClient;
use strata_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use strata_proto::analytics::{self as apb};
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{self as pb};
use strata_proto::common::{Decimal, TimeRange};
use strata_runtime::identity::token::{
    PublicKeys, TokenError, TokenSettings, VerifiedTokens, verify_access_token,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

use crate::bearer;

/// The password of every bench user.
const PASSWORD: &str = "correct horse battery staple";

/// How long and how hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// A few hundred milliseconds per scenario: proves the harness works (`make test`).
    Smoke,
    /// A few seconds per scenario (the default).
    Quick,
    /// Ten seconds per scenario, 10M usage rows seeded.
    Full,
}

impl Scale {
    /// Usage rows seeded into the ledger before the scenarios.
    fn seeded_rows(self) -> u64 {
        match self {
            Scale::Smoke => 0,
            Scale::Quick => 200_000,
            Scale::Full => 10_000_000,
        }
    }
}

impl Scale {
    fn measure(self) -> Duration {
        match self {
            Scale::Smoke => Duration::from_millis(300),
            Scale::Quick => Duration::from_secs(3),
            Scale::Full => Duration::from_secs(10),
        }
    }

    /// Users GetProfile reads.
    fn profile_users(self) -> usize {
        match self {
            Scale::Smoke => 16,
            Scale::Quick | Scale::Full => 256,
        }
    }

    fn pgbench_seconds(self) -> u32 {
        match self {
            Scale::Smoke => 1,
            Scale::Quick => 5,
            Scale::Full => 15,
        }
    }
}

/// What `strata bench` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long and how hard.
    pub scale: Scale,
    /// Where the report goes.
    pub out: PathBuf,
    /// Connections of the throughput scenarios.
    pub connections: usize,
    /// Calls in flight per connection.
    pub in_flight: usize,
    /// Name of the databases it creates afresh (`<name>` for the suite, `<name>_pgbench`).
    pub database: String,
    /// Only the scenarios whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// A flame graph of the suite under each scenario (`perf`), in `<out>/flamegraphs`.
    pub flamegraphs: bool,
}

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    operation: String,
    load: String,
    ok: u64,
    errors: BTreeMap<String, u64>,
    rate: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    limit: String,
    limit_rate: f64,
    ratio: Option<f64>,
    reference: String,
    target: String,
    /// The share of its limit the scenario should reach, when that is its target.
    target_ratio: Option<f64>,
    met: Option<bool>,
    resources: Option<Resources>,
    /// The suite's flame graph under this scenario, relative to the report.
    flamegraph: Option<String>,
}

/// The machine's limits, measured in this run.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Limits {
    hello_rps: f64,
    pgbench_select_tps: f64,
    pgbench_tpcb_tps: f64,
    redis_get_rps: f64,
    argon2_hash_ms: f64,
    argon2_hashes_per_second: f64,
    /// One round of hashing on every core: as many hashes started at once as there are
    /// cores, until the last one finished (memory bandwidth is shared, so it can take
    /// longer than one hash alone).
    argon2_round_ms: f64,
}

/// Which limit a scenario is set against.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// The gRPC stack: tonic hello-world RPC/s.
    Hello,
    /// PostgreSQL reads: `pgbench -S -M prepared` TPS.
    PgbenchSelect,
    /// PostgreSQL writes: `pgbench` TPC-B TPS.
    PgbenchTpcb,
    /// Password hashing: argon2id hashes per second on all cores.
    Argon2,
    /// None: work measured on its own (in-process verification).
    None,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::Hello => "hello-world",
            Limit::PgbenchSelect => "pgbench -S",
            Limit::PgbenchTpcb => "pgbench TPC-B",
            Limit::Argon2 => "argon2id",
            Limit::None => "",
        }
    }
}

impl Limits {
    fn of(&self, limit: Limit) -> f64 {
        match limit {
            Limit::Hello => self.hello_rps,
            Limit::PgbenchSelect => self.pgbench_select_tps,
            Limit::PgbenchTpcb => self.pgbench_tpcb_tps,
            Limit::Argon2 => self.argon2_hashes_per_second,
            Limit::None => 0.0,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A report row for `report`, set against `limit`.
fn row(
    operation: &str,
    report: &Report,
    limits: &Limits,
    limit: Limit,
    reference: &str,
    target: Target,
) -> Row {
    let limit_rate = limits.of(limit);
    let ratio = (limit_rate > 0.0).then(|| report.rate() / limit_rate);
    let met = report
        .succeeded()
        .then(|| target.met(report, ratio, limits));
    Row {
        operation: operation.to_owned(),
        load: match report.load.mode {
            load::Mode::Closed => format!("{}×{}", report.load.connections, report.load.in_flight),
            load::Mode::Open { per_second } => format!(
                "{}×{} at {per_second:.0}/s",
                report.load.connections, report.load.in_flight
            ),
        },
        ok: report.ok,
        errors: report.errors.clone(),
        rate: report.rate(),
        p50_ms: ms(report.quantile(0.5)),
        p95_ms: ms(report.quantile(0.95)),
        p99_ms: ms(report.quantile(0.99)),
        p999_ms: ms(report.quantile(0.999)),
        max_ms: ms(report.max()),
        limit: limit.name().to_owned(),
        limit_rate,
        ratio,
        reference: reference.to_owned(),
        target: target.describe(),
        target_ratio: target.ratio(),
        met,
        resources: None,
        flamegraph: None,
    }
}

/// What a scenario should reach.
#[derive(Debug, Clone)]
enum Target {
    /// The latency at this quantile at most this (`why` says where the bound comes from
    /// when it is not a plain figure).
    Latency {
        quantile: f64,
        at_most: Duration,
        why: &'static str,
    },
    /// The latency at this quantile at most one argon2id hash (measured in the same run)
    /// plus this.
    HashPlus { quantile: f64, plus: Duration },
    /// Throughput at least this share of its limit.
    Ratio(f64),
    /// At least this many events/s, at `per_call` events per call.
    Events { per_call: f64, at_least: f64 },
    /// Every one of these.
    All(Vec<Target>),
    /// None set.
    None,
}

impl Target {
    fn p(quantile: f64, at_most: Duration) -> Target {
        Target::Latency {
            quantile,
            at_most,
            why: "",
        }
    }

    fn met(&self, report: &Report, ratio: Option<f64>, limits: &Limits) -> bool {
        match self {
            Target::Latency {
                quantile, at_most, ..
            } => report.quantile(*quantile) <= *at_most,
            Target::HashPlus { quantile, plus } => {
                ms(report.quantile(*quantile)) <= limits.argon2_hash_ms + ms(*plus)
            }
            Target::Ratio(r) => ratio.is_some_and(|x| x >= *r),
            Target::Events { per_call, at_least } => report.rate() * per_call >= *at_least,
            Target::All(all) => all.iter().all(|t| t.met(report, ratio, limits)),
            Target::None => true,
        }
    }

    fn describe(&self) -> String {
        let q = |quantile: f64| format!("p{}", quantile * 100.0);
        match self {
            Target::Latency {
                quantile,
                at_most,
                why: "",
            } => format!("{} ≤ {} ms", q(*quantile), ms(*at_most)),
            Target::Latency {
                quantile,
                at_most,
                why,
            } => format!("{} ≤ {why} ({:.1} ms)", q(*quantile), ms(*at_most)),
            Target::HashPlus { quantile, plus } => {
                format!("{} ≤ one hash + {} ms", q(*quantile), ms(*plus))
            }
            Target::Ratio(r) => format!("≥ {r} of limit"),
            Target::Events { at_least, .. } => format!("≥ {at_least:.0} events/s"),
            Target::All(all) => all
                .iter()
                .map(Target::describe)
                .collect::<Vec<_>>()
                .join(", "),
            Target::None => String::new(),
        }
    }

    /// The share of its limit it asks for, if that is what it asks.
    fn ratio(&self) -> Option<f64> {
        match self {
            Target::Ratio(r) => Some(*r),
            Target::All(all) => all.iter().find_map(Target::ratio),
            _ => None,
        }
    }
}

/// Where the resources of a scenario went: CPU seconds of the suite, PostgreSQL, Redis and
/// the load generator (from `/proc`), the suite's memory, and SQL statements and Redis
/// commands per call (`pg_stat_statements`, `INFO commandstats`).
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Resources {
    cpu_suite_s: f64,
    cpu_postgres_s: f64,
    cpu_redis_s: f64,
    cpu_bench_s: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    sql_per_call: Option<f64>,
    redis_per_call: Option<f64>,
}

/// Counters read before and after a scenario.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu: [f64; 4],
    sql_calls: Option<i64>,
    redis_calls: Option<i64>,
}

/// Reads [`Sample`]s.
struct Probe {
    suite: u32,
    db: AsyncPgConnection,
    redis: Option<redis::aio::MultiplexedConnection>,
}

#[derive(diesel::QueryableByName)]
struct Calls {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// User plus system CPU seconds of process `pid` (`/proc/<pid>/stat`), its children that
/// exited and were waited for included (so a PostgreSQL backend that ends between two
/// samples moves into its postmaster's total instead of vanishing); zero when gone.
fn cpu_seconds(pid: &str) -> f64 {
    // Clock ticks per second: 100 on every Linux this runs on.
    const TICKS: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / TICKS
}

/// CPU seconds of every process whose command is `name`.
fn cpu_of_named(name: &str) -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .map(|pid| cpu_seconds(&pid))
        .sum()
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Probe {
    async fn new(suite: u32, database_url: &str, redis_url: &str) -> anyhow::Result<Self> {
        let redis = match redis::Client::open(redis_url) {
            Ok(client) => client.get_multiplexed_async_connection().await.ok(),
            Err(_) => None,
        };
        Ok(Self {
            suite,
            db: AsyncPgConnection::establish(database_url).await?,
            redis,
        })
    }

    async fn sample(&mut self) -> Sample {
        use diesel_async::RunQueryDsl as _;
        let sql_calls = diesel::sql_query(
            "SELECT coalesce(sum(calls), 0)::bigint AS n FROM pg_stat_statements
              WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .load::<Calls>(&mut self.db)
        .await
        .ok()
        .and_then(|rows| rows.into_iter().next().map(|r| r.n));
        let redis_calls = match &mut self.redis {
            Some(conn) => redis::cmd("INFO")
                .arg("commandstats")
                .query_async::<String>(conn)
                .await
                .ok()
                .map(|info| {
                    info.lines()
                        .filter_map(|l| l.split("calls=").nth(1))
                        .filter_map(|v| v.split(',').next())
                        .filter_map(|v| v.parse::<i64>().ok())
                        .sum()
                }),
            None => None,
        };
        Sample {
            cpu: [
                cpu_seconds(&self.suite.to_string()),
                cpu_of_named("postgres"),
                cpu_of_named("redis-server"),
                cpu_seconds("self"),
            ],
            sql_calls,
            redis_calls,
        }
    }

    /// What was used since `before`, for a scenario of `calls` calls.
    async fn since(&mut self, before: &Sample, calls: u64) -> Resources {
        let after = self.sample().await;
        let (rss, peak) = memory_mib(self.suite);
        let per_call = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) if calls > 0 => Some((a - b) as f64 / calls as f64),
            _ => None,
        };
        Resources {
            cpu_suite_s: after.cpu[0] - before.cpu[0],
            cpu_postgres_s: after.cpu[1] - before.cpu[1],
            cpu_redis_s: after.cpu[2] - before.cpu[2],
            cpu_bench_s: after.cpu[3] - before.cpu[3],
            rss_mib: rss,
            peak_rss_mib: peak,
            sql_per_call: per_call(after.sql_calls, before.sql_calls),
            redis_per_call: per_call(after.redis_calls, before.redis_calls),
        }
    }
}

/// The suite, running as a child process.
struct Suite {
    child: tokio::process::Child,
    pid: u32,
    url: String,
}

impl Suite {
    /// Starts `strata serve all` with every rate limit `rate_limits` (a limit, or `off`);
    /// its log goes to `log`, its Redis keys under a prefix of its own (`tag`).
    async fn start(
        database_url: &str,
        redis_url: &str,
        log: &Path,
        rate_limits: &str,
        tag: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log).context("creating the suite's log")?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "all"])
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env(
                "STRATA_REDIS_PREFIX",
                format!("bench:{}:{tag}:", std::process::id()),
            )
            .env("STRATA_LISTEN_ADDR", "127.0.0.1:0")
            // The built-in key-encryption key: a throwaway database.
            .env("STRATA_ENV", "development")
            .env("STRATA_DB_MAX_CONNECTIONS", "20")
            .env("STRATA_LOG_FORMAT", "plain")
            .env("RUST_LOG", "warn")
            .envs(
                [
                    "STRATA_RATE_LIMIT_AUTHENTICATED",
                    "STRATA_RATE_LIMIT_USER",
                    "STRATA_RATE_LIMIT_UNAUTHENTICATED",
                    "STRATA_RATE_LIMIT_SIGN_IN",
                ]
                .map(|name| (name, rate_limits)),
            )
            .envs(env.iter().copied())
            .env_remove("STRATA_CONFIG_FILE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting strata serve all")?;
        let stdout = child.stdout.take().context("the suite's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    return Ok(addr.trim().to_owned());
                }
            }
            bail!("strata serve all exited before listening")
        })
        .await
        .context("waiting for the suite to listen")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            pid: child.id().unwrap_or_default(),
            child,
            url: format!("http://{addr}"),
        })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.split_once('?').unwrap_or((url, ""));
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{database}", &base[..i]),
        _ => format!("{base}/{database}"),
    }
}

/// Creates `database` afresh.
async fn fresh_database(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .context("connecting to DATABASE_URL")?;
    // One statement per round trip: neither may run inside a transaction block.
    for sql in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ] {
        conn.batch_execute(&sql)
            .await
            .with_context(|| format!("creating {database}"))?;
    }
    Ok(with_database(admin_url, database))
}

/// The path of `pgbench`: on PATH, else under /usr/lib/postgresql.
fn pgbench() -> anyhow::Result<PathBuf> {
    if let Ok(paths) = std::env::var("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("pgbench");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .context("pgbench not found (install postgresql-contrib or the server package)")
}

/// The `tps = …` figure of a pgbench run.
fn pgbench_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Runs pgbench with `args` against `url`; its standard output.
async fn pgbench_run(url: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(pgbench()?)
        .args(args)
        .arg(url)
        .output()
        .await
        .context("running pgbench")?;
    if !output.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The TPS of a pgbench run with `args`.
async fn run_pgbench(url: &str, args: &[&str]) -> anyhow::Result<f64> {
    let text = pgbench_run(url, args).await?;
    pgbench_tps(&text).with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// `redis-benchmark` GET requests per second against `redis_url`.
async fn redis_get(redis_url: &str, clients: usize) -> anyhow::Result<f64> {
    let rest = redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "6379"));
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-t", "get", "-n", "100000", "-q"])
        .args(["-c", &clients.to_string()])
        .output()
        .await
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split(['\r', '\n'])
        .filter(|l| l.starts_with("GET:"))
        .filter_map(|l| l.trim_start_matches("GET:").split_whitespace().next())
        .filter_map(|v| v.parse::<f64>().ok())
        .next_back()
        .with_context(|| format!("no GET rate in redis-benchmark's output: {text}"))
}

/// One argon2id hash at Strata's parameters on this machine, alone, and one round of
/// `cores` hashes started at once: the medians of seven of each (one of each varies by
/// 20 % on a shared machine).
async fn argon2_hash(cores: usize) -> anyhow::Result<(Duration, Duration)> {
    let passwords = strata_auth::password::Passwords::new()?;
    let round = async |n: usize| {
        let started = Instant::now();
        futures_util::future::try_join_all((0..n).map(|_| passwords.hash(PASSWORD.into()))).await?;
        anyhow::Ok(started.elapsed())
    };
    // The first round allocates the working memories; time the next ones.
    round(cores).await?;
    let (mut alone, mut together) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        alone.push(round(1).await?);
        together.push(round(cores).await?);
    }
    alone.sort();
    together.sort();
    Ok((alone[3], together[3]))
}

/// A signed-in bench user.
#[derive(Debug, Clone)]
struct User {
    id: String,
    email: String,
    token: String,
    refresh_token: String,
}

async fn sign_up(channel: Channel, email: String) -> Result<User, tonic::Status> {
    let answer = AuthServiceClient::new(channel)
        .sign_up(pb::SignUpRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            display_name: "Bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let (user, credentials) = (
        answer.user.unwrap_or_default(),
        answer.credentials.unwrap_or_default(),
    );
    Ok(User {
        id: user.id,
        email,
        token: credentials.access_token,
        refresh_token: credentials.refresh_token,
    })
}

fn usage_event(key: String, user: &str, seq: u64) -> apb::UsageEvent {
    let models = [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-3-haiku",
        "claude-3-5-sonnet",
    ];
    let now = Utc::now();
    apb::UsageEvent {
        idempotency_key: key,
        user_id: user.to_owned(),
        model: models[(seq % 4) as usize].into(),
        provider: "bench".into(),
        operation: apb::Operation::Chat.into(),
        prompt_tokens: 100 + (seq % 900) as i64,
        completion_tokens: 20 + (seq % 200) as i64,
        cost: Some(Decimal {
            value: "0.00125".into(),
        }),
        latency: Some(prost_types::Duration {
            seconds: 0,
            nanos: 350_000_000,
        }),
        status: apb::CallStatus::Succeeded.into(),
        occur_time: Some(prost_types::Timestamp {
            seconds: now.timestamp() - (seq % 86_400) as i64,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// The last 30 days (the analytics issue's summary target is over 30 days).
fn last_30_days() -> Option<TimeRange> {
    let now = Utc::now().timestamp();
    Some(TimeRange {
        start_time: Some(prost_types::Timestamp {
            seconds: now - 30 * 86_400,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: now + 3600,
            nanos: 0,
        }),
    })
}

/// The user a worker's `seq`-th call acts as.
fn nth(users: &[User], seq: u64) -> &User {
    &users[(seq as usize) % users.len()]
}

async fn login(c: Channel, email: String) -> Result<(), tonic::Status> {
    let request = pb::LoginRequest {
        email,
        password: PASSWORD.into(),
    };
    AuthServiceClient::new(c).login(request).await.map(|_| ())
}

async fn verify_token(c: Channel, token: String) -> Result<(), tonic::Status> {
    let request = pb::VerifyTokenRequest { token };
    AuthServiceClient::new(c)
        .verify_token(request)
        .await
        .map(|_| ())
}

async fn get_profile(c: Channel, token: String) -> Result<(), tonic::Status> {
    let request = bearer(pb::GetProfileRequest::default(), &token);
    AuthServiceClient::new(c)
        .get_profile(request)
        .await
        .map(|_| ())
}

/// Daily buckets of the caller's last 30 days.
async fn usage_summary(c: Channel, token: String) -> Result<(), tonic::Status> {
    let request = apb::GetUsageSummaryRequest {
        time_range: last_30_days(),
        bucket_width: apb::BucketWidth::Day.into(),
        ..Default::default()
    };
    AnalyticsServiceClient::new(c)
        .get_usage_summary(bearer(request, &token))
        .await
        .map(|_| ())
}

/// The caller's newest 50 usage records.
async fn list_usage(c: Channel, token: String) -> Result<(), tonic::Status> {
    let request = apb::ListUsageRequest {
        page_size: 50,
        ..Default::default()
    };
    AnalyticsServiceClient::new(c)
        .list_usage(bearer(request, &token))
        .await
        .map(|_| ())
}

/// Migrates the fresh database and makes the key content's usage shipper sends with, as
/// `make run` does (`strata auth service-key`).
async fn usage_shipper_key(database_url: &str) -> anyhow::Result<String> {
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    strata_storage::migrate::Migrations::embedded()?
        .run(&mut conn)
        .await?;
    let key = strata_auth::service_accounts::ensure_key(
        &mut conn,
        "usage-shipper@bench.example",
        "usage-shipper",
        &["usage:write".to_owned()],
        None,
        Utc::now(),
    )
    .await?;
    Ok(key.secret)
}

/// An admin service account made the way an operator would (sign up, `strata auth
/// grant-admin`, refresh: the role is a claim): its access token (for RefreshViews) and
/// its API key for producing usage (`usage:write`).
async fn usage_writer_key(
    channel: &Channel,
    database_url: &str,
    run_id: u32,
) -> anyhow::Result<(String, String)> {
    let service = sign_up(channel.clone(), format!("service.{run_id}@bench.example")).await?;
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    strata_auth::store::grant_admin(&mut conn, &service.email, Utc::now())
        .await?
        .context("the bench's service account vanished")?;
    let mut auth = AuthServiceClient::new(channel.clone());
    let token = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: service.refresh_token,
        })
        .await?
        .into_inner()
        .credentials
        .unwrap_or_default()
        .access_token;
    let request = pb::CreateApiKeyRequest {
        name: "bench".into(),
        scopes: vec!["usage:write".into()],
        ..Default::default()
    };
    let key = auth
        .create_api_key(bearer(request, &token))
        .await?
        .into_inner()
        .secret;
    Ok((token, key))
}

/// Folds every row received so far into the summaries (RefreshViews, as an admin).
async fn refresh_views(channel: &Channel, admin_token: &str) -> anyhow::Result<()> {
    AnalyticsServiceClient::new(channel.clone())
        .refresh_views(bearer(apb::RefreshViewsRequest::default(), admin_token))
        .await
        .context("RefreshViews")?;
    Ok(())
}

/// The scenarios' measurements: each runs under the probe and becomes a report row.
struct Recorder<'a> {
    probe: Probe,
    only: Vec<String>,
    channels: Vec<Channel>,
    limits: &'a Limits,
    rows: Vec<Row>,
    profiler: Option<flamegraph::Profiler>,
}

/// A RecordUsage call: `(channel, seq, events per call, key tag)`.
type RecordCall = Arc<
    dyn Fn(
            Channel,
            u64,
            u64,
            &'static str,
        ) -> futures_util::future::BoxFuture<'static, Result<(), tonic::Status>>
        + Send
        + Sync,
>;

impl Recorder<'_> {
    /// Runs `call` under `load`, records its row (set against `limit`, beside the earlier
    /// report's `reference` figure and `target`) with the resources it used.
    async fn measure<F, Fut>(
        &mut self,
        operation: &str,
        load: &Load,
        limit: Limit,
        reference: &str,
        target: Target,
        call: F,
    ) -> Report
    where
        F: Fn(Channel, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
    {
        if self.left_out(operation) {
            return Report::skipped(load);
        }
        let recording = self.profiler.as_ref().and_then(|p| {
            p.start(self.probe.suite, operation)
                .map_err(|e| eprintln!("strata bench: no flame graph of {operation}: {e:#}"))
                .ok()
        });
        let before = self.probe.sample().await;
        let report = load::run(load, &self.channels, call).await;
        self.record(operation, &report, &before, limit, reference, target)
            .await;
        if let Some(recording) = recording {
            match recording.finish().await {
                Ok(svg) => {
                    if let Some(row) = self.rows.last_mut() {
                        row.flamegraph = Some(svg);
                    }
                }
                Err(e) => eprintln!("strata bench: no flame graph of {operation}: {e:#}"),
            }
        }
        report
    }

    /// Runs `call` in this process on `load.connections` threads (no network; the other
    /// processes idle), and records its row like [`Recorder::measure`].
    async fn measure_in_process<F>(
        &mut self,
        operation: &str,
        load: &Load,
        reference: &str,
        target: Target,
        call: F,
    ) -> Report
    where
        F: Fn(u64) -> Result<(), tonic::Status> + Sync,
    {
        if self.left_out(operation) {
            return Report::skipped(load);
        }
        let before = self.probe.sample().await;
        let report = tokio::task::block_in_place(|| load::run_in_process(load, call));
        self.record(operation, &report, &before, Limit::None, reference, target)
            .await;
        report
    }

    /// Whether `--only` leaves `operation` out.
    fn left_out(&self, operation: &str) -> bool {
        let name = operation.to_lowercase();
        !self.only.is_empty() && !self.only.iter().any(|o| name.contains(o.as_str()))
    }

    /// Adds the row of `report` with the resources used since `before`.
    async fn record(
        &mut self,
        operation: &str,
        report: &Report,
        before: &Sample,
        limit: Limit,
        reference: &str,
        target: Target,
    ) {
        let mut r = row(operation, report, self.limits, limit, reference, target);
        r.resources = Some(self.probe.since(before, report.ok + report.failed()).await);
        self.rows.push(r);
    }

    /// Adds the row of a latency the scenario timed itself (no limit beside it), with its
    /// p99 target.
    async fn record_p99(
        &mut self,
        operation: &str,
        report: &Report,
        before: &Sample,
        at_most: Duration,
    ) {
        let target = Target::p(0.99, at_most);
        self.record(operation, report, before, Limit::None, "", target)
            .await;
    }

    /// The row of `operation`, when it was the last measured (not left out by `--only`),
    /// to complete its title with what the run found.
    fn last(&mut self, operation: &str) -> Option<&mut Row> {
        self.rows.last_mut().filter(|r| r.operation == operation)
    }

    /// RecordUsage of events owned by `owners` in turn, with `key`; idempotency keys are
    /// unique per run, tag, call and event.
    fn usage(owners: Arc<Vec<User>>, key: Arc<String>, run_id: u32) -> RecordCall {
        Arc::new(move |c, seq, size, tag| {
            let owners = Arc::clone(&owners);
            let key = Arc::clone(&key);
            Box::pin(async move {
                let events = (0..size)
                    .map(|i| {
                        let n = seq.wrapping_mul(size).wrapping_add(i);
                        let key = format!("{run_id}-{tag}-{seq}-{i}");
                        usage_event(key, &nth(&owners, n).id, n)
                    })
                    .collect();
                AnalyticsServiceClient::new(c)
                    .record_usage(bearer(apb::RecordUsageRequest { events }, &key))
                    .await
                    .map(|_| ())
            })
        })
    }
}

/// Every rate limit of the measured suite: one the load never reaches (every call comes
/// from one address and a few users), so the layer does all of its work and refuses nothing
/// (the fastest rate a limit may have).
const UNREACHED_RATE_LIMIT: &str = "60000000/min";

/// The Zipf exponent of which of GetProfile's users is read how often.
const PROFILE_ZIPF: f64 = 1.0;

/// Picks users by a Zipf distribution (rank `k` with weight `1/k^s`), deterministically
/// from a call's sequence number.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        for c in &mut cumulative {
            *c /= total;
        }
        Self { cumulative }
    }

    /// The rank (0-based) of the `seq`-th pick.
    fn pick(&self, seq: u64) -> usize {
        // splitmix64: a well-spread uniform number from the sequence number.
        let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

/// Hits, misses and entries of the session and account caches, per tier, summed.
#[derive(Debug, Clone, Copy, Default)]
struct CacheCounts {
    l1_hits: u64,
    l1_misses: u64,
    l2_hits: u64,
    l2_misses: u64,
    loads: u64,
}

async fn auth_cache_counts(channel: &Channel, admin_token: &str) -> anyhow::Result<CacheCounts> {
    let stats = AdminServiceClient::new(channel.clone())
        .get_cache_stats(bearer(
            strata_proto::admin::GetCacheStatsRequest::default(),
            admin_token,
        ))
        .await
        .context("GetCacheStats")?
        .into_inner();
    let mut counts = CacheCounts::default();
    for cache in stats
        .caches
        .iter()
        .filter(|c| c.name == "auth_sessions" || c.name == "auth_users")
    {
        let (l1, l2) = (
            cache.memory.unwrap_or_default(),
            cache.redis.unwrap_or_default(),
        );
        counts.l1_hits += l1.hits;
        counts.l1_misses += l1.misses;
        counts.l2_hits += l2.hits;
        counts.l2_misses += l2.misses;
        counts.loads += cache.loads;
    }
    Ok(counts)
}

/// `what the reads found`: hit rates per tier between two counts.
fn hit_rates(before: CacheCounts, after: CacheCounts) -> String {
    let rate = |hits: u64, misses: u64| {
        let total = hits + misses;
        if total == 0 {
            "no lookups".to_owned()
        } else {
            format!("{:.2} %", 100.0 * hits as f64 / total as f64)
        }
    };
    let l1_hits = after.l1_hits.saturating_sub(before.l1_hits);
    let l1_misses = after.l1_misses.saturating_sub(before.l1_misses);
    let l2_hits = after.l2_hits.saturating_sub(before.l2_hits);
    let l2_misses = after.l2_misses.saturating_sub(before.l2_misses);
    format!(
        "session and account caches: memory hit rate {} of {} lookups, Redis {} of {}, {} database loads",
        rate(l1_hits, l1_misses),
        l1_hits + l1_misses,
        rate(l2_hits, l2_misses),
        l2_hits + l2_misses,
        after.loads.saturating_sub(before.loads)
    )
}

/// The rate-limit layer's cost on the cheapest authenticated call: `profile` under `load`
/// against two fresh suites on the same database and Redis, started together and alike
/// but for the limits (one with every limit on and never reached, one with every limit
/// off), in short turns: off, on, off, on, …, off. The machine is shared and its speed
/// drifts from one second to the next by more than the 5 % measured, so each "on" turn is
/// set against the mean of the two "off" turns around it (which cancels a steady drift)
/// and the figure is the median of those ratios (which a burst of noise in one turn does
/// not move). The last "on" and "off" turns are recorded as rows; the figure and the
/// spread of the ratios go on the "on" row.
async fn rate_limit_overhead<F, Fut>(
    bench: &mut Recorder<'_>,
    database_url: &str,
    redis_url: &str,
    out: &Path,
    load: &Load,
    profile: F,
) -> anyhow::Result<()>
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    const OFF: &str = "GetProfile with every rate limit off (second suite)";
    const ON: &str = "GetProfile, rate limits on, between the two";
    /// Turns, "off" first and last: `TURNS / 2` "on" turns, each between two "off" ones.
    const TURNS: usize = 25;
    /// Each turn is this part of the load's time (its warmup too).
    const TURN_PART: u32 = 3;
    if bench.left_out(OFF) && bench.left_out(ON) {
        return Ok(());
    }
    let limited = Suite::start(
        database_url,
        redis_url,
        &out.join("suite-limited.log"),
        UNREACHED_RATE_LIMIT,
        "limited",
        &[],
    )
    .await?;
    let unlimited = Suite::start(
        database_url,
        redis_url,
        &out.join("suite-unlimited.log"),
        "off",
        "unlimited",
        &[],
    )
    .await?;
    let limited_channels = load::connect(&limited.url, load.connections).await?;
    let unlimited_channels = load::connect(&unlimited.url, load.connections).await?;
    let turn = Load {
        warmup: load.warmup / TURN_PART,
        measure: load.measure / TURN_PART,
        ..*load
    };
    // Both suites' caches and leases warm before the first turn counts.
    for channels in [&limited_channels, &unlimited_channels] {
        load::run(&turn, channels, profile.clone()).await;
    }
    let (channels, suite_pid) = (bench.channels.clone(), bench.probe.suite);
    let mut rates = Vec::with_capacity(TURNS);
    // CPU used over the measured part of the turns, serving the calls (every suite,
    // Redis, PostgreSQL) and making them (the load generator), and the calls made then:
    // [off, on].
    let (mut serving, mut making, mut calls) = ([0.0_f64; 2], [0.0_f64; 2], [0_u64; 2]);
    let load_generator = std::process::id().to_string();
    let cpu_now = || {
        let making = cpu_seconds(&load_generator);
        let serving = cpu_of_named("strata") - making
            + cpu_of_named("redis-server")
            + cpu_of_named("postgres");
        (serving, making)
    };
    let (warm, turn) = (
        Load {
            warmup: Duration::ZERO,
            measure: turn.warmup,
            ..turn
        },
        Load {
            warmup: Duration::ZERO,
            ..turn
        },
    );
    for i in 0..TURNS {
        let limits_on = i % 2 == 1;
        let turn_channels = if limits_on {
            &limited_channels
        } else {
            &unlimited_channels
        };
        load::run(&warm, turn_channels, profile.clone()).await;
        let cpu_before = cpu_now();
        // The last "on" and "off" turns are recorded (with the resources they used).
        let report = if i + 2 >= TURNS {
            (bench.channels, bench.probe.suite) = (
                turn_channels.clone(),
                if limits_on {
                    limited.pid
                } else {
                    unlimited.pid
                },
            );
            let operation = if limits_on { ON } else { OFF };
            bench
                .measure(
                    operation,
                    &turn,
                    Limit::Hello,
                    "",
                    Target::None,
                    profile.clone(),
                )
                .await
        } else {
            load::run(&turn, turn_channels, profile.clone()).await
        };
        let cpu_after = cpu_now();
        let on = usize::from(limits_on);
        serving[on] += cpu_after.0 - cpu_before.0;
        making[on] += cpu_after.1 - cpu_before.1;
        calls[on] += report.ok;
        rates.push(report.rate());
    }
    (bench.channels, bench.probe.suite) = (channels, suite_pid);
    limited.stop().await;
    unlimited.stop().await;
    let Some((ratio, low, high)) = overhead_ratio(&rates) else {
        return Ok(());
    };
    let mean = |odd: bool| {
        let turns: Vec<f64> = rates
            .iter()
            .skip(usize::from(odd))
            .step_by(2)
            .copied()
            .collect();
        turns.iter().sum::<f64>() / turns.len().max(1) as f64
    };
    // Microseconds of CPU per call.
    let per_call = |cpu: &[f64; 2], i: usize| 1e6 * cpu[i] / calls[i].max(1) as f64;
    let (serve_on, serve_off) = (per_call(&serving, 1), per_call(&serving, 0));
    let (make_on, make_off) = (per_call(&making, 1), per_call(&making, 0));
    if let Some(row) = bench.rows.iter_mut().rev().find(|r| r.operation == ON) {
        row.limit = format!(
            "rate limits off: median of {} ratios, each \"on\" turn over the mean of the \
             \"off\" turns around it (middle half {low:.3}–{high:.3}; means: on {:.0}/s, \
             off {:.0}/s. CPU per call serving it (suites, Redis, PostgreSQL): on {serve_on:.1} µs, \
             off {serve_off:.1} µs, off/on {:.3}; making it (load generator): on {make_on:.1} µs, \
             off {make_off:.1} µs; both: off/on {:.3})",
            TURNS / 2,
            mean(true),
            mean(false),
            serve_off / serve_on.max(f64::EPSILON),
            (serve_off + make_off) / (serve_on + make_on).max(f64::EPSILON)
        );
        row.limit_rate = row.rate / ratio;
        row.ratio = Some(ratio);
        row.target = "≥ 0.95 of limit (overhead ≤ 5 %)".into();
        row.target_ratio = Some(0.95);
        row.met = Some(ratio >= 0.95);
    }
    Ok(())
}

/// The median, first and third quartiles of the ratios of each "on" turn (odd places in
/// `rates`) to the mean of the "off" turns either side; `None` if any turn did nothing.
fn overhead_ratio(rates: &[f64]) -> Option<(f64, f64, f64)> {
    let mut ratios: Vec<f64> = (1..rates.len().saturating_sub(1))
        .step_by(2)
        .map(|i| rates[i] / ((rates[i - 1] + rates[i + 1]) / 2.0))
        .collect();
    if ratios.is_empty() || ratios.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let place = q * (ratios.len() - 1) as f64;
        let (below, above) = (place.floor() as usize, place.ceil() as usize);
        ratios[below] + (ratios[above] - ratios[below]) * (place - below as f64)
    };
    Some((at(0.5), at(0.25), at(0.75)))
}

/// GetUsageSummary while usage arrives (its title is completed with the rate and tail).
const DURING_INGEST: &str =
    "GetUsageSummary (raw rows after the watermark, during ingest), same open loop";

/// Runs the whole bench; see the module docs.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let admin_url = std::env::var("DATABASE_URL").context("DATABASE_URL (make bench sets it)")?;
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL (make bench sets it)")?;
    let scale = options.scale;
    let measure = scale.measure();
    let wide = Load::closed(options.connections, options.in_flight, measure);
    // Password hashing is bounded by the cores: a narrow load shows its latency.
    let narrow = Load::closed(2, 2, measure);
    let progress = |what: &str| eprintln!("strata bench: {what}");

    progress("limits: argon2id, hello-world, pgbench, redis-benchmark");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (hash, hash_round) = argon2_hash(cores).await?;
    let hello = Hello::start().await?;
    let hello_channels = load::connect(&hello.url(), wide.connections).await?;
    let hello_report = load::run(&wide, &hello_channels, |c, _| hello::call(c)).await;
    drop(hello);
    let pgbench_url = fresh_database(&admin_url, &format!("{}_pgbench", options.database)).await?;
    pgbench_run(&pgbench_url, &["-i", "-q", "-s", "10"]).await?;
    let seconds = scale.pgbench_seconds().to_string();
    let clients = options.connections.to_string();
    let select = run_pgbench(
        &pgbench_url,
        &[
            "-S", "-M", "prepared", "-c", &clients, "-j", "2", "-T", &seconds,
        ],
    )
    .await?;
    let tpcb = run_pgbench(
        &pgbench_url,
        &["-M", "prepared", "-c", &clients, "-j", "2", "-T", &seconds],
    )
    .await?;
    let limits = Limits {
        hello_rps: hello_report.rate(),
        pgbench_select_tps: select,
        pgbench_tpcb_tps: tpcb,
        redis_get_rps: redis_get(&redis_url, options.connections * 4).await?,
        argon2_hash_ms: ms(hash),
        argon2_hashes_per_second: cores as f64 / hash.as_secs_f64().max(f64::EPSILON),
        argon2_round_ms: ms(hash_round),
    };

    progress("starting the suite");
    let database_url = fresh_database(&admin_url, &options.database).await?;
    std::fs::create_dir_all(&options.out)?;
    let usage_key = usage_shipper_key(&database_url).await?;
    let suite = Suite::start(
        &database_url,
        &redis_url,
        &options.out.join("suite.log"),
        UNREACHED_RATE_LIMIT,
        "suite",
        &[("STRATA_CONTENT_USAGE_KEY", &usage_key)],
    )
    .await?;
    let channels = load::connect(&suite.url, wide.connections).await?;
    let probe = Probe::new(suite.pid, &database_url, &redis_url).await?;
    let profiler = match options.flamegraphs {
        true => Some(flamegraph::Profiler::new(&options.out).await?),
        false => None,
    };
    let hello_row = row(
        "hello-world (limit)",
        &hello_report,
        &limits,
        Limit::Hello,
        "",
        Target::None,
    );
    let run_id = std::process::id();

    let seeded = scale.seeded_rows();
    if seeded > 0 {
        progress(&format!("seeding {seeded} usage rows"));
        let config = strata_storage::DbConfig::new(
            database_url.clone(),
            "strata-bench-seed",
            strata_storage::Environment::Development,
        );
        let started = Instant::now();
        let options = strata_analytics::seed::SeedOptions {
            rows: seeded,
            ..strata_analytics::seed::SeedOptions::default()
        };
        // One writer per core: index maintenance, not the network, is the bottleneck.
        strata_analytics::seed::seed(&config, options, cores, |done, total| {
            eprint!(
                "\r{}",
                super::progress_bar(done, total, "rows", started.elapsed())
            );
        })
        .await
        .context("seeding usage")?;
        eprintln!();
    }

    progress("seeding users");
    let mut users = Vec::new();
    for i in 0..8 {
        let email = format!("seed{i}.{run_id}@bench.example");
        users.push(sign_up(channels[0].clone(), email).await?);
    }
    let users = Arc::new(users);
    let mut bench = Recorder {
        probe,
        only: options.only.iter().map(|o| o.to_lowercase()).collect(),
        channels: channels.clone(),
        limits: &limits,
        rows: vec![hello_row],
        profiler,
    };

    progress("SignUp, Login");
    // The auth issue's targets are for one call at a time; the rows under load show what
    // concurrency adds.
    let one = Load::closed(1, 1, measure);
    // Each row signs up its own addresses (`prefix`), so none is taken twice.
    let sign_ups = move |prefix: &'static str| {
        move |c, seq| async move {
            sign_up(c, format!("{prefix}{seq}.{run_id}@bench.example"))
                .await
                .map(|_| ())
        }
    };
    let p95 = |ms| Target::p(0.95, Duration::from_millis(ms));
    let hash_plus_10 = Target::HashPlus {
        quantile: 0.5,
        plus: Duration::from_millis(10),
    };
    bench
        .measure(
            "SignUp, one at a time",
            &one,
            Limit::Argon2,
            "2,364 ms",
            hash_plus_10.clone(),
            sign_ups("u"),
        )
        .await;
    bench
        .measure(
            "SignUp",
            &narrow,
            Limit::Argon2,
            "2,364 ms",
            p95(200),
            sign_ups("n"),
        )
        .await;
    let logins = |users: Arc<Vec<User>>| move |c, seq| login(c, nth(&users, seq).email.clone());
    let single = bench
        .measure(
            "Login, one at a time",
            &one,
            Limit::Argon2,
            "707 ms",
            hash_plus_10,
            logins(Arc::clone(&users)),
        )
        .await;
    let report = bench
        .measure(
            "Login",
            &narrow,
            Limit::Argon2,
            "707 ms",
            p95(100),
            logins(Arc::clone(&users)),
        )
        .await;
    if let Some(last) = bench.last("Login") {
        last.operation = format!(
            "Login ({:.0} logins/s per core)",
            report.rate() / cores as f64
        );
    }
    // "5 concurrent logins finish within 3× one login": as in the report the figure comes
    // from, a call here is five logins sent at once, timed until the last one answered.
    // Five hashes on this machine's cores take ceil(5 / cores) rounds.
    let within_three_logins = if single.ok > 0 {
        Target::Latency {
            quantile: 0.5,
            at_most: single.quantile(0.5) * 3,
            why: "3× one login",
        }
    } else {
        Target::None
    };
    let u = Arc::clone(&users);
    let five_logins = "5 concurrent logins (all five answered)";
    bench
        .measure(
            five_logins,
            &one,
            Limit::Argon2,
            "2,989 ms",
            within_three_logins,
            move |c: Channel, seq| {
                let five: Vec<_> = (0..5)
                    .map(|i| login(c.clone(), nth(&u, seq * 5 + i).email.clone()))
                    .collect();
                async move { futures_util::future::try_join_all(five).await.map(|_| ()) }
            },
        )
        .await;
    // Its ratio compares hashes: five per call. Its floor on this machine is the hashing
    // alone: full rounds of as many hashes at once as there are cores (each as long as
    // such a round took, measured with the limits), then the hashes left over.
    let (rounds, left) = (5 / cores, 5 % cores);
    let floor = rounds as f64 * limits.argon2_round_ms
        + match left {
            0 => 0.0,
            1 => limits.argon2_hash_ms,
            _ => limits.argon2_round_ms,
        };
    if let Some(last) = bench.last(five_logins) {
        last.ratio = last.ratio.map(|r| r * 5.0);
        last.target.push_str(&format!(
            "; hashing alone takes {floor:.1} ms here ({rounds} rounds of {cores} at once, then {left})"
        ));
    }

    progress("VerifyToken, RefreshToken, GetProfile");
    let (admin_token, key) = usage_writer_key(&channels[0], &database_url, run_id).await?;
    let u = Arc::clone(&users);
    let verify = move |c, seq| verify_token(c, nth(&u, seq).token.clone());
    bench
        .measure(
            "VerifyToken, one at a time",
            &one,
            Limit::Hello,
            "11 ms",
            Target::p(0.5, Duration::from_micros(500)),
            verify.clone(),
        )
        .await;
    bench
        .measure(
            "VerifyToken",
            &wide,
            Limit::Hello,
            "11 ms",
            Target::Ratio(0.5),
            verify,
        )
        .await;
    // Local verification, as every service's auth layer does it: the suite's keys
    // (GetJwks), the bench users' tokens, a thread per core.
    let jwks = AuthServiceClient::new(channels[0].clone())
        .get_jwks(pb::GetJwksRequest {})
        .await?
        .into_inner()
        .keys;
    let keys = PublicKeys::from_jwks(jwks);
    let settings = TokenSettings::default();
    let threads = Load::closed(cores, 1, measure);
    let refused = |e: TokenError| tonic::Status::unauthenticated(e.to_string());
    let within_100us = Target::p(0.5, Duration::from_micros(100));
    bench
        .measure_in_process(
            "local token verification, afresh (in-process)",
            &threads,
            "11 ms",
            within_100us.clone(),
            |seq| {
                verify_access_token(&nth(&users, seq).token, &keys, &settings)
                    .map(|_| ())
                    .map_err(refused)
            },
        )
        .await;
    let remembered = VerifiedTokens::new(10_000, Duration::from_secs(60));
    bench
        .measure_in_process(
            "local token verification, remembered (in-process)",
            &threads,
            "11 ms",
            within_100us,
            |seq| {
                remembered
                    .verify(&nth(&users, seq).token, &keys, &settings)
                    .map(|_| ())
                    .map_err(refused)
            },
        )
        .await;
    // Each worker refreshes its own session's token, which rotates on every call.
    let mut sessions = Vec::new();
    for i in 0..narrow.workers() {
        let email = format!("r{i}.{run_id}@bench.example");
        sessions.push(Mutex::new(
            sign_up(channels[0].clone(), email).await?.refresh_token,
        ));
    }
    let sessions = Arc::new(sessions);
    let refresh = move |c, seq: u64| {
        let sessions = Arc::clone(&sessions);
        async move {
            let slot = &sessions[(seq as usize) % sessions.len()];
            let token = slot.lock().map(|t| t.clone()).unwrap_or_default();
            let answer = AuthServiceClient::new(c)
                .refresh_token(pb::RefreshTokenRequest {
                    refresh_token: token,
                })
                .await?
                .into_inner();
            if let (Ok(mut t), Some(credentials)) = (slot.lock(), answer.credentials) {
                *t = credentials.refresh_token;
            }
            Ok(())
        }
    };
    bench
        .measure(
            "RefreshToken, one at a time",
            &one,
            Limit::PgbenchTpcb,
            "266 ms",
            Target::All(vec![
                Target::p(0.5, Duration::from_millis(3)),
                Target::p(0.99, Duration::from_millis(10)),
            ]),
            refresh.clone(),
        )
        .await;
    bench
        .measure(
            "RefreshToken",
            &narrow,
            Limit::PgbenchTpcb,
            "266 ms",
            p95(50),
            refresh,
        )
        .await;
    // GetProfile reads many accounts, the popular ones far more often (Zipf), as
    // a real population is read; the caches' hit rates are reported with it.
    let profile_users = scale.profile_users();
    progress(&format!("signing up {profile_users} users for GetProfile"));
    let readers: Vec<User> = futures_util::stream::iter(0..profile_users)
        .map(|i| sign_up(channels[0].clone(), format!("p{i}.{run_id}@bench.example")))
        .buffer_unordered(cores.max(2))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let readers = Arc::new(readers);
    let zipf = Arc::new(Zipf::new(readers.len(), PROFILE_ZIPF));
    let profile = {
        let (readers, zipf) = (Arc::clone(&readers), Arc::clone(&zipf));
        move |c, seq| get_profile(c, readers[zipf.pick(seq)].token.clone())
    };
    let distribution = format!(
        "{profile_users} users, Zipf s={PROFILE_ZIPF} (the most read {:.0} % of calls)",
        100.0 * zipf.cumulative[0]
    );
    bench
        .measure(
            "GetProfile, one at a time",
            &one,
            Limit::PgbenchSelect,
            "0.6 ms",
            Target::p(0.5, Duration::from_millis(1)),
            profile.clone(),
        )
        .await;
    let counts = auth_cache_counts(&channels[0], &admin_token).await?;
    let report = bench
        .measure(
            "GetProfile",
            &wide,
            Limit::Hello,
            "0.6 ms",
            Target::Ratio(0.5),
            profile.clone(),
        )
        .await;
    let rates = hit_rates(counts, auth_cache_counts(&channels[0], &admin_token).await?);
    if let Some(row) = bench.last("GetProfile") {
        row.operation = format!("GetProfile ({distribution}; {rates})");
    }
    let cached_rate = report.rate();
    // The same calls arriving at half that rate, on a schedule: the latency a client sees
    // at a load the suite sustains, queueing included.
    let half = wide.at_rate((cached_rate / 2.0).max(1.0));
    bench
        .measure(
            "GetProfile, open loop at half its closed-loop rate",
            &half,
            Limit::Hello,
            "0.6 ms",
            Target::None,
            profile.clone(),
        )
        .await;
    // The load the p99 target is stated at: one caller per connection (16 by default), one
    // call each in flight (the open
    // loops above also count the load generator's 1 ms timer in their latencies).
    let callers = Load::closed(options.connections, 1, measure);
    bench
        .measure(
            "GetProfile, one call in flight per connection",
            &callers,
            Limit::Hello,
            "0.6 ms",
            Target::p(0.99, Duration::from_millis(3)),
            profile.clone(),
        )
        .await;
    rate_limit_overhead(
        &mut bench,
        &database_url,
        &redis_url,
        &options.out,
        &wide,
        profile,
    )
    .await?;

    progress("RecordUsage");
    let record = Recorder::usage(Arc::clone(&users), Arc::new(key), run_id);
    let batches = record.clone();
    let producers = Load::closed(4, 1, measure);
    let report = bench
        .measure(
            "RecordUsage (1,000 per call)",
            &producers,
            Limit::PgbenchTpcb,
            "",
            Target::Events {
                per_call: 1000.0,
                at_least: 50_000.0,
            },
            move |c, seq| batches(c, seq, 1000, "batch"),
        )
        .await;
    if let Some(last) = bench.last("RecordUsage (1,000 per call)") {
        last.operation = format!(
            "RecordUsage (1,000 per call: {:.0} events/s)",
            report.rate() * 1000.0
        );
    }

    progress("GetUsageSummary, ListUsage, mixed");
    // RecordUsage just filled this month's partition. On a running system autovacuum
    // analyzes it within a minute or so; here the reads would come first and find no
    // statistics (the planner then reads a user's whole week by time to find the few
    // late rows after the watermark, 34 ms instead of about 2). Measure the steady state.
    let seed_config = strata_storage::DbConfig::new(
        database_url.clone(),
        "strata-bench-analyze",
        strata_storage::Environment::Development,
    );
    strata_analytics::seed::analyze_ledger(&seed_config)
        .await
        .context("analyzing the ledger")?;
    // Everything folded: the summary reads the view and an empty tail.
    refresh_views(&channels[0], &admin_token).await?;
    let u = Arc::clone(&users);
    let summaries = move |c, seq| usage_summary(c, nth(&u, seq).token.clone());
    let report = bench
        .measure(
            "GetUsageSummary (from the view)",
            &wide,
            Limit::PgbenchSelect,
            "200 ms",
            Target::None,
            summaries.clone(),
        )
        .await;
    // Latency at a load it sustains, before and while the tail grows: the same schedule,
    // a quarter of the closed-loop rate, so the ingest below has room beside it.
    let quarter = wide.at_rate((report.rate() / 4.0).max(1.0));
    bench
        .measure(
            "GetUsageSummary (from the view), open loop at a quarter of its closed-loop rate",
            &quarter,
            Limit::PgbenchSelect,
            "200 ms",
            p95(20),
            summaries.clone(),
        )
        .await;
    // The same reads, on the same schedule, while a producer writes 10,000 events/s in
    // batches of 1,000: rows arrive after the watermark all along and the scheduler folds
    // them as they pile up. A sampler records the longest tail (rows after the watermark)
    // the reads had to add.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (record, channel, stop) = (record.clone(), channels[0].clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            let (mut seq, mut events, mut failed) = (0u64, 0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                every.tick().await;
                match record(channel.clone(), seq, 1000, "tail").await {
                    Ok(()) => events += 1000,
                    Err(_) => failed += 1,
                }
                seq += 1;
            }
            (events, failed)
        })
    };
    let sampler = {
        let (url, stop) = (database_url.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url).await.ok()?;
            // Its count must not load the server it measures: without this it was JIT
            // compiled, about 50 ms of CPU each time.
            conn.batch_execute("SET jit = off").await.ok()?;
            let mut longest = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tail: Calls = diesel_async::RunQueryDsl::get_result(
                    diesel::sql_query(
                        "SELECT count(*) AS n FROM analytics.token_usage WHERE received_at > \
                         (SELECT watermark FROM analytics.view_state \
                          WHERE view_name = 'user_token_summary')",
                    ),
                    &mut conn,
                )
                .await
                .ok()?;
                longest = longest.max(tail.n);
                // Counting the tail costs the server about 25 ms: once a second keeps
                // the sampler's share of the two cores near 1 %.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Some(longest)
        })
    };
    let started = Instant::now();
    bench
        .measure(
            DURING_INGEST,
            &quarter,
            Limit::PgbenchSelect,
            "200 ms",
            p95(20),
            summaries,
        )
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (events, failed) = producer.await.unwrap_or((0, 1));
    let longest = sampler.await.ok().flatten();
    let seconds = started.elapsed().as_secs_f64().max(f64::EPSILON);
    if let Some(last) = bench.last(DURING_INGEST) {
        last.operation = format!(
            "GetUsageSummary (raw rows after the watermark, during ingest of {:.0} events/s; \
             longest tail {} rows), same open loop",
            events as f64 / seconds,
            longest.map_or("unknown".to_owned(), |n| n.to_string()),
        );
        if failed > 0 {
            *last.errors.entry("IngestFailed".into()).or_default() += failed;
        }
    }
    let u = Arc::clone(&users);
    let lists = move |c, seq| list_usage(c, nth(&u, seq).token.clone());
    bench
        .measure(
            "ListUsage (50 per page)",
            &wide,
            Limit::PgbenchSelect,
            "",
            Target::None,
            lists,
        )
        .await;
    let u = Arc::clone(&users);
    let mixed = move |c, seq| {
        let token = nth(&u, seq).token.clone();
        let writes = record.clone();
        async move {
            match seq % 10 {
                0..=3 => get_profile(c, token).await,
                4..=5 => usage_summary(c, token).await,
                6..=7 => list_usage(c, token).await,
                _ => writes(c, seq, 10, "mixed").await,
            }
        }
    };
    bench
        .measure(
            "mixed: 80 % reads, 20 % RecordUsage of 10",
            &wide,
            Limit::PgbenchSelect,
            "",
            Target::None,
            mixed,
        )
        .await;
    content::run(
        &mut bench,
        &channels[0],
        &database_url,
        scale,
        &wide,
        run_id,
        cores,
    )
    .await?;
    conversations::run(
        &mut bench,
        &channels[0],
        &database_url,
        &redis_url,
        &options.out,
        &usage_key,
        scale,
        &wide,
        run_id,
        cores,
    )
    .await?;
    workflows::run(&mut bench, &channels[0], &wide, run_id).await?;
    let rows = bench.rows;

    suite.stop().await;
    let machine = Machine::describe(cores, &database_url, &redis_url).await;
    write_report(&options.out, scale, &machine, &limits, &rows)?;
    progress(&format!(
        "report: {}",
        options.out.join("report.md").display()
    ));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.errors.is_empty() || r.ok == 0)
        .map(|r| r.operation.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("scenarios with failed calls: {}", failed.join(", "));
    }
    Ok(())
}

/// What the figures were measured on.
#[derive(Debug, Clone, serde::Serialize)]
struct Machine {
    cores: usize,
    memory_gib: f64,
    cpu: String,
    kernel: String,
    postgres: String,
    redis: String,
    strata: String,
}

impl Machine {
    async fn describe(cores: usize, database_url: &str, redis_url: &str) -> Self {
        let proc_field = |file: &str, key: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let memory_kib: f64 = proc_field("/proc/meminfo", "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        #[derive(diesel::QueryableByName)]
        struct Version {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let postgres = async {
            let mut conn = AsyncPgConnection::establish(database_url).await.ok()?;
            diesel_async::RunQueryDsl::get_result::<Version>(
                diesel::sql_query("SELECT current_setting('server_version') AS v"),
                &mut conn,
            )
            .await
            .ok()
            .map(|r| r.v)
        }
        .await
        .unwrap_or_default();
        let redis = async {
            let client = redis::Client::open(redis_url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned())
        }
        .await
        .unwrap_or_default();
        Self {
            cores,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            cpu: proc_field("/proc/cpuinfo", "model name"),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            postgres,
            redis,
            strata: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

fn write_report(
    out: &Path,
    scale: Scale,
    machine: &Machine,
    limits: &Limits,
    rows: &[Row],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let mut md = String::from("# Strata under load\n\n");
    md.push_str(&format!(
        "Machine: {} cores ({}), {:.1} GiB, Linux {}; PostgreSQL {}, Redis {}, Strata {} \
         (release build). Chart: `report.svg`.\n\n",
        machine.cores,
        machine.cpu,
        machine.memory_gib,
        machine.kernel,
        machine.postgres,
        machine.redis,
        machine.strata,
    ));
    let cores = machine.cores;
    md.push_str(&format!(
        "Scale `{scale:?}`, {cores} cores, measured {}. Limits in the same run: tonic \
         hello-world {:.0} RPC/s; `pgbench -S -M prepared` {:.0} TPS; `pgbench` TPC-B {:.0} \
         TPS; `redis-benchmark` GET {:.0} /s; one argon2id hash {:.1} ms ({:.1} hashes/s on \
         all cores; {cores} at once take {:.1} ms).\n\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        limits.hello_rps,
        limits.pgbench_select_tps,
        limits.pgbench_tpcb_tps,
        limits.redis_get_rps,
        limits.argon2_hash_ms,
        limits.argon2_hashes_per_second,
        limits.argon2_round_ms,
    ));
    md.push_str("| operation | load | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | calls/s | limit | ratio | errors | earlier report | target | met |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let errors = if r.errors.is_empty() {
            "0".to_owned()
        } else {
            r.errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            r.operation,
            r.load,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.rate,
            r.limit,
            r.ratio.map_or(String::new(), |x| format!("{x:.2}")),
            errors,
            r.reference,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "failed calls",
            },
        ));
    }
    md.push_str("\n## Resources per scenario\n\nCPU seconds used during the scenario (warmup included), the suite's memory after it, and statements per call.\n\n| operation | CPU suite s | CPU PostgreSQL s | CPU Redis s | CPU load generator s | RSS MiB | peak RSS MiB | SQL/call | Redis/call |\n|---|---|---|---|---|---|---|---|---|\n");
    let per_call = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    for r in rows {
        if let Some(x) = &r.resources {
            md.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |\n",
                r.operation,
                x.cpu_suite_s,
                x.cpu_postgres_s,
                x.cpu_redis_s,
                x.cpu_bench_s,
                x.rss_mib,
                x.peak_rss_mib,
                per_call(x.sql_per_call),
                per_call(x.redis_per_call),
            ));
        }
    }
    let profiled: Vec<&Row> = rows.iter().filter(|r| r.flamegraph.is_some()).collect();
    if !profiled.is_empty() {
        md.push_str(
            "\n## Flame graphs of the suite\n\nSampled with `perf` while each scenario ran \
             (`--flamegraphs`). Sampling costs the suite CPU: compare the figures of runs \
             without it.\n\n",
        );
        for r in profiled {
            let svg = r.flamegraph.as_deref().unwrap_or_default();
            md.push_str(&format!("- {}: [`{svg}`]({svg})\n", r.operation));
        }
    }
    std::fs::write(out.join("report.md"), md)?;
    std::fs::write(out.join("report.svg"), chart(rows))?;
    let json = serde_json::json!({
        "scale": format!("{scale:?}"),
        "cores": cores,
        "machine": machine,
        "limits": limits,
        "rows": rows,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

/// `text` safe inside SVG text.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The report as an SVG chart, one line per operation: p50, p95 and p99 latency on a log
/// scale (left), and throughput as a share of its limit (right, with the target marked
/// where there is one; failed scenarios in red).
fn chart(rows: &[Row]) -> String {
    const LABEL: f64 = 430.0;
    const PANEL: f64 = 420.0;
    const GAP: f64 = 40.0;
    const LINE: f64 = 30.0;
    const TOP: f64 = 60.0;
    let width = LABEL + PANEL * 2.0 + GAP * 2.0;
    let height = TOP + LINE * rows.len() as f64 + 50.0;
    let (lo, hi) = (0.01_f64.log10(), 10_000_f64.log10());
    let lat_x = |ms: f64| LABEL + PANEL * ((ms.max(0.01).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let ratio_left = LABEL + PANEL + GAP * 2.0;
    let max_ratio = rows
        .iter()
        .filter_map(|r| r.ratio)
        .fold(1.0_f64, f64::max)
        .min(4.0);
    let ratio_x = |x: f64| ratio_left + PANEL * (x / max_ratio).clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LABEL}\" y=\"20\" font-weight=\"bold\">latency, ms (log scale): \
         p50 <tspan fill=\"#264653\">■</tspan> p95 <tspan fill=\"#e76f51\">■</tspan> \
         p99 <tspan fill=\"#f4a261\">■</tspan></text>\n\
         <text x=\"{ratio_left}\" y=\"20\" font-weight=\"bold\">throughput ÷ its limit \
         (| target)</text>\n"
    );
    for decade in [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0] {
        let x = lat_x(decade);
        svg.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">{decade}</text>\n",
            TOP - 20.0,
            height - 40.0,
            TOP - 26.0
        ));
    }
    let mut tick = 0.0;
    while tick <= max_ratio + 1e-9 {
        let x = ratio_x(tick);
        svg.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">{tick:.1}</text>\n",
            TOP - 20.0,
            height - 40.0,
            TOP - 26.0
        ));
        tick += if max_ratio > 2.0 { 0.5 } else { 0.25 };
    }
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + LINE * i as f64;
        let failed = r.met.is_none();
        let mut label: String = r.operation.chars().take(68).collect();
        if label.len() < r.operation.len() {
            label.push('…');
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"{}>{} ({})</text>\n",
            LABEL - 8.0,
            y + 15.0,
            if failed { " fill=\"#c00\"" } else { "" },
            xml(&label),
            xml(&r.load)
        ));
        for (ms, color, offset) in [
            (r.p99_ms, "#f4a261", 0.0),
            (r.p95_ms, "#e76f51", 6.0),
            (r.p50_ms, "#264653", 12.0),
        ] {
            if ms > 0.0 {
                svg.push_str(&format!(
                    "<rect x=\"{LABEL}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"/>\n",
                    y + 2.0 + offset / 2.0,
                    lat_x(ms) - LABEL,
                    22.0 - offset
                ));
            }
        }
        if let Some(ratio) = r.ratio {
            let color = match r.met {
                Some(true) => "#2a9d8f",
                Some(false) => "#e9c46a",
                None => "#c00",
            };
            svg.push_str(&format!(
                "<rect x=\"{ratio_left}\" y=\"{}\" width=\"{:.1}\" height=\"20\" fill=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{ratio:.2} of {}</text>\n",
                y + 3.0,
                ratio_x(ratio) - ratio_left,
                ratio_x(ratio) + 4.0,
                y + 17.0,
                xml(&r.limit)
            ));
        }
        if let Some(target) = r.target_ratio {
            let x = ratio_x(target);
            svg.push_str(&format!(
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"black\" stroke-width=\"2\"/>\n",
                y,
                y + 26.0
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_and_urls_are_read() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 0.2 ms\ntps = 61234.5 (without initial connection time)\n";
        assert_eq!(pgbench_tps(out), Some(61234.5));
        assert_eq!(
            with_database("postgres://u@h:1/strata", "strata_bench"),
            "postgres://u@h:1/strata_bench"
        );
        assert_eq!(
            with_database("postgres://u@h:1/strata?sslmode=disable", "x"),
            "postgres://u@h:1/x"
        );
    }

    #[test]
    fn each_on_turn_is_set_against_the_off_turns_around_it() {
        // A machine speeding up: every "on" turn is 5 % below its neighbours' mean, and
        // one turn hit by noise does not move the median.
        let rates = [
            100.0, 99.75, 110.0, 109.25, 120.0, 60.0, 130.0, 128.25, 140.0,
        ];
        let Some((median, low, high)) = overhead_ratio(&rates) else {
            panic!("every turn did something")
        };
        assert!((median - 0.95).abs() < 1e-9, "{median}");
        assert!(low < 0.95 && (high - 0.95).abs() < 1e-9, "{low} {high}");
        // A turn that did nothing gives no figure.
        assert_eq!(overhead_ratio(&[100.0, 0.0, 100.0]), None);
        assert_eq!(overhead_ratio(&[100.0]), None);
    }
}
