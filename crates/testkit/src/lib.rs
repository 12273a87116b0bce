//! Test support for every Strata crate: real PostgreSQL, real Redis, real servers.
//!
//! - [`TestDb`]: a fresh database per test, cloned (`CREATE DATABASE … TEMPLATE`) from a
//!   template migrated once per migration set (keyed by the migrations' fingerprint, built
//!   under an advisory lock so parallel test processes build it once), dropped on drop.
//! - [`TestRedis`]: a Redis handle whose keys carry a per-test prefix, deleted on drop.
//! - [`TestServer`]: any set of services on `127.0.0.1:0` with a connected channel.
//! - [`TestApp`] ([`app`]): a server that hands out users, admins and API keys through the
//!   auth service's API, so no test reaches into the auth crate to mint credentials.
//! - [`plans`]: the generic plans of the SQL that store code really sends, for index tests.
//! - [`TcpProxy`]: a proxy in front of PostgreSQL that a test can cut, to see what the
//!   services do while the database is unreachable.
//! - [`raw`]: calls with hand-made request bytes (invalid UTF-8, malformed protobuf).
//! - [`redis_server::RedisServer`]: a Redis of a test's own, to stop, restart or flush.
//! - [`cluster::TestCluster`]: a PostgreSQL cluster of a test's own (`initdb` into a
//!   temporary directory), to crash and restart.
//! - [`otlp::Collector`]: an OTLP trace collector in the test's process.
//!
//! Connection details come from `DATABASE_URL` / `REDIS_URL`, or from
//! `.strata/infra.env` written by `deploy/local/infra.sh up` (what `make test` runs).
//! This crate panics on setup failures: it is only ever used from tests.

pub mod app;
pub mod bench;
pub mod cluster;
pub mod otlp;
pub mod plans;
pub mod raw;
pub mod redis_server;

pub use app::{TestApp, TestUser};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use strata_runtime::ServerConfig;
use strata_runtime::config::Secret;
use strata_runtime::redis::RedisHandle;
use strata_runtime::{AppContext, ServerBuilder};
use strata_storage::migrate::Migrations;
use strata_storage::{Db, DbConfig, Environment};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

/// Admin token every [`TestServer`] accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Advisory-lock key serializing template builds across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x7374_7261_7461_2e74;

static TRACING: Once = Once::new();

/// Installs a test-friendly subscriber once per process (`RUST_LOG`, default `warn`).
pub fn init_tracing() {
    TRACING.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// `name` from the environment, else from `.strata/infra.env` at the workspace root.
pub fn env_or_infra(name: &str) -> Option<String> {
    if let Ok(value) = std::env::var(name)
        && !value.is_empty()
    {
        return Some(value);
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.strata/infra.env");
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix('=')?;
        Some(value.trim_matches('\'').trim_matches('"').to_owned())
    })
}

fn base_database_url() -> String {
    env_or_infra("DATABASE_URL")
        .unwrap_or_else(|| panic!("DATABASE_URL is not set and .strata/infra.env is missing: run `make infra-up` (or `make test`)"))
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority_end..].find('/') {
        Some(slash) => &head[..authority_end + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"))
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    conn.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Makes sure the template for `migrations` exists; returns its name.
async fn ensure_template(base_url: &str, migrations: &Migrations) -> String {
    let template = format!("strata_tmpl_{}", &migrations.fingerprint()[..16]);
    let mut admin = connect(base_url).await;
    sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("template lock: {e}"));
    let existing: Vec<Name> = sql_query(
        "SELECT datname::text AS datname FROM pg_database WHERE datname LIKE 'strata\\_tmpl\\_%'",
    )
    .load(&mut admin)
    .await
    .unwrap_or_else(|e| panic!("list templates: {e}"));
    if !existing.iter().any(|n| n.datname == template) {
        // Built under another name and renamed when complete, so a crash mid-build never
        // leaves a half-migrated template behind.
        let building = format!("{template}_build");
        exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
        )
        .await;
        exec(&mut admin, &format!("CREATE DATABASE {building}")).await;
        {
            let mut conn = connect(&with_database(base_url, &building)).await;
            migrations
                .run(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("migrating the test template: {e}"));
        }
        exec(
            &mut admin,
            &format!("ALTER DATABASE {building} RENAME TO {template}"),
        )
        .await;
        // Templates of older migration sets are dead weight.
        for old in existing
            .iter()
            .filter(|n| n.datname != template && !n.datname.ends_with("_build"))
        {
            exec(
                &mut admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", old.datname),
            )
            .await;
        }
    }
    sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("template unlock: {e}"));
    template
}

