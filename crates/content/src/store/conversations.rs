//! The SQL of conversations and their messages: rows of a tree (each message names its
//! parent), numbered per conversation by a counter on the conversation's row, so numbers
//! are gap-free and increase in commit order (the row lock is held to commit).

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Integer, Jsonb, Nullable, SmallInt, Text, Timestamptz,
    Uuid as SqlUuid,
};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::watch::WATCH_LOCK_CLASS;

/// The conversations table (for request-id replays).
pub const CONVERSATIONS: &str = "content.conversations";

/// The columns of a conversation.
const COLUMNS: &str = "c.id, c.owner_id, c.agent_id, c.agent_version, c.project_id, c.title, \
     c.labels, c.archived, c.message_count, c.last_sequence, c.active_leaf, c.last_message_at, \
     c.active_at, c.created_at, c.updated_at, c.task_id";

/// The PostgreSQL channel appends and deletions notify, with `<conversation>:<last
/// sequence>` (`-1`: deleted), at commit: how watchers on every replica learn of them.
pub const MESSAGES_CHANNEL: &str = "content_messages";

/// The columns of a message.
const MESSAGE_COLUMNS: &str =
    "m.conversation_id, m.sequence, m.id, m.parent_id, m.role, m.parts, m.created_at, m.usage";

/// A conversation as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct ConversationRow {
    /// Id (UUIDv7).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Owner.
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    /// The agent it talks to.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub agent_id: Option<Uuid>,
    /// The agent's version resolved at creation.
    #[diesel(sql_type = Nullable<Integer>)]
    pub agent_version: Option<i32>,
    /// Its project.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub project_id: Option<Uuid>,
    /// Title.
    #[diesel(sql_type = Text)]
    pub title: String,
    /// The owner's metadata map.
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
    /// Archived.
    #[diesel(sql_type = Bool)]
    pub archived: bool,
    /// Messages on every branch.
    #[diesel(sql_type = BigInt)]
    pub message_count: i64,
    /// The last sequence number given.
    #[diesel(sql_type = BigInt)]
    pub last_sequence: i64,
    /// Newest message of the active branch.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub active_leaf: Option<Uuid>,
    /// When the last message was appended.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_message_at: Option<DateTime<Utc>>,
    /// Last message, else creation: the order of lists.
    #[diesel(sql_type = Timestamptz)]
    pub active_at: DateTime<Utc>,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    /// The workflow task that produced it.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub task_id: Option<Uuid>,
}

/// A message as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct MessageRow {
    /// Its conversation.
    #[diesel(sql_type = SqlUuid)]
    pub conversation_id: Uuid,
    /// Its number in the conversation.
    #[diesel(sql_type = BigInt)]
    pub sequence: i64,
    /// Id (UUIDv7).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// The message it answers.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub parent_id: Option<Uuid>,
    /// `Role` number.
    #[diesel(sql_type = SmallInt)]
    pub role: i16,
    /// Its parts (JSON array).
    #[diesel(sql_type = Jsonb)]
    pub parts: serde_json::Value,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// The LLM call behind it (see [`NewMessage::usage`]).
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub usage: Option<serde_json::Value>,
}

/// A new conversation, checked.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Id, chosen by the caller (the agent version is resolved for it).
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// The agent and its resolved version.
    pub agent: Option<(Uuid, i32)>,
    /// Its project.
    pub project_id: Option<Uuid>,
    /// Title.
    pub title: String,
    /// The owner's metadata map.
    pub labels: serde_json::Value,
    /// AIP-155 idempotency key.
    pub request_id: Option<Uuid>,
    /// SHA-256 of the request.
    pub request_hash: Vec<u8>,
    /// The workflow task that produced it.
    pub task_id: Option<Uuid>,
}

