//! The `AuthService` handlers: validate, authenticate, call the store, convert to proto.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use strata_proto::strata::auth::v1::auth_service_server::AuthService;
use strata_proto::strata::auth::v1::{self as pb, Credentials};
use strata_runtime::AppContext;
use strata_runtime::clock::{Clock, SystemClock};
use strata_runtime::identity::{
    API_KEY_PREFIX, Credential, Principal, REFRESH_TOKEN_PREFIX, Revocation, Role, SessionCheck,
    verify_access_token,
};
use strata_runtime::pagination::{Cursor, IdCursor, PageContext, finish_page, page_size};
use strata_runtime::time::{from_timestamp, timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::keys::{self, KeyRing};
use crate::password::Passwords;
use crate::revocations::Revocations;
use crate::store::{self, ACTIVE, DISABLED, ProfileChanges, RefreshOutcome, UserFilter, UserRow};
use crate::throttle::{LoginThrottle, ThrottlePolicy};
use crate::tokens::{hash_token, issue_access_token, new_api_key};
use crate::usage::KeyUsage;

/// Longest email accepted (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Longest display name accepted, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Fields of `User` a read mask may name.
const USER_FIELDS: &[&str] = &[
    "id",
    "email",
    "display_name",
    "avatar_url",
    "bio",
    "locale",
    "time_zone",
    "role",
    "status",
    "create_time",
    "update_time",
    "password_change_time",
];

/// The handlers and what they share.
pub struct AuthHandlers {
    ctx: Arc<AppContext>,
    config: AuthConfig,
    passwords: Passwords,
    throttle: LoginThrottle,
    key_usage: Arc<KeyUsage>,
    revocations: Arc<Revocations>,
    sessions: SessionCheck,
    // Loaded on first use (the schema may not be migrated yet when the handlers are built)
    // and replaced on rotation.
    keys: RwLock<Option<(std::time::Instant, Arc<KeyRing>)>>,
}

impl std::fmt::Debug for AuthHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHandlers")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The current time at PostgreSQL's precision (microseconds), so a timestamp returned
/// now equals the same timestamp read back later.
fn db_now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

fn role_of(stored: &str) -> Role {
    Role::parse(stored).unwrap_or(Role::User)
}

fn user_proto(user: &UserRow) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        avatar_url: user.avatar_url.clone(),
        bio: user.bio.clone(),
        locale: user.locale.clone(),
        time_zone: user.time_zone.clone(),
        role: match role_of(&user.role) {
            Role::User => pb::Role::User,
            Role::Admin => pb::Role::Admin,
        }
        .into(),
        status: if user.status == ACTIVE {
            pb::UserStatus::Active
        } else {
            pb::UserStatus::Disabled
        }
        .into(),
        create_time: Some(timestamp(user.created_at)),
        update_time: Some(timestamp(user.updated_at)),
        password_change_time: Some(timestamp(user.password_changed_at)),
    }
}

/// Keeps only the fields named by `mask` (all when empty).
fn apply_read_mask(
    user: pb::User,
    mask: Option<&prost_types::FieldMask>,
) -> Result<pb::User, AuthError> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        return Ok(user);
    };
    if let Some(unknown) = mask
        .paths
        .iter()
        .find(|p| !USER_FIELDS.contains(&p.as_str()))
    {
        return Err(AuthError::invalid(
            "read_mask",
            format!("unknown field {unknown:?}"),
        ));
    }
    let keep = |field: &str| mask.paths.iter().any(|p| p == field);
    Ok(pb::User {
        id: if keep("id") { user.id } else { String::new() },
        email: if keep("email") {
            user.email
        } else {
            String::new()
        },
        display_name: if keep("display_name") {
            user.display_name
        } else {
            String::new()
        },
        avatar_url: if keep("avatar_url") {
            user.avatar_url
        } else {
            String::new()
        },
        bio: if keep("bio") { user.bio } else { String::new() },
        locale: if keep("locale") {
            user.locale
        } else {
            String::new()
        },
        time_zone: if keep("time_zone") {
            user.time_zone
        } else {
            String::new()
        },
        role: if keep("role") { user.role } else { 0 },
        status: if keep("status") { user.status } else { 0 },
        create_time: user.create_time.filter(|_| keep("create_time")),
        update_time: user.update_time.filter(|_| keep("update_time")),
        password_change_time: user
            .password_change_time
            .filter(|_| keep("password_change_time")),
    })
}

