//! Sessions: sign-up and sign-in (each opens one), refresh, sign-out, listing and revoking
//! the caller's sessions, and the verification every other service relies on
//! (`VerifyToken`, `GetJwks`).

use chrono::{DateTime, Utc};
use strata_errors::{ApiError, Violations};
use strata_proto::strata::auth::v1::{self as pb, Credentials};
use strata_runtime::identity::{Credential, REFRESH_TOKEN_PREFIX, Role};
use strata_runtime::pagination::{Cursor, PageContext, finish_page, page_size};
use strata_runtime::time::timestamp;
use tonic::Request;

use super::caller::{client_details, role_of};
use super::profile::{check_display_name, user_proto};
use super::{AuthHandlers, db_now, parse_id, parse_request_id};
use crate::error::AuthError;
use crate::store::{self, ACTIVE, RefreshOutcome, UserRow};
use crate::tokens::{hash_token, issue_access_token};

/// Longest email accepted (RFC 5321 path limit).
pub(super) const MAX_EMAIL_LEN: usize = 254;

/// The list RPC whose page tokens are bound to it.
const LIST_SESSIONS: &str = "strata.auth.v1.AuthService/ListSessions";

/// Checks the shape of an email; existence is never revealed by validation.
fn check_email(email: &str) -> Result<(), strata_errors::Violation> {
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
        Err(strata_errors::Violation::new(
            "email",
            "must be an email address of at most 254 characters",
        ))
    }
}

impl AuthHandlers {
    /// Signs a fresh access token for `session` and returns the credentials of a sign-in.
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

/// `SignUp`: a new account and its first session. A retry with the same `request_id`,
/// email and password signs the account it created in again (see the proto).
pub async fn sign_up(
    h: &AuthHandlers,
    request: Request<pb::SignUpRequest>,
) -> Result<pb::SignUpResponse, AuthError> {
    let (user_agent, ip) = client_details(&request);
    let req = request.into_inner();
    let mut violations = Violations::new();
    violations.check(check_email(&req.email));
    let display_name = violations.check(check_display_name("display_name", &req.display_name));
    if let Err(v) = h.passwords.check_policy(&req.password) {
        violations.add("password", v.to_string());
    }
    let request_id = violations
        .check(parse_request_id(&req.request_id))
        .flatten();
    let display_name = violations.finish_with(display_name)?;
    // A statement of its own: the connection goes back to the pool at the `;`, before the
    // retry path hashes.
    let earlier = match request_id {
        Some(id) => store::user_by_signup_request(&mut *h.ctx.db.get().await?, id).await?,
        None => None,
    };
    if let Some(user) = earlier {
        return sign_up_again(h, user, req, &user_agent, &ip).await;
    }
    let hash = h.passwords.hash(req.password.clone()).await?;
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let created = diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
        let inserted = store::insert_user(conn, &req.email, &hash, &display_name, request_id).await;
        let user = match inserted {
            Ok(user) => user,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => return Err(AuthError::Conflict),
            Err(e) => return Err(e.into()),
        };
        let session =
            store::create_session(conn, &h.config, user.id, &user_agent, &ip, now).await?;
        Ok::<_, AuthError>((user, session))
    })
    .await;
    let (user, session) = match (created, request_id) {
        // A concurrent retry of the same sign-up got there first.
        (Err(AuthError::Conflict), Some(id)) => {
            let Some(user) = store::user_by_signup_request(&mut conn, id).await? else {
                return Err(AuthError::Conflict);
            };
            drop(conn);
            return sign_up_again(h, user, req, &user_agent, &ip).await;
        }
        (created, _) => created?,
    };
    // Signing may load the key ring through the pool: never hold a connection meanwhile,
    // or a full pool waits on itself.
    drop(conn);
    let credentials = h.credentials(&user, &session, now).await?;
    tracing::info!(user.id = %user.id, session.id = %session.session_id, "signed up");
    Ok(pb::SignUpResponse {
        user: Some(user_proto(&user)),
        credentials: Some(credentials),
    })
}