/// Inserts a conversation.
pub async fn insert_conversation(
    conn: &mut AsyncPgConnection,
    new: &NewConversation,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let (agent_id, agent_version) = new.agent.unzip();
    diesel::sql_query(
        "INSERT INTO content.conversations (id, owner_id, agent_id, agent_version, project_id, \
         title, labels, active_at, created_at, updated_at, request_id, request_hash, task_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $9, $10, $11)",
    )
    .bind::<SqlUuid, _>(new.id)
    .bind::<SqlUuid, _>(new.owner_id)
    .bind::<Nullable<SqlUuid>, _>(agent_id)
    .bind::<Nullable<Integer>, _>(agent_version)
    .bind::<Nullable<SqlUuid>, _>(new.project_id)
    .bind::<Text, _>(&new.title)
    .bind::<Jsonb, _>(&new.labels)
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<SqlUuid>, _>(new.request_id)
    .bind::<Bytea, _>(&new.request_hash)
    .bind::<Nullable<SqlUuid>, _>(new.task_id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// A message of an import, checked: its place in the import, its parent's place, and what
/// is kept of it.
#[derive(Debug, Clone)]
pub struct ImportedMessage {
    /// Its parent's index in the import.
    pub parent: Option<usize>,
    /// Role, parts and usage (not billed again).
    pub message: NewMessage,
    /// Its original creation time.
    pub created_at: DateTime<Utc>,
}

/// Where imported `messages` first branch (see `conversations.fork_point`): the lowest
/// sequence of a message with two children, 0 with two first messages, `None` for a chain.
fn fork_point(messages: &[ImportedMessage]) -> Option<i64> {
    let mut children = vec![0u32; messages.len()];
    let mut roots = 0;
    for m in messages {
        match m.parent {
            Some(p) => {
                if let Some(n) = children.get_mut(p) {
                    *n += 1;
                }
            }
            None => roots += 1,
        }
    }
    if roots > 1 {
        return Some(0);
    }
    children
        .iter()
        .position(|&n| n > 1)
        .map(|i| i64::try_from(i).unwrap_or(i64::MAX) + 1)
}

/// Rows per statement of an import.
const IMPORT_CHUNK: usize = 5000;

/// Inserts conversation `new` with `messages` (new ids, numbered in order, parents mapped,
/// times kept) in one transaction; `created_at` is the conversation's creation time and
/// `archived` its state.
pub async fn import_conversation(
    conn: &mut AsyncPgConnection,
    new: &NewConversation,
    messages: &[ImportedMessage],
    created_at: DateTime<Utc>,
    archived: bool,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
    let last_message_at = messages.iter().map(|m| m.created_at).max();
    conn.transaction(async |conn| {
        insert_conversation(conn, new, now).await?;
        for (chunk, rows) in messages.chunks(IMPORT_CHUNK).enumerate() {
            let first = chunk * IMPORT_CHUNK;
            let sequences: Vec<i64> = (first..first + rows.len())
                .map(|i| i64::try_from(i).unwrap_or(i64::MAX) + 1)
                .collect();
            let parents: Vec<Option<Uuid>> = rows
                .iter()
                .map(|m| m.parent.and_then(|p| ids.get(p).copied()))
                .collect();
            let roles: Vec<i16> = rows.iter().map(|m| m.message.role).collect();
            let parts: Vec<&serde_json::Value> = rows.iter().map(|m| &m.message.parts).collect();
            let usages: Vec<Option<&serde_json::Value>> =
                rows.iter().map(|m| m.message.usage.as_ref()).collect();
            let times: Vec<DateTime<Utc>> = rows.iter().map(|m| m.created_at).collect();
            diesel::sql_query(
                "INSERT INTO content.messages (conversation_id, sequence, id, parent_id, role, \
                   parts, created_at, owner_id, usage) \
                 SELECT $1, s, i, p, r, j, t, $2, g \
                 FROM unnest($3::bigint[], $4::uuid[], $5::uuid[], $6::smallint[], \
                   $7::jsonb[], $8::timestamptz[], $9::jsonb[]) AS u(s, i, p, r, j, t, g)",
            )
            .bind::<SqlUuid, _>(new.id)
            .bind::<SqlUuid, _>(new.owner_id)
            .bind::<Array<BigInt>, _>(&sequences)
            .bind::<Array<SqlUuid>, _>(&ids[first..first + rows.len()])
            .bind::<Array<Nullable<SqlUuid>>, _>(&parents)
            .bind::<Array<SmallInt>, _>(&roles)
            .bind::<Array<Jsonb>, _>(&parts)
            .bind::<Array<Timestamptz>, _>(&times)
            .bind::<Array<Nullable<Jsonb>>, _>(&usages)
            .execute(conn)
            .await?;
        }
        let n = i64::try_from(messages.len()).unwrap_or(i64::MAX);
        diesel::sql_query(
            "UPDATE content.conversations SET last_sequence = $2, message_count = $2, \
               active_leaf = $3, last_message_at = $4, active_at = GREATEST($5, $4), \
               created_at = $5, archived = $6, fork_point = $7 \
             WHERE id = $1",
        )
        .bind::<SqlUuid, _>(new.id)
        .bind::<BigInt, _>(n)
        .bind::<Nullable<SqlUuid>, _>(ids.last().copied())
        .bind::<Nullable<Timestamptz>, _>(last_message_at)
        .bind::<Timestamptz, _>(created_at)
        .bind::<Bool, _>(archived)
        .bind::<Nullable<BigInt>, _>(fork_point(messages))
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

/// A conversation by id.
pub async fn conversation(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<ConversationRow>, diesel::result::Error> {
    let rows: Vec<ConversationRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM content.conversations c WHERE c.id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Which conversations a list holds.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only those with this agent.
    pub agent_id: Option<Uuid>,
    /// Only those of this project.
    pub project_id: Option<Uuid>,
    /// Only archived ones (`Some(true)`), only others (`Some(false)`), or all (`None`).
    pub archived: Option<bool>,
    /// Only those produced by this task.
    pub task_id: Option<Uuid>,
}

/// `limit` of `owner`'s conversations matching `filter`, most recently active first,
/// after `after`. Each filter is written only when given, so the generic plan uses its
/// index.
pub async fn list_conversations(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    filter: &ConversationFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ConversationRow>, diesel::result::Error> {
    let (time, id) = after.unzip();
    let mut conditions = vec!["c.owner_id = $1".to_owned()];
    conditions.push(match after {
        Some(_) => "(c.active_at, c.id) < ($2, $3)".into(),
        None => "$2::timestamptz IS NULL AND $3::uuid IS NULL".into(),
    });
    conditions.push(match filter.agent_id {
        Some(_) => "c.agent_id = $5".into(),
        None => "$5::uuid IS NULL".into(),
    });
    conditions.push(match filter.project_id {
        Some(_) => "c.project_id = $6".into(),
        None => "$6::uuid IS NULL".into(),
    });
    conditions.push(match filter.archived {
        Some(_) => "c.archived = $7".into(),
        None => "$7::boolean IS NULL".into(),
    });
    conditions.push(match filter.task_id {
        Some(_) => "c.task_id = $8".into(),
        None => "$8::uuid IS NULL".into(),
    });
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM content.conversations c WHERE {} \
         ORDER BY c.active_at DESC, c.id DESC LIMIT $4",
        conditions.join(" AND ")
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<Timestamptz>, _>(time)
    .bind::<Nullable<SqlUuid>, _>(id)
    .bind::<BigInt, _>(limit)
    .bind::<Nullable<SqlUuid>, _>(filter.agent_id)
    .bind::<Nullable<SqlUuid>, _>(filter.project_id)
    .bind::<Nullable<Bool>, _>(filter.archived)
    .bind::<Nullable<SqlUuid>, _>(filter.task_id)
    .load(conn)
    .await
}

/// New values of UpdateConversation (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ConversationChanges {
    /// Title.
    pub title: Option<String>,
    /// The owner's metadata map.
    pub labels: Option<serde_json::Value>,
    /// Archived.
    pub archived: Option<bool>,
}

/// Applies `changes` to conversation `id` of `owner` (any owner when `None`); whether it
/// was found.
pub async fn update_conversation(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
    changes: &ConversationChanges,
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    let updated = diesel::sql_query(
        "UPDATE content.conversations SET title = coalesce($3, title), \
           labels = coalesce($4, labels), archived = coalesce($5, archived), updated_at = $6 \
         WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Nullable<Text>, _>(changes.title.as_deref())
    .bind::<Nullable<Jsonb>, _>(changes.labels.as_ref())
    .bind::<Nullable<Bool>, _>(changes.archived)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await?;
    Ok(updated > 0)
}

/// Deletes conversation `id` of `owner` (any owner when `None`) with its messages;
/// whether it was found.
pub async fn delete_conversation(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<bool, diesel::result::Error> {
    // Watchers (on every replica) learn of it at commit and end their streams.
    let deleted = diesel::sql_query(format!(
        "WITH deleted AS ( \
           DELETE FROM content.conversations WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) \
           RETURNING id \
         ) \
         SELECT pg_notify('{MESSAGES_CHANNEL}', id::text || ':-1') FROM deleted"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .execute(conn)
    .await?;
    Ok(deleted > 0)
}

/// Where an append goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Under {
    /// Under the conversation's active leaf (its first message when it has none).
    ActiveLeaf,
    /// As a first message (a sibling of the first one: an edit of it).
    Root,
    /// Under this message of the conversation.
    Message(Uuid),
}

/// Where a message sits, for an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The conversation is missing or not the caller's.
    NoConversation,
    /// The conversation has no such message.
    NoMessage,
    /// The message's parent and role.
    Found {
        /// Its parent.
        parent: Option<Uuid>,
        /// Its role.
        role: i16,
    },
}

/// Where `message` sits in conversation `id` of `owner` (any owner when `None`).
pub async fn message_place(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
    message: Uuid,
) -> Result<Place, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<SqlUuid>)]
        parent_id: Option<Uuid>,
        #[diesel(sql_type = Nullable<SmallInt>)]
        role: Option<i16>,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT m.parent_id, m.role FROM content.conversations c \
         LEFT JOIN content.messages m ON m.conversation_id = c.id AND m.id = $2 \
         WHERE c.id = $1 AND ($3::uuid IS NULL OR c.owner_id = $3)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(message)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .get_result(conn)
    .await
    .optional()?;
    Ok(match row {
        None => Place::NoConversation,
        Some(Row { role: None, .. }) => Place::NoMessage,
        Some(Row {
            parent_id,
            role: Some(role),
        }) => Place::Found {
            parent: parent_id,
            role,
        },
    })
}

/// A message to append, checked.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// `Role` number.
    pub role: i16,
    /// Its parts (JSON array).
    pub parts: serde_json::Value,
    /// The LLM call behind it: `{"model", "provider", "prompt_tokens",
    /// "completion_tokens", "cost"}` (cost as decimal text), checked.
    pub usage: Option<serde_json::Value>,
}

/// What an append did.
#[derive(Debug)]
pub enum Appended {
    /// The conversation is missing or not the caller's.
    NotFound,
    /// `parent` is not a message of the conversation.
    NoParent,
    /// The request id was used for a different append.
    Conflict,
    /// The messages, in order (a retry's: those of the first attempt).
    Messages(Vec<MessageRow>),
}

/// Appends `messages` to conversation `id` of `owner` (any owner when `None`) in one
/// transaction: the first answers `parent` (default: the active leaf), each next one the
/// one before, and the last becomes the active leaf. The conversation's row is locked
/// while its counter gives the numbers, so they are gap-free and increase in commit
/// order. With `request`, a retry returns the first attempt's messages.
#[expect(
    clippy::too_many_arguments,
    reason = "what one append is made of, each used once; a struct would only rename them"
)]
pub async fn append_messages(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
    parent: Under,
    messages: &[NewMessage],
    request: Option<(Uuid, &[u8])>,
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Appended, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = SqlUuid)]
        owner_id: Uuid,
        #[diesel(sql_type = Nullable<SqlUuid>)]
        project_id: Option<Uuid>,
        #[diesel(sql_type = Nullable<SqlUuid>)]
        agent_id: Option<Uuid>,
        #[diesel(sql_type = Nullable<Integer>)]
        agent_version: Option<i32>,
        #[diesel(sql_type = BigInt)]
        last_sequence: i64,
        #[diesel(sql_type = Nullable<SqlUuid>)]
        active_leaf: Option<Uuid>,
    }
    #[derive(QueryableByName)]
    struct Earlier {
        #[diesel(sql_type = Bytea)]
        request_hash: Vec<u8>,
        #[diesel(sql_type = BigInt)]
        first_sequence: i64,
        #[diesel(sql_type = Integer)]
        count: i32,
    }
    let n = i64::try_from(messages.len()).unwrap_or(i64::MAX);
    conn.transaction(async |conn| {
        let locked: Option<Locked> = diesel::sql_query(
            "SELECT owner_id, project_id, agent_id, agent_version, last_sequence, active_leaf \
             FROM content.conversations \
             WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) FOR NO KEY UPDATE",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Nullable<SqlUuid>, _>(owner)
        .get_result(conn)
        .await
        .optional()?;
        let Some(locked) = locked else {
            return Ok(Appended::NotFound);
        };
        if let Some((request_id, hash)) = request {
            let earlier: Option<Earlier> = diesel::sql_query(
                "SELECT request_hash, first_sequence, count FROM content.message_appends \
                 WHERE conversation_id = $1 AND request_id = $2",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<SqlUuid, _>(request_id)
            .get_result(conn)
            .await
            .optional()?;
            if let Some(earlier) = earlier {
                if earlier.request_hash != hash {
                    return Ok(Appended::Conflict);
                }
                let first = earlier.first_sequence;
                let last = first + i64::from(earlier.count) - 1;
                return messages_between(conn, id, first, last)
                    .await
                    .map(Appended::Messages);
            }
        }
        // The parent, and where the tree branches anew if this append makes a branch: a
        // second child of a message, or a second first message. (The active leaf never
        // has children: it is the last message appended.)
        let (parent, fork) = match parent {
            Under::ActiveLeaf => (locked.active_leaf, None),
            Under::Root => (None, (locked.last_sequence > 0).then_some(0)),
            Under::Message(parent) => match parent_place(conn, id, parent).await? {
                None => return Ok(Appended::NoParent),
                Some((sequence, has_child)) => (Some(parent), has_child.then_some(sequence)),
            },
        };
        let first = locked.last_sequence + 1;
        let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
        let parents: Vec<Option<Uuid>> = std::iter::once(parent)
            .chain(ids.iter().copied().map(Some))
            .take(messages.len())
            .collect();
        let sequences: Vec<i64> = (first..first + n).collect();
        let roles: Vec<i16> = messages.iter().map(|m| m.role).collect();
        let parts: Vec<&serde_json::Value> = messages.iter().map(|m| &m.parts).collect();
        let usages: Vec<Option<&serde_json::Value>> =
            messages.iter().map(|m| m.usage.as_ref()).collect();
        let billed = usages.iter().any(Option::is_some);
        // Usage goes to the outbox in the same statement, hence the same transaction.
        let outbox = if billed {
            "), shipped AS ( \
               INSERT INTO content.usage_outbox (id, owner_id, conversation_id, project_id, \
                 agent_id, agent_version, model, provider, prompt_tokens, completion_tokens, \
                 cost, occurred_at, traceparent) \
               SELECT i.id, $11, $1, $12, $13, $14, i.usage->>'model', i.usage->>'provider', \
                 (i.usage->>'prompt_tokens')::bigint, (i.usage->>'completion_tokens')::bigint, \
                 (i.usage->>'cost')::numeric, i.created_at, $15 \
               FROM inserted i WHERE i.usage IS NOT NULL "
        } else {
            ""
        };
        // One statement: the messages (their parents are rows of the same statement or
        // older; the foreign key is checked at its end), the counter and the leaf.
        let rows: Vec<MessageRow> = diesel::sql_query(format!(
            "WITH inserted AS ( \
               INSERT INTO content.messages (conversation_id, sequence, id, parent_id, role, \
                 parts, created_at, owner_id, usage) \
               SELECT $1, s, i, p, r, j, $7, $11, g \
               FROM unnest($2::bigint[], $3::uuid[], $4::uuid[], $5::smallint[], $6::jsonb[], \
                 $16::jsonb[]) AS u(s, i, p, r, j, g) \
               RETURNING * \
             ), counted AS ( \
               UPDATE content.conversations SET last_sequence = $8, \
                 message_count = message_count + $9, active_leaf = $10, \
                 last_message_at = $7, active_at = $7, updated_at = $7, \
                 fork_point = CASE WHEN $17::bigint IS NULL THEN fork_point \
                   ELSE LEAST(fork_point, $17) END \
               WHERE id = $1 \
             {outbox}), notified AS ( \
               SELECT CASE WHEN pg_try_advisory_xact_lock({WATCH_LOCK_CLASS}, hashtext($1::text)) \
                 THEN NULL \
                 ELSE pg_notify('{MESSAGES_CHANNEL}', $1::text || ':' || $8::text) END \
             ) \
             SELECT {MESSAGE_COLUMNS} FROM inserted m CROSS JOIN notified ORDER BY m.sequence"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Array<BigInt>, _>(&sequences)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Nullable<SqlUuid>>, _>(&parents)
        .bind::<Array<SmallInt>, _>(&roles)
        .bind::<Array<Jsonb>, _>(&parts)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(first + n - 1)
        .bind::<BigInt, _>(n)
        .bind::<Nullable<SqlUuid>, _>(ids.last().copied())
        .bind::<SqlUuid, _>(locked.owner_id)
        .bind::<Nullable<SqlUuid>, _>(locked.project_id)
        .bind::<Nullable<SqlUuid>, _>(locked.agent_id)
        .bind::<Nullable<Integer>, _>(locked.agent_version)
        .bind::<Nullable<Text>, _>(traceparent)
        .bind::<Array<Nullable<Jsonb>>, _>(&usages)
        .bind::<Nullable<BigInt>, _>(fork)
        .load(conn)
        .await?;
        if let Some((request_id, hash)) = request {
            diesel::sql_query(
                "INSERT INTO content.message_appends (conversation_id, request_id, \
                 request_hash, first_sequence, count) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<SqlUuid, _>(request_id)
            .bind::<Bytea, _>(hash)
            .bind::<BigInt, _>(first)
            .bind::<Integer, _>(i32::try_from(n).unwrap_or(i32::MAX))
            .execute(conn)
            .await?;
        }
        Ok(Appended::Messages(rows))
    })
    .await
}

/// Up to `limit` messages of conversation `id` numbered after `after`, in order (every
/// branch): what a watcher reads, from the primary key.
pub async fn messages_after(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM content.messages m \
         WHERE m.conversation_id = $1 AND m.sequence > $2 ORDER BY m.sequence LIMIT $3"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Whether conversation `id` exists.
pub async fn conversation_exists(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<bool, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Bool)]
        exists: bool,
    }
    let found: Exists = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM content.conversations WHERE id = $1) AS exists",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await?;
    Ok(found.exists)
}

/// The messages of conversation `id` numbered `first..=last`, in order.
pub async fn messages_between(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    first: i64,
    last: i64,
) -> Result<Vec<MessageRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM content.messages m \
         WHERE m.conversation_id = $1 AND m.sequence BETWEEN $2 AND $3 ORDER BY m.sequence"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<BigInt, _>(first)
    .bind::<BigInt, _>(last)
    .load(conn)
    .await
}