/// Checks the shape of an email; existence is never revealed by validation.
fn validate_email(email: &str) -> Result<(), AuthError> {
    let valid = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(())
    } else {
        Err(AuthError::invalid(
            "email",
            "must be an email address of at most 254 characters",
        ))
    }
}

/// How often the signing keys are reloaded from the database.
const KEY_RING_RELOAD: std::time::Duration = std::time::Duration::from_secs(60);
/// How often expired credentials are deleted.
const CLEANUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// How often API key uses are written.
const KEY_USAGE_FLUSH: std::time::Duration = std::time::Duration::from_secs(30);
/// Most scopes one API key may carry.
const MAX_SCOPES: usize = 20;

/// The list RPCs, whose page tokens are bound to them.
const LIST_SESSIONS: &str = "strata.auth.v1.AuthService/ListSessions";
const LIST_USERS: &str = "strata.auth.v1.AuthService/ListUsers";
const LIST_API_KEYS: &str = "strata.auth.v1.AuthService/ListApiKeys";

/// Fields UpdateProfile may change.
const UPDATABLE_FIELDS: &[&str] = &["display_name", "avatar_url", "bio", "locale", "time_zone"];

/// The session of an access token; API keys cannot manage sessions, passwords or keys.
fn require_session(principal: &Principal) -> Result<Uuid, AuthError> {
    principal.session_id().ok_or(AuthError::PermissionDenied(
        "requires an access token, not an API key",
    ))
}

fn require_scope(principal: &Principal, scope: &'static str) -> Result<(), AuthError> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied(
            "the API key lacks the scope this call needs",
        ))
    }
}

fn check_scope_syntax(scope: &str) -> bool {
    scope.len() <= 64
        && scope.split_once(':').is_some_and(|(resource, action)| {
            [resource, action].iter().all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
}

fn api_key_proto(key: &store::ApiKeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id.to_string(),
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        scopes: key.scopes.clone(),
        create_time: Some(timestamp(key.created_at)),
        last_used_time: key.last_used_at.map(timestamp),
        expire_time: key.expires_at.map(timestamp),
        revoke_time: key.revoked_at.map(timestamp),
    }
}

fn require_admin(principal: &Principal) -> Result<(), AuthError> {
    require_scope(principal, "users:admin")?;
    if principal.is_admin() {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied("requires the ADMIN role"))
    }
}

fn stored_role(
    field: &'static str,
    role: i32,
    allow_unspecified: bool,
) -> Result<Option<&'static str>, AuthError> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Unspecified) if allow_unspecified => Ok(None),
        Ok(pb::Role::User) => Ok(Some(Role::User.as_str())),
        Ok(pb::Role::Admin) => Ok(Some(Role::Admin.as_str())),
        _ => Err(AuthError::invalid(field, "must be ROLE_USER or ROLE_ADMIN")),
    }
}

fn stored_status(
    field: &'static str,
    status: i32,
    allow_unspecified: bool,
) -> Result<Option<&'static str>, AuthError> {
    match pb::UserStatus::try_from(status) {
        Ok(pb::UserStatus::Unspecified) if allow_unspecified => Ok(None),
        Ok(pb::UserStatus::Active) => Ok(Some(ACTIVE)),
        Ok(pb::UserStatus::Disabled) => Ok(Some(DISABLED)),
        _ => Err(AuthError::invalid(
            field,
            "must be USER_STATUS_ACTIVE or USER_STATUS_DISABLED",
        )),
    }
}

fn parse_id(field: &'static str, value: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(value).map_err(|_| AuthError::invalid(field, "must be a UUID"))
}

