//! API keys: created (the secret is shown once), listed and revoked by a session of their
//! owner.

use strata_errors::{ApiError, Resource, Violations};
use strata_proto::strata::auth::v1::{self as pb};
use strata_runtime::pagination::{Cursor, PageContext, finish_page, page_size};
use strata_runtime::time::{from_timestamp, timestamp};
use tonic::Request;

use super::{AuthHandlers, db_now, parse_id, parse_request_id};
use crate::error::AuthError;
use crate::store;
use crate::tokens::new_api_key;

/// Most scopes one API key may carry.
const MAX_SCOPES: usize = 20;
/// The list RPC whose page tokens are bound to it.
const LIST_API_KEYS: &str = "strata.auth.v1.AuthService/ListApiKeys";

/// Whether `scope` looks like `resource:action` (lowercase letters and '_').
fn check_scope_syntax(scope: &str) -> bool {
    scope.len() <= 64
        && scope.split_once(':').is_some_and(|(resource, action)| {
            [resource, action].iter().all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
}

/// The proto of a stored key (never its secret).
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

/// The refusal of a replayed `CreateApiKey`: the secret was shown once and is not stored,
/// so the retry names the key its first attempt created instead.
fn replayed(key: uuid::Uuid) -> AuthError {
    AuthError::Api(ApiError::AlreadyExists {
        message: format!("API key {key} was already created with this request_id").into(),
        resource: Some(Resource {
            kind: "strata.auth.v1.ApiKey".into(),
            name: key.to_string(),
            description: "created by an earlier request with this request_id; its secret was \
                          shown only in that response: revoke the key and create another if it \
                          was lost"
                .into(),
        }),
    })
}

/// `CreateApiKey`: a new key of the caller; its secret is in this answer only.
pub async fn create_api_key(
    h: &AuthHandlers,
    request: Request<pb::CreateApiKeyRequest>,
) -> Result<pb::CreateApiKeyResponse, AuthError> {
    let (principal, _) = h.session(&request).await?;
    let req = request.into_inner();
    let now = db_now();
    let mut violations = Violations::new();
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        violations.add("name", "must be 1 to 100 characters");
    }
    if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
        violations.add("scopes", "must hold 1 to 20 scopes");
    }
    for (i, scope) in req.scopes.iter().enumerate() {
        if !check_scope_syntax(scope) {
            violations.add(
                "scopes",
                format!("scopes[{i}] must look like resource:action (lowercase letters and '_')"),
            );
        }
    }
    let expires_at = match req.expire_time {
        None => None,
        Some(t) => {
            let at = from_timestamp(&t).filter(|at| *at > now);
            if at.is_none() {
                violations.add("expire_time", "must be in the future");
            }
            at
        }
    };
    let request_id = violations
        .check(parse_request_id(&req.request_id))
        .flatten();
    violations.finish()?;
    let mut conn = h.ctx.db.get().await?;
    if let Some(id) = request_id
        && let Some(key) = store::api_key_by_request(&mut conn, principal.user_id, id).await?
    {
        return Err(replayed(key));
    }
    let mut scopes = req.scopes;
    scopes.sort();
    scopes.dedup();
    let (secret, prefix, hash) = new_api_key();
    let inserted = store::insert_api_key(
        &mut conn,
        store::NewApiKey {
            user_id: principal.user_id,
            name,
            prefix: &prefix,
            hash: &hash,
            scopes: &scopes,
            expires_at,
            request_id,
        },
        now,
    )
    .await;
    let key = match (inserted, request_id) {
        // A concurrent retry of the same request got there first.
        (
            Err(
                e @ diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ),
            ),
            Some(id),
        ) => {
            return Err(
                match store::api_key_by_request(&mut conn, principal.user_id, id).await? {
                    Some(key) => replayed(key),
                    // Another constraint: not a replay.
                    None => e.into(),
                },
            );
        }
        (inserted, _) => inserted?,
    };
    tracing::info!(user.id = %principal.user_id, api_key.id = %key.id, "API key created");
    Ok(pb::CreateApiKeyResponse {
        api_key: Some(api_key_proto(&key)),
        secret,
    })
}

/// `ListApiKeys`: the caller's keys, newest first.
pub async fn list_api_keys(
    h: &AuthHandlers,
    request: Request<pb::ListApiKeysRequest>,
) -> Result<pb::ListApiKeysResponse, AuthError> {
    let (principal, _) = h.session(&request).await?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let context = PageContext::new(LIST_API_KEYS, &principal.user_id, &[]);
    let after = Cursor::decode(&req.page_token, &context)?;
    let mut conn = h.ctx.db.get().await?;
    let rows = store::list_api_keys(&mut conn, principal.user_id, after, limit + 1).await?;
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.created_at,
            id: last.id,
        }
        .encode(&context)
    });
    Ok(pb::ListApiKeysResponse {
        api_keys: rows.iter().map(api_key_proto).collect(),
        next_page_token,
    })
}

/// `RevokeApiKey`: the key stops working at once.
pub async fn revoke_api_key(
    h: &AuthHandlers,
    request: Request<pb::RevokeApiKeyRequest>,
) -> Result<pb::RevokeApiKeyResponse, AuthError> {
    let (principal, _) = h.session(&request).await?;
    let id = parse_id("api_key_id", &request.into_inner().api_key_id)?;
    let mut conn = h.ctx.db.get().await?;
    // Another user's key, a revoked key and a missing one all look the same.
    let Some(hash) = store::revoke_api_key(&mut conn, principal.user_id, id, db_now()).await?
    else {
        return Err(AuthError::not_found("API key"));
    };
    h.cache.api_keys_revoked(&[hash]).await;
    Ok(pb::RevokeApiKeyResponse {})
}
