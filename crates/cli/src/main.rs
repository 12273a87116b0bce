//! The `strata` command: serve services; run, inspect, revert and generate migrations;
//! operate the auth data; seed synthetic usage.
//!
//! Exit codes: 0 success; 1 failure (message on stderr); 2 usage error; `migrate status`
//! also exits 3 when migrations are pending and 4 when an applied migration drifted or
//! the database has migrations this binary does not know.

mod bench;
mod demo;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use strata_analytics::config::AnalyticsSettings;
use strata_analytics::seed::SeedOptions;
use strata_analytics::views::{Contention, Outcome, Refresher, ViewName};
use strata_auth::config::AuthSettings;
use strata_runtime::AppContext;
use strata_runtime::config::Settings;
use strata_runtime::server::{ServerBuilder, shutdown_signal};
use strata_storage::migrate::{Migrations, State};
use strata_storage::pool::dedicated_connection;

/// mimalloc instead of glibc's malloc: a unary call allocates and frees a few hundred
/// small buffers (HTTP/2 frames, headers, protobuf, SQL rows) across worker threads, and
/// glibc's arenas spent about an eighth of the suite's CPU on it under load (`perf`, bench
/// GetProfile at 16×32).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `message` with `authorization: Bearer <token>`: how the bench's and the demo's calls
/// to the suite carry their credentials.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// `migrate status` exit code when migrations are pending.
const EXIT_PENDING: u8 = 3;
/// `migrate status` exit code when an applied migration changed or is unknown.
const EXIT_DRIFT: u8 = 4;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: the backend of AI-agent platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a service set over gRPC (config from the environment; see README).
    Serve {
        /// Which services: `all` (every service), one service (`auth`, `content`, `analytics`), or
        /// `admin` (only the admin service, health and reflection).
        #[arg(default_value = "all", value_parser = service_names())]
        service: String,
        /// On a database without accounts, create a demo admin and a demo user (with
        /// printed passwords) and demo data for every service; print how to log in and
        /// commands to try. What `make run` does; refused when STRATA_ENV=production.
        #[arg(long)]
        demo: bool,
    },
    /// Manage database migrations (DATABASE_URL).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Operate the auth service's data (DATABASE_URL).
    Auth {
        #[command(subcommand)]
        action: AuthAction,
    },
    /// Measure the suite under load beside this machine's limits (DATABASE_URL,
    /// REDIS_URL); writes report.md and report.json.
    Bench {
        /// `smoke` (seconds, proves the harness), `quick` or `full`.
        #[arg(long, value_enum, default_value = "quick")]
        scale: bench::Scale,
        /// Where the report goes.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Connections of the throughput scenarios.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Calls in flight on each.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// The databases it creates afresh: this name and `<name>_pgbench`.
        #[arg(long, default_value = "strata_bench")]
        database: String,
        /// Run only the scenarios whose name contains one of these (case-insensitive);
        /// the limits and the set-up still run. Repeatable.
        #[arg(long)]
        only: Vec<String>,
        /// Also sample the suite with `perf` under each scenario and draw its flame graph
        /// into `<out>/flamegraphs/` (needs `perf`; the figures then include its cost).
        #[arg(long)]
        flamegraphs: bool,
    },
    /// Print every setting (environment variable) with its default and meaning, as
    /// Markdown; README's configuration tables are this output.
    Settings,
    /// Load synthetic data for benchmarks and demos (DATABASE_URL).
    Seed {
        #[command(subcommand)]
        what: SeedWhat,
    },
}

