//! The connection pool: bb8 over diesel-async, with every connection set up the same way.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::DbConfig;
use crate::error::Error;
use crate::instrument::{QueryInstrumentation, unscoped};
use crate::retry::{ErrorClass, RetryPolicy, retry};

type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

/// A connection checked out of the pool; returns to it on drop, and then lets the next
/// waiter in line have one.
pub struct PooledConn<'a> {
    // Field order is drop order: the connection goes back before the turn is handed on,
    // so the next in line finds it idle.
    conn: bb8::PooledConnection<'a, Manager>,
    _turn: SemaphorePermit<'a>,
}

impl Deref for PooledConn<'_> {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        &self.conn
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}

/// Pool occupancy, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Open connections.
    pub connections: u32,
    /// Idle connections.
    pub idle: u32,
    /// Connections checked out.
    pub in_use: u32,
    /// Configured maximum.
    pub max_size: u32,
    /// Checkouts waiting in line.
    pub waiting: u32,
}

/// Handle to the database: a cheaply clonable pool plus its configuration.
///
/// Checkouts queue first come, first served (bb8 alone lets a newcomer take a connection
/// just returned while earlier callers keep waiting, so under load a few calls wait until
/// the checkout timeout): a fair semaphore with one permit per connection admits them in
/// arrival order, and at most `max_waiting` may queue, so the wait is bounded by the queue
/// rather than by the timeout, and overload is refused at once.
#[derive(Clone)]
pub struct Db {
    pool: bb8::Pool<Manager>,
    turns: Arc<Semaphore>,
    waiting: Arc<AtomicU32>,
    shared: Arc<[tokio::sync::Mutex<Option<Arc<Shared>>>]>,
    next_shared: Arc<AtomicUsize>,
    config: Arc<DbConfig>,
    retry: RetryPolicy,
}

/// A connection many calls use at once.
struct Shared {
    conn: AsyncPgConnection,
    /// A statement found it closed: the next call opens a new one.
    broken: AtomicBool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Builds the pool without waiting for the database: connections open lazily (and
    /// `min_idle` of them in the background), so a service can start, report
    /// `NOT_SERVING`, and recover when the database comes up.
    pub fn new(config: DbConfig) -> Self {
        let config = Arc::new(config);
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        let setup_config = Arc::clone(&config);
        manager_config.custom_setup = Box::new(move |url| {
            let config = Arc::clone(&setup_config);
            let url = url.to_owned();
            async move { establish(&url, &config).await }.boxed()
        });
        manager_config.recycling_method = if config.test_on_checkout {
            let bypass = config.validation_bypass;
            RecyclingMethod::CustomFunction(Box::new(move |conn| {
                async move { validate(conn, bypass).await }.boxed()
            }))
        } else {
            RecyclingMethod::Fast
        };
        let manager = Manager::new_with_config(config.url.expose(), manager_config);
        let pool = bb8::Pool::builder()
            .max_size(config.max_connections)
            .min_idle(Some(config.min_idle))
            .connection_timeout(config.checkout_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .test_on_check_out(config.test_on_checkout)
            .build_unchecked(manager);
        Self {
            pool,
            turns: Arc::new(Semaphore::new(config.max_connections as usize)),
            waiting: Arc::new(AtomicU32::new(0)),
            shared: (0..config.shared_connections)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_shared: Arc::new(AtomicUsize::new(0)),
            config,
            retry: RetryPolicy::default(),
        }
    }

    /// The resolved configuration.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// Checks out a connection, waiting in line at most the checkout timeout; refused at
    /// once when `max_waiting` calls are already in line.
    pub async fn get(&self) -> Result<PooledConn<'_>, Error> {
        let started = Instant::now();
        let turn = match self.turns.try_acquire() {
            Ok(turn) => turn,
            Err(_) => {
                let _in_line = InLine::join(&self.waiting, self.config.max_waiting)?;
                tokio::time::timeout(self.config.checkout_timeout, self.turns.acquire())
                    .await
                    .map_err(|_| Error::PoolTimeout)?
                    .map_err(|_| Error::PoolTimeout)?
            }
        };
        // A turn means a connection is idle or may be opened; bb8 waits only for opening.
        let left = self
            .config
            .checkout_timeout
            .saturating_sub(started.elapsed());
        let conn = tokio::time::timeout(left, self.pool.get())
            .await
            .map_err(|_| Error::PoolTimeout)??;
        Ok(PooledConn { conn, _turn: turn })
    }

    /// Runs `read` on one of the shared connections (`STRATA_DB_SHARED_CONNECTIONS`), which
    /// many calls use at once: tokio-postgres pipelines their statements, so one write and
    /// one read on each side carry many calls' statements instead of one each, and no call
    /// waits for a pool turn. For single statements that find a few rows by key (the
    /// per-call session check): no transactions (a shared reference cannot start one), and
    /// nothing slow, since statements on one connection run one after another. A
    /// connection found closed is replaced and the read runs once more on the new one.
    /// Without shared connections, `read` runs on a pooled one.
    pub async fn shared<T: Send>(
        &self,
        read: impl for<'c> Fn(&'c AsyncPgConnection) -> BoxFuture<'c, diesel::QueryResult<T>>,
    ) -> Result<T, Error> {
        if self.shared.is_empty() {
            let conn = self.get().await?;
            return Ok(read(&conn).await?);
        }
        let slot =
            &self.shared[self.next_shared.fetch_add(1, Ordering::Relaxed) % self.shared.len()];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let shared = self.shared_connection(slot).await?;
            match read(&shared.conn).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let e = Error::from(e);
                    // The connection or the server went away (closed socket, terminated
                    // backend): nothing else will work on this connection.
                    if e.class() != ErrorClass::Transient {
                        return Err(e);
                    }
                    shared.broken.store(true, Ordering::Relaxed);
                    if attempt > 1 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The live connection of `slot`, opened (once, however many wait) when it has none
    /// or its last one was found closed.
    async fn shared_connection(
        &self,
        slot: &tokio::sync::Mutex<Option<Arc<Shared>>>,
    ) -> Result<Arc<Shared>, Error> {
        let mut slot = slot.lock().await;
        if let Some(shared) = slot.as_ref().filter(|s| !s.broken.load(Ordering::Relaxed)) {
            return Ok(Arc::clone(shared));
        }
        let conn = tokio::time::timeout(
            self.config.checkout_timeout,
            establish(self.config.url.expose(), &self.config),
        )
        .await
        .map_err(|_| Error::PoolTimeout)??;
        let shared = Arc::new(Shared {
            conn,
            broken: AtomicBool::new(false),
        });
        *slot = Some(Arc::clone(&shared));
        Ok(shared)
    }

    /// Runs `op` (typically: check out a connection, run a transaction) again on
    /// transient errors, serialization failures and deadlocks, with this pool's retry
    /// policy (see [`crate::retry`]). Only for idempotent or keyed work: an ambiguous
    /// commit is retried too.
    pub async fn retrying<T, E, F, Fut>(&self, operation: &str, op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: crate::retry::Retryable + std::fmt::Display,
    {
        retry(&self.retry, operation, op).await
    }

    /// `SELECT 1` through the pool; returns the round trip including the checkout.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut conn = self.get().await?;
        conn.batch_execute("SELECT 1").await?;
        Ok(started.elapsed())
    }

    /// Current occupancy.
    pub fn state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            connections: state.connections,
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            max_size: self.config.max_connections,
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}

/// A place in the checkout line, given up on drop (served, timed out or cancelled).
struct InLine<'a>(&'a AtomicU32);

