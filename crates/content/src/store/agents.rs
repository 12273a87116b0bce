//! The SQL of agents and the versions of their definition.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{
    BigInt, Bytea, Integer, Jsonb, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::like_escape;
use crate::ContentError;
use crate::versions::{self, NewVersion, Slot, Tables};

/// The agent tables.
pub const AGENTS: Tables = Tables {
    items: "content.agents",
    versions: "content.agent_versions",
    labels: "content.agent_labels",
    moves: "content.agent_label_moves",
    version_columns: VERSION_COLUMNS,
    what: "agent",
};

/// The columns of an agent, with its newest version's number.
const AGENT_COLUMNS: &str = "a.id, a.owner_id, a.name, a.type, a.status, a.labels, \
     a.created_at, a.updated_at, \
     (SELECT max(v.version) FROM content.agent_versions v WHERE v.item_id = a.id) AS latest";

/// An agent as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct AgentRow {
    /// Id (UUIDv7).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Owner (user id).
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    /// Name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Kind of agent.
    #[diesel(sql_type = Text, column_name = "type")]
    pub kind: String,
    /// `AgentStatus` number (1 to 3).
    #[diesel(sql_type = SmallInt)]
    pub status: i16,
    /// The owner's metadata map, as a JSON object.
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
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

/// A version of an agent's definition as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct VersionRow {
    /// The agent.
    #[diesel(sql_type = SqlUuid)]
    pub item_id: Uuid,
    /// Version number.
    #[diesel(sql_type = Integer)]
    pub version: i32,
    /// Model name.
    #[diesel(sql_type = Text)]
    pub model: String,
    /// System prompt.
    #[diesel(sql_type = Text)]
    pub system_prompt: String,
    /// Configuration, a JSON object.
    #[diesel(sql_type = Jsonb)]
    pub config: serde_json::Value,
    /// Tools, a JSON array of `{name, description, parameters}`.
    #[diesel(sql_type = Jsonb)]
    pub tools: serde_json::Value,
    /// Who saved it.
    #[diesel(sql_type = SqlUuid)]
    pub created_by: Uuid,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

const VERSION_COLUMNS: &str =
    "item_id, version, model, system_prompt, config, tools, created_by, created_at";

/// A definition, checked.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Model name.
    pub model: String,
    /// System prompt.
    pub system_prompt: String,
    /// Configuration, a JSON object.
    pub config: serde_json::Value,
    /// Tools, a JSON array.
    pub tools: serde_json::Value,
}

/// A new agent, checked.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// Owner (user id).
    pub owner_id: Uuid,
    /// Name.
    pub name: String,
    /// Kind of agent.
    pub kind: String,
    /// `AgentStatus` number.
    pub status: i16,
    /// The owner's metadata map, as a JSON object.
    pub labels: serde_json::Value,
    /// Definition of version 1.
    pub definition: Definition,
    /// AIP-155 idempotency key.
    pub request_id: Option<Uuid>,
    /// SHA-256 of the request.
    pub request_hash: Vec<u8>,
}