/// Which part of a branch a page holds.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    /// Newest first: the `limit` messages of the branch older than `before` (the leaf
    /// itself and older, when `None`).
    Newest {
        /// Sequence of the last message of the previous page.
        before: Option<i64>,
    },
    /// Oldest first: the `limit` messages of the branch newer than `after` (from the
    /// first message, when `None`).
    Oldest {
        /// Sequence of the last message of the previous page.
        after: Option<i64>,
    },
}

/// A page of the branch that ends at message `leaf` of conversation `id`: the path from
/// the first message to `leaf`, walked up from `leaf` through the parents. A newest-first
/// page walks `limit` steps up from the leaf (or from the parent of the page's bound); an
/// oldest-first page walks up only while the sequence is above its bound (a parent
/// always has a smaller sequence). Returned in the order the page asks.
pub async fn branch_page(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    leaf: Uuid,
    page: Page,
    limit: i64,
) -> Result<Vec<MessageRow>, diesel::result::Error> {
    // The walk carries ids and numbers only; the page's rows are read at the end.
    let walk = |start: &str, step: &str, order: &str| {
        format!(
            "WITH RECURSIVE path AS ( \
               SELECT m.id, m.parent_id, m.sequence, 1 AS depth FROM content.messages m \
               WHERE m.conversation_id = $1 AND {start} \
               UNION ALL \
               SELECT m.id, m.parent_id, m.sequence, path.depth + 1 FROM path \
               JOIN content.messages m ON m.conversation_id = $1 AND m.id = path.parent_id \
               WHERE {step} \
             ), page AS (SELECT id FROM path ORDER BY sequence {order} LIMIT $4) \
             SELECT {MESSAGE_COLUMNS} FROM page JOIN content.messages m ON m.id = page.id \
             ORDER BY m.sequence {order}"
        )
    };
    let (sql, bound) = match page {
        Page::Newest { before } => (
            walk(
                "m.id = CASE WHEN $3::bigint IS NULL THEN $2 ELSE ( \
                   SELECT b.parent_id FROM content.messages b \
                   WHERE b.conversation_id = $1 AND b.sequence = $3) END",
                "path.depth < $4",
                "DESC",
            ),
            before,
        ),
        Page::Oldest { after } => (
            // The shared chain up to the fork point (or the leaf) from the primary key;
            // the parents are walked only beyond it, and only when the chain did not fill
            // the page.
            format!(
                "WITH RECURSIVE bound AS ( \
                   SELECT LEAST(coalesce(c.fork_point, 9223372036854775807), l.sequence) AS t \
                   FROM content.conversations c \
                   JOIN content.messages l ON l.conversation_id = c.id AND l.id = $2 \
                   WHERE c.id = $1 \
                 ), chain AS ( \
                   SELECT m.id, m.sequence FROM content.messages m \
                   WHERE m.conversation_id = $1 AND m.sequence > coalesce($3, 0) \
                     AND m.sequence <= (SELECT t FROM bound) \
                   ORDER BY m.sequence LIMIT $4 \
                 ), path AS ( \
                   SELECT m.id, m.parent_id, m.sequence FROM content.messages m \
                   WHERE m.conversation_id = $1 AND m.id = $2 \
                     AND m.sequence > GREATEST(coalesce($3, 0), (SELECT t FROM bound)) \
                     AND (SELECT count(*) FROM chain) < $4 \
                   UNION ALL \
                   SELECT m.id, m.parent_id, m.sequence FROM path \
                   JOIN content.messages m ON m.conversation_id = $1 AND m.id = path.parent_id \
                   WHERE m.sequence > GREATEST(coalesce($3, 0), (SELECT t FROM bound)) \
                 ), page AS ( \
                   SELECT id, sequence FROM chain \
                   UNION ALL SELECT id, sequence FROM path \
                   ORDER BY sequence LIMIT $4 \
                 ) \
                 SELECT {MESSAGE_COLUMNS} FROM page JOIN content.messages m \
                   ON m.conversation_id = $1 AND m.sequence = page.sequence \
                 ORDER BY m.sequence ASC"
            ),
            after,
        ),
    };
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(leaf)
        .bind::<Nullable<BigInt>, _>(bound)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await
}

