//! User administration for ADMIN callers: listing users, setting roles and statuses (a
//! demotion or a disabled account ends the user's sessions at once).

use strata_errors::Violations;
use strata_proto::strata::auth::v1::{self as pb};
use strata_runtime::identity::{Principal, Role};
use strata_runtime::pagination::{IdCursor, PageContext, finish_page, page_size};
use tonic::Request;

use super::caller::require_scope;
use super::profile::user_proto;
use super::sessions::MAX_EMAIL_LEN;
use super::{AuthHandlers, db_now, parse_id};
use crate::error::AuthError;
use crate::store::{self, ACTIVE, DISABLED, UserFilter};

/// The list RPC whose page tokens are bound to it.
const LIST_USERS: &str = "strata.auth.v1.AuthService/ListUsers";

fn require_admin(principal: &Principal) -> Result<(), AuthError> {
    require_scope(principal, "users:admin")?;
    if principal.is_admin() {
        Ok(())
    } else {
        Err(AuthError::permission_denied("requires the ADMIN role"))
    }
}

/// The stored spelling of a proto role (`None`: unspecified, where allowed).
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

/// The stored spelling of a proto status (`None`: unspecified, where allowed).
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

/// Records the violations of a nested check; other errors pass.
fn absorb<T>(
    violations: &mut Violations,
    result: Result<T, AuthError>,
) -> Result<Option<T>, AuthError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(AuthError::Api(e)) => Ok(violations.absorb(Err(e))?),
        Err(other) => Err(other),
    }
}

/// `ListUsers`: every account, filtered, by id.
pub async fn list_users(
    h: &AuthHandlers,
    request: Request<pb::ListUsersRequest>,
) -> Result<pb::ListUsersResponse, AuthError> {
    let principal = h.principal(&request).await?;
    require_admin(&principal)?;
    let req = request.into_inner();
    let mut violations = Violations::new();
    let limit = violations.absorb(page_size(req.page_size))?;
    if req.email_prefix.len() > MAX_EMAIL_LEN {
        violations.add("email_prefix", "must be at most 254 characters");
    }
    let role = absorb(&mut violations, stored_role("role", req.role, true))?;
    let status = absorb(&mut violations, stored_status("status", req.status, true))?;
    violations.finish()?;
    let filter = UserFilter {
        role: role.flatten(),
        status: status.flatten(),
        email_prefix: (!req.email_prefix.is_empty()).then_some(req.email_prefix),
    };
    let limit = limit.unwrap_or_default();
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
    let mut conn = h.ctx.db.get().await?;
    let rows = store::list_users(&mut conn, &filter, after.map(|c| c.0), limit + 1).await?;
    let (rows, next_page_token) =
        finish_page(rows, limit, |last| IdCursor(last.id).encode(&context));
    Ok(pb::ListUsersResponse {
        users: rows.iter().map(user_proto).collect(),
        next_page_token,
    })
}

/// `SetUserRole`: a demoted admin's sessions end now, rather than keeping admin power
/// until their tokens expire (access tokens carry the role).
pub async fn set_user_role(
    h: &AuthHandlers,
    request: Request<pb::SetUserRoleRequest>,
) -> Result<pb::SetUserRoleResponse, AuthError> {
    let principal = h.principal(&request).await?;
    require_admin(&principal)?;
    let req = request.into_inner();
    let mut violations = Violations::new();
    let user_id = absorb(&mut violations, parse_id("user_id", &req.user_id))?;
    let role = absorb(&mut violations, stored_role("role", req.role, false))?;
    let user_id = violations.finish_with(user_id)?;
    let role = role.flatten().unwrap_or(Role::User.as_str());
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let (user, revoked) = diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
        let before = store::user_by_id(conn, user_id)
            .await?
            .ok_or(AuthError::not_found("user"))?;
        let user = store::set_role(conn, user_id, role, now)
            .await?
            .ok_or(AuthError::not_found("user"))?;
        let demoted = before.role == Role::Admin.as_str() && role != Role::Admin.as_str();
        let revoked = if demoted {
            store::revoke_sessions(conn, user_id, None, now).await?
        } else {
            Vec::new()
        };
        Ok::<_, AuthError>((user, revoked))
    })
    .await?;
    h.cache.user_changed(user_id).await;
    h.sessions_ended(&revoked).await;
    tracing::info!(admin.id = %principal.user_id, user.id = %user.id, user.role = role, "role changed");
    Ok(pb::SetUserRoleResponse {
        user: Some(user_proto(&user)),
    })
}

/// `SetUserStatus`: disabling ends the user's sessions and revokes their API keys.
pub async fn set_user_status(
    h: &AuthHandlers,
    request: Request<pb::SetUserStatusRequest>,
) -> Result<pb::SetUserStatusResponse, AuthError> {
    let principal = h.principal(&request).await?;
    require_admin(&principal)?;
    let req = request.into_inner();
    let mut violations = Violations::new();
    let user_id = absorb(&mut violations, parse_id("user_id", &req.user_id))?;
    let status = absorb(&mut violations, stored_status("status", req.status, false))?;
    let user_id = violations.finish_with(user_id)?;
    let status = status.flatten().unwrap_or(ACTIVE);
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let (user, revoked) = diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
        let Some(user) = store::set_status(conn, user_id, status, now).await? else {
            return Err(AuthError::not_found("user"));
        };
        let (mut revoked, mut keys) = (Vec::new(), Vec::new());
        if status == DISABLED {
            revoked = store::revoke_sessions(conn, user_id, None, now).await?;
            keys = store::revoke_user_api_keys(conn, user_id, now).await?;
        }
        Ok((user, (revoked, keys)))
    })
    .await?;
    let (revoked, keys) = revoked;
    h.cache.user_changed(user_id).await;
    h.cache.api_keys_revoked(&keys).await;
    h.sessions_ended(&revoked).await;
    tracing::info!(admin.id = %principal.user_id, user.id = %user.id, user.status = status, "status changed");
    Ok(pb::SetUserStatusResponse {
        user: Some(user_proto(&user)),
    })
}