fn check_display_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(AuthError::invalid(
            "display_name",
            "must be 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

/// Validates the masked fields of `user` into a change set.
fn profile_changes(
    user: pb::User,
    mask: Option<prost_types::FieldMask>,
) -> Result<ProfileChanges, AuthError> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(AuthError::invalid(
            "update_mask",
            "must name at least one field",
        ));
    }
    let mut changes = ProfileChanges::default();
    for path in &paths {
        match path.as_str() {
            "display_name" => changes.display_name = Some(check_display_name(&user.display_name)?),
            "avatar_url" => {
                let url = user.avatar_url.trim();
                if !(url.is_empty() || (url.starts_with("https://") && url.len() <= 2048)) {
                    return Err(AuthError::invalid(
                        "user.avatar_url",
                        "must be empty or an https:// URL of at most 2048 bytes",
                    ));
                }
                changes.avatar_url = Some(url.to_owned());
            }
            "bio" => {
                if user.bio.chars().count() > 1000 {
                    return Err(AuthError::invalid(
                        "user.bio",
                        "must be at most 1000 characters",
                    ));
                }
                changes.bio = Some(user.bio.clone());
            }
            "locale" => {
                let ok = user.locale.len() <= 35
                    && user
                        .locale
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-');
                if !ok {
                    return Err(AuthError::invalid(
                        "user.locale",
                        "must be a BCP 47 language tag such as en-GB",
                    ));
                }
                changes.locale = Some(user.locale.clone());
            }
            "time_zone" => {
                // Empty clears it; anything else must name a zone of the IANA database
                // (as spelled there: `Europe/Paris`, `America/Argentina/Buenos_Aires`, `UTC`).
                let known =
                    user.time_zone.is_empty() || user.time_zone.parse::<chrono_tz::Tz>().is_ok();
                if !known {
                    return Err(AuthError::invalid(
                        "user.time_zone",
                        "must be empty or an IANA time zone such as Europe/Paris",
                    ));
                }
                changes.time_zone = Some(user.time_zone.clone());
            }
            other if USER_FIELDS.contains(&other) => {
                return Err(AuthError::invalid(
                    "update_mask",
                    format!(
                        "{other:?} cannot be updated; updatable: {}",
                        UPDATABLE_FIELDS.join(", ")
                    ),
                ));
            }
            other => {
                return Err(AuthError::invalid(
                    "update_mask",
                    format!("unknown field {other:?}"),
                ));
            }
        }
    }
    Ok(changes)
}

impl AuthHandlers {
    /// Handlers over the process context. Hashes the dummy password once (~20 ms).
    pub fn new(ctx: Arc<AppContext>, config: AuthConfig) -> Result<Self, AuthError> {
        Self::with_clock(
            ctx,
            config,
            Arc::new(SystemClock),
            ThrottlePolicy::default(),
        )
    }

    /// Handlers whose time-based policies read `clock` (tests move it).
    pub fn with_clock(
        ctx: Arc<AppContext>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
        policy: ThrottlePolicy,
    ) -> Result<Self, AuthError> {
        if config.uses_development_kek() {
            tracing::warn!(
                "signing keys are sealed with the built-in development key-encryption key, \
                 which is public: set STRATA_AUTH_KEY_ENCRYPTION_KEY (make run does)"
            );
        }
        let throttle = LoginThrottle::new(ctx.redis.clone(), clock, policy);
        let key_usage = KeyUsage::start(ctx.db.clone(), KEY_USAGE_FLUSH);
        crate::cleanup::spawn(ctx.db.clone(), CLEANUP_INTERVAL, Arc::downgrade(&key_usage));
        let revocations = Arc::new(Revocations::new(
            ctx.db.clone(),
            ctx.redis.clone(),
            config.access_ttl,
            config.tokens.leeway,
        ));
        Arc::clone(&revocations).spawn(Arc::downgrade(&key_usage));
        let sessions = SessionCheck::uncached(ctx.redis.clone());
        Ok(Self {
            ctx,
            config,
            passwords: Passwords::new()?,
            throttle,
            key_usage,
            revocations,
            sessions,
            keys: RwLock::new(None),
        })
    }

