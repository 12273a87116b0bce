//! Queries of the `auth` schema: plain async functions over `&mut AsyncPgConnection`, so
//! callers compose them into transactions.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::config::AuthConfig;
use crate::schema::{api_keys, refresh_tokens, sessions, users};
use crate::tokens::new_refresh_token;

#[diesel::prelude::declare_sql_function]
extern "SQL" {
    /// SQL `lower(text)`; matches the `lower(email)` unique index.
    #[sql_name = "lower"]
    fn lower_text(x: Text) -> Text;
}

/// Account status as stored.
pub const ACTIVE: &str = "ACTIVE";
/// Account status as stored.
pub const DISABLED: &str = "DISABLED";

/// A row of `auth.users`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    /// Id.
    pub id: Uuid,
    /// Email as entered.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Display name.
    pub display_name: String,
    /// Avatar URL.
    pub avatar_url: String,
    /// Bio.
    pub bio: String,
    /// Locale.
    pub locale: String,
    /// Time zone.
    pub time_zone: String,
    /// `USER` or `ADMIN`.
    pub role: String,
    /// `ACTIVE` or `DISABLED`.
    pub status: String,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last password change.
    pub password_changed_at: DateTime<Utc>,
}

/// Inserts a user; a duplicate email fails with a unique violation.
pub async fn insert_user(
    conn: &mut AsyncPgConnection,
    email: &str,
    password_hash: &str,
    display_name: &str,
    request_id: Option<Uuid>,
) -> QueryResult<UserRow> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::now_v7()),
            users::email.eq(email),
            users::password_hash.eq(password_hash),
            users::display_name.eq(display_name),
            users::signup_request_id.eq(request_id),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

/// The account a sign-up with `request_id` created.
pub async fn user_by_signup_request(
    conn: &mut AsyncPgConnection,
    request_id: Uuid,
) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::signup_request_id.eq(request_id))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The user with `email`, compared case-insensitively.
pub async fn user_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(lower_text(users::email).eq(email.to_lowercase()))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The user with `id`.
pub async fn user_by_id(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A new session's tokens.
#[derive(Debug)]
pub struct NewSession {
    /// Session id.
    pub session_id: Uuid,
    /// Session's absolute expiry.
    pub absolute_expires: DateTime<Utc>,
    /// The refresh token (only ever in this response).
    pub refresh_token: String,
    /// Its expiry.
    pub refresh_expires: DateTime<Utc>,
}

fn after(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or_default()
}

/// Creates a session for `user_id` and its first refresh token.
pub async fn create_session(
    conn: &mut AsyncPgConnection,
    config: &AuthConfig,
    user_id: Uuid,
    user_agent: &str,
    ip_address: &str,
    now: DateTime<Utc>,
) -> QueryResult<NewSession> {
    let session_id = Uuid::now_v7();
    let absolute = after(now, config.refresh_absolute);
    let idle = after(now, config.refresh_idle).min(absolute);
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(session_id),
            sessions::user_id.eq(user_id),
            sessions::created_at.eq(now),
            sessions::last_seen_at.eq(now),
            sessions::idle_expires_at.eq(idle),
            sessions::absolute_expires_at.eq(absolute),
            sessions::user_agent.eq(user_agent),
            sessions::ip_address.eq(ip_address),
        ))
        .execute(conn)
        .await?;
    let (refresh_token, hash) = new_refresh_token();
    insert_refresh_token(conn, session_id, &hash, None, idle, now).await?;
    Ok(NewSession {
        session_id,
        absolute_expires: absolute,
        refresh_token,
        refresh_expires: idle,
    })
}