impl<'a> InLine<'a> {
    fn join(waiting: &'a AtomicU32, max: u32) -> Result<Self, Error> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Error::PoolSaturated)?;
        Ok(Self(waiting))
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The checkout validation (HikariCP's, in short): a connection whose socket the server
/// closed is refused for free; one whose last query succeeded within `bypass` is trusted
/// (it was working a moment ago, and a validation query would double the round trips of
/// a busy pool); any other runs `SELECT 1`, kept out of the calling request's query count.
async fn validate(conn: &mut AsyncPgConnection, bypass: Duration) -> diesel::QueryResult<()> {
    if conn.is_broken() {
        return Err(diesel::result::Error::BrokenTransactionManager);
    }
    let recent = conn
        .instrumentation()
        .downcast_ref::<QueryInstrumentation>()
        .is_some_and(|i| i.succeeded_within(bypass));
    if recent {
        return Ok(());
    }
    unscoped(async move { conn.batch_execute("SELECT 1").await }).await
}

/// Opens one connection and applies the session settings every Strata connection has.
async fn establish(url: &str, config: &DbConfig) -> Result<AsyncPgConnection, ConnectionError> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    // One round trip for every setting; the values are an integer and a sanitized name.
    // JIT off: it compiles a statement whose estimated cost passes `jit_above_cost`, and
    // Strata's statements are short, so compiling costs more than it saves. It fired on
    // the analytics folds, whose row estimate after the watermark is a guess: 17 to 20
    // functions and 20 to 32 ms of a 120 ms fold of 10,000 rows, every second of ingest.
    conn.batch_execute(&format!(
        "SET statement_timeout = {}; SET application_name = '{}'; SET jit = off",
        config.statement_timeout.as_millis(),
        config.application_name
    ))
    .await
    .map_err(ConnectionError::CouldntSetupConfiguration)?;
    conn.set_instrumentation(QueryInstrumentation::new(config.slow_query));
    Ok(conn)
}

/// Opens a connection outside the pool with the same session settings, for work that must
/// own its session (advisory locks held across statements, migrations).
pub async fn dedicated_connection(config: &DbConfig) -> Result<AsyncPgConnection, Error> {
    Ok(establish(config.url.expose(), config).await?)
}

/// Runs `workers` copies of `worker` to the end (the first error ends them all), calling
/// `progress(done, total)` about twice a second and once at the end: the shape of every
/// bulk load of `strata seed`, each worker on a dedicated connection of its own.
pub async fn run_workers<W, F, E>(
    workers: usize,
    worker: W,
    done: &std::sync::atomic::AtomicU64,
    total: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), E>
where
    W: Fn() -> F,
    F: std::future::Future<Output = Result<(), E>>,
{
    use std::sync::atomic::Ordering;
    let all = futures_util::future::try_join_all((0..workers.max(1)).map(|_| worker()));
    tokio::pin!(all);
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            result = &mut all => {
                result?;
                break;
            }
            _ = ticker.tick() => progress(done.load(Ordering::Relaxed), total),
        }
    }
    progress(done.load(Ordering::Relaxed), total);
    Ok(())
}
