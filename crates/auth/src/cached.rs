//! The auth service's caches (two-tier, see `strata_cache`): what every authenticated call
//! reads, so a call whose session and account are cached touches no database.
//!
//! - `auth_sessions`: a session's owner, revocation and expiries, by session id. The
//!   revocation answer of every call. Invalidated by every write that ends a session
//!   ([`AuthCaches::sessions_ended`]), in the same code path as the write. A refresh only
//!   moves the idle expiry later, so it does not invalidate: an entry that says "expired"
//!   is checked against the database before it is believed.
//! - `auth_users`: an account (profile, role, status; never its password hash), by user
//!   id. Invalidated by every write to the account: profile, password, role, status.
//!
//! Short lives bound what a partitioned replica can miss: 30 s in memory, 60 s in Redis
//! for sessions; 60 s and 5 minutes for accounts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use strata_cache::{Caches, Policy, Tiered};
use strata_proto::strata::auth::v1 as pb;
use strata_storage::Db;
use uuid::Uuid;

use crate::error::AuthError;
use crate::store;

/// A session as the per-call check needs it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CachedSession {
    /// Owner.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Ended (logout, revocation, reuse of a refresh token, password change).
    #[prost(bool, tag = "2")]
    pub revoked: bool,
    /// Idle expiry, microseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub idle_expires_at_us: i64,
    /// Absolute expiry, microseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub absolute_expires_at_us: i64,
}

impl CachedSession {
    /// Whether it is `user`'s, not ended, and unexpired at `now`.
    fn live_for(&self, user: Uuid, now: DateTime<Utc>) -> bool {
        let now = now.timestamp_micros();
        self.user_id == user.to_string()
            && !self.revoked
            && self.idle_expires_at_us > now
            && self.absolute_expires_at_us > now
    }
}

/// An API key as the per-call check needs it (never its secret).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CachedApiKey {
    /// Id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Owner.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// Scopes.
    #[prost(string, repeated, tag = "3")]
    pub scopes: Vec<String>,
    /// Expiry, microseconds since the epoch; 0 for none.
    #[prost(int64, tag = "4")]
    pub expires_at_us: i64,
    /// Revoked.
    #[prost(bool, tag = "5")]
    pub revoked: bool,
}

/// A live API key, as the caller check uses it.
#[derive(Debug, Clone)]
pub struct LiveApiKey {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: Option<i64>,
}

/// The caches of the auth service.
#[derive(Debug, Clone)]
pub struct AuthCaches {
    sessions: Tiered<CachedSession>,
    users: Tiered<pb::User>,
    api_keys: Tiered<CachedApiKey>,
    db: Db,
}

/// The error of a load, which every caller that waited for it shares.
fn shared(e: Arc<strata_storage::Error>) -> AuthError {
    AuthError::Api(strata_storage::Error::shared_into_api(e))
}

impl AuthCaches {
    /// Registers the caches with the process's `caches`.
    pub fn new(caches: &Caches, db: Db) -> Self {
        Self {
            sessions: caches.tiered(
                "auth_sessions",
                Policy {
                    l1_ttl: Duration::from_secs(30),
                    l1_capacity: 200_000,
                    l2_ttl: Duration::from_secs(60),
                },
            ),
            users: caches.tiered(
                "auth_users",
                Policy {
                    l1_ttl: Duration::from_secs(60),
                    l1_capacity: 200_000,
                    l2_ttl: Duration::from_secs(300),
                },
            ),
            api_keys: caches.tiered(
                "auth_api_keys",
                Policy {
                    l1_ttl: Duration::from_secs(30),
                    l1_capacity: 100_000,
                    l2_ttl: Duration::from_secs(60),
                },
            ),
            db,
        }
    }

    /// Whether `session` is `user`'s and live at `now`: from the cache, and from the
    /// database when the cache says it expired (a refresh may have moved its idle expiry).
    pub async fn session_live(
        &self,
        user: Uuid,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        let db = &self.db;
        let cached = self
            .sessions
            .get_or_load(&session.to_string(), || load_session(db, session))
            .await
            .map_err(shared)?;
        let Some(cached) = cached else {
            return Ok(false);
        };
        if cached.live_for(user, now) {
            return Ok(true);
        }
        let expired_only = cached.user_id == user.to_string() && !cached.revoked;
        if !expired_only {
            return Ok(false);
        }
        Ok(load_session(db, session)
            .await
            .map_err(AuthError::Storage)?
            .is_some_and(|fresh| fresh.live_for(user, now)))
    }