async fn insert_refresh_token(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
    hash: &[u8; 32],
    parent: Option<Uuid>,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(Uuid::now_v7()),
            refresh_tokens::session_id.eq(session_id),
            // One family per sign-in: the session.
            refresh_tokens::family_id.eq(session_id),
            refresh_tokens::token_hash.eq(&hash[..]),
            refresh_tokens::parent_id.eq(parent),
            refresh_tokens::created_at.eq(now),
            refresh_tokens::expires_at.eq(expires),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

#[derive(Queryable)]
struct PresentedToken {
    id: Uuid,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    session_id: Uuid,
    session_revoked_at: Option<DateTime<Utc>>,
    idle_expires_at: DateTime<Utc>,
    absolute_expires_at: DateTime<Utc>,
    user_id: Uuid,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was valid and is now used; here is its successor.
    Rotated {
        /// The session's user (boxed: the other outcomes carry nothing).
        user: Box<UserRow>,
        /// The session.
        session_id: Uuid,
        /// Its absolute expiry.
        absolute_expires: DateTime<Utc>,
        /// The new refresh token.
        refresh_token: String,
        /// Its expiry.
        refresh_expires: DateTime<Utc>,
    },
    /// Unknown, expired, revoked, or its session or user is no longer active.
    Invalid,
    /// Already used: the whole family and its session were revoked.
    Reused {
        /// The revoked session.
        session_id: Uuid,
    },
}

/// Rotates the refresh token whose hash is `hash`, in one transaction. The token row is
/// locked (`FOR UPDATE`), so of concurrent presentations exactly one rotates it; the
/// others find it used and are treated as reuse, which revokes the family and the
/// session.
pub async fn rotate_refresh_token(
    conn: &mut AsyncPgConnection,
    config: &AuthConfig,
    hash: &[u8; 32],
    now: DateTime<Utc>,
) -> QueryResult<RefreshOutcome> {
    conn.transaction(async |conn| {
        let presented: Option<PresentedToken> = refresh_tokens::table
            .inner_join(sessions::table)
            .filter(refresh_tokens::token_hash.eq(&hash[..]))
            .select((
                refresh_tokens::id,
                refresh_tokens::family_id,
                refresh_tokens::expires_at,
                refresh_tokens::used_at,
                refresh_tokens::revoked_at,
                sessions::id,
                sessions::revoked_at,
                sessions::idle_expires_at,
                sessions::absolute_expires_at,
                sessions::user_id,
            ))
            // Locks the token and its session row: presentations of one token serialize.
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(token) = presented else {
            return Ok(RefreshOutcome::Invalid);
        };
        if token.used_at.is_some() {
            revoke_family(conn, token.family_id, token.session_id, now).await?;
            return Ok(RefreshOutcome::Reused {
                session_id: token.session_id,
            });
        }
        if token.revoked_at.is_some()
            || token.session_revoked_at.is_some()
            || token.expires_at <= now
            || token.idle_expires_at <= now
            || token.absolute_expires_at <= now
        {
            return Ok(RefreshOutcome::Invalid);
        }
        let Some(user) = user_by_id(conn, token.user_id)
            .await?
            .filter(|u| u.status == ACTIVE)
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        diesel::update(refresh_tokens::table.find(token.id))
            .set(refresh_tokens::used_at.eq(now))
            .execute(conn)
            .await?;
        let idle = after(now, config.refresh_idle).min(token.absolute_expires_at);
        diesel::update(sessions::table.find(token.session_id))
            .set((
                sessions::last_seen_at.eq(now),
                sessions::idle_expires_at.eq(idle),
            ))
            .execute(conn)
            .await?;
        let (refresh_token, new_hash) = new_refresh_token();
        insert_refresh_token(conn, token.session_id, &new_hash, Some(token.id), idle, now).await?;
        Ok(RefreshOutcome::Rotated {
            user: Box::new(user),
            session_id: token.session_id,
            absolute_expires: token.absolute_expires_at,
            refresh_token,
            refresh_expires: idle,
        })
    })
    .await
}

async fn revoke_family(
    conn: &mut AsyncPgConnection,
    family: Uuid,
    session: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(
        refresh_tokens::table.filter(
            refresh_tokens::family_id
                .eq(family)
                .and(refresh_tokens::revoked_at.is_null()),
        ),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
    .await?;
    diesel::update(
        sessions::table
            .find(session)
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes `session` of `user` and its refresh tokens; false when there was no such live
/// session.
pub async fn revoke_session(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    session: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    conn.transaction(async |conn| {
        let revoked = diesel::update(
            sessions::table.find(session).filter(
                sessions::user_id
                    .eq(user)
                    .and(sessions::revoked_at.is_null()),
            ),
        )
        .set(sessions::revoked_at.eq(now))
        .execute(conn)
        .await?;
        // Not the caller's live session (another user's, an ended or a missing one):
        // nothing else may change either.
        if revoked == 0 {
            return Ok(false);
        }
        diesel::update(
            refresh_tokens::table.filter(
                refresh_tokens::session_id
                    .eq(session)
                    .and(refresh_tokens::revoked_at.is_null()),
            ),
        )
        .set(refresh_tokens::revoked_at.eq(now))
        .execute(conn)
        .await?;
        Ok(true)
    })
    .await
}

/// Revokes every live session of `user` (except `keep`) and their refresh tokens;
/// returns the revoked session ids.
pub async fn revoke_sessions(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> QueryResult<Vec<Uuid>> {
    conn.transaction(async |conn| {
        let revoked: Vec<Uuid> = diesel::update(
            sessions::table.filter(
                sessions::user_id
                    .eq(user)
                    .and(sessions::revoked_at.is_null())
                    // The nil UUID is never a session id (they are v7), so it keeps nothing.
                    .and(sessions::id.ne(keep.unwrap_or(Uuid::nil()))),
            ),
        )
        .set(sessions::revoked_at.eq(now))
        .returning(sessions::id)
        .get_results(conn)
        .await?;
        diesel::update(
            refresh_tokens::table.filter(
                refresh_tokens::session_id
                    .eq_any(&revoked)
                    .and(refresh_tokens::revoked_at.is_null()),
            ),
        )
        .set(refresh_tokens::revoked_at.eq(now))
        .execute(conn)
        .await?;
        Ok(revoked)
    })
    .await
}

/// The owner, revocation time and expiries of `session`, whatever its state (the per-call
/// check reads them through the cache and decides). Takes a shared connection: every
/// authenticated call that misses the cache makes this lookup.
pub async fn session_state(
    mut conn: &AsyncPgConnection,
    session: Uuid,
) -> QueryResult<Option<SessionState>> {
    sessions::table
        .find(session)
        .select((
            sessions::user_id,
            sessions::revoked_at,
            sessions::idle_expires_at,
            sessions::absolute_expires_at,
        ))
        .first(&mut conn)
        .await
        .optional()
}

/// A session's owner, revocation time, idle and absolute expiries.
pub type SessionState = (Uuid, Option<DateTime<Utc>>, DateTime<Utc>, DateTime<Utc>);

/// A row of `auth.sessions`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    /// Id.
    pub id: Uuid,
    /// Sign-in.
    pub created_at: DateTime<Utc>,
    /// Last refresh.
    pub last_seen_at: DateTime<Utc>,
    /// Idle expiry.
    pub idle_expires_at: DateTime<Utc>,
    /// Absolute expiry.
    pub absolute_expires_at: DateTime<Utc>,
    /// User agent at sign-in.
    pub user_agent: String,
    /// IP at sign-in.
    pub ip_address: String,
}

/// Up to `limit` live sessions of `user`, newest first, after `after`. Served by the
/// partial index on live sessions `(user_id, created_at DESC, id)`.
pub async fn live_sessions(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    after: Option<strata_runtime::pagination::Cursor>,
    limit: i64,
) -> QueryResult<Vec<SessionRow>> {
    let mut query = sessions::table
        .filter(
            sessions::user_id
                .eq(user)
                .and(sessions::revoked_at.is_null())
                .and(sessions::idle_expires_at.gt(now))
                .and(sessions::absolute_expires_at.gt(now)),
        )
        .into_boxed();
    if let Some(cursor) = after {
        query = query.filter(
            sessions::created_at.lt(cursor.time).or(sessions::created_at
                .eq(cursor.time)
                .and(sessions::id.lt(cursor.id))),
        );
    }
    query
        .order((sessions::created_at.desc(), sessions::id.desc()))
        .limit(limit)
        .select(SessionRow::as_select())
        .load(conn)
        .await
}

/// Profile fields to change; `None` leaves a field as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct ProfileChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// New bio.
    pub bio: Option<String>,
    /// New locale.
    pub locale: Option<String>,
    /// New time zone.
    pub time_zone: Option<String>,
}

/// Applies `changes` to `user`'s profile and returns the updated row.
pub async fn update_profile(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    changes: ProfileChanges,
    now: DateTime<Utc>,
) -> QueryResult<UserRow> {
    diesel::update(users::table.find(user))
        .set((changes, users::updated_at.eq(now)))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

/// Replaces `user`'s password hash.
pub async fn set_password(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    hash: &str,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(users::table.find(user))
        .set((
            users::password_hash.eq(hash),
            users::password_changed_at.eq(now),
            users::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Filters of [`list_users`].
#[derive(Debug, Default)]
pub struct UserFilter {
    /// Stored role (`USER`/`ADMIN`).
    pub role: Option<&'static str>,
    /// Stored status (`ACTIVE`/`DISABLED`).
    pub status: Option<&'static str>,
    /// Case-insensitive email prefix.
    pub email_prefix: Option<String>,
}

diesel::infix_operator!(PatternGe, " ~>=~ ");
diesel::infix_operator!(PatternLt, " ~<~ ");

/// `s` with LIKE's wildcards escaped (PostgreSQL's default escape is `\`).
fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Up to `limit` users matching `filter` with ids after `after`, by id (creation order:
/// ids are UUIDv7). The email prefix uses the `lower(email) text_pattern_ops` index.
pub async fn list_users(
    conn: &mut AsyncPgConnection,
    filter: &UserFilter,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<UserRow>> {
    let mut query = users::table.into_boxed();
    if let Some(role) = filter.role {
        query = query.filter(users::role.eq(role));
    }
    if let Some(status) = filter.status {
        query = query.filter(users::status.eq(status));
    }
    if let Some(prefix) = &filter.email_prefix {
        let prefix = prefix.to_lowercase();
        // The range lets even a generic plan (a prepared statement's, whatever the prefix)
        // scan `users_email_key` (text_pattern_ops, byte order) from the prefix to just past
        // it; LIKE alone is usable by the index only when the planner sees the value. The
        // upper bound is the prefix followed by the highest code point, above every email
        // that continues the prefix with any other character; LIKE keeps the answer exact.
        query = query
            .filter(PatternGe::new(
                lower_text(users::email),
                prefix.clone().into_sql::<Text>(),
            ))
            .filter(PatternLt::new(
                lower_text(users::email),
                format!("{prefix}\u{10FFFF}").into_sql::<Text>(),
            ))
            .filter(lower_text(users::email).like(format!("{}%", escape_like(&prefix))));
    }
    if let Some(after) = after {
        query = query.filter(users::id.gt(after));
    }
    query
        .order(users::id.asc())
        .limit(limit)
        .select(UserRow::as_select())
        .load(conn)
        .await
}

/// Sets `user`'s role; `None` when there is no such user.
pub async fn set_role(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    role: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<UserRow>> {
    diesel::update(users::table.find(user))
        .set((users::role.eq(role), users::updated_at.eq(now)))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Sets `user`'s status; `None` when there is no such user.
pub async fn set_status(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    status: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<UserRow>> {
    diesel::update(users::table.find(user))
        .set((users::status.eq(status), users::updated_at.eq(now)))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// A row of `auth.api_keys` (the hash stays in the database).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Label.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last use (batched).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new API key's fields.
#[derive(Debug)]
pub struct NewApiKey<'a> {
    /// Owner.
    pub user_id: Uuid,
    /// Label.
    pub name: &'a str,
    /// Visible prefix.
    pub prefix: &'a str,
    /// SHA-256 of the secret.
    pub hash: &'a [u8; 32],
    /// Scopes.
    pub scopes: &'a [String],
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// The request's idempotency key.
    pub request_id: Option<Uuid>,
}

/// The id of `user`'s key created by the request `request_id`.
pub async fn api_key_by_request(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    request_id: Uuid,
) -> QueryResult<Option<Uuid>> {
    api_keys::table
        .filter(api_keys::user_id.eq(user))
        .filter(api_keys::request_id.eq(request_id))
        .select(api_keys::id)
        .first(conn)
        .await
        .optional()
}

/// Stores a new API key.
pub async fn insert_api_key(
    conn: &mut AsyncPgConnection,
    key: NewApiKey<'_>,
    now: DateTime<Utc>,
) -> QueryResult<ApiKeyRow> {
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(Uuid::now_v7()),
            api_keys::user_id.eq(key.user_id),
            api_keys::name.eq(key.name),
            api_keys::prefix.eq(key.prefix),
            api_keys::key_hash.eq(&key.hash[..]),
            api_keys::scopes.eq(key.scopes),
            api_keys::created_at.eq(now),
            api_keys::expires_at.eq(key.expires_at),
            api_keys::request_id.eq(key.request_id),
        ))
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await
}

/// Up to `limit` of `user`'s keys, newest first, after `after`.
pub async fn list_api_keys(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    after: Option<strata_runtime::pagination::Cursor>,
    limit: i64,
) -> QueryResult<Vec<ApiKeyRow>> {
    let mut query = api_keys::table
        .filter(api_keys::user_id.eq(user))
        .into_boxed();
    if let Some(cursor) = after {
        query = query.filter(
            api_keys::created_at.lt(cursor.time).or(api_keys::created_at
                .eq(cursor.time)
                .and(api_keys::id.lt(cursor.id))),
        );
    }
    query
        .order((api_keys::created_at.desc(), api_keys::id.desc()))
        .limit(limit)
        .select(ApiKeyRow::as_select())
        .load(conn)
        .await
}

/// Revokes `user`'s key `id`; its hash (to forget it in the caches), or `None` when there
/// is no such live key of theirs.
pub async fn revoke_api_key(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<Option<Vec<u8>>> {
    diesel::update(
        api_keys::table.find(id).filter(
            api_keys::user_id
                .eq(user)
                .and(api_keys::revoked_at.is_null()),
        ),
    )
    .set(api_keys::revoked_at.eq(now))
    .returning(api_keys::key_hash)
    .get_result(conn)
    .await
    .optional()
}

/// Revokes every live key of `user`; their hashes.
pub async fn revoke_user_api_keys(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<Vec<Vec<u8>>> {
    diesel::update(
        api_keys::table.filter(
            api_keys::user_id
                .eq(user)
                .and(api_keys::revoked_at.is_null()),
        ),
    )
    .set(api_keys::revoked_at.eq(now))
    .returning(api_keys::key_hash)
    .get_results(conn)
    .await
}

/// The key with this hash, whatever its state (the per-call check reads it through the
/// cache and decides).
pub async fn api_key_state(
    conn: &mut AsyncPgConnection,
    hash: &[u8; 32],
) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::key_hash.eq(&hash[..]))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Records last uses of many keys in one statement; never moves `last_used_at` back.
pub async fn touch_api_keys(
    conn: &mut AsyncPgConnection,
    uses: &[(Uuid, DateTime<Utc>)],
) -> QueryResult<usize> {
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = uses.iter().copied().unzip();
    diesel::sql_query(
        "UPDATE auth.api_keys AS k SET last_used_at = GREATEST(k.last_used_at, u.t)
           FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, t)
          WHERE k.id = u.id",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<diesel::sql_types::Array<diesel::sql_types::Timestamptz>, _>(times)
    .execute(conn)
    .await
}

/// Gives the user with `email` the ADMIN role (the bootstrap path for the first admin);
/// their id, or `None` when there is no such user.
pub async fn grant_admin(
    conn: &mut AsyncPgConnection,
    email: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<Uuid>> {
    diesel::update(users::table.filter(lower_text(users::email).eq(email.to_lowercase())))
        .set((users::role.eq("ADMIN"), users::updated_at.eq(now)))
        .returning(users::id)
        .get_result(conn)
        .await
        .optional()
}
