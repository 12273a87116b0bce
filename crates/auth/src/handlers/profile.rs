//! The caller's account: reading it (with a read mask), updating the profile fields, and
//! changing the password (which ends every other session).

use strata_errors::{Violation, Violations};
use strata_proto::strata::auth::v1::{self as pb};
use strata_runtime::identity::Role;
use strata_runtime::time::timestamp;
use tonic::Request;

use super::caller::{client_details, require_scope, require_session, role_of};
use super::{AuthHandlers, db_now};
use crate::error::AuthError;
use crate::store::{self, ACTIVE, ProfileChanges, UserRow};

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
/// Fields UpdateProfile may change.
const UPDATABLE_FIELDS: &[&str] = &["display_name", "avatar_url", "bio", "locale", "time_zone"];

/// The proto of a stored account.
pub(crate) fn user_proto(user: &UserRow) -> pb::User {
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

/// A trimmed display name of 1 to 100 characters, reported as `field`.
pub(super) fn check_display_name(field: &str, name: &str) -> Result<String, Violation> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(Violation::new(field, "must be 1 to 100 characters"));
    }
    Ok(name.to_owned())
}

/// The change of one profile field named by the update mask, checked.
fn profile_change(
    path: &str,
    user: &pb::User,
    changes: &mut ProfileChanges,
) -> Result<(), Violation> {
    match path {
        "display_name" => {
            changes.display_name = Some(check_display_name("display_name", &user.display_name)?);
        }
        "avatar_url" => {
            let url = user.avatar_url.trim();
            if !(url.is_empty() || (url.starts_with("https://") && url.len() <= 2048)) {
                return Err(Violation::new(
                    "user.avatar_url",
                    "must be empty or an https:// URL of at most 2048 bytes",
                ));
            }
            changes.avatar_url = Some(url.to_owned());
        }
        "bio" => {
            if user.bio.chars().count() > 1000 {
                return Err(Violation::new(
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
                return Err(Violation::new(
                    "user.locale",
                    "must be a BCP 47 language tag such as en-GB",
                ));
            }
            changes.locale = Some(user.locale.clone());
        }
        "time_zone" => {
            // Empty clears it; anything else must name a zone of the IANA database (as
            // spelled there: `Europe/Paris`, `America/Argentina/Buenos_Aires`, `UTC`).
            let known =
                user.time_zone.is_empty() || user.time_zone.parse::<chrono_tz::Tz>().is_ok();
            if !known {
                return Err(Violation::new(
                    "user.time_zone",
                    "must be empty or an IANA time zone such as Europe/Paris",
                ));
            }
            changes.time_zone = Some(user.time_zone.clone());
        }
        other if USER_FIELDS.contains(&other) => {
            return Err(Violation::new(
                "update_mask",
                format!(
                    "{other:?} cannot be updated; updatable: {}",
                    UPDATABLE_FIELDS.join(", ")
                ),
            ));
        }
        other => {
            return Err(Violation::new(
                "update_mask",
                format!("unknown field {other:?}"),
            ));
        }
    }
    Ok(())
}

/// Validates the masked fields of `user` into a change set, listing every violation.
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
    let mut violations = Violations::new();
    for path in &paths {
        violations.check(profile_change(path, &user, &mut changes));
    }
    violations.finish()?;
    Ok(changes)
}

/// `GetProfile`: the caller's account.
pub async fn get_profile(
    h: &AuthHandlers,
    request: Request<pb::GetProfileRequest>,
) -> Result<pb::GetProfileResponse, AuthError> {
    let (principal, user) = h.caller(&request).await?;
    require_scope(&principal, "profile:read")?;
    let mask = request.into_inner().read_mask;
    Ok(pb::GetProfileResponse {
        user: Some(apply_read_mask(
            std::sync::Arc::unwrap_or_clone(user),
            mask.as_ref(),
        )?),
    })
}

/// `UpdateProfile`: changes the fields the update mask names.
pub async fn update_profile(
    h: &AuthHandlers,
    request: Request<pb::UpdateProfileRequest>,
) -> Result<pb::UpdateProfileResponse, AuthError> {
    let principal = h.principal(&request).await?;
    require_scope(&principal, "profile:write")?;
    let req = request.into_inner();
    let changes = profile_changes(req.user.unwrap_or_default(), req.update_mask)?;
    let mut conn = h.ctx.db.get().await?;
    let user = store::update_profile(&mut conn, principal.user_id, changes, db_now()).await?;
    h.cache.user_changed(principal.user_id).await;
    Ok(pb::UpdateProfileResponse {
        user: Some(user_proto(&user)),
    })
}

/// `ChangePassword`: a new password, and every other session ended.
pub async fn change_password(
    h: &AuthHandlers,
    request: Request<pb::ChangePasswordRequest>,
) -> Result<pb::ChangePasswordResponse, AuthError> {
    let principal = h.principal(&request).await?;
    require_session(&principal)?;
    // The password hash is never cached: read the account itself.
    let user = {
        let mut conn = h.ctx.db.get().await?;
        store::user_by_id(&mut conn, principal.user_id)
            .await?
            .ok_or(AuthError::unauthenticated("session has ended"))?
    };
    let (_, ip) = client_details(&request);
    let req = request.into_inner();
    let mut violations = Violations::new();
    if req.current_password.is_empty() {
        violations.add("current_password", "is required");
    }
    if let Err(v) = h.passwords.check_policy(&req.new_password) {
        violations.add("new_password", v.to_string());
    }
    violations.finish()?;
    // Guessing the current password from a stolen session is throttled like sign-in.
    if let Some(retry_after) = h.throttle.locked_for(&user.email, &ip).await {
        return Err(AuthError::Locked(retry_after));
    }
    if !h
        .passwords
        .verify(req.current_password, Some(user.password_hash))
        .await?
    {
        h.throttle.record_failure(&user.email, &ip).await;
        return Err(AuthError::invalid("current_password", "is incorrect"));
    }
    let hash = h.passwords.hash(req.new_password).await?;
    let now = db_now();
    let mut conn = h.ctx.db.get().await?;
    let revoked = diesel_async::AsyncConnection::transaction(&mut *conn, async |conn| {
        store::set_password(conn, principal.user_id, &hash, now).await?;
        store::revoke_sessions(conn, principal.user_id, principal.session_id(), now).await
    })
    .await?;
    h.cache.user_changed(principal.user_id).await;
    h.sessions_ended(&revoked).await;
    tracing::info!(user.id = %principal.user_id, sessions.revoked = revoked.len(), "password changed");
    Ok(pb::ChangePasswordResponse {
        revoked_sessions: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
    })
}
