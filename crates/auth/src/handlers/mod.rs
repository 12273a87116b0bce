//! The `AuthService` handlers, one file per resource, the way rust-lang/crates.io splits
//! `controllers/`: [`sessions`] (sign-up, sign-in, refresh, sign-out, sessions, token
//! verification, JWKS), [`profile`] (the caller's account), [`api_keys`] and [`admin`]
//! (users, roles, statuses). Validation and proto conversion live beside the handlers that
//! use them; [`caller`] authenticates the caller.
//!
//! Each handler is a plain function returning the crate's [`AuthError`], so `?` works on
//! every line; the trait impl at the bottom only answers (`respond`), which is where the
//! suite's one mapping to `tonic::Status` happens.

pub mod admin;
pub mod api_keys;
pub mod caller;
pub mod profile;
pub mod sessions;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use strata_errors::respond;
use strata_proto::strata::auth::v1::auth_service_server::AuthService;
use strata_proto::strata::auth::v1::{self as pb};
use strata_runtime::AppContext;
use strata_runtime::clock::{Clock, SystemClock};
use strata_runtime::identity::VerifiedTokens;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::cached::AuthCaches;
use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::keys::{KeyRing, KeyRingCache};
use crate::password::Passwords;
use crate::revocations::Revocations;
use crate::throttle::{LoginThrottle, ThrottlePolicy};
use crate::usage::KeyUsage;

/// The handlers and what they share.
pub struct AuthHandlers {
    ctx: Arc<AppContext>,
    config: AuthConfig,
    passwords: Passwords,
    throttle: LoginThrottle,
    key_usage: Arc<KeyUsage>,
    revocations: Arc<Revocations>,
    cache: AuthCaches,
    // Access tokens already verified (signature and claims), so VerifyToken and every
    // authenticated call skip the Ed25519 check for a token seen before.
    verified: VerifiedTokens,
    keys: KeyRingCache,
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

/// Parses a UUID field.
fn parse_id(field: &'static str, value: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(value).map_err(|_| AuthError::invalid(field, "must be a UUID"))
}

/// An optional AIP-155 `request_id`: empty, or a UUID.
fn parse_request_id(value: &str) -> Result<Option<Uuid>, strata_errors::Violation> {
    if value.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(value)
        .map(Some)
        .map_err(|_| strata_errors::Violation::new("request_id", "must be empty or a UUID"))
}

impl AuthHandlers {
    /// After a write that ended `sessions` committed: forgets them in the caches, then
    /// publishes their revocation for the verifiers of other services.
    pub(crate) async fn sessions_ended(&self, sessions: &[Uuid]) {
        self.cache.sessions_ended(sessions).await;
        self.revocations.publish(sessions).await;
    }

    /// Handlers over the process context. Hashes the dummy password once (~20 ms).
    pub fn new(ctx: Arc<AppContext>, config: AuthConfig) -> Result<Self, AuthError> {
        Self::with_clock(
            ctx,
            config,
            Arc::new(SystemClock),
            ThrottlePolicy::default(),
        )
    }

    /// Handlers whose time-based policies read `clock` (tests move it). Their background
    /// work (see [`crate::register_handlers`]) runs once they are registered with a server.
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
        Ok(Self {
            throttle: LoginThrottle::new(ctx.redis.clone(), clock, policy),
            key_usage: Arc::new(KeyUsage::new(ctx.db.clone())),
            revocations: Arc::new(Revocations::new(
                ctx.db.clone(),
                ctx.redis.clone(),
                config.access_ttl,
                config.tokens.leeway,
            )),
            cache: AuthCaches::new(&ctx.caches, ctx.db.clone()),
            verified: VerifiedTokens::new(100_000, std::time::Duration::from_secs(60)),
            keys: KeyRingCache::new(
                ctx.db.clone(),
                config.access_ttl,
                config.key_encryption.clone(),
            ),
            passwords: Passwords::new()?,
            ctx,
            config,
        })
    }

    /// The key ring (see [`KeyRingCache`]).
    pub async fn key_ring(&self) -> Result<Arc<KeyRing>, AuthError> {
        self.keys.get().await
    }

    /// Retires the signing key and starts signing with a new one.
    pub async fn rotate_keys(&self) -> Result<(), AuthError> {
        self.keys.rotate().await
    }

    /// Writes pending API key uses now (they are otherwise written every 30 s).
    pub async fn flush_key_usage(&self) -> Result<usize, AuthError> {
        Ok(self.key_usage.flush().await?)
    }

    /// The process context.
    pub fn context(&self) -> &Arc<AppContext> {
        &self.ctx
    }

    /// Pending API-key uses, flushed by a background task.
    pub fn key_usage(&self) -> &Arc<KeyUsage> {
        &self.key_usage
    }

    /// The revocation publisher, ticked by a background task.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }
}

#[tonic::async_trait]
impl AuthService for AuthHandlers {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        respond(sessions::sign_up(self, request).await)
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        respond(sessions::login(self, request).await)
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        respond(sessions::refresh_token(self, request).await)
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        respond(sessions::logout(self, request).await)
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        respond(sessions::logout_all(self, request).await)
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        respond(sessions::verify_token(self, request).await)
    }

    async fn get_jwks(
        &self,
        request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        respond(sessions::get_jwks(self, request).await)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        respond(sessions::list_sessions(self, request).await)
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        respond(sessions::revoke_session(self, request).await)
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        respond(profile::get_profile(self, request).await)
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        respond(profile::update_profile(self, request).await)
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        respond(profile::change_password(self, request).await)
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        respond(api_keys::create_api_key(self, request).await)
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        respond(api_keys::list_api_keys(self, request).await)
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        respond(api_keys::revoke_api_key(self, request).await)
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        respond(admin::list_users(self, request).await)
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        respond(admin::set_user_role(self, request).await)
    }

    async fn set_user_status(
        &self,
        request: Request<pb::SetUserStatusRequest>,
    ) -> Result<Response<pb::SetUserStatusResponse>, Status> {
        respond(admin::set_user_status(self, request).await)
    }
}