/// A database of its own for one test. Dropped (with `FORCE`) when this value drops.
pub struct TestDb {
    name: String,
    url: String,
    base_url: String,
    db: Db,
}

impl TestDb {
    /// A fresh database with every embedded migration applied.
    pub async fn new() -> Self {
        let migrations =
            Migrations::embedded().unwrap_or_else(|e| panic!("embedded migrations: {e}"));
        Self::from_template(&migrations).await
    }

    /// A fresh database with nothing applied, for migration tests.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn from_template(migrations: &Migrations) -> Self {
        Self::create(Some(migrations)).await
    }

    async fn create(migrations: Option<&Migrations>) -> Self {
        init_tracing();
        let base_url = base_database_url();
        let name = format!("strata_test_{}", uuid::Uuid::new_v4().simple());
        let template = match migrations {
            Some(migrations) => {
                format!(" TEMPLATE {}", ensure_template(&base_url, migrations).await)
            }
            None => String::new(),
        };
        let mut admin = connect(&base_url).await;
        exec(&mut admin, &format!("CREATE DATABASE {name}{template}")).await;
        // The cluster keeps its durability defaults (`make run` keeps data in it); a test
        // database gives up only its own last commits on a crash, for speed.
        exec(
            &mut admin,
            &format!("ALTER DATABASE {name} SET synchronous_commit = off"),
        )
        .await;
        Self::wrap(base_url, name)
    }

    fn wrap(base_url: String, name: String) -> Self {
        let url = with_database(&base_url, &name);
        let mut config = DbConfig::new(url.clone(), "strata-test", Environment::Development);
        config.min_idle = 0;
        Self {
            db: Db::new(config),
            name,
            url,
            base_url,
        }
    }

    /// Connection string of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool on this database (development defaults, no idle connections kept).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A new connection outside the pool.
    pub async fn connect(&self) -> AsyncPgConnection {
        connect(&self.url).await
    }

    /// A connection to the server's maintenance database (not this test's), for
    /// superuser actions such as `pg_terminate_backend`.
    pub async fn admin_connection(&self) -> AsyncPgConnection {
        connect(&self.base_url).await
    }

    /// A [`ServerConfig`] for this database: listens on `127.0.0.1:0`, accepts
    /// [`ADMIN_TOKEN`], re-checks health every 100 ms, does not migrate (the template
    /// already is), and has rate limits no test reaches ([`TEST_RATE_LIMIT`] per minute;
    /// every test's calls come from one address; the rate-limit tests set their own).
    pub fn server_config(&self, service: &str) -> ServerConfig {
        let mut config = ServerConfig::for_database(service, &self.url);
        config.rate_limits =
            strata_runtime::layers::RateLimits::all(TEST_RATE_LIMIT, Duration::from_secs(60));
        config.admin_token = Some(Secret::new(ADMIN_TOKEN.to_owned()));
        config.health_interval = Duration::from_millis(100);
        config.migrate_on_start = false;
        config.db.min_idle = 0;
        config
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let base_url = self.base_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; the DROP needs a runtime of its own.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = AsyncPgConnection::establish(&base_url).await {
                    let _ = conn
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Calls per minute of every rate limit of [`TestDb::server_config`] (and of the servers the
/// end-to-end tests and the bench start, through `STRATA_RATE_LIMIT_*`).
pub const TEST_RATE_LIMIT: u32 = 10_000_000;

/// A Redis handle whose keys all start with a per-test prefix; they are deleted on drop.
pub struct TestRedis {
    url: String,
    handle: RedisHandle,
}

impl TestRedis {
    /// A handle on the test Redis with a fresh prefix.
    pub fn new() -> Self {
        let url = env_or_infra("REDIS_URL").unwrap_or_else(|| {
            panic!("REDIS_URL is not set and .strata/infra.env is missing: run `make infra-up`")
        });
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        let handle = RedisHandle::connect_lazy(&url, prefix, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("redis: {e}"));
        Self { url, handle }
    }

    /// Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefixed handle.
    pub fn handle(&self) -> &RedisHandle {
        &self.handle
    }

    /// Waits (up to 10 s) until `key` (without the prefix) exists: e.g. until an auth
    /// service has vouched that Redis holds every revocation, so that verifiers trust it.
    pub async fn wait_for(&self, key: &str) {
        let key = self.handle.key(key);
        for _ in 0..200 {
            let exists: Result<bool, _> = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut self.handle.connection())
                .await;
            if exists.unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{key} never appeared in Redis");
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let pattern = format!("{}*", self.handle.prefix());
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// A server running in this process on `127.0.0.1:0`.
pub struct TestServer {
    addr: SocketAddr,
    channel: Channel,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), strata_runtime::Error>>>,
}

impl TestServer {
    /// Starts `config`'s server with the services `add` registers (the admin service,
    /// health and reflection are always there), and connects a channel to it.
    pub async fn start(config: ServerConfig, add: impl FnOnce(&mut ServerBuilder)) -> Self {
        let ctx = AppContext::new(config).unwrap_or_else(|e| panic!("server context: {e}"));
        let mut builder = ServerBuilder::new(ctx);
        add(&mut builder);
        let bound = builder.bind().await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = bound.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(bound.serve(async {
            let _ = rx.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("endpoint: {e}"))
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to test server: {e}"));
        Self {
            addr,
            channel,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A channel to the server; clone it into generated clients.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Graceful shutdown; returns the server's result.
    pub async fn stop(mut self) -> Result<(), strata_runtime::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| panic!("server task: {e}")),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Copies the directory tree `from` to `to` (e.g. the workspace's migrations, so a test
/// can edit its own copy).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

/// The workspace's `migrations/` folder.
pub fn migrations_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|_| panic!("a token is valid metadata"));
    request.metadata_mut().insert("authorization", value);
    request
}

/// The number in response metadata `name` (`x-query-time-ms`, …); panics when absent.
pub fn metadata_f64(metadata: &tonic::metadata::MetadataMap, name: &str) -> f64 {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number"))
}

/// Collects everything a `tracing` subscriber writes, to assert on log lines.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// A subscriber writing here, without colours, at `level` and above; install it with
    /// `tracing::subscriber::set_default` on a current-thread runtime.
    pub fn subscriber(
        &self,
        level: tracing::Level,
    ) -> impl tracing::Subscriber + Send + Sync + use<> {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Adds `authorization: Bearer <ADMIN_TOKEN>` to a request.
pub fn admin_request<T>(message: T) -> tonic::Request<T> {
    bearer(message, ADMIN_TOKEN)
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones.
pub struct TcpProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Proxies a new local port to the host and port of `database_url`.
    pub async fn start(database_url: &str) -> Self {
        let authority = database_url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default())
            .unwrap_or_default();
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, hp)| hp)
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy addr: {e}"));
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let open = Arc::clone(&open);
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !AtomicBool::load(&open, Ordering::SeqCst) {
                        let _ = inbound.shutdown().await;
                        continue;
                    }
                    let host_port = host_port.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&host_port).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    if let Ok(mut list) = connections.lock() {
                        list.push(task);
                    }
                }
            })
        };
        Self {
            addr,
            open,
            connections,
            accept,
        }
    }

    /// `database_url` rewritten to go through this proxy.
    pub fn url(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url
            .split_once("://")
            .unwrap_or(("postgres", database_url));
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_len);
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}{tail}", self.addr)
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        if let Ok(mut list) = self.connections.lock() {
            for task in list.drain(..) {
                task.abort();
            }
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:1/strata", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            with_database("postgres://u@h:1/strata?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}
