//! Service accounts: admin accounts that nobody signs in to (their password is random and
//! never shown), whose API keys let one service of the suite call another on behalf of
//! every user, e.g. content shipping messages' usage to analytics (`usage:write`).
//! `strata auth service-key` makes them the way an operator would by hand.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rand::RngCore as _;
use uuid::Uuid;

use crate::error::AuthError;
use crate::password::Passwords;
use crate::store;
use crate::tokens::{hash_token, new_api_key};

/// Whether `user` was made by this module.
async fn is_service_account(conn: &mut AsyncPgConnection, user: Uuid) -> Result<bool, AuthError> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM auth.service_accounts WHERE user_id = $1) AS found",
    )
    .bind::<SqlUuid, _>(user)
    .get_result(conn)
    .await?;
    Ok(found.found)
}

/// How many accounts people signed up for (every account but the service accounts).
pub async fn people(conn: &mut AsyncPgConnection) -> diesel::QueryResult<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        people: i64,
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS people FROM auth.users u \
         WHERE NOT EXISTS (SELECT 1 FROM auth.service_accounts s WHERE s.user_id = u.id)",
    )
    .get_result(conn)
    .await?;
    Ok(count.people)
}

/// A service account's key.
#[derive(Debug)]
pub struct ServiceKey {
    /// The account.
    pub user_id: Uuid,
    /// The key's secret (shown once; a kept key is the one given).
    pub secret: String,
    /// Whether a new key was made (otherwise the kept one still works).
    pub created: bool,
}

/// Makes sure the account `email` exists and is an admin, and returns a live key of it
/// named `name` with `scopes`: `keep` when it is such a key (so running this again changes
/// nothing), else a new one.
pub async fn ensure_key(
    conn: &mut AsyncPgConnection,
    email: &str,
    name: &str,
    scopes: &[String],
    keep: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ServiceKey, AuthError> {
    let user = match store::user_by_email(conn, email).await? {
        // Only an account this command made is reused: one someone signed up with this
        // email must not become an admin.
        Some(user) if is_service_account(conn, user.id).await? => user,
        Some(_) => {
            return Err(AuthError::Api(strata_errors::ApiError::FailedPrecondition(
                format!(
                    "{email} belongs to an account that is not a service account; choose another email"
                )
                .into(),
            )));
        }
        None => {
            let mut random = [0u8; 32];
            rand::rng().fill_bytes(&mut random);
            let hash = Passwords::new()?
                .hash(URL_SAFE_NO_PAD.encode(random))
                .await?;
            conn.transaction::<_, AuthError, _>(async |conn| {
                let user = store::insert_user(conn, email, &hash, name, None).await?;
                diesel::sql_query(
                    "INSERT INTO auth.service_accounts (user_id, created_at) VALUES ($1, $2)",
                )
                .bind::<SqlUuid, _>(user.id)
                .bind::<Timestamptz, _>(now)
                .execute(conn)
                .await?;
                Ok(user)
            })
            .await?
        }
    };
    store::grant_admin(conn, email, now).await?;
    if let Some(secret) = keep
        && let Some(key) = store::api_key_state(conn, &hash_token(secret)).await?
        && key.user_id == user.id
        && key.revoked_at.is_none()
        && key.expires_at.is_none_or(|at| at > now)
        && scopes.iter().all(|s| key.scopes.contains(s))
    {
        return Ok(ServiceKey {
            user_id: user.id,
            secret: secret.to_owned(),
            created: false,
        });
    }
    let (secret, prefix, hash) = new_api_key();
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    store::insert_api_key(
        conn,
        store::NewApiKey {
            user_id: user.id,
            name,
            prefix: &prefix,
            hash: &hash,
            scopes: &scopes,
            expires_at: None,
            request_id: None,
        },
        now,
    )
    .await?;
    Ok(ServiceKey {
        user_id: user.id,
        secret,
        created: true,
    })
}
