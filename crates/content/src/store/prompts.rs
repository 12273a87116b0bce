//! The SQL of prompts and their versions.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::like_escape;
use crate::ContentError;
use crate::versions::{self, NewVersion, Slot, Tables};

/// The prompt tables.
pub const PROMPTS: Tables = Tables {
    items: "content.prompts",
    versions: "content.prompt_versions",
    labels: "content.prompt_labels",
    moves: "content.prompt_label_moves",
    version_columns: VERSION_COLUMNS,
    what: "prompt",
};

/// The columns of a prompt, with its newest version's number.
const PROMPT_COLUMNS: &str = "p.id, p.owner_id, p.name, p.tags, p.is_favorite, p.labels, \
     p.last_number, p.created_at, p.updated_at, \
     (SELECT max(v.version) FROM content.prompt_versions v WHERE v.item_id = p.id) AS latest";

/// A prompt as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct PromptRow {
    /// Id (UUIDv7).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Owner (user id).
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    /// Name, unique per owner.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Tags.
    #[diesel(sql_type = Array<Text>)]
    pub tags: Vec<String>,
    /// Marked by its owner.
    #[diesel(sql_type = Bool)]
    pub is_favorite: bool,
    /// The owner's metadata map, as a JSON object.
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
    /// Highest version number given.
    #[diesel(sql_type = Integer)]
    pub last_number: i32,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    /// The newest version still there.
    #[diesel(sql_type = Nullable<Integer>)]
    pub latest: Option<i32>,
}

/// A version as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct VersionRow {
    /// The prompt.
    #[diesel(sql_type = SqlUuid)]
    pub item_id: Uuid,
    /// Version number.
    #[diesel(sql_type = Integer)]
    pub version: i32,
    /// Template text.
    #[diesel(sql_type = Text)]
    pub template: String,
    /// Variables the template declares.
    #[diesel(sql_type = Array<Text>)]
    pub variables: Vec<String>,
    /// Model parameters, a JSON object.
    #[diesel(sql_type = Jsonb)]
    pub model_parameters: serde_json::Value,
    /// Who saved it (user id).
    #[diesel(sql_type = SqlUuid)]
    pub created_by: Uuid,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

const VERSION_COLUMNS: &str =
    "item_id, version, template, variables, model_parameters, created_by, created_at";

/// A version's body, checked.
#[derive(Debug, Clone)]
pub struct Body {
    /// Template text.
    pub template: String,
    /// Variables the template declares.
    pub variables: Vec<String>,
    /// Model parameters, a JSON object.
    pub model_parameters: serde_json::Value,
}

/// A new prompt, checked.
#[derive(Debug, Clone)]
pub struct NewPrompt {
    /// Owner (user id).
    pub owner_id: Uuid,
    /// Name, unique per owner.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Marked by its owner.
    pub is_favorite: bool,
    /// The owner's metadata map, as a JSON object.
    pub labels: serde_json::Value,
    /// Body of version 1.
    pub body: Body,
    /// AIP-155 idempotency key.
    pub request_id: Option<Uuid>,
    /// SHA-256 of the request, to tell a retry from another request with the same id.
    pub request_hash: Vec<u8>,
}