/// The sequence of message `message` of conversation `id`, and whether it has a child.
pub async fn parent_place(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    message: Uuid,
) -> Result<Option<(i64, bool)>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Place {
        #[diesel(sql_type = BigInt)]
        sequence: i64,
        #[diesel(sql_type = Bool)]
        has_child: bool,
    }
    let place: Option<Place> = diesel::sql_query(
        "SELECT m.sequence, EXISTS ( \
           SELECT 1 FROM content.messages c WHERE c.parent_id = m.id AND c.conversation_id = $2 \
         ) AS has_child \
         FROM content.messages m WHERE m.id = $1 AND m.conversation_id = $2",
    )
    .bind::<SqlUuid, _>(message)
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(place.map(|p| (p.sequence, p.has_child)))
}

/// Whether message `message` belongs to conversation `id`.
pub async fn has_message(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    message: Uuid,
) -> Result<bool, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM content.messages WHERE id = $1 AND conversation_id = $2) \
         AS found",
    )
    .bind::<SqlUuid, _>(message)
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await?;
    Ok(found.found)
}

/// Copies the path from the first message of conversation `source` to its message
/// `message` into conversation `new.id` (inserted here, with `new`'s fields), in one
/// transaction: the messages keep role, parts and time, numbered 1 to n, chained to one
/// another. Returns the number copied, or `None` when `message` is not in `source`.
pub async fn fork(
    conn: &mut AsyncPgConnection,
    source: Uuid,
    message: Uuid,
    new: &NewConversation,
    now: DateTime<Utc>,
) -> Result<Option<i64>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Copied {
        #[diesel(sql_type = BigInt)]
        copied: i64,
    }
    conn.transaction(async |conn| {
        if !has_message(conn, source, message).await? {
            return Ok(None);
        }
        insert_conversation(conn, new, now).await?;
        // New ids are UUIDv7 of this moment (random in their low bits), parents the new
        // id of the message before.
        let copied: Copied = diesel::sql_query(
            "WITH RECURSIVE path AS ( \
               SELECT m.id, m.parent_id, m.sequence FROM content.messages m \
               WHERE m.conversation_id = $1 AND m.id = $2 \
               UNION ALL \
               SELECT m.id, m.parent_id, m.sequence FROM path \
               JOIN content.messages m ON m.conversation_id = $1 AND m.id = path.parent_id \
             ), ordered AS ( \
               SELECT p.id AS old_id, row_number() OVER (ORDER BY p.sequence) AS n, \
                 (lpad(to_hex((extract(epoch FROM $4::timestamptz) * 1000)::bigint), 12, '0') \
                  || '7' || substr(md5(random()::text), 1, 3) \
                  || to_hex(8 + floor(random() * 4)::int) \
                  || substr(md5(random()::text), 1, 15))::uuid AS new_id \
               FROM path p \
             ), linked AS ( \
               SELECT o.*, lag(o.new_id) OVER (ORDER BY o.n) AS new_parent FROM ordered o \
             ), inserted AS ( \
               INSERT INTO content.messages (conversation_id, sequence, id, parent_id, role, \
                 parts, created_at, owner_id, usage) \
               SELECT $3, l.n, l.new_id, l.new_parent, m.role, m.parts, m.created_at, $5, \
                 m.usage \
               FROM linked l JOIN content.messages m ON m.id = l.old_id \
               RETURNING sequence, id, created_at \
             ), counted AS ( \
               UPDATE content.conversations c SET last_sequence = i.n, message_count = i.n, \
                 active_leaf = i.leaf, last_message_at = i.at \
               FROM (SELECT count(*) AS n, \
                       (array_agg(id ORDER BY sequence DESC))[1] AS leaf, \
                       max(created_at) AS at FROM inserted) i \
               WHERE c.id = $3 \
             ) \
             SELECT count(*) AS copied FROM inserted",
        )
        .bind::<SqlUuid, _>(source)
        .bind::<SqlUuid, _>(message)
        .bind::<SqlUuid, _>(new.id)
        .bind::<Timestamptz, _>(now)
        .bind::<SqlUuid, _>(new.owner_id)
        .get_result(conn)
        .await?;
        Ok(Some(copied.copied))
    })
    .await
}

