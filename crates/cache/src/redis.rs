//! The Redis handle: one multiplexed, auto-reconnecting connection per process.
//!
//! Redis is an accelerator, never a source of truth: callers treat every error as "Redis
//! is away" and fall back (to Postgres, to per-process limits, or to refusing, for
//! revocation checks). Every key goes through [`RedisHandle::key`] so tests can isolate
//! themselves with a prefix. Callers report what they saw with [`RedisHandle::failed`] and
//! [`RedisHandle::answered`]: the handle logs one warning when an outage starts and one
//! line when it ends, however many calls fall back in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A cheaply clonable Redis connection with a key prefix.
#[derive(Clone)]
pub struct RedisHandle {
    manager: ConnectionManager,
    client: redis::Client,
    prefix: String,
    down: Arc<AtomicBool>,
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
            manager: ConnectionManager::new_lazy_with_config(client.clone(), config)?,
            client,
            prefix: prefix.into(),
            down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Records that `what` could not use Redis: the first failure of an outage is logged
    /// as a warning (with `what` and the error), later ones only at debug level.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        if self.down.swap(true, Ordering::AcqRel) {
            tracing::debug!(error = %error, "{what}: redis unavailable");
        } else {
            tracing::warn!(error = %error, "redis unavailable ({what}); falling back until it answers again");
        }
    }

    /// Records that Redis answered: ends the outage, if there was one, with one log line.
    pub fn answered(&self) {
        if self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("redis answers again");
        }
    }

    /// Whether the last use of Redis failed (an outage is under way).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
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

    /// Runs `cmd`, recording the outcome ([`RedisHandle::failed`] with `what`, or
    /// [`RedisHandle::answered`]).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let result = cmd.query_async(&mut self.connection()).await;
        self.record(what, result)
    }

    /// Runs `pipeline` (one round trip), recording the outcome.
    pub async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let result = pipeline.query_async(&mut self.connection()).await;
        self.record(what, result)
    }

    /// Runs `invocation` of a Lua script, recording the outcome.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let result = invocation.invoke_async(&mut self.connection()).await;
        self.record(what, result)
    }

    fn record<T>(&self, what: &str, result: redis::RedisResult<T>) -> Result<T, RedisError> {
        match result {
            Ok(value) => {
                self.answered();
                Ok(value)
            }
            Err(e) => {
                // A script error or a wrong type is Redis answering, not Redis away.
                if is_unavailable(&e) {
                    self.failed(what, &e);
                } else {
                    self.answered();
                }
                Err(e.into())
            }
        }
    }
}

/// Whether `e` says Redis could not be reached (as opposed to an answer that is an error).
fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}
