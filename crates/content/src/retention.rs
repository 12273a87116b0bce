//! Retention of conversations: policies, and the task that applies them.
//!
//! A user's policy covers their conversations; a project owner's policy for a project
//! covers their conversations of that project and overrides their user-wide one there.
//! (Other users' conversations of a public project follow their own policies: nobody's
//! policy deletes someone else's conversations.) Inactivity is measured from `active_at`.
//!
//! [`apply`] archives, then deletes, in batches found through the conversations'
//! `(owner, …, active_at)` indexes, until nothing is due or the round's budget of batches
//! is spent. Archiving is one statement per batch; each deletion is a transaction of
//! bounded statements (the messages a chunk at a time, then the row, which ends the
//! streams of its watchers). Both check the idle time again on the rows they lock: a
//! conversation that became active meanwhile is kept. Running on several replicas at once
//! is harmless: an update or deletion that lost a race finds nothing left to do.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, Timestamptz, Uuid as SqlUuid};
use diesel::{OptionalExtension, QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::store::conversations::MESSAGES_CHANNEL;

/// Conversations archived per statement.
const ARCHIVE_BATCH: i64 = 1000;
/// Due conversations found per statement (each is then deleted in its own transaction).
const DELETE_BATCH: i64 = 100;
/// Messages deleted per statement.
const MESSAGE_CHUNK: i64 = 5000;
/// Statements per action and kind of policy in one round; the rest waits for the next.
const MAX_BATCHES: usize = 50;
/// Longest period a policy may name, in days.
pub const MAX_DAYS: i32 = 36_500;

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct PolicyRow {
    /// Archive after this many idle days.
    #[diesel(sql_type = Nullable<Integer>)]
    pub archive_after_days: Option<i32>,
    /// Delete after this many idle days.
    #[diesel(sql_type = Nullable<Integer>)]
    pub delete_after_days: Option<i32>,
    /// Last change.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// The policy of `owner` (for `project`, or user-wide).
pub async fn policy(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    project: Option<Uuid>,
) -> Result<Option<PolicyRow>, diesel::result::Error> {
    sql_query(
        "SELECT archive_after_days, delete_after_days, updated_at \
         FROM content.retention_policies \
         WHERE owner_id = $1 AND project_id IS NOT DISTINCT FROM $2",
    )
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<SqlUuid>, _>(project)
    .get_result(conn)
    .await
    .optional()
}

/// Sets (or, with neither period, removes) the policy of `owner` for `project`.
pub async fn set_policy(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    project: Option<Uuid>,
    archive: Option<i32>,
    delete: Option<i32>,
    now: DateTime<Utc>,
) -> Result<Option<PolicyRow>, diesel::result::Error> {
    if archive.is_none() && delete.is_none() {
        sql_query(
            "DELETE FROM content.retention_policies \
             WHERE owner_id = $1 AND project_id IS NOT DISTINCT FROM $2",
        )
        .bind::<SqlUuid, _>(owner)
        .bind::<Nullable<SqlUuid>, _>(project)
        .execute(conn)
        .await?;
        return Ok(None);
    }
    let conflict = if project.is_some() {
        "(owner_id, project_id) WHERE project_id IS NOT NULL"
    } else {
        "(owner_id) WHERE project_id IS NULL"
    };
    sql_query(format!(
        "INSERT INTO content.retention_policies (owner_id, project_id, archive_after_days, \
           delete_after_days, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT {conflict} DO UPDATE SET archive_after_days = EXCLUDED.archive_after_days, \
           delete_after_days = EXCLUDED.delete_after_days, updated_at = EXCLUDED.updated_at \
         RETURNING archive_after_days, delete_after_days, updated_at"
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<SqlUuid>, _>(project)
    .bind::<Nullable<Integer>, _>(archive)
    .bind::<Nullable<Integer>, _>(delete)
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
    .await
    .map(Some)
}

/// What a round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Conversations archived.
    pub archived: Vec<Uuid>,
    /// Conversations deleted.
    pub deleted: Vec<Uuid>,
}

#[derive(QueryableByName)]
struct Touched {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Which conversations each kind of policy covers: (policies, conversations of a policy
/// `p`, as `c`).
const KINDS: [(&str, &str); 2] = [
    // User-wide: the owner's conversations outside projects they set a policy for.
    (
        "p.project_id IS NULL",
        "NOT EXISTS (SELECT 1 FROM content.retention_policies q \
           WHERE q.owner_id = c.owner_id AND q.project_id = c.project_id)",
    ),
    // A project: the owner's conversations of it.
    ("p.project_id IS NOT NULL", "c.project_id = p.project_id"),
];

/// One round as of `now`: see the module documentation.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
) -> Result<Applied, diesel::result::Error> {
    let mut applied = Applied::default();
    for (policies, covered) in KINDS {
        // Each due conversation with the time its activity must be before: the outer
        // statements check it again on the row they lock, so a conversation that became
        // active meanwhile (an append committed while they waited) is left alone.
        let due = |column: &str, extra: &str, batch: i64| {
            format!(
                "SELECT c.id, c.cutoff FROM content.retention_policies p \
                 CROSS JOIN LATERAL ( \
                   SELECT c.id, $1 - make_interval(days => p.{column}) AS cutoff \
                   FROM content.conversations c \
                   WHERE c.owner_id = p.owner_id AND {covered} {extra} \
                     AND c.active_at < $1 - make_interval(days => p.{column}) \
                   LIMIT {batch} \
                 ) c \
                 WHERE {policies} AND p.{column} IS NOT NULL \
                 LIMIT {batch}"
            )
        };
        let archive = format!(
            "WITH due AS ({}) \
             UPDATE content.conversations c SET archived = true, updated_at = $1 \
             FROM due WHERE c.id = due.id AND NOT c.archived AND c.active_at < due.cutoff \
             RETURNING c.id",
            due("archive_after_days", "AND NOT c.archived", ARCHIVE_BATCH)
        );
        for _ in 0..MAX_BATCHES {
            let touched: Vec<Touched> = sql_query(&archive)
                .bind::<Timestamptz, _>(now)
                .load(conn)
                .await?;
            let n = touched.len();
            applied.archived.extend(touched.into_iter().map(|t| t.id));
            if i64::try_from(n).unwrap_or(i64::MAX) < ARCHIVE_BATCH {
                break;
            }
        }
        let doomed = due("delete_after_days", "", DELETE_BATCH);
        for _ in 0..MAX_BATCHES {
            let due: Vec<Due> = sql_query(&doomed)
                .bind::<Timestamptz, _>(now)
                .load(conn)
                .await?;
            let n = due.len();
            for conversation in due {
                if delete(conn, conversation.id, conversation.cutoff).await? {
                    applied.deleted.push(conversation.id);
                }
            }
            if i64::try_from(n).unwrap_or(i64::MAX) < DELETE_BATCH {
                break;
            }
        }
    }
    Ok(applied)
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    cutoff: DateTime<Utc>,
}

/// Deletes conversation `id` if it is still idle since before `cutoff`, in one
/// transaction of bounded statements: its messages newest first, [`MESSAGE_CHUNK`] at a
/// time (no message then has children left for the cascade to find), then the row, which
/// ends its watchers' streams. The row stays locked throughout, so no append slips in.
async fn delete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    cutoff: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    conn.transaction(async |conn| {
        let locked: Vec<Touched> = sql_query(
            "SELECT id FROM content.conversations WHERE id = $1 AND active_at < $2 FOR UPDATE",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Timestamptz, _>(cutoff)
        .load(conn)
        .await?;
        if locked.is_empty() {
            return Ok(false);
        }
        loop {
            let deleted = sql_query(
                "DELETE FROM content.messages WHERE conversation_id = $1 AND sequence IN ( \
                   SELECT sequence FROM content.messages WHERE conversation_id = $1 \
                   ORDER BY sequence DESC LIMIT $2)",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<BigInt, _>(MESSAGE_CHUNK)
            .execute(conn)
            .await?;
            if i64::try_from(deleted).unwrap_or(i64::MAX) < MESSAGE_CHUNK {
                break;
            }
        }
        sql_query(format!(
            "WITH gone AS (DELETE FROM content.conversations WHERE id = $1 RETURNING id) \
             SELECT id, pg_notify('{MESSAGES_CHANNEL}', id::text || ':-1') FROM gone"
        ))
        .bind::<SqlUuid, _>(id)
        .load::<Touched>(conn)
        .await
        .map(|gone| !gone.is_empty())
    })
    .await
}