/// The answer to a retried sign-up: the account its first attempt created, signed in
/// again, if the retry carries the same email and password (throttled like sign-in, so a
/// request id is no way to guess passwords); otherwise `ALREADY_EXISTS`.
async fn sign_up_again(
    h: &AuthHandlers,
    user: UserRow,
    req: pb::SignUpRequest,
    user_agent: &str,
    ip: &str,
) -> Result<pb::SignUpResponse, AuthError> {
    let reused = || {
        AuthError::Api(ApiError::AlreadyExists {
            message: "request_id was used by another sign-up".into(),
            resource: None,
        })
    };
    if !user.email.eq_ignore_ascii_case(&req.email) {
        return Err(reused());
    }
    if let Some(retry_after) = h.throttle.locked_for(&req.email, ip).await {
        return Err(AuthError::Locked(retry_after));
    }
    let matched = h
        .passwords
        .verify(req.password, Some(user.password_hash.clone()))
        .await?;
    if !matched || user.status != ACTIVE {
        h.throttle.record_failure(&req.email, ip).await;
        return Err(reused());
    }
    h.throttle.record_success(&req.email).await;
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let session = store::create_session(&mut conn, &h.config, user.id, user_agent, ip, now).await?;
    drop(conn);
    let credentials = h.credentials(&user, &session, now).await?;
    tracing::info!(user.id = %user.id, session.id = %session.session_id, "sign-up retried");
    Ok(pb::SignUpResponse {
        user: Some(user_proto(&user)),
        credentials: Some(credentials),
    })
}

/// `Login`: a new session for the right email and password.
pub async fn login(
    h: &AuthHandlers,
    request: Request<pb::LoginRequest>,
) -> Result<pb::LoginResponse, AuthError> {
    let (user_agent, ip) = client_details(&request);
    let req = request.into_inner();
    let mut violations = Violations::new();
    if req.email.is_empty() {
        violations.add("email", "is required");
    }
    if req.password.is_empty() {
        violations.add("password", "is required");
    }
    violations.finish()?;
    // A locked account or IP costs no hash, and looks like a wrong password.
    if let Some(retry_after) = h.throttle.locked_for(&req.email, &ip).await {
        tracing::info!(
            retry_after_ms = retry_after.as_millis() as u64,
            "login throttled"
        );
        return Err(AuthError::Locked(retry_after));
    }
    let mut conn = h.ctx.db.get().await?;
    let user = store::user_by_email(&mut conn, &req.email).await?;
    // Release the connection while hashing: the hash takes far longer than any query.
    drop(conn);
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matched = h.passwords.verify(req.password, stored).await?;
    let Some(user) = user.filter(|u| matched && u.status == ACTIVE) else {
        h.throttle.record_failure(&req.email, &ip).await;
        tracing::info!("login refused");
        return Err(AuthError::BadCredentials);
    };
    h.throttle.record_success(&req.email).await;
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let session =
        store::create_session(&mut conn, &h.config, user.id, &user_agent, &ip, now).await?;
    drop(conn);
    let credentials = h.credentials(&user, &session, now).await?;
    tracing::info!(user.id = %user.id, session.id = %session.session_id, "logged in");
    Ok(pb::LoginResponse {
        user: Some(user_proto(&user)),
        credentials: Some(credentials),
    })
}

/// `RefreshToken`: rotates the refresh token; a reused one ends its session.
pub async fn refresh_token(
    h: &AuthHandlers,
    request: Request<pb::RefreshTokenRequest>,
) -> Result<pb::RefreshTokenResponse, AuthError> {
    let token = request.into_inner().refresh_token;
    if token.is_empty() {
        return Err(AuthError::invalid("refresh_token", "is required"));
    }
    if !token.starts_with(REFRESH_TOKEN_PREFIX) || token.len() > 128 {
        return Err(AuthError::unauthenticated("invalid refresh token"));
    }
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let outcome =
        store::rotate_refresh_token(&mut conn, &h.config, &hash_token(&token), now).await?;
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
            let credentials = h.credentials(&user, &session, now).await?;
            Ok(pb::RefreshTokenResponse {
                credentials: Some(credentials),
            })
        }
        RefreshOutcome::Invalid => Err(AuthError::unauthenticated("invalid refresh token")),
        RefreshOutcome::Reused { session_id } => {
            tracing::warn!(session.id = %session_id, "refresh token reused: family and session revoked");
            h.sessions_ended(&[session_id]).await;
            Err(AuthError::unauthenticated("invalid refresh token"))
        }
    }
}