    /// The account `user` (`None`: no such account).
    pub async fn user(&self, user: Uuid) -> Result<Option<Arc<pb::User>>, AuthError> {
        let db = &self.db;
        self.users
            .get_or_load(&user.to_string(), || load_user(db, user))
            .await
            .map_err(shared)
    }

    /// The live, unexpired key whose secret hashes to `hash` (`None`: no such key, or
    /// revoked, or expired at `now`). The owner's status is the caller's to check.
    pub async fn api_key(
        &self,
        hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<LiveApiKey>, AuthError> {
        let db = &self.db;
        let cached = self
            .api_keys
            .get_or_load(&hex(hash), || load_api_key(db, *hash))
            .await
            .map_err(shared)?;
        let Some(key) = cached else {
            return Ok(None);
        };
        let expired = key.expires_at_us != 0 && key.expires_at_us <= now.timestamp_micros();
        if key.revoked || expired {
            return Ok(None);
        }
        let (Ok(id), Ok(user_id)) = (Uuid::parse_str(&key.id), Uuid::parse_str(&key.user_id))
        else {
            return Ok(None);
        };
        Ok(Some(LiveApiKey {
            id,
            user_id,
            scopes: key.scopes.clone(),
            expires_at: (key.expires_at_us != 0).then(|| key.expires_at_us.div_euclid(1_000_000)),
        }))
    }

    /// After a write that revoked the keys with these hashes committed.
    pub async fn api_keys_revoked(&self, hashes: &[Vec<u8>]) {
        let keys: Vec<String> = hashes.iter().map(|h| hex(h)).collect();
        let _delivered = self.api_keys.invalidate(&keys).await;
    }

    /// After a write that ended `sessions` committed.
    pub async fn sessions_ended(&self, sessions: &[Uuid]) {
        let keys: Vec<String> = sessions.iter().map(Uuid::to_string).collect();
        // Undelivered, it is replayed; this process reads no L2 until it is.
        let _delivered = self.sessions.invalidate(&keys).await;
    }

    /// After a write to the account `user` committed.
    pub async fn user_changed(&self, user: Uuid) {
        let _delivered = self.users.invalidate(&[user.to_string()]).await;
    }
}

/// For a process that changed the account `user` outside the auth service (the CLI):
/// forgets it in the caches of every replica listening on `caches`' Redis. False when
/// Redis could not be reached (replicas then keep the old account for at most the caches'
/// TTLs).
pub async fn forget_user(caches: &Caches, db: Db, user: Uuid) -> bool {
    AuthCaches::new(caches, db)
        .users
        .invalidate(&[user.to_string()])
        .await
}

async fn load_session(
    db: &Db,
    session: Uuid,
) -> Result<Option<CachedSession>, strata_storage::Error> {
    let row = db
        .shared(move |conn| Box::pin(store::session_state(conn, session)))
        .await?;
    Ok(
        row.map(|(user_id, revoked_at, idle, absolute)| CachedSession {
            user_id: user_id.to_string(),
            revoked: revoked_at.is_some(),
            idle_expires_at_us: idle.timestamp_micros(),
            absolute_expires_at_us: absolute.timestamp_micros(),
        }),
    )
}

async fn load_api_key(
    db: &Db,
    hash: [u8; 32],
) -> Result<Option<CachedApiKey>, strata_storage::Error> {
    let mut conn = db.get().await?;
    let row = store::api_key_state(&mut conn, &hash).await?;
    Ok(row.map(|key| CachedApiKey {
        id: key.id.to_string(),
        user_id: key.user_id.to_string(),
        scopes: key.scopes,
        expires_at_us: key.expires_at.map_or(0, |t| t.timestamp_micros()),
        revoked: key.revoked_at.is_some(),
    }))
}

/// Lower-case hex of `bytes`: the cache key of a secret's hash.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn load_user(db: &Db, user: Uuid) -> Result<Option<pb::User>, strata_storage::Error> {
    let mut conn = db.get().await?;
    let row = store::user_by_id(&mut conn, user).await?;
    Ok(row.as_ref().map(crate::handlers::profile::user_proto))
}