/// A message found by search, with its relevance and a snippet.
#[derive(Debug, Clone, QueryableByName)]
pub struct FoundMessage {
    /// The message.
    #[diesel(embed)]
    pub message: MessageRow,
    /// Relevance (`ts_rank_cd`, normalization 1).
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub rank: f64,
    /// Fragments of its text with the words found marked.
    #[diesel(sql_type = Text)]
    pub snippet: String,
}

/// Which messages a search covers, besides the owner's words.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// `Role` number.
    pub role: Option<i16>,
    /// Only conversations with this agent.
    pub agent_id: Option<Uuid>,
    /// Only conversations of this project.
    pub project_id: Option<Uuid>,
    /// Written at or after.
    pub since: Option<DateTime<Utc>>,
    /// Written before.
    pub until: Option<DateTime<Utc>>,
}

/// Most matches one search ranks: the newest of them, found either through the words' GIN
/// index (rare words) or by walking the owner's messages newest first (common ones).
pub const SEARCH_CANDIDATES: i64 = 1_000;

/// `limit` of `owner`'s messages matching the web-search `query` and `filter`, best first
/// (rank, then id) after `after`, among the newest [`SEARCH_CANDIDATES`] matches, with
/// snippets of the page only. Ranking every match of a common word reads and ranks tens of
/// thousands of rows (180 ms for a word in 124k of one owner's messages); the newest
/// thousand are found in a few milliseconds whichever index the planner picks, and older
/// matches are reached with `until`. The statement is planned with its values (diesel
/// never caches a raw statement), so the planner sees how common the words are.
pub async fn search_messages(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    query: &str,
    filter: &MessageFilter,
    after: Option<(f64, Uuid)>,
    limit: i64,
) -> Result<Vec<FoundMessage>, diesel::result::Error> {
    let (rank, id) = after.unzip();
    let mut conditions = Vec::new();
    if filter.role.is_some() {
        conditions.push("m.role = $6");
    }
    if filter.agent_id.is_some() || filter.project_id.is_some() {
        conditions.push(
            "EXISTS (SELECT 1 FROM content.conversations c WHERE c.id = m.conversation_id \
             AND ($7::uuid IS NULL OR c.agent_id = $7) AND ($8::uuid IS NULL OR c.project_id = $8))",
        );
    }
    if filter.since.is_some() {
        conditions.push("m.created_at >= $9");
    }
    if filter.until.is_some() {
        conditions.push("m.created_at < $10");
    }
    let extra: String = conditions.iter().map(|c| format!(" AND {c}")).collect();
    diesel::sql_query(format!(
        "WITH q AS NOT MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS query), \
         candidates AS MATERIALIZED ( \
           SELECT m.* FROM content.messages m, q \
           WHERE m.owner_id = $2 AND m.document @@ q.query{extra} \
           ORDER BY m.created_at DESC, m.id DESC LIMIT {SEARCH_CANDIDATES} \
         ), hits AS ( \
           SELECT {MESSAGE_COLUMNS}, ts_rank_cd(m.document, q.query, 1)::float8 AS rank \
           FROM candidates m, q \
         ), page AS ( \
           SELECT * FROM hits WHERE ($3::float8 IS NULL OR (rank, id) < ($3, $4)) \
           ORDER BY rank DESC, id DESC LIMIT $5 \
         ) \
         SELECT page.*, ts_headline('english', content.message_text(page.parts), q.query, \
           'StartSel=<b>, StopSel=</b>, MaxFragments=2, MaxWords=20, MinWords=5') AS snippet \
         FROM page, q ORDER BY page.rank DESC, page.id DESC"
    ))
    .bind::<Text, _>(query)
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<diesel::sql_types::Double>, _>(rank)
    .bind::<Nullable<SqlUuid>, _>(id)
    .bind::<BigInt, _>(limit)
    .bind::<Nullable<SmallInt>, _>(filter.role)
    .bind::<Nullable<SqlUuid>, _>(filter.agent_id)
    .bind::<Nullable<SqlUuid>, _>(filter.project_id)
    .bind::<Nullable<Timestamptz>, _>(filter.since)
    .bind::<Nullable<Timestamptz>, _>(filter.until)
    .load(conn)
    .await
}
