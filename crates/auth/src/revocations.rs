//! Publishing ended sessions to Redis, where every verifier of the suite looks first, so
//! that Redis never is the only record of a revocation and never vouches for more than it
//! holds.
//!
//! - The database is the record: ending a session writes `revoked_at`, and a trigger puts
//!   the session into `auth.revocation_outbox` in the same transaction.
//! - Right after the commit the handler publishes it ([`Revocations::publish`]), so
//!   verifiers see it at once. That can fail (Redis down, out of memory, read-only); the
//!   outbox keeps it, and the publisher withdraws the completeness marker where Redis
//!   still takes a `DEL`.
//! - Every second, each auth replica runs [`Revocations::tick`]:
//!   1. if Redis may have lost data since the last tick (it is another server or
//!      restarted: its `run_id` changed; it evicted keys; the completeness marker is
//!      gone; or the last tick failed, e.g. Redis was down), it withdraws the marker,
//!      writes a fresh epoch key, re-seeds every revocation still inside the access-token
//!      lifetime from `auth.sessions`, drains the outbox, and sets the marker again only
//!      if the epoch key survived (one script, so a wipe during the re-seed is seen);
//!   2. otherwise it drains the outbox (rows are deleted only once Redis acknowledged
//!      them) and renews the marker only if it is still there (`SET … XX`): a marker that
//!      vanished meanwhile means the next tick re-seeds.
//!
//! Verifiers treat a missing revocation key as "live" only while the marker
//! ([`REVOCATIONS_COMPLETE_KEY`]) is present; otherwise they ask the database
//! (`VerifyToken`) or refuse. If no auth replica renews the marker for [`MARKER_TTL`]
//! (every replica down), it expires and verifiers stop trusting Redis: failing closed
//! rather than vouching for revocations nobody checked.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, RunQueryDsl};
use strata_runtime::identity::{REVOCATIONS_COMPLETE_KEY, revoked_session_key};
use strata_runtime::redis::RedisHandle;
use strata_storage::Db;
use uuid::Uuid;

use crate::error::AuthError;

/// How often each replica checks Redis and drains the outbox.
pub const TICK: Duration = Duration::from_secs(1);
/// How long the completeness marker lasts unless renewed: a few rounds, so that Redis
/// stops being trusted soon after no auth replica can vouch for it (a failed write also
/// withdraws it at once, where Redis still takes a `DEL`).
pub const MARKER_TTL: Duration = Duration::from_secs(10);
/// Redis key of the epoch a re-seed writes first and checks last.
const REVOCATIONS_EPOCH_KEY: &str = "revoked:epoch";
/// Sets the marker (KEYS[2] = ARGV[2], expiring in ARGV[3] s) only if the epoch
/// (KEYS[1]) is still ARGV[1]: nothing wiped Redis since the re-seed began.
const VOUCH_IF_EPOCH: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) else return false end";
/// Outbox rows published per statement.
const BATCH: i64 = 1000;

#[derive(QueryableByName)]
struct Revoked {
    #[diesel(sql_type = SqlUuid)]
    session_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    revoked_at: DateTime<Utc>,
}

/// What Redis looked like at the last successful tick.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    run_id: String,
    evicted_keys: u64,
}

/// The publisher. See the module documentation.
#[derive(Debug)]
pub struct Revocations {
    db: Db,
    redis: Option<RedisHandle>,
    // How long after a revocation a token of the session can still be presented: its
    // lifetime plus the clock skew verifiers allow.
    token_lifetime: Duration,
    // `None` until a tick succeeds, and again after one fails: the next must re-seed.
    seen: Mutex<Option<Seen>>,
}

impl Revocations {
    /// A publisher for tokens living `access_ttl`, accepted `leeway` past their expiry.
    pub fn new(db: Db, redis: Option<RedisHandle>, access_ttl: Duration, leeway: Duration) -> Self {
        Self {
            db,
            redis,
            token_lifetime: access_ttl + leeway,
            seen: Mutex::new(None),
        }
    }