    /// The key ring: loaded (and the first key created) on first use, then reloaded every
    /// minute so a rotation by another replica is picked up well within a token lifetime
    /// (the retired key stays valid meanwhile).
    pub async fn key_ring(&self) -> Result<Arc<KeyRing>, AuthError> {
        let cached = self.keys.read().ok().and_then(|k| k.clone());
        if let Some((loaded, ring)) = &cached
            && loaded.elapsed() < KEY_RING_RELOAD
        {
            return Ok(Arc::clone(ring));
        }
        let loaded = async {
            let mut conn = self.ctx.db.get().await?;
            keys::load_or_create(
                &mut conn,
                self.config.access_ttl,
                &self.config.key_encryption,
            )
            .await
        }
        .await;
        match (loaded, cached) {
            (Ok(ring), _) => Ok(self.store_ring(ring)),
            (Err(e), Some((_, ring))) => {
                tracing::warn!(error = %e, "reloading signing keys failed; keeping the current ones");
                Ok(ring)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn store_ring(&self, ring: KeyRing) -> Arc<KeyRing> {
        let ring = Arc::new(ring);
        if let Ok(mut slot) = self.keys.write() {
            *slot = Some((std::time::Instant::now(), Arc::clone(&ring)));
        }
        ring
    }

    /// Retires the signing key and starts signing with a new one.
    pub async fn rotate_keys(&self) -> Result<(), AuthError> {
        let mut conn = self.ctx.db.get().await?;
        let ring = keys::rotate(
            &mut conn,
            self.config.access_ttl,
            &self.config.key_encryption,
        )
        .await?;
        self.store_ring(ring);
        Ok(())
    }

    /// Tells every verifier of the suite, through Redis, that `sessions` ended; their
    /// access tokens are refused from now on rather than when they expire. If Redis cannot
    /// take it now, the outbox keeps it (see [`crate::revocations`]).
    async fn publish_revoked(&self, sessions: &[Uuid]) {
        self.revocations.publish(sessions).await;
    }

    /// Writes pending API key uses now (they are otherwise written every 30 s).
    pub async fn flush_key_usage(&self) -> Result<usize, AuthError> {
        Ok(self.key_usage.flush().await?)
    }

    /// The principal of an API key (live, unexpired, of an active user) and its owner.
    async fn api_key_principal(&self, secret: &str) -> Result<(Principal, UserRow), AuthError> {
        let now = db_now();
        let mut conn = self.ctx.db.get().await?;
        let (key, user) = store::api_key_by_hash(&mut conn, &hash_token(secret), now)
            .await?
            .ok_or(AuthError::Unauthenticated("invalid or revoked API key"))?;
        self.key_usage.note(key.id, now);
        let principal = Principal {
            user_id: key.user_id,
            role: role_of(&user.role),
            credential: Credential::ApiKey {
                key_id: key.id,
                scopes: key.scopes,
            },
            expires_at: key.expires_at.map(|t| t.timestamp()),
        };
        Ok((principal, user))
    }

    /// Verifies `token` (an access token checked locally plus its session, or an API key)
    /// and returns the caller's principal and account, in one query.
    async fn principal_of(&self, token: &str) -> Result<(Principal, UserRow), AuthError> {
        if token.starts_with(API_KEY_PREFIX) {
            return self.api_key_principal(token).await;
        }
        let mut principal = self.token_principal(token).await?;
        let session = require_session(&principal)?;
        let mut conn = self.ctx.db.get().await?;
        let user = store::live_session_user(&mut conn, principal.user_id, session, db_now())
            .await?
            .ok_or(AuthError::Unauthenticated("session has ended"))?;
        // The role may have changed since the token was issued; the database is current.
        principal.role = role_of(&user.role);
        Ok((principal, user))
    }

    /// The principal an access token claims, after checking signature and claims locally.
    async fn token_principal(&self, token: &str) -> Result<Principal, AuthError> {
        let ring = self.key_ring().await?;
        verify_access_token(token, &ring.public, &self.config.tokens)
            .ok()
            .and_then(|claims| Principal::from_claims(&claims).ok())
            .ok_or(AuthError::Unauthenticated(
                "invalid or expired access token",
            ))
    }

    /// VerifyToken's fast path for access tokens: the checks every service's verifier makes
    /// (signature, claims, the session's revocation marker in Redis). `None` when it cannot
    /// decide — an API key, or Redis absent or failing — and the database must.
    async fn verify_with_redis(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        if token.starts_with(API_KEY_PREFIX) {
            return Ok(None);
        }
        let principal = self.token_principal(token).await?;
        match self.sessions.check(&principal).await {
            Revocation::Live => Ok(Some(principal)),
            Revocation::Revoked => Err(AuthError::Unauthenticated("session has ended")),
            Revocation::Unknown => Ok(None),
        }
    }

    /// The caller's principal and account.
    async fn authenticate_user<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Principal, UserRow), AuthError> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Unauthenticated("missing bearer token"))?;
        self.principal_of(token).await
    }

