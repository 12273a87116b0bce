//! [`AppContext`]: what every service of one process shares (config, pool, Redis,
//! migrations), built once by the binary and handed to each service's handlers.

use std::time::{Duration, Instant};

use strata_storage::migrate::Migrations;
use strata_storage::{Db, pool::dedicated_connection};

use crate::config::ServerConfig;
use crate::error::Error;
use crate::redis::RedisHandle;
use crate::tasks::TaskBoard;

/// What every service of one process shares.
#[derive(Debug)]
pub struct AppContext {
    /// Resolved configuration.
    pub config: ServerConfig,
    /// Database pool.
    pub db: Db,
    /// Redis, when configured.
    pub redis: Option<RedisHandle>,
    /// The process's caches (two-tier with Redis, in memory only without).
    pub caches: strata_cache::Caches,
    /// The rate limiter (shared through Redis, per process without it).
    pub limiter: strata_ratelimit::Limiter,
    /// Migrations embedded in this binary.
    pub migrations: Migrations,
    /// When the process started.
    pub started_at: Instant,
    /// The background tasks and when each last ran.
    pub tasks: TaskBoard,
    /// `true` once the server began shutting down: long-lived streams end then (telling
    /// their clients where to resume) instead of holding the drain to its grace period.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl AppContext {
    /// Builds the pool, the Redis handle, the caches and the rate limiter; none waits for
    /// its server. The caches' invalidation listener and the limiter's tasks start on the
    /// current tokio runtime.
    pub fn new(config: ServerConfig) -> Result<Self, Error> {
        let db = Db::new(config.db.clone());
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisHandle::connect_lazy(
                    url.expose(),
                    config.redis_prefix.clone(),
                    Duration::from_secs(1),
                )
                .map_err(|e| Error::FailedPrecondition(format!("REDIS_URL: {e}")))?,
            ),
            None => None,
        };
        let caches = strata_cache::Caches::start(redis.clone(), config.cache.clone());
        let limiter = strata_ratelimit::Limiter::new(redis.clone());
        Ok(Self {
            config,
            db,
            redis,
            caches,
            limiter,
            migrations: Migrations::embedded()?,
            started_at: Instant::now(),
            tasks: TaskBoard::default(),
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Applies pending migrations on a dedicated connection (the advisory lock belongs to
    /// its session); returns the versions applied by this call.
    pub async fn migrate(&self) -> Result<Vec<String>, Error> {
        let mut conn = dedicated_connection(&self.config.db).await?;
        Ok(self.migrations.run(&mut conn).await?)
    }
}
