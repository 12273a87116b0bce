//! The Redis handle: one multiplexed, auto-reconnecting connection per process.
//!
//! Redis is an accelerator, never a source of truth: callers treat every error as "Redis
//! is away" and fall back (to Postgres, to per-process limits, or to refusing, for
//! revocation checks). Every key goes through [`RedisHandle::key`] so tests can isolate
//! themselves with a prefix.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A cheaply clonable Redis connection with a key prefix.
#[derive(Clone)]
pub struct RedisHandle {
    manager: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Redis could not be used.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(#[from] redis::RedisError);

impl RedisHandle {
    /// Connects lazily: the handle is usable at once and (re)connects in the background,
    /// so a process starts while Redis is down and recovers when it comes back. Commands
    /// time out after `response_timeout`.
    pub fn connect_lazy(
        url: &str,
        prefix: impl Into<String>,
        response_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(response_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Ok(Self {
            manager: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.into(),
        })
    }

    /// `key` with this handle's prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The prefix every key gets.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection to run commands on (clones share one multiplexed socket).
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// `PING`; returns the round trip.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let mut conn = self.connection();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(started.elapsed())
    }
}
