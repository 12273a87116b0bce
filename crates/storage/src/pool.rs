//! The connection pool: bb8 over diesel-async, with every connection set up the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

use crate::config::DbConfig;
use crate::error::Error;
use crate::instrument::{QueryInstrumentation, unscoped};
use crate::retry::{RetryPolicy, retry};

type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

/// A connection checked out of the pool; returns to it on drop.
pub type PooledConn<'a> = bb8::PooledConnection<'a, Manager>;

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
}

/// Handle to the database: a cheaply clonable pool plus its configuration.
#[derive(Clone)]
pub struct Db {
    pool: bb8::Pool<Manager>,
    config: Arc<DbConfig>,
    retry: RetryPolicy,
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
            // The validation query is the pool's business, not the request's: keep it out
            // of the request's query count.
            RecyclingMethod::CustomFunction(Box::new(|conn| {
                unscoped(async move { conn.batch_execute("SELECT 1").await }).boxed()
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
            config,
            retry: RetryPolicy::default(),
        }
    }

    /// The resolved configuration.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// Checks out a connection, waiting at most the checkout timeout.
    pub async fn get(&self) -> Result<PooledConn<'_>, Error> {
        Ok(self.pool.get().await?)
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
        }
    }
}

/// Opens one connection and applies the session settings every Strata connection has.
async fn establish(url: &str, config: &DbConfig) -> Result<AsyncPgConnection, ConnectionError> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    // One round trip for both settings; the values are an integer and a sanitized name.
    conn.batch_execute(&format!(
        "SET statement_timeout = {}; SET application_name = '{}'",
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