#[derive(Subcommand)]
enum SeedWhat {
    /// LLM token usage: rows generated inside PostgreSQL in chunks (every index and an
    /// idempotency key per row, as real ingest writes), then the views are refreshed.
    Usage {
        /// Rows to insert.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Distinct users (power-law: user 0 is the heaviest).
        #[arg(long, default_value_t = 2_000)]
        users: u32,
        /// Distinct projects.
        #[arg(long, default_value_t = 20_000)]
        projects: u32,
        /// Spread the calls over the last this many days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Do not fold the new rows into the summary views afterwards.
        #[arg(long)]
        no_refresh: bool,
    },
    /// Projects (with files, likes and views), prompts and agents, generated inside
    /// PostgreSQL a chunk at a time, one writer per core; owners and likes follow power
    /// laws. Trending is ranked and the tables analyzed afterwards.
    Content {
        /// Projects to insert.
        #[arg(long, default_value_t = 10_000)]
        projects: u64,
        /// Files of each project.
        #[arg(long, default_value_t = 10)]
        files_per_project: u32,
        /// Agents to insert.
        #[arg(long, default_value_t = 10_000)]
        agents: u64,
        /// Prompts to insert.
        #[arg(long, default_value_t = 10_000)]
        prompts: u64,
        /// Distinct owners (power law: owner 0 holds about a tenth of everything).
        #[arg(long, default_value_t = 1_000)]
        owners: u32,
        /// A user id that takes the heaviest owner's place not yet taken (repeatable), so
        /// that someone who can sign in owns seeded objects.
        #[arg(long = "owner")]
        known_owners: Vec<uuid::Uuid>,
    },
    /// Conversations and their messages, generated inside PostgreSQL a batch at a time,
    /// one writer per core: skewed sizes (one conversation of --largest messages per
    /// million, owned by the heaviest owner, and a long tail), owners on a power law.
    Conversations {
        /// Conversations to insert.
        #[arg(long, default_value_t = 10_000)]
        conversations: u64,
        /// Messages over all of them.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Messages of the largest conversations.
        #[arg(long, default_value_t = 100_000)]
        largest: u64,
        /// Distinct owners (power law).
        #[arg(long, default_value_t = 1_000)]
        owners: u32,
        /// A user id that takes the heaviest owner's place not yet taken (repeatable).
        #[arg(long = "owner")]
        known_owners: Vec<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum AuthAction {
    /// Give an existing user the ADMIN role (how the first admin is made); effective from
    /// the user's next sign-in or refresh.
    GrantAdmin {
        /// The user's email.
        email: String,
    },
    /// Make sure a service account (an admin nobody signs in to) exists and has a live API
    /// key with the given scopes: how one service calls another for every user (content's
    /// usage shipper: `--scope usage:write`, then STRATA_CONTENT_USAGE_KEY). Prints the
    /// secret, or with `--file` keeps the key the file holds while it still works and
    /// otherwise writes a new one there (readable by its owner only).
    ServiceKey {
        /// The account's email.
        #[arg(long)]
        email: String,
        /// The key's name (and the account's display name when it is created).
        #[arg(long)]
        name: String,
        /// A scope of the key, e.g. `usage:write` (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Keep the key in this file if it still works; else write a new one there.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Retire the current token-signing key and create a new one; replicas switch within a
    /// minute, and tokens signed with the old key stay valid until they expire.
    RotateKeys,
    /// Seal every signing key again under the current key-encryption key
    /// (STRATA_AUTH_KEY_ENCRYPTION_KEY), opening those sealed with a previous one
    /// (STRATA_AUTH_PREVIOUS_KEY_ENCRYPTION_KEYS): the last step of a KEK rotation.
    ResealKeys,
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (under an advisory lock).
    Run(Source),
    /// Show applied, pending and drifted migrations; exit 3 if pending, 4 if drifted.
    Status(Source),
    /// Revert the newest applied migration with its down.sql.
    Revert(Source),
    /// Create migrations/<timestamp>_<name>/{up,down}.sql.
    Generate {
        /// Name in snake_case, e.g. `create_users`.
        name: String,
        /// Directory holding the migration folders.
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct Source {
    /// Read migrations from this directory instead of those embedded in the binary.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Source {
    fn migrations(&self) -> anyhow::Result<Migrations> {
        Ok(match &self.dir {
            Some(dir) => Migrations::from_dir(dir)?,
            None => Migrations::embedded()?,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { service, demo } => serve(&service, demo).await,
        Command::Migrate { action } => migrate(action).await,
        Command::Auth { action } => auth(action).await,
        Command::Seed { what } => seed(what).await,
        Command::Bench {
            scale,
            out,
            connections,
            in_flight,
            database,
            only,
            flamegraphs,
        } => {
            if !database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                bail!("--database: lowercase letters, digits and '_' only");
            }
            bench::run(bench::Options {
                scale,
                out,
                connections,
                in_flight,
                database,
                only,
                flamegraphs,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Settings => {
            std::io::stdout()
                .lock()
                .write_all(settings_doc().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The documentation of every setting, derived from each crate's `SETTINGS`: the database's,
/// then the server's (runtime first, then each service).
fn settings_doc() -> String {
    use strata_storage::settings::table;
    let server = strata_runtime::config::SETTINGS
        .iter()
        .chain(strata_auth::config::SETTINGS)
        .chain(strata_analytics::config::SETTINGS)
        .chain(strata_content::config::SETTINGS);
    format!(
        "Database:\n\n{}\nServer:\n\n{}",
        table(strata_storage::config::SETTINGS),
        table(server)
    )
}

/// A service of the suite: its name on the command line and how it joins a server.
type Register = fn(&mut ServerBuilder, &Settings) -> anyhow::Result<()>;

/// Every service `strata serve` knows, in the order they are added.
const SERVICES: &[(&str, Register)] = &[
    ("auth", register_auth),
    ("content", register_content),
    ("analytics", register_analytics),
];

/// The values `strata serve` accepts: `all`, each service, and `admin` (only the admin
/// service, health and reflection).
fn service_names() -> Vec<&'static str> {
    let mut names = vec!["all"];
    names.extend(SERVICES.iter().map(|(name, _)| *name));
    names.push("admin");
    names
}

fn register_auth(builder: &mut ServerBuilder, settings: &Settings) -> anyhow::Result<()> {
    let config = AuthSettings::load()
        .context("reading configuration")?
        .resolve(
            builder.context().config.tokens.clone(),
            settings.db.strata_env,
        )
        .context("configuration")?;
    strata_auth::register(builder, config)?;
    Ok(())
}

fn register_content(builder: &mut ServerBuilder, _settings: &Settings) -> anyhow::Result<()> {
    let config = strata_content::config::ContentSettings::load()
        .context("reading configuration")?
        .resolve()
        .context("configuration")?;
    strata_content::register(builder, config);
    Ok(())
}

fn register_analytics(builder: &mut ServerBuilder, _settings: &Settings) -> anyhow::Result<()> {
    let config = AnalyticsSettings::load()
        .context("reading configuration")?
        .resolve()
        .context("configuration")?;
    strata_analytics::register(builder, config);
    Ok(())
}

async fn serve(service: &str, demo: bool) -> anyhow::Result<ExitCode> {
    let settings = Settings::load().context("reading configuration")?;
    if demo {
        demo::check_allowed(
            settings.db.strata_env == Some(strata_storage::config::Environment::Production),
            service,
        )?;
    }
    let config = settings.resolve(service).context("configuration")?;
    let _telemetry = strata_runtime::telemetry::init(&config)?;
    let ctx = AppContext::new(config)?;
    let mut builder = ServerBuilder::new(ctx);
    for (_, register) in SERVICES
        .iter()
        .filter(|(name, _)| service == "all" || service == *name)
    {
        register(&mut builder, &settings)?;
    }
    let ctx = builder.context();
    let bound = builder.bind().await.context("starting the server")?;
    let addr = bound.local_addr();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "strata serve {service}: listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(listen.addr = %addr, "serving");
    let server = tokio::spawn(bound.serve(shutdown_signal()));
    let demo = if demo {
        match demo::prepare(&ctx, addr).await {
            Ok(demo) => demo,
            Err(e) => {
                eprintln!(
                    "error: the demo data could not be created ({e:#}); `make clean-db && make run` starts afresh"
                );
                None
            }
        }
    } else {
        None
    };
    drop(ctx);
    let mut out = std::io::stdout().lock();
    out.write_all(demo::banner(addr, service, demo.as_ref(), chrono::Utc::now()).as_bytes())?;
    out.flush()?;
    drop(out);
    server.await.context("the server task")??;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn auth(action: AuthAction) -> anyhow::Result<ExitCode> {
    let settings = Settings::load().context("reading configuration")?;
    let config = settings.db.resolve("strata-cli").context("configuration")?;
    let mut conn = dedicated_connection(&config)
        .await
        .context("connecting to DATABASE_URL")?;
    let mut out = std::io::stdout().lock();
    match action {
        AuthAction::GrantAdmin { email } => {
            let Some(user) =
                strata_auth::store::grant_admin(&mut conn, &email, chrono::Utc::now()).await?
            else {
                bail!("no user has the email {email:?}");
            };
            // Running replicas cache accounts: tell them, when they share a Redis.
            let server = settings.resolve("cli").context("configuration")?;
            let context = strata_runtime::AppContext::new(server)?;
            if context.redis.is_some() {
                context
                    .caches
                    .wait_listening(std::time::Duration::from_secs(2))
                    .await;
                if !strata_auth::cached::forget_user(&context.caches, context.db.clone(), user)
                    .await
                {
                    eprintln!(
                        "warning: Redis could not be reached; running auth replicas may read the old role for up to 5 minutes"
                    );
                }
            }
            writeln!(
                out,
                "{email} is now an admin (from their next sign-in or token refresh)"
            )?;
        }
        AuthAction::ServiceKey {
            email,
            name,
            scopes,
            file,
        } => {
            let kept = match &file {
                Some(path) => std::fs::read_to_string(path)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
                None => None,
            };
            let key = strata_auth::service_accounts::ensure_key(
                &mut conn,
                &email,
                &name,
                &scopes,
                kept.as_deref(),
                chrono::Utc::now(),
            )
            .await?;
            match &file {
                None => writeln!(out, "{}", key.secret)?,
                Some(path) if key.created => {
                    write_private(path, &key.secret)?;
                    writeln!(out, "new API key of {email} written to {}", path.display())?;
                }
                Some(path) => writeln!(out, "the API key in {} still works", path.display())?,
            }
        }
        AuthAction::RotateKeys => {
            let auth_config = auth_config(&settings)?;
            let ring = strata_auth::keys::rotate(
                &mut conn,
                auth_config.access_ttl,
                &auth_config.key_encryption,
            )
            .await?;
            writeln!(out, "signing with key {} from now on", ring.signer.kid)?;
        }
        AuthAction::ResealKeys => {
            let auth_config = auth_config(&settings)?;
            let resealed =
                strata_auth::keys::reseal(&mut conn, &auth_config.key_encryption).await?;
            writeln!(
                out,
                "{resealed} signing keys sealed again under key-encryption key {}",
                auth_config.key_encryption.current().id()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `secret` to `path`, readable and writable by its owner only.
fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// The auth settings for a command run outside a server.
fn auth_config(settings: &Settings) -> anyhow::Result<strata_auth::AuthConfig> {
    AuthSettings::load()
        .context("reading configuration")?
        .resolve(
            strata_runtime::identity::TokenSettings::default(),
            settings.db.strata_env,
        )
        .context("configuration")
}

async fn seed(what: SeedWhat) -> anyhow::Result<ExitCode> {
    let (rows, users, projects, days, no_refresh) = match what {
        SeedWhat::Usage {
            rows,
            users,
            projects,
            days,
            no_refresh,
        } => (rows, users, projects, days, no_refresh),
        SeedWhat::Content {
            projects,
            files_per_project,
            agents,
            prompts,
            owners,
            known_owners,
        } => {
            let options = strata_content::seed::SeedOptions {
                projects,
                files_per_project,
                agents,
                prompts,
                owners,
                known_owners,
                ..strata_content::seed::SeedOptions::default()
            };
            return seed_content(options).await;
        }
        SeedWhat::Conversations {
            conversations,
            messages,
            largest,
            owners,
            known_owners,
        } => {
            let options = strata_content::seed_conversations::ConversationSeed {
                conversations,
                messages,
                largest,
                owners,
                known_owners,
            };
            return seed_conversations(options).await;
        }
    };
    if rows == 0 || users == 0 || projects == 0 || !(1..=366).contains(&days) {
        bail!("--rows, --users and --projects must be positive and --days 1 to 366");
    }
    let settings = Settings::load().context("reading configuration")?;
    let config = settings
        .db
        .resolve("strata-seed")
        .context("configuration")?;
    let options = SeedOptions {
        rows,
        users,
        projects,
        days,
        ..SeedOptions::default()
    };
    let started = std::time::Instant::now();
    let mut err = std::io::stderr().lock();
    // One writer per core: index maintenance, not the network, is the bottleneck.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    strata_analytics::seed::seed(&config, options, workers, |done, total| {
        let _ = write!(
            err,
            "\r{}",
            progress_bar(done, total, "rows", started.elapsed())
        );
        let _ = err.flush();
    })
    .await
    .context("seeding usage")?;
    let _ = writeln!(err);
    drop(err);
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "inserted {rows} usage rows in {:.1} s ({:.0} rows/s)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    if !no_refresh {
        let refresher = Refresher::new(config, std::time::Duration::ZERO, "strata seed");
        for view in ViewName::ALL {
            match refresher
                .refresh(
                    view,
                    Contention::Wait(std::time::Duration::from_secs(600)),
                    None,
                )
                .await?
            {
                Outcome::Refreshed {
                    row_count,
                    duration,
                    ..
                } => writeln!(
                    out,
                    "refreshed {} in {:.1} s ({row_count} rows)",
                    view.as_str(),
                    duration.as_secs_f64()
                )?,
                other => writeln!(out, "{}: {other:?}", view.as_str())?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `strata seed content`.
async fn seed_content(options: strata_content::seed::SeedOptions) -> anyhow::Result<ExitCode> {
    if options.owners == 0 || options.known_owners.len() > options.owners as usize {
        bail!("--owners must be positive and at least the number of --owner ids");
    }
    if options.files_per_project > 100_000 {
        bail!("--files-per-project is at most 100000 (a project's file limit)");
    }
    let settings = Settings::load().context("reading configuration")?;
    let config = settings
        .db
        .resolve("strata-seed")
        .context("configuration")?;
    let started = std::time::Instant::now();
    let mut err = std::io::stderr().lock();
    // One writer per core: index maintenance, not the network, is the bottleneck.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let seeded = strata_content::seed::seed(&config, &options, workers, |done, total| {
        let _ = write!(
            err,
            "\r{}",
            progress_bar(done, total, "items", started.elapsed())
        );
        let _ = err.flush();
    })
    .await
    .context("seeding content")?;
    let _ = writeln!(err);
    drop(err);
    writeln!(
        std::io::stdout().lock(),
        "inserted {} projects ({} files, {} likes), {} prompts and {} agents in {:.1} s",
        seeded.projects,
        seeded.files,
        seeded.likes,
        seeded.prompts,
        seeded.agents,
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `strata seed conversations`.
async fn seed_conversations(
    options: strata_content::seed_conversations::ConversationSeed,
) -> anyhow::Result<ExitCode> {
    if options.conversations == 0
        || options.messages < options.conversations
        || options.largest == 0
        || options.owners == 0
        || options.known_owners.len() > options.owners as usize
    {
        bail!(
            "--conversations, --largest and --owners must be positive, --messages at least --conversations, and --owners at least the number of --owner ids"
        );
    }
    let settings = Settings::load().context("reading configuration")?;
    let config = settings
        .db
        .resolve("strata-seed")
        .context("configuration")?;
    let started = std::time::Instant::now();
    let mut err = std::io::stderr().lock();
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let seeded = strata_content::seed_conversations::seed_conversations(
        &config,
        &options,
        workers,
        |done, total| {
            let _ = write!(
                err,
                "\r{}",
                progress_bar(done, total, "messages", started.elapsed())
            );
            let _ = err.flush();
        },
    )
    .await
    .context("seeding conversations")?;
    let _ = writeln!(err);
    drop(err);
    writeln!(
        std::io::stdout().lock(),
        "inserted {} conversations with {} messages (the largest {}) in {:.1} s",
        seeded.conversations,
        seeded.messages,
        seeded.largest,
        started.elapsed().as_secs_f64()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `[#####-----]  45.0%  4500000/10000000 rows  120000 rows/s  ETA 46 s`
fn progress_bar(done: u64, total: u64, unit: &str, elapsed: std::time::Duration) -> String {
    const WIDTH: u64 = 30;
    let total = total.max(1);
    let filled = usize::try_from(done.min(total) * WIDTH / total).unwrap_or(0);
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let eta = if done == 0 {
        "-".to_owned()
    } else {
        format!("{:.0}", (total - done.min(total)) as f64 / rate)
    };
    format!(
        "[{}{}] {:>5.1}%  {done}/{total} {unit}  {rate:.0} {unit}/s  ETA {eta} s ",
        "#".repeat(filled),
        "-".repeat(usize::try_from(WIDTH).unwrap_or(0) - filled),
        done as f64 * 100.0 / total as f64,
    )
}

async fn migrate(action: MigrateAction) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if let MigrateAction::Generate { name, dir } = &action {
        let folder = generate(dir, name, chrono::Utc::now())?;
        writeln!(out, "created {}", folder.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    let settings = Settings::load().context("reading configuration")?;
    let config = settings.db.resolve("strata-cli").context("configuration")?;
    let mut conn = dedicated_connection(&config)
        .await
        .context("connecting to DATABASE_URL")?;
    match action {
        MigrateAction::Run(source) => {
            let applied = source.migrations()?.run(&mut conn).await?;
            if applied.is_empty() {
                writeln!(out, "migrations are up to date")?;
            }
            for version in applied {
                writeln!(out, "applied {version}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateAction::Revert(source) => {
            match source.migrations()?.revert_last(&mut conn).await? {
                Some(version) => writeln!(out, "reverted {version}")?,
                None => writeln!(out, "nothing to revert")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateAction::Status(source) => {
            let status = source.migrations()?.status(&mut conn).await?;
            for entry in &status.entries {
                let state = match &entry.state {
                    State::Applied { applied_at } => {
                        format!("applied  {}", applied_at.format("%Y-%m-%d %H:%M:%S"))
                    }
                    State::Pending => "pending".to_owned(),
                    State::Drifted { applied_at, .. } => {
                        format!(
                            "DRIFTED  {} (file changed after it was applied)",
                            applied_at.format("%Y-%m-%d %H:%M:%S")
                        )
                    }
                    State::Unknown { applied_at } => {
                        format!(
                            "UNKNOWN  {} (applied, not in this binary)",
                            applied_at.format("%Y-%m-%d %H:%M:%S")
                        )
                    }
                };
                writeln!(out, "{}  {:<40} {state}", entry.version, entry.name)?;
            }
            if !status.drifted().is_empty() || !status.unknown().is_empty() {
                Ok(ExitCode::from(EXIT_DRIFT))
            } else if !status.pending().is_empty() {
                Ok(ExitCode::from(EXIT_PENDING))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        MigrateAction::Generate { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// Writes `<dir>/<YYYY-MM-DD-HHMMSS>_<name>/{up,down}.sql` and returns the folder.
fn generate(dir: &Path, name: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("migration name {name:?} must be snake_case: lowercase letters, digits and '_'");
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a directory (run from the repository root or pass --dir)",
            dir.display()
        );
    }
    let folder = dir.join(format!("{}_{name}", now.format("%Y-%m-%d-%H%M%S")));
    if folder.exists() {
        bail!("{} already exists", folder.display());
    }
    std::fs::create_dir(&folder).with_context(|| format!("creating {}", folder.display()))?;
    std::fs::write(
        folder.join("up.sql"),
        format!("-- {name}: forward migration. Keep it additive when it touches a live table.\n"),
    )?;
    std::fs::write(
        folder.join("down.sql"),
        format!("-- {name}: undo everything up.sql does.\n"),
    )?;
    Ok(folder)
}

#[cfg(test)]
mod tests {
    /// README's configuration tables are exactly what `strata settings` prints, so a
    /// setting added, renamed or re-documented in code cannot leave them stale.
    #[test]
    fn readme_documents_every_setting_as_the_code_defines_it() {
        let readme = include_str!("../../../README.md");
        let doc = super::settings_doc();
        assert!(
            readme.contains(&doc),
            "README.md's configuration tables differ from the code's settings; \
             replace them with the output of `strata settings`:\n\n{doc}"
        );
    }
}
