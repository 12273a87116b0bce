//! Session revocations as Redis can tell them, for every verifier of the suite.
//!
//! The auth service writes every ended session to Redis ([`revoked_session_key`], expiring
//! with the access-token lifetime), and keeps a completeness marker
//! ([`REVOCATIONS_COMPLETE_KEY`]) there for as long as it knows Redis holds every
//! revocation still inside that lifetime. Verifiers read both in one round trip
//! ([`redis_revocation`]). Only with the marker present does "no revocation key" mean
//! "live": when the marker is missing (Redis restarted empty, lost keys, or no auth replica
//! vouched for it lately) or Redis cannot answer, [`SessionCheck`] answers
//! [`Revocation::Unknown`] and the database must decide. Every verifier (the auth layer of
//! each service, and the auth service's own `VerifyToken`) goes through [`SessionCheck`].

use std::time::Duration;

use uuid::Uuid;

use super::{Credential, Principal};
use crate::redis::RedisHandle;

/// Redis key marking a session as ended. Written by the auth service, read by verifiers.
pub fn revoked_session_key(session: &Uuid) -> String {
    format!("revoked:session:{session}")
}

/// Redis key present while Redis holds every revocation inside the access-token lifetime.
/// Set (with a short expiry, renewed every second) by the auth service only after it has
/// published every revocation the database records.
pub const REVOCATIONS_COMPLETE_KEY: &str = "revoked:complete";

/// Whether `session` is revoked, as Redis can tell: `None` when Redis is unreachable or
/// cannot vouch for its completeness (no [`REVOCATIONS_COMPLETE_KEY`]); then the database
/// must decide. One round trip.
pub async fn redis_revocation(redis: &RedisHandle, session: &Uuid) -> Option<bool> {
    let answer: Result<(Option<String>, Option<String>), _> = redis::cmd("MGET")
        .arg(redis.key(REVOCATIONS_COMPLETE_KEY))
        .arg(redis.key(&revoked_session_key(session)))
        .query_async(&mut redis.connection())
        .await;
    match answer {
        Ok((Some(_), revoked)) => Some(revoked.is_some()),
        Ok((None, _)) => None,
        Err(e) => {
            tracing::debug!(error = %e, "redis cannot answer a revocation check");
            None
        }
    }
}

/// What Redis says about the session of an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Redis vouches that the session has not been revoked.
    Live,
    /// The session was revoked.
    Revoked,
    /// Redis cannot tell (absent, failing, or not vouching for completeness), or the
    /// credential is not a session's: the database must decide.
    Unknown,
}

/// The revocation check every verifier uses, optionally caching Redis's answers.
#[derive(Debug)]
pub struct SessionCheck {
    redis: Option<RedisHandle>,
    cache: Option<moka::future::Cache<Uuid, bool>>,
}

impl SessionCheck {
    /// A check asking `redis` each time (the auth service, which must see its own
    /// revocations at once).
    pub fn uncached(redis: Option<RedisHandle>) -> Self {
        Self { redis, cache: None }
    }

    /// A check reusing each answer for `ttl` (verifiers of other services).
    pub fn cached(redis: Option<RedisHandle>, ttl: Duration) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(ttl)
            .build();
        Self {
            redis,
            cache: Some(cache),
        }
    }

    /// Whether `principal`'s session is revoked, as far as Redis can tell.
    pub async fn check(&self, principal: &Principal) -> Revocation {
        let Credential::Session { session_id } = principal.credential else {
            return Revocation::Unknown;
        };
        let cached = match &self.cache {
            Some(cache) => cache.get(&session_id).await,
            None => None,
        };
        let revoked = match cached {
            Some(revoked) => revoked,
            None => {
                let Some(redis) = &self.redis else {
                    return Revocation::Unknown;
                };
                let Some(revoked) = redis_revocation(redis, &session_id).await else {
                    return Revocation::Unknown;
                };
                if let Some(cache) = &self.cache {
                    cache.insert(session_id, revoked).await;
                }
                revoked
            }
        };
        if revoked {
            Revocation::Revoked
        } else {
            Revocation::Live
        }
    }
}