    /// The caller's principal.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, AuthError> {
        Ok(self.authenticate_user(request).await?.0)
    }

    async fn credentials(
        &self,
        user: &UserRow,
        session: &store::NewSession,
        now: DateTime<Utc>,
    ) -> Result<Credentials, AuthError> {
        let ring = self.key_ring().await?;
        let (access_token, access_expires) = issue_access_token(
            &ring.signer,
            &self.config,
            user.id,
            session.session_id,
            role_of(&user.role),
            now,
        )?;
        Ok(Credentials {
            token_type: "Bearer".into(),
            access_token,
            access_token_expire_time: Some(timestamp(access_expires)),
            refresh_token: session.refresh_token.clone(),
            refresh_token_expire_time: Some(timestamp(session.refresh_expires)),
            session_id: session.session_id.to_string(),
            session_expire_time: Some(timestamp(session.absolute_expires)),
        })
    }
}

fn client_details<T>(request: &Request<T>) -> (String, String) {
    let user_agent = request
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(512)
        .collect();
    let ip = request
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    (user_agent, ip)
}

#[tonic::async_trait]
impl AuthService for AuthHandlers {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let (user_agent, ip) = client_details(&request);
        let req = request.into_inner();
        validate_email(&req.email)?;
        let display_name = check_display_name(&req.display_name)?;
        self.passwords
            .check_policy(&req.password)
            .map_err(|v| AuthError::invalid("password", v.to_string()))?;
        let hash = self.passwords.hash(req.password).await?;
        let now = db_now();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let (user, session) =
            diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
                let user = match store::insert_user(conn, &req.email, &hash, &display_name).await {
                    Ok(user) => user,
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => {
                        return Err(AuthError::Conflict);
                    }
                    Err(e) => return Err(e.into()),
                };
                let session =
                    store::create_session(conn, &self.config, user.id, &user_agent, &ip, now)
                        .await?;
                Ok::<_, AuthError>((user, session))
            })
            .await?;
        // Signing may load the key ring through the pool: never hold a connection meanwhile,
        // or a full pool waits on itself.
        drop(conn);
        let credentials = self.credentials(&user, &session, now).await?;
        tracing::info!(user.id = %user.id, session.id = %session.session_id, "signed up");
        Ok(Response::new(pb::SignUpResponse {
            user: Some(user_proto(&user)),
            credentials: Some(credentials),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let (user_agent, ip) = client_details(&request);
        let req = request.into_inner();
        if req.email.is_empty() {
            return Err(AuthError::invalid("email", "is required").into());
        }
        if req.password.is_empty() {
            return Err(AuthError::invalid("password", "is required").into());
        }
        // A locked account or IP costs no hash, and looks like a wrong password.
        if let Some(retry_after) = self.throttle.locked_for(&req.email, &ip).await {
            tracing::info!(
                retry_after_ms = retry_after.as_millis() as u64,
                "login throttled"
            );
            return Err(AuthError::Locked(retry_after).into());
        }
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let user = store::user_by_email(&mut conn, &req.email)
            .await
            .map_err(AuthError::from)?;
        // Release the connection while hashing: the hash takes far longer than any query.
        drop(conn);
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matched = self.passwords.verify(req.password, stored).await?;
        let Some(user) = user.filter(|u| matched && u.status == ACTIVE) else {
            self.throttle.record_failure(&req.email, &ip).await;
            tracing::info!("login refused");
            return Err(AuthError::BadCredentials.into());
        };
        self.throttle.record_success(&req.email).await;
        let now = db_now();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let session =
            store::create_session(&mut conn, &self.config, user.id, &user_agent, &ip, now)
                .await
                .map_err(AuthError::from)?;
        drop(conn);
        let credentials = self.credentials(&user, &session, now).await?;
        tracing::info!(user.id = %user.id, session.id = %session.session_id, "logged in");
        Ok(Response::new(pb::LoginResponse {
            user: Some(user_proto(&user)),
            credentials: Some(credentials),
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let token = request.into_inner().refresh_token;
        if token.is_empty() {
            return Err(AuthError::invalid("refresh_token", "is required").into());
        }
        if !token.starts_with(REFRESH_TOKEN_PREFIX) || token.len() > 128 {
            return Err(AuthError::Unauthenticated("invalid refresh token").into());
        }
        let now = db_now();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let outcome =
            store::rotate_refresh_token(&mut conn, &self.config, &hash_token(&token), now)
                .await
                .map_err(AuthError::from)?;
        drop(conn);
        match outcome {
            RefreshOutcome::Rotated {
                user,
                session_id,
                absolute_expires,
                refresh_token,
                refresh_expires,
            } => {
                let session = store::NewSession {
                    session_id,
                    absolute_expires,
                    refresh_token,
                    refresh_expires,
                };
                let credentials = self.credentials(&user, &session, now).await?;
                Ok(Response::new(pb::RefreshTokenResponse {
                    credentials: Some(credentials),
                }))
            }
            RefreshOutcome::Invalid => {
                Err(AuthError::Unauthenticated("invalid refresh token").into())
            }
            RefreshOutcome::Reused { session_id } => {
                tracing::warn!(session.id = %session_id, "refresh token reused: family and session revoked");
                self.publish_revoked(&[session_id]).await;
                Err(AuthError::Unauthenticated("invalid refresh token").into())
            }
        }
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        let session = require_session(&principal)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        store::revoke_session(&mut conn, principal.user_id, session, db_now())
            .await
            .map_err(AuthError::from)?;
        self.publish_revoked(&[session]).await;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_session(&principal)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let revoked = store::revoke_sessions(&mut conn, principal.user_id, None, db_now())
            .await
            .map_err(AuthError::from)?;
        self.publish_revoked(&revoked).await;
        Ok(Response::new(pb::LogoutAllResponse {
            revoked_sessions: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        let token = request.into_inner().token;
        if token.is_empty() {
            return Err(AuthError::invalid("token", "is required").into());
        }
        let principal = match self.verify_with_redis(&token).await? {
            Some(principal) => principal,
            None => self.principal_of(&token).await?.0,
        };
        Ok(Response::new(pb::VerifyTokenResponse {
            principal: Some(pb::Principal {
                user_id: principal.user_id.to_string(),
                role: match principal.role {
                    Role::User => pb::Role::User,
                    Role::Admin => pb::Role::Admin,
                }
                .into(),
                session_id: principal
                    .session_id()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                kind: if principal.api_key_id().is_some() {
                    pb::CredentialKind::ApiKey
                } else {
                    pb::CredentialKind::AccessToken
                }
                .into(),
                expire_time: principal.expires_at.map(|exp| prost_types::Timestamp {
                    seconds: exp,
                    nanos: 0,
                }),
                api_key_id: principal
                    .api_key_id()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                scopes: match principal.credential {
                    Credential::ApiKey { scopes, .. } => scopes,
                    Credential::Session { .. } => Vec::new(),
                },
            }),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let ring = self.key_ring().await?;
        Ok(Response::new(pb::GetJwksResponse {
            keys: ring.jwks.clone(),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let (principal, user) = self.authenticate_user(&request).await?;
        require_scope(&principal, "profile:read")?;
        let mask = request.into_inner().read_mask;
        Ok(Response::new(pb::GetProfileResponse {
            user: Some(apply_read_mask(user_proto(&user), mask.as_ref())?),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_session(&principal)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let context = PageContext::new(LIST_SESSIONS, &principal.user_id, &[]);
        let after = Cursor::decode(&req.page_token, &context)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let rows = store::live_sessions(&mut conn, principal.user_id, db_now(), after, limit + 1)
            .await
            .map_err(AuthError::from)?;
        let (rows, next_page_token) = finish_page(rows, limit, |last| {
            Cursor {
                time: last.created_at,
                id: last.id,
            }
            .encode(&context)
        });
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: rows
                .into_iter()
                .map(|s| pb::Session {
                    id: s.id.to_string(),
                    create_time: Some(timestamp(s.created_at)),
                    last_seen_time: Some(timestamp(s.last_seen_at)),
                    idle_expire_time: Some(timestamp(s.idle_expires_at)),
                    absolute_expire_time: Some(timestamp(s.absolute_expires_at)),
                    user_agent: s.user_agent,
                    ip_address: s.ip_address,
                    current: Some(s.id) == principal.session_id(),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_session(&principal)?;
        let session = parse_id("session_id", &request.into_inner().session_id)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        // Another user's session, an ended one and a missing one all look the same.
        if !store::revoke_session(&mut conn, principal.user_id, session, db_now())
            .await
            .map_err(AuthError::from)?
        {
            return Err(AuthError::NotFound("session").into());
        }
        self.publish_revoked(&[session]).await;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_scope(&principal, "profile:write")?;
        let req = request.into_inner();
        let changes = profile_changes(req.user.unwrap_or_default(), req.update_mask)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let user = store::update_profile(&mut conn, principal.user_id, changes, db_now())
            .await
            .map_err(AuthError::from)?;
        Ok(Response::new(pb::UpdateProfileResponse {
            user: Some(user_proto(&user)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let (principal, user) = self.authenticate_user(&request).await?;
        require_session(&principal)?;
        let (_, ip) = client_details(&request);
        let req = request.into_inner();
        if req.current_password.is_empty() {
            return Err(AuthError::invalid("current_password", "is required").into());
        }
        self.passwords
            .check_policy(&req.new_password)
            .map_err(|v| AuthError::invalid("new_password", v.to_string()))?;
        // Guessing the current password from a stolen session is throttled like sign-in.
        if let Some(retry_after) = self.throttle.locked_for(&user.email, &ip).await {
            return Err(AuthError::Locked(retry_after).into());
        }
        if !self
            .passwords
            .verify(req.current_password, Some(user.password_hash))
            .await?
        {
            self.throttle.record_failure(&user.email, &ip).await;
            return Err(AuthError::invalid("current_password", "is incorrect").into());
        }
        let hash = self.passwords.hash(req.new_password).await?;
        let now = db_now();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let revoked = diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
            store::set_password(conn, principal.user_id, &hash, now).await?;
            store::revoke_sessions(conn, principal.user_id, principal.session_id(), now).await
        })
        .await
        .map_err(AuthError::from)?;
        self.publish_revoked(&revoked).await;
        tracing::info!(user.id = %principal.user_id, sessions.revoked = revoked.len(), "password changed");
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_admin(&principal)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        if req.email_prefix.len() > MAX_EMAIL_LEN {
            return Err(
                AuthError::invalid("email_prefix", "must be at most 254 characters").into(),
            );
        }
        let filter = UserFilter {
            role: stored_role("role", req.role, true)?,
            status: stored_status("status", req.status, true)?,
            email_prefix: (!req.email_prefix.is_empty()).then_some(req.email_prefix),
        };
        let context = PageContext::new(
            LIST_USERS,
            &principal.user_id,
            &[
                filter.role.unwrap_or_default(),
                filter.status.unwrap_or_default(),
                filter.email_prefix.as_deref().unwrap_or_default(),
            ],
        );
        let after = IdCursor::decode(&req.page_token, &context)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let rows = store::list_users(&mut conn, &filter, after.map(|c| c.0), limit + 1)
            .await
            .map_err(AuthError::from)?;
        let (rows, next_page_token) =
            finish_page(rows, limit, |last| IdCursor(last.id).encode(&context));
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.iter().map(user_proto).collect(),
            next_page_token,
        }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_admin(&principal)?;
        let req = request.into_inner();
        let user_id = parse_id("user_id", &req.user_id)?;
        let role = stored_role("role", req.role, false)?.unwrap_or(Role::User.as_str());
        let now = db_now();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let (user, revoked) =
            diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
                let before = store::user_by_id(conn, user_id)
                    .await?
                    .ok_or(AuthError::NotFound("user"))?;
                let user = store::set_role(conn, user_id, role, now)
                    .await?
                    .ok_or(AuthError::NotFound("user"))?;
                // Access tokens carry the role for their lifetime: a demoted admin's sessions end
                // now, rather than keeping admin power until their tokens expire.
                let demoted = before.role == Role::Admin.as_str() && role != Role::Admin.as_str();
                let revoked = if demoted {
                    store::revoke_sessions(conn, user_id, None, now).await?
                } else {
                    Vec::new()
                };
                Ok::<_, AuthError>((user, revoked))
            })
            .await?;
        self.publish_revoked(&revoked).await;
        tracing::info!(admin.id = %principal.user_id, user.id = %user.id, user.role = role, "role changed");
        Ok(Response::new(pb::SetUserRoleResponse {
            user: Some(user_proto(&user)),
        }))
    }

    async fn set_user_status(
        &self,
        request: Request<pb::SetUserStatusRequest>,
    ) -> Result<Response<pb::SetUserStatusResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_admin(&principal)?;
        let req = request.into_inner();
        let user_id = parse_id("user_id", &req.user_id)?;
        let status = stored_status("status", req.status, false)?.unwrap_or(ACTIVE);
        let now = db_now();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let (user, revoked) =
            diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
                let Some(user) = store::set_status(conn, user_id, status, now).await? else {
                    return Err(AuthError::NotFound("user"));
                };
                let mut revoked = Vec::new();
                if status == DISABLED {
                    revoked = store::revoke_sessions(conn, user_id, None, now).await?;
                    store::revoke_user_api_keys(conn, user_id, now).await?;
                }
                Ok((user, revoked))
            })
            .await?;
        self.publish_revoked(&revoked).await;
        tracing::info!(admin.id = %principal.user_id, user.id = %user.id, user.status = status, "status changed");
        Ok(Response::new(pb::SetUserStatusResponse {
            user: Some(user_proto(&user)),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_session(&principal)?;
        let req = request.into_inner();
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::invalid("name", "must be 1 to 100 characters").into());
        }
        if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
            return Err(AuthError::invalid("scopes", "must hold 1 to 20 scopes").into());
        }
        if let Some(bad) = req.scopes.iter().position(|s| !check_scope_syntax(s)) {
            return Err(AuthError::InvalidArgument {
                field: "scopes",
                description: format!(
                    "scopes[{bad}] must look like resource:action (lowercase letters and '_')"
                ),
            }
            .into());
        }
        let mut scopes = req.scopes;
        scopes.sort();
        scopes.dedup();
        let now = db_now();
        let expires_at = match req.expire_time {
            None => None,
            Some(t) => {
                let at = from_timestamp(&t)
                    .filter(|at| *at > now)
                    .ok_or(AuthError::invalid("expire_time", "must be in the future"))?;
                Some(at)
            }
        };
        let (secret, prefix, hash) = new_api_key();
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let key = store::insert_api_key(
            &mut conn,
            store::NewApiKey {
                user_id: principal.user_id,
                name,
                prefix: &prefix,
                hash: &hash,
                scopes: &scopes,
                expires_at,
            },
            now,
        )
        .await
        .map_err(AuthError::from)?;
        tracing::info!(user.id = %principal.user_id, api_key.id = %key.id, "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(api_key_proto(&key)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_session(&principal)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let context = PageContext::new(LIST_API_KEYS, &principal.user_id, &[]);
        let after = Cursor::decode(&req.page_token, &context)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        let rows = store::list_api_keys(&mut conn, principal.user_id, after, limit + 1)
            .await
            .map_err(AuthError::from)?;
        let (rows, next_page_token) = finish_page(rows, limit, |last| {
            Cursor {
                time: last.created_at,
                id: last.id,
            }
            .encode(&context)
        });
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(api_key_proto).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        require_session(&principal)?;
        let id = parse_id("api_key_id", &request.into_inner().api_key_id)?;
        let mut conn = self.ctx.db.get().await.map_err(AuthError::from)?;
        // Another user's key, a revoked key and a missing one all look the same.
        if !store::revoke_api_key(&mut conn, principal.user_id, id, db_now())
            .await
            .map_err(AuthError::from)?
        {
            return Err(AuthError::NotFound("API key").into());
        }
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}