    /// How long after `revoked_at` a token of the session could still be presented.
    fn remaining(&self, revoked_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<u64> {
        let lifetime = chrono::Duration::from_std(self.token_lifetime).unwrap_or_default();
        let left = (revoked_at + lifetime - now).num_seconds();
        (left > 0).then(|| u64::try_from(left).unwrap_or(1))
    }

    /// Writes the revocation keys of `sessions`, each expiring when the last token it
    /// could have been issued has expired.
    async fn write(
        &self,
        redis: &RedisHandle,
        sessions: &[(Uuid, DateTime<Utc>)],
    ) -> Result<(), redis::RedisError> {
        let now = Utc::now();
        let mut pipe = redis::pipe();
        let mut any = false;
        for (session, revoked_at) in sessions {
            if let Some(ttl) = self.remaining(*revoked_at, now) {
                pipe.cmd("SET")
                    .arg(redis.key(&revoked_session_key(session)))
                    .arg(1)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
                any = true;
            }
        }
        if any {
            pipe.query_async::<()>(&mut redis.connection()).await?;
        }
        Ok(())
    }

    /// Publishes sessions just revoked (the fast path). A failure is logged and left to
    /// the outbox, from which [`tick`](Self::tick) retries until Redis takes it.
    pub async fn publish(&self, sessions: &[Uuid]) {
        let Some(redis) = &self.redis else {
            return;
        };
        if sessions.is_empty() {
            return;
        }
        let now = Utc::now();
        let revoked: Vec<_> = sessions.iter().map(|s| (*s, now)).collect();
        if let Err(e) = self.write(redis, &revoked).await {
            self.withdraw_marker(redis).await;
            tracing::warn!(
                error = %e,
                sessions = sessions.len(),
                "could not publish revoked sessions yet; retrying from the outbox (verifiers ask the database meanwhile)"
            );
        }
    }

    /// One round: re-seed if Redis may have lost data, drain the outbox, renew the
    /// marker. See the module documentation.
    async fn tick(&self) -> Result<(), AuthError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let result = self.tick_with(redis).await;
        if result.is_err() {
            self.withdraw_marker(redis).await;
            if let Ok(mut seen) = self.seen.lock() {
                *seen = None;
            }
        }
        result
    }