/// `Logout`: ends the caller's session.
pub async fn logout(
    h: &AuthHandlers,
    request: Request<pb::LogoutRequest>,
) -> Result<pb::LogoutResponse, AuthError> {
    let (principal, session) = h.session(&request).await?;
    let mut conn = h.ctx.db.get().await?;
    store::revoke_session(&mut conn, principal.user_id, session, db_now()).await?;
    h.sessions_ended(&[session]).await;
    Ok(pb::LogoutResponse {})
}

/// `LogoutAll`: ends every session of the caller.
pub async fn logout_all(
    h: &AuthHandlers,
    request: Request<pb::LogoutAllRequest>,
) -> Result<pb::LogoutAllResponse, AuthError> {
    let (principal, _) = h.session(&request).await?;
    let mut conn = h.ctx.db.get().await?;
    let revoked = store::revoke_sessions(&mut conn, principal.user_id, None, db_now()).await?;
    h.sessions_ended(&revoked).await;
    Ok(pb::LogoutAllResponse {
        revoked_sessions: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
    })
}

/// `VerifyToken`: the principal behind a credential, for verifiers of other services.
pub async fn verify_token(
    h: &AuthHandlers,
    request: Request<pb::VerifyTokenRequest>,
) -> Result<pb::VerifyTokenResponse, AuthError> {
    let token = request.into_inner().token;
    if token.is_empty() {
        return Err(AuthError::invalid("token", "is required"));
    }
    // The session and the account from the caches (no database, no Redis, when both
    // are in memory); the role is the account's current one.
    let principal = h.principal_of(&token).await?.0;
    let (kind, scopes) = match &principal.credential {
        Credential::ApiKey { scopes, .. } => (pb::CredentialKind::ApiKey, scopes.clone()),
        Credential::Session { .. } => (pb::CredentialKind::AccessToken, Vec::new()),
    };
    Ok(pb::VerifyTokenResponse {
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
            scopes,
            kind: kind.into(),
            expire_time: principal.expires_at.map(|exp| prost_types::Timestamp {
                seconds: exp,
                nanos: 0,
            }),
            api_key_id: principal
                .api_key_id()
                .map(|k| k.to_string())
                .unwrap_or_default(),
        }),
    })
}

/// `GetJwks`: the public keys verifiers check access tokens with.
pub async fn get_jwks(
    h: &AuthHandlers,
    _request: Request<pb::GetJwksRequest>,
) -> Result<pb::GetJwksResponse, AuthError> {
    let ring = h.key_ring().await?;
    Ok(pb::GetJwksResponse {
        keys: ring.jwks.clone(),
    })
}

/// `ListSessions`: the caller's live sessions, newest first.
pub async fn list_sessions(
    h: &AuthHandlers,
    request: Request<pb::ListSessionsRequest>,
) -> Result<pb::ListSessionsResponse, AuthError> {
    let (principal, _) = h.session(&request).await?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let context = PageContext::new(LIST_SESSIONS, &principal.user_id, &[]);
    let after = Cursor::decode(&req.page_token, &context)?;
    let mut conn = h.ctx.db.get().await?;
    let rows =
        store::live_sessions(&mut conn, principal.user_id, db_now(), after, limit + 1).await?;
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.created_at,
            id: last.id,
        }
        .encode(&context)
    });
    Ok(pb::ListSessionsResponse {
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
    })
}

/// `RevokeSession`: ends one of the caller's sessions.
pub async fn revoke_session(
    h: &AuthHandlers,
    request: Request<pb::RevokeSessionRequest>,
) -> Result<pb::RevokeSessionResponse, AuthError> {
    let (principal, _) = h.session(&request).await?;
    let session = parse_id("session_id", &request.into_inner().session_id)?;
    let mut conn = h.ctx.db.get().await?;
    // Another user's session, an ended one and a missing one all look the same.
    if !store::revoke_session(&mut conn, principal.user_id, session, db_now()).await? {
        return Err(AuthError::not_found("session"));
    }
    h.sessions_ended(&[session]).await;
    Ok(pb::RevokeSessionResponse {})
}