/// Inserts an agent and its version 1 in one transaction.
pub async fn insert_agent(
    conn: &mut AsyncPgConnection,
    new: &NewAgent,
    now: DateTime<Utc>,
) -> Result<Uuid, diesel::result::Error> {
    let id = Uuid::now_v7();
    conn.transaction(async |conn| {
        diesel::sql_query(
            "INSERT INTO content.agents (id, owner_id, name, type, status, labels, last_number, \
             created_at, updated_at, request_id, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, $9)",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(new.owner_id)
        .bind::<Text, _>(&new.name)
        .bind::<Text, _>(&new.kind)
        .bind::<SmallInt, _>(new.status)
        .bind::<Jsonb, _>(&new.labels)
        .bind::<Timestamptz, _>(now)
        .bind::<Nullable<SqlUuid>, _>(new.request_id)
        .bind::<Bytea, _>(&new.request_hash)
        .execute(conn)
        .await?;
        insert_version_row(conn, id, 1, &new.definition, new.owner_id, now, None).await
    })
    .await?;
    Ok(id)
}

async fn insert_version_row(
    conn: &mut AsyncPgConnection,
    item: Uuid,
    version: i32,
    definition: &Definition,
    by: Uuid,
    now: DateTime<Utc>,
    request: Option<(Uuid, &[u8])>,
) -> Result<(), diesel::result::Error> {
    let (request_id, hash) = request.unzip();
    diesel::sql_query(
        "INSERT INTO content.agent_versions (item_id, version, model, system_prompt, config, \
         tools, created_by, created_at, request_id, request_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind::<SqlUuid, _>(item)
    .bind::<Integer, _>(version)
    .bind::<Text, _>(&definition.model)
    .bind::<Text, _>(&definition.system_prompt)
    .bind::<Jsonb, _>(&definition.config)
    .bind::<Jsonb, _>(&definition.tools)
    .bind::<SqlUuid, _>(by)
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<SqlUuid>, _>(request_id)
    .bind::<Nullable<Bytea>, _>(hash)
    .execute(conn)
    .await
    .map(|_| ())
}

/// An agent by id.
pub async fn agent(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<AgentRow>, diesel::result::Error> {
    let rows: Vec<AgentRow> = diesel::sql_query(format!(
        "SELECT {AGENT_COLUMNS} FROM content.agents a WHERE a.id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Filters of ListAgents.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    /// Only this status.
    pub status: Option<i16>,
    /// Only this type.
    pub kind: Option<String>,
    /// Lowercase substring of the name.
    pub name_query: Option<String>,
}

/// `limit` of `owner`'s agents matching `filter`, newest first, after the keyset `after`.
pub async fn list_agents(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    filter: &AgentFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AgentRow>, diesel::result::Error> {
    let (after_time, after_id) = after.unzip();
    // Each filter spelled out only when given, so each combination's generic plan can use
    // the index that serves it.
    let status = if filter.status.is_some() {
        "a.status = $2"
    } else {
        "$2::smallint IS NULL"
    };
    let kind = if filter.kind.is_some() {
        "a.type = $3"
    } else {
        "$3::text IS NULL"
    };
    let name = if filter.name_query.is_some() {
        "lower(a.name) LIKE $4"
    } else {
        "$4::text IS NULL"
    };
    let bound = if after.is_some() {
        "(a.created_at, a.id) < ($5, $6)"
    } else {
        "$5::timestamptz IS NULL AND $6::uuid IS NULL"
    };
    diesel::sql_query(format!(
        "SELECT {AGENT_COLUMNS} FROM content.agents a WHERE a.owner_id = $1 \
         AND {status} AND {kind} AND {name} AND {bound} \
         ORDER BY a.created_at DESC, a.id DESC LIMIT $7"
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<SmallInt>, _>(filter.status)
    .bind::<Nullable<Text>, _>(filter.kind.as_deref())
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

/// New values of UpdateAgent (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    /// Name.
    pub name: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Status.
    pub status: Option<i16>,
    /// The owner's metadata map.
    pub labels: Option<serde_json::Value>,
}

/// Applies `changes` to agent `id` if `may_write` allows its owner; whether it did.
pub async fn update_agent(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
    changes: &AgentChanges,
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    conn.transaction(async |conn| {
        if !versions::lock_writable(conn, AGENTS, id, may_write).await? {
            return Ok(false);
        }
        diesel::sql_query(
            "UPDATE content.agents SET name = coalesce($2, name), type = coalesce($3, type), \
             status = coalesce($4, status), labels = coalesce($5, labels), updated_at = $6 \
             WHERE id = $1",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Nullable<Text>, _>(changes.name.as_deref())
        .bind::<Nullable<Text>, _>(changes.kind.as_deref())
        .bind::<Nullable<SmallInt>, _>(changes.status)
        .bind::<Nullable<Jsonb>, _>(changes.labels.as_ref())
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        Ok(true)
    })
    .await
}

/// Saves `definition` as version N+1 of `item` in one transaction, if `may_write` allows
/// its owner (`None` otherwise); a retried `request_id` answers with the version it made.
pub async fn insert_version(
    conn: &mut AsyncPgConnection,
    item: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
    definition: &Definition,
    by: Uuid,
    request: Option<(Uuid, &[u8])>,
    now: DateTime<Utc>,
) -> Result<Option<NewVersion<VersionRow>>, ContentError> {
    conn.transaction(async |conn| {
        if !versions::lock_writable(conn, AGENTS, item, may_write).await? {
            return Ok(None);
        }
        let made = match versions::claim_number(conn, AGENTS, item, request, now).await? {
            Slot::Conflict => return Ok(Some(NewVersion::Conflict)),
            Slot::Replayed(number) => {
                return Ok(versions::version_row(conn, AGENTS, item, number)
                    .await?
                    .map(NewVersion::Replayed));
            }
            Slot::New(number) => number,
        };
        insert_version_row(conn, item, made, definition, by, now, request).await?;
        Ok(versions::version_row(conn, AGENTS, item, made)
            .await?
            .map(NewVersion::Made))
    })
    .await
}