    async fn tick_with(&self, redis: &RedisHandle) -> Result<(), AuthError> {
        let marker = redis.key(REVOCATIONS_COMPLETE_KEY);
        let (server, stats, has_marker): (String, String, bool) = redis::pipe()
            .cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("stats")
            .cmd("EXISTS")
            .arg(&marker)
            .query_async(&mut redis.connection())
            .await
            .map_err(redis_error)?;
        let now_seen = Seen {
            run_id: info_field(&server, "run_id").unwrap_or_default().to_owned(),
            evicted_keys: info_field(&stats, "evicted_keys")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        let last = self.seen.lock().ok().and_then(|s| s.clone());
        let ttl = MARKER_TTL.as_secs();
        let renewed: Option<String> = if !has_marker || last.as_ref() != Some(&now_seen) {
            // Redis may have lost revocations: stop vouching for it at once, write an epoch
            // no other key shares, re-seed, and vouch again only if the epoch survived the
            // re-seed (a wipe meanwhile takes the epoch with it).
            let epoch = Uuid::new_v4().to_string();
            let epoch_key = redis.key(REVOCATIONS_EPOCH_KEY);
            redis::pipe()
                .cmd("DEL")
                .arg(&marker)
                .ignore()
                .cmd("SET")
                .arg(&epoch_key)
                .arg(&epoch)
                .ignore()
                .query_async::<()>(&mut redis.connection())
                .await
                .map_err(redis_error)?;
            self.reseed(redis).await?;
            self.drain(redis).await?;
            redis::Script::new(VOUCH_IF_EPOCH)
                .key(&epoch_key)
                .key(&marker)
                .arg(&epoch)
                .arg(&now_seen.run_id)
                .arg(ttl)
                .invoke_async(&mut redis.connection())
                .await
                .map_err(redis_error)?
        } else {
            // Renew only a marker that is still there: one that vanished since the start of
            // this tick went with whatever removed it, and the next tick re-seeds.
            self.drain(redis).await?;
            redis::cmd("SET")
                .arg(&marker)
                .arg(&now_seen.run_id)
                .arg("XX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut redis.connection())
                .await
                .map_err(redis_error)?
        };
        // Not vouched this round: the marker or the epoch went away meanwhile (a wipe, which
        // took the marker too, or another replica's re-seed, which will vouch itself). The
        // next round decides again from what it finds; nothing to withdraw.
        if renewed.is_none() {
            tracing::debug!("Redis changed during the round; not vouching for it this time");
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(now_seen);
        }
        Ok(())
    }

    /// Stops vouching for Redis (best effort): after a revocation could not be written,
    /// verifiers must not read its absence as "live" until a round has published it.
    async fn withdraw_marker(&self, redis: &RedisHandle) {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(redis.key(REVOCATIONS_COMPLETE_KEY))
            .query_async(&mut redis.connection())
            .await;
    }

    /// Publishes every revocation the database holds that a token could still be
    /// presented for.
    async fn reseed(&self, redis: &RedisHandle) -> Result<(), AuthError> {
        let since =
            Utc::now() - chrono::Duration::from_std(self.token_lifetime).unwrap_or_default();
        let rows: Vec<Revoked> = {
            let mut conn = self.db.get().await?;
            sql_query(
                "SELECT id AS session_id, revoked_at FROM auth.sessions WHERE revoked_at > $1",
            )
            .bind::<Timestamptz, _>(since)
            .load(&mut conn)
            .await?
        };
        let revoked: Vec<_> = rows.iter().map(|r| (r.session_id, r.revoked_at)).collect();
        for chunk in revoked.chunks(usize::try_from(BATCH).unwrap_or(1000)) {
            self.write(redis, chunk).await.map_err(redis_error)?;
        }
        tracing::info!(
            revocations.reseeded = revoked.len(),
            "published every revocation within the access-token lifetime to Redis"
        );
        Ok(())
    }

    /// Publishes and deletes outbox rows, batch by batch; a row is deleted only in the
    /// transaction that saw Redis acknowledge it.
    async fn drain(&self, redis: &RedisHandle) -> Result<(), AuthError> {
        let mut conn = self.db.get().await?;
        loop {
            let batch = conn
                .transaction(async |conn| {
                    let rows: Vec<Revoked> = sql_query(
                        "DELETE FROM auth.revocation_outbox WHERE session_id IN (
                           SELECT session_id FROM auth.revocation_outbox
                            ORDER BY revoked_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                         RETURNING session_id, revoked_at",
                    )
                    .bind::<BigInt, _>(BATCH)
                    .load(conn)
                    .await?;
                    let revoked: Vec<_> =
                        rows.iter().map(|r| (r.session_id, r.revoked_at)).collect();
                    // An error here rolls the deletion back: the rows wait for the next tick.
                    self.write(redis, &revoked).await.map_err(redis_error)?;
                    Ok::<_, AuthError>(rows.len())
                })
                .await?;
            if batch < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                return Ok(());
            }
        }
    }

    /// One round of the `auth.revocations` task (every [`TICK`]): [`tick`](Self::tick)
    /// when Redis is configured. While rounds fail, verifiers ask the database.
    pub async fn round(&self) -> Result<(), AuthError> {
        if self.redis.is_none() {
            return Ok(());
        }
        self.tick().await.map(|_| ())
    }
}

fn redis_error(e: redis::RedisError) -> AuthError {
    AuthError::Redis(e.to_string())
}

/// `field:value` of an `INFO` section.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n";
        assert_eq!(info_field(info, "run_id"), Some("abc123"));
        assert_eq!(info_field(info, "run"), None);
        assert_eq!(info_field("evicted_keys:3\r\n", "evicted_keys"), Some("3"));
    }
}
