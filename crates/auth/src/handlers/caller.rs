//! Who is calling the auth service. Unlike other services, which trust the auth layer's
//! [`Principal`], the auth service checks every credential against the database: the
//! session must still be live and the account active, and the role is read fresh.

use strata_runtime::identity::{API_KEY_PREFIX, Credential, Principal, Role};
use tonic::Request;

use std::sync::Arc;

use strata_proto::strata::auth::v1 as pb;

use super::{AuthHandlers, db_now};
use crate::error::AuthError;
use crate::tokens::hash_token;

/// The role an account's stored spelling names.
pub(super) fn role_of(stored: &str) -> Role {
    Role::parse(stored).unwrap_or(Role::User)
}

/// The role of a cached account.
fn role_of_user(user: &pb::User) -> Role {
    if user.role == i32::from(pb::Role::Admin) {
        Role::Admin
    } else {
        Role::User
    }
}

/// The session of an access token; API keys cannot manage sessions, passwords or keys.
pub(super) fn require_session(principal: &Principal) -> Result<uuid::Uuid, AuthError> {
    principal.session_id().ok_or(AuthError::permission_denied(
        "requires an access token, not an API key",
    ))
}

/// Refuses an API key that lacks `scope` (access tokens have every scope of their role).
pub(super) fn require_scope(principal: &Principal, scope: &'static str) -> Result<(), AuthError> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(AuthError::permission_denied(
            "the API key lacks the scope this call needs",
        ))
    }
}

/// The user agent and address of the caller, as recorded on a session.
pub(super) fn client_details<T>(request: &Request<T>) -> (String, String) {
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

impl AuthHandlers {
    /// The caller's principal and account.
    pub(super) async fn caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Principal, Arc<pb::User>), AuthError> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::unauthenticated("missing bearer token"))?;
        self.principal_of(token).await
    }

    /// The caller's principal.
    pub(super) async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, AuthError> {
        Ok(self.caller(request).await?.0)
    }

    /// The caller's principal and session, for the RPCs only a session may call (API keys
    /// cannot manage sessions, passwords or keys).
    pub(super) async fn session<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Principal, uuid::Uuid), AuthError> {
        let principal = self.principal(request).await?;
        let session = require_session(&principal)?;
        Ok((principal, session))
    }

    /// Verifies `token` (an access token checked locally plus its session, or an API key)
    /// and returns the caller's principal and account. The session and the account come
    /// from the caches, which every write to them invalidates: a call whose session and
    /// account are cached touches no database.
    pub(super) async fn principal_of(
        &self,
        token: &str,
    ) -> Result<(Principal, Arc<pb::User>), AuthError> {
        if token.starts_with(API_KEY_PREFIX) {
            return self.api_key_principal(token).await;
        }
        let mut principal = self.token_principal(token).await?;
        let session = require_session(&principal)?;
        let (user_id, now) = (principal.user_id, db_now());
        if !self.cache.session_live(user_id, session, now).await? {
            return Err(AuthError::unauthenticated("session has ended"));
        }
        let user = self
            .cache
            .user(user_id)
            .await?
            .filter(|u| u.status == i32::from(pb::UserStatus::Active))
            .ok_or(AuthError::unauthenticated("session has ended"))?;
        // The role may have changed since the token was issued; the account is current.
        principal.role = role_of_user(&user);
        Ok((principal, user))
    }

    /// The principal of an API key (live, unexpired, of an active user) and its owner,
    /// both from the caches (revocations and account changes invalidate them).
    async fn api_key_principal(
        &self,
        secret: &str,
    ) -> Result<(Principal, Arc<pb::User>), AuthError> {
        let invalid = || AuthError::unauthenticated("invalid or revoked API key");
        let now = db_now();
        let key = self
            .cache
            .api_key(&hash_token(secret), now)
            .await?
            .ok_or_else(invalid)?;
        let user = self
            .cache
            .user(key.user_id)
            .await?
            .filter(|u| u.status == i32::from(pb::UserStatus::Active))
            .ok_or_else(invalid)?;
        self.key_usage.note(key.id, now);
        let principal = Principal {
            user_id: key.user_id,
            role: role_of_user(&user),
            credential: Credential::ApiKey {
                key_id: key.id,
                scopes: key.scopes,
            },
            expires_at: key.expires_at,
        };
        Ok((principal, user))
    }

    /// The principal an access token claims, after checking signature and claims locally.
    async fn token_principal(&self, token: &str) -> Result<Principal, AuthError> {
        let ring = self.key_ring().await?;
        self.verified
            .verify(token, &ring.public, &self.config.tokens)
            .map_err(|_| AuthError::unauthenticated("invalid or expired access token"))
    }
}