/// Inserts a prompt and its version 1 in one transaction.
pub async fn insert_prompt(
    conn: &mut AsyncPgConnection,
    new: &NewPrompt,
    now: DateTime<Utc>,
) -> Result<Uuid, diesel::result::Error> {
    let id = Uuid::now_v7();
    conn.transaction(async |conn| {
        diesel::sql_query(
            "INSERT INTO content.prompts (id, owner_id, name, tags, is_favorite, labels, \
             last_number, created_at, updated_at, request_id, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, $9)",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(new.owner_id)
        .bind::<Text, _>(&new.name)
        .bind::<Array<Text>, _>(&new.tags)
        .bind::<Bool, _>(new.is_favorite)
        .bind::<Jsonb, _>(&new.labels)
        .bind::<Timestamptz, _>(now)
        .bind::<Nullable<SqlUuid>, _>(new.request_id)
        .bind::<Bytea, _>(&new.request_hash)
        .execute(conn)
        .await?;
        insert_version_row(conn, id, 1, &new.body, new.owner_id, now, None, &[]).await
    })
    .await?;
    Ok(id)
}

#[expect(clippy::too_many_arguments, reason = "one column each")]
async fn insert_version_row(
    conn: &mut AsyncPgConnection,
    item: Uuid,
    version: i32,
    body: &Body,
    by: Uuid,
    now: DateTime<Utc>,
    request_id: Option<Uuid>,
    request_hash: &[u8],
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO content.prompt_versions (item_id, version, template, variables, \
         model_parameters, created_by, created_at, request_id, request_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind::<SqlUuid, _>(item)
    .bind::<Integer, _>(version)
    .bind::<Text, _>(&body.template)
    .bind::<Array<Text>, _>(&body.variables)
    .bind::<Jsonb, _>(&body.model_parameters)
    .bind::<SqlUuid, _>(by)
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<SqlUuid>, _>(request_id)
    .bind::<Bytea, _>(request_hash)
    .execute(conn)
    .await
    .map(|_| ())
}

/// A prompt by id.
pub async fn prompt(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<PromptRow>, diesel::result::Error> {
    let rows: Vec<PromptRow> = diesel::sql_query(format!(
        "SELECT {PROMPT_COLUMNS} FROM content.prompts p WHERE p.id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Filters of ListPrompts.
#[derive(Debug, Clone, Default)]
pub struct PromptFilter {
    /// Only favorites.
    pub favorites_only: bool,
    /// Only with this tag.
    pub tag: Option<String>,
    /// Folder, without the trailing '/'.
    pub folder: Option<String>,
    /// Lowercase substring of the name.
    pub name_query: Option<String>,
}

/// `limit` of `owner`'s prompts matching `filter`, newest first, after the keyset `after`
/// (created_at, id).
pub async fn list_prompts(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    filter: &PromptFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<PromptRow>, diesel::result::Error> {
    let (after_time, after_id) = after.unzip();
    // Each filter is spelled out only when given (not `$n IS NULL OR …`), so the generic
    // plan of each combination can use the index that serves it.
    let favorites = if filter.favorites_only {
        "p.is_favorite AND $2"
    } else {
        "NOT $2"
    };
    let tag = if filter.tag.is_some() {
        "p.tags @> ARRAY[$3::text]"
    } else {
        "$3::text IS NULL"
    };
    // A folder is a range of the (owner, name text_pattern_ops) index.
    let folder = if filter.folder.is_some() {
        "p.name ~>=~ $4 AND p.name ~<~ ($4 || chr(1114111))"
    } else {
        "$4::text IS NULL"
    };
    let name = if filter.name_query.is_some() {
        "lower(p.name) LIKE $5"
    } else {
        "$5::text IS NULL"
    };
    let bound = if after.is_some() {
        "(p.created_at, p.id) < ($6, $7)"
    } else {
        "$6::timestamptz IS NULL AND $7::uuid IS NULL"
    };
    diesel::sql_query(format!(
        "SELECT {PROMPT_COLUMNS} FROM content.prompts p WHERE p.owner_id = $1 \
         AND {favorites} AND {tag} AND {folder} AND {name} AND {bound} \
         ORDER BY p.created_at DESC, p.id DESC LIMIT $8"
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Bool, _>(filter.favorites_only)
    .bind::<Nullable<Text>, _>(filter.tag.as_deref())
    .bind::<Nullable<Text>, _>(filter.folder.as_ref().map(|f| format!("{f}/")))
    .bind::<Nullable<Text>, _>(
        filter
            .name_query
            .as_ref()
            .map(|q| format!("%{}%", like_escape(q))),
    )
    .bind::<Nullable<Timestamptz>, _>(after_time)
    .bind::<Nullable<SqlUuid>, _>(after_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// New values of UpdatePrompt (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct PromptChanges {
    /// Name, unique per owner.
    pub name: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Marked by its owner.
    pub is_favorite: Option<bool>,
    /// The owner's metadata map, as a JSON object.
    pub labels: Option<serde_json::Value>,
}

/// Applies `changes` to prompt `id` if `may_write` allows its owner; whether it did.
pub async fn update_prompt(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
    changes: &PromptChanges,
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    conn.transaction(async |conn| {
        if !versions::lock_writable(conn, PROMPTS, id, may_write).await? {
            return Ok(false);
        }
        diesel::sql_query(
            "UPDATE content.prompts SET name = coalesce($2, name), tags = coalesce($3, tags), \
             is_favorite = coalesce($4, is_favorite), labels = coalesce($5, labels), \
             updated_at = $6 WHERE id = $1",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Nullable<Text>, _>(changes.name.as_deref())
        .bind::<Nullable<Array<Text>>, _>(changes.tags.as_ref())
        .bind::<Nullable<Bool>, _>(changes.is_favorite)
        .bind::<Nullable<Jsonb>, _>(changes.labels.as_ref())
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        Ok(true)
    })
    .await
}

/// Saves `body` as version N+1 of `item` in one transaction, if `may_write` allows its
/// owner (`None` otherwise); a retried `request_id` answers with the version it made.
pub async fn insert_version(
    conn: &mut AsyncPgConnection,
    item: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
    body: &Body,
    by: Uuid,
    request: Option<(Uuid, &[u8])>,
    now: DateTime<Utc>,
) -> Result<Option<NewVersion<VersionRow>>, ContentError> {
    conn.transaction(async |conn| {
        if !versions::lock_writable(conn, PROMPTS, item, may_write).await? {
            return Ok(None);
        }
        let number = match versions::claim_number(conn, PROMPTS, item, request, now).await? {
            Slot::New(number) => number,
            Slot::Replayed(number) => {
                return Ok(versions::version_row(conn, PROMPTS, item, number)
                    .await?
                    .map(NewVersion::Replayed));
            }
            Slot::Conflict => return Ok(Some(NewVersion::Conflict)),
        };
        let (request_id, hash) = request.unzip();
        insert_version_row(
            conn,
            item,
            number,
            body,
            by,
            now,
            request_id,
            hash.unwrap_or_default(),
        )
        .await?;
        Ok(versions::version_row(conn, PROMPTS, item, number)
            .await?
            .map(NewVersion::Made))
    })
    .await
}
