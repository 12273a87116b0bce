//! The SQL of workflows and their tasks: the queue workers claim from (`FOR UPDATE SKIP
//! LOCKED` over the partial index of ready tasks), leases, and the state machine.
//!
//! Every transition is one guarded statement: it changes a task only from the state (and
//! lease) it expects, so a stale worker, a concurrent retry or a cancellation can never
//! move a task twice. Finishing a task updates its dependants (a counter of unfinished
//! dependencies each) and its workflow's counters in the same statement. Locks are taken
//! in one order: running tasks (the reporting one; a cancellation's, in id order), then
//! pending ones in id order, then the workflow; a deadlock that slips through is rolled
//! back by PostgreSQL and the write retried.
//!
//! Times (ready times, leases) are the replicas' clocks: replicas must agree on the time
//! to well under the shortest lease (1 s), as NTP keeps them.

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bytea, Integer, Jsonb, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

/// The workflows table (for request-id replays).
pub const WORKFLOWS: &str = "content.workflows";

/// The PostgreSQL channel told `<owner>/<queue>` when tasks of that queue become ready.
pub const TASKS_CHANNEL: &str = "content_tasks";

/// Workflow statuses, as stored (and numbered in the proto).
pub mod workflow_status {
    /// No task has started.
    pub const PENDING: i16 = 1;
    /// Started, not finished.
    pub const RUNNING: i16 = 2;
    /// Every task succeeded.
    pub const SUCCEEDED: i16 = 3;
    /// Finished with a failed task.
    pub const FAILED: i16 = 4;
    /// Cancelled.
    pub const CANCELLED: i16 = 5;
}

/// Task statuses, as stored (and numbered in the proto).
pub mod task_status {
    /// Waiting for dependencies.
    pub const PENDING: i16 = 1;
    /// Claimable from `ready_at`.
    pub const READY: i16 = 2;
    /// Leased.
    pub const RUNNING: i16 = 3;
    /// Completed.
    pub const SUCCEEDED: i16 = 4;
    /// Failed for good.
    pub const FAILED: i16 = 5;
    /// Cancelled.
    pub const CANCELLED: i16 = 6;
}

const WORKFLOW_COLUMNS: &str = "w.id, w.owner_id, w.project_id, w.name, w.labels, w.status, \
     w.task_count, w.succeeded, w.failed, w.created_at, w.updated_at, w.finished_at";

const TASK_COLUMNS: &str = "t.id, t.workflow_id, t.owner_id, t.name, t.queue, t.agent_id, \
     t.agent_version, t.input, t.output, t.error, t.status, t.attempt, t.max_attempts, \
     t.backoff_ms, t.max_backoff_ms, t.depends_on, t.ready_at, t.lease_id, t.lease_ms, \
     t.lease_expires_at, t.created_at, t.started_at, t.finished_at";

/// A workflow as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct WorkflowRow {
    /// Id.
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Owner.
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    /// Project.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub project_id: Option<Uuid>,
    /// Name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// The owner's metadata.
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
    /// [`workflow_status`].
    #[diesel(sql_type = SmallInt)]
    pub status: i16,
    /// Tasks.
    #[diesel(sql_type = Integer)]
    pub task_count: i32,
    /// Tasks succeeded.
    #[diesel(sql_type = Integer)]
    pub succeeded: i32,
    /// Tasks failed.
    #[diesel(sql_type = Integer)]
    pub failed: i32,
    /// Created.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Changed.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    /// Finished.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct TaskRow {
    /// Id.
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Workflow.
    #[diesel(sql_type = SqlUuid)]
    pub workflow_id: Uuid,
    /// Owner.
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    /// Name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Queue.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Agent.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub agent_id: Option<Uuid>,
    /// Agent version.
    #[diesel(sql_type = Nullable<Integer>)]
    pub agent_version: Option<i32>,
    /// Input.
    #[diesel(sql_type = Jsonb)]
    pub input: serde_json::Value,
    /// Output.
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub output: Option<serde_json::Value>,
    /// Last error.
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    /// [`task_status`].
    #[diesel(sql_type = SmallInt)]
    pub status: i16,
    /// Claims so far.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// Most claims.
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    /// First backoff.
    #[diesel(sql_type = BigInt)]
    pub backoff_ms: i64,
    /// Longest backoff.
    #[diesel(sql_type = BigInt)]
    pub max_backoff_ms: i64,
    /// Names of the tasks it waits for.
    #[diesel(sql_type = Array<Text>)]
    pub depends_on: Vec<String>,
    /// Claimable from.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub ready_at: Option<DateTime<Utc>>,
    /// The current lease.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub lease_id: Option<Uuid>,
    /// The current lease's length.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub lease_ms: Option<i64>,
    /// When the current lease runs out.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Created.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// First claimed.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A workflow to insert.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Project.
    pub project_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Labels as stored.
    pub labels: serde_json::Value,
    /// Idempotency key.
    pub request_id: Option<Uuid>,
    /// The request's hash.
    pub request_hash: Vec<u8>,
}

/// A task to insert, in request order.
#[derive(Debug, Clone, Serialize)]
pub struct NewTask {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Place in the request.
    pub position: i32,
    /// Name.
    pub name: String,
    /// Queue.
    pub queue: String,
    /// Agent.
    pub agent_id: Option<Uuid>,
    /// Its resolved version.
    pub agent_version: Option<i32>,
    /// Input.
    pub input: serde_json::Value,
    /// Most claims.
    pub max_attempts: i32,
    /// First backoff.
    pub backoff_ms: i64,
    /// Longest backoff.
    pub max_backoff_ms: i64,
    /// Ids of the tasks it waits for.
    #[serde(skip)]
    pub depends_on: Vec<Uuid>,
    /// Their names.
    pub depends_on_names: Vec<String>,
}

#[derive(Serialize)]
struct Edge {
    depends_on: Uuid,
    task_id: Uuid,
}

/// Inserts a workflow with its tasks and their dependencies in one statement; tasks
/// without dependencies are READY at `now`, and their queues are notified at commit.
pub async fn insert_workflow(
    conn: &mut AsyncPgConnection,
    workflow: &NewWorkflow,
    tasks: &[NewTask],
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let edges: Vec<Edge> = tasks
        .iter()
        .flat_map(|t| {
            t.depends_on.iter().map(|d| Edge {
                depends_on: *d,
                task_id: t.id,
            })
        })
        .collect();
    let as_json = |value: serde_json::Result<serde_json::Value>| {
        value.map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))
    };
    let tasks_json = as_json(serde_json::to_value(tasks))?;
    let edges_json = as_json(serde_json::to_value(&edges))?;
    diesel::sql_query(format!(
        "WITH w AS ( \
           INSERT INTO content.workflows (id, owner_id, project_id, name, labels, status, \
             task_count, remaining, request_id, request_hash, created_at, updated_at) \
           VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8, $9, $9) RETURNING id \
         ), t AS ( \
           INSERT INTO content.tasks (id, workflow_id, owner_id, position, name, queue, agent_id, \
             agent_version, input, status, max_attempts, backoff_ms, max_backoff_ms, waiting_on, \
             depends_on, ready_at, created_at, updated_at) \
           SELECT x.id, $1, $2, x.position, x.name, x.queue, x.agent_id, x.agent_version, \
             x.input, CASE WHEN cardinality(x.depends_on_names) = 0 THEN 2 ELSE 1 END, \
             x.max_attempts, x.backoff_ms, x.max_backoff_ms, cardinality(x.depends_on_names), \
             x.depends_on_names, \
             CASE WHEN cardinality(x.depends_on_names) = 0 THEN $9::timestamptz END, $9, $9 \
           FROM jsonb_to_recordset($10) AS x(id uuid, position integer, name text, queue text, \
             agent_id uuid, agent_version integer, input jsonb, max_attempts integer, \
             backoff_ms bigint, max_backoff_ms bigint, depends_on_names text[]) \
           RETURNING queue, status \
         ), d AS ( \
           INSERT INTO content.task_dependencies (workflow_id, depends_on, task_id) \
           SELECT $1, e.depends_on, e.task_id \
           FROM jsonb_to_recordset($11) AS e(depends_on uuid, task_id uuid) \
         ) \
         SELECT count(pg_notify('{TASKS_CHANNEL}', $2::text || '/' || q.queue)) AS n \
         FROM (SELECT DISTINCT queue FROM t WHERE status = 2) q"
    ))
    .bind::<SqlUuid, _>(workflow.id)
    .bind::<SqlUuid, _>(workflow.owner_id)
    .bind::<Nullable<SqlUuid>, _>(workflow.project_id)
    .bind::<Text, _>(&workflow.name)
    .bind::<Jsonb, _>(&workflow.labels)
    .bind::<Integer, _>(i32::try_from(tasks.len()).unwrap_or(i32::MAX))
    .bind::<Nullable<SqlUuid>, _>(workflow.request_id)
    .bind::<Bytea, _>(&workflow.request_hash)
    .bind::<Timestamptz, _>(now)
    .bind::<Jsonb, _>(&tasks_json)
    .bind::<Jsonb, _>(&edges_json)
    .execute(conn)
    .await?;
    Ok(())
}

/// Workflow `id`, if it exists.
pub async fn workflow(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<WorkflowRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT {WORKFLOW_COLUMNS} FROM content.workflows w WHERE w.id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()
}

/// The tasks of workflow `id`, in request order.
pub async fn tasks_of(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Vec<TaskRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT {TASK_COLUMNS} FROM content.tasks t WHERE t.workflow_id = $1 ORDER BY t.position"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await
}

/// Task `id` of `owner`, if it exists.
pub async fn task(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Uuid,
) -> Result<Option<TaskRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT {TASK_COLUMNS} FROM content.tasks t WHERE t.id = $1 AND t.owner_id = $2"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(owner)
    .get_result(conn)
    .await
    .optional()
}

/// Which workflows a list holds.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Only in this status.
    pub status: Option<i16>,
    /// Only of this project.
    pub project_id: Option<Uuid>,
}

/// `limit` workflows of `owner`, newest first, after `after` (created, id).
pub async fn list_workflows(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    filter: &WorkflowFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<WorkflowRow>, diesel::result::Error> {
    let (time, id) = after.unzip();
    let mut conditions = vec!["w.owner_id = $1"];
    conditions.push(match after {
        Some(_) => "(w.created_at, w.id) < ($2, $3)",
        None => "$2::timestamptz IS NULL AND $3::uuid IS NULL",
    });
    conditions.push(match filter.status {
        Some(_) => "w.status = $5",
        None => "$5::smallint IS NULL",
    });
    conditions.push(match filter.project_id {
        Some(_) => "w.project_id = $6",
        None => "$6::uuid IS NULL",
    });
    diesel::sql_query(format!(
        "SELECT {WORKFLOW_COLUMNS} FROM content.workflows w WHERE {} \
         ORDER BY w.created_at DESC, w.id DESC LIMIT $4",
        conditions.join(" AND ")
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<Timestamptz>, _>(time)
    .bind::<Nullable<SqlUuid>, _>(id)
    .bind::<BigInt, _>(limit)
    .bind::<Nullable<SmallInt>, _>(filter.status)
    .bind::<Nullable<SqlUuid>, _>(filter.project_id)
    .load(conn)
    .await
}

/// Cancels workflow `id` of `owner` if it has not finished: its unfinished tasks are
/// cancelled (running ones keep their lease, so their holder's heartbeat learns it).
/// `Ok(None)`: no such workflow; `Ok(Some(row))`: the workflow after the call (its status
/// says whether it was cancelled now or had finished before).
pub async fn cancel_workflow(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<(WorkflowRow, bool)>, diesel::result::Error> {
    conn.transaction(async |conn| {
        // Tasks first, running ones before the others, each group in id order: the order
        // completing a task locks in (its own running task, then its pending dependants in
        // id order, then the workflow).
        diesel::sql_query(
            "SELECT 1 AS one FROM content.tasks \
             WHERE workflow_id = $1 AND owner_id = $2 AND status IN (1, 2, 3) \
             ORDER BY (status = 3) DESC, id FOR UPDATE",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(owner)
        .execute(conn)
        .await?;
        let Some(row) = diesel::sql_query(format!(
            "SELECT {WORKFLOW_COLUMNS} FROM content.workflows w \
                 WHERE w.id = $1 AND w.owner_id = $2 FOR UPDATE"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(owner)
        .get_result::<WorkflowRow>(conn)
        .await
        .optional()?
        else {
            return Ok(None);
        };
        if row.finished_at.is_some() {
            return Ok(Some((row, false)));
        }
        // A running task keeps its lease, so its holder's heartbeat learns of this; no
        // earlier holder of another task may.
        diesel::sql_query(
            "UPDATE content.tasks SET status = 6, finished_at = $2, updated_at = $2, \
             lease_id = CASE WHEN status = 3 THEN lease_id END \
             WHERE workflow_id = $1 AND status IN (1, 2, 3)",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        let row = diesel::sql_query(format!(
            "UPDATE content.workflows w SET status = 5, remaining = 0, finished_at = $2, \
                 updated_at = $2 WHERE w.id = $1 RETURNING {WORKFLOW_COLUMNS}"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Timestamptz, _>(now)
        .get_result::<WorkflowRow>(conn)
        .await?;
        Ok(Some((row, true)))
    })
    .await
}

/// Leases up to `max` ready tasks of `owner` in `queue` (ready at `now`), oldest ready
/// first, skipping those another claim holds; each gets a new lease of `lease_ms`.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    queue: &str,
    max: i64,
    lease_ms: i64,
    now: DateTime<Utc>,
) -> Result<Vec<TaskRow>, diesel::result::Error> {
    let mut rows: Vec<TaskRow> = diesel::sql_query(format!(
        "WITH picked AS ( \
           SELECT id FROM content.tasks \
           WHERE owner_id = $1 AND queue = $2 AND status = 2 AND ready_at <= $5 \
           ORDER BY ready_at LIMIT $3 FOR UPDATE SKIP LOCKED \
         ), t AS ( \
           UPDATE content.tasks t SET status = 3, attempt = t.attempt + 1, \
             lease_id = gen_random_uuid(), lease_ms = $4::bigint, \
             lease_expires_at = $5::timestamptz + $4::bigint * interval '1 millisecond', \
             started_at = coalesce(t.started_at, $5), updated_at = $5 \
           FROM picked WHERE t.id = picked.id \
           RETURNING {TASK_COLUMNS} \
         ), started AS ( \
           UPDATE content.workflows w SET status = 2, updated_at = $5 \
           WHERE w.id IN (SELECT workflow_id FROM t) AND w.status = 1 \
         ) \
         SELECT * FROM t"
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(queue)
    .bind::<BigInt, _>(max)
    .bind::<BigInt, _>(lease_ms)
    .bind::<Timestamptz, _>(now)
    .load(conn)
    .await?;
    rows.sort_by_key(|r| (r.ready_at, r.id));
    Ok(rows)
}

/// Extends the lease `lease` of task `id` of `owner` to `now + lease_ms` (the claim's
/// length when `None`). The task as it is after the call when the lease is current
/// (RUNNING, or CANCELLED while held), else `None`.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Uuid,
    lease: Uuid,
    lease_ms: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Option<TaskRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "UPDATE content.tasks t SET \
           lease_ms = CASE WHEN t.status = 3 THEN coalesce($4::bigint, t.lease_ms) \
             ELSE t.lease_ms END, \
           lease_expires_at = CASE WHEN t.status = 3 \
             THEN $5::timestamptz + coalesce($4::bigint, t.lease_ms) * interval '1 millisecond' \
             ELSE t.lease_expires_at END \
         WHERE t.id = $1 AND t.owner_id = $2 AND t.lease_id = $3 AND t.status IN (3, 6) \
         RETURNING {TASK_COLUMNS}"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(owner)
    .bind::<SqlUuid, _>(lease)
    .bind::<Nullable<BigInt>, _>(lease_ms)
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
    .await
    .optional()
}

/// A task to complete: its id, owner, the lease it is held by, and its output.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The task.
    pub id: Uuid,
    /// Its owner (the caller).
    pub owner: Uuid,
    /// The lease the caller holds.
    pub lease: Uuid,
    /// The output.
    pub output: serde_json::Value,
}

/// Completes `tasks` (in the order given) in one call of `content.complete_tasks`, which
/// runs `content.complete_task` for each (plans kept per connection): each task SUCCEEDED,
/// its dependants waiting on nothing else become READY (their queues are notified at
/// commit), and its workflow's counters and status follow. Returns the tasks completed;
/// one missing was not RUNNING under that lease.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    tasks: &[Completion],
    now: DateTime<Utc>,
) -> Result<Vec<TaskRow>, diesel::result::Error> {
    CompleteTasks {
        ids: tasks.iter().map(|t| t.id).collect(),
        owners: tasks.iter().map(|t| t.owner).collect(),
        leases: tasks.iter().map(|t| t.lease).collect(),
        outputs: tasks.iter().map(|t| t.output.clone()).collect(),
        now,
    }
    .load(conn)
    .await
}

/// The call of `content.complete_tasks`, as a statement diesel keeps prepared per
/// connection (its text never changes; `sql_query` text is prepared at every call, a round
/// trip and a parse more).
struct CompleteTasks {
    ids: Vec<Uuid>,
    owners: Vec<Uuid>,
    leases: Vec<Uuid>,
    outputs: Vec<serde_json::Value>,
    now: DateTime<Utc>,
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for CompleteTasks {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        out.push_sql("SELECT ");
        out.push_sql(TASK_COLUMNS);
        out.push_sql(" FROM content.complete_tasks(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.owners)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.leases)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.outputs)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(") t");
        Ok(())
    }
}

impl diesel::query_builder::QueryId for CompleteTasks {
    type QueryId = ();
    // Cached by its SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for CompleteTasks {
    type SqlType = diesel::sql_types::Untyped;
}

/// How a failed attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// READY again at this time.
    At(DateTime<Utc>),
    /// Failed for good.
    Never,
}

/// What a failed attempt of `task` leads to at `now`: another attempt after its backoff
/// (`backoff_ms` doubled per attempt made, at most `max_backoff_ms`) while attempts
/// remain and the failure is not `permanent`.
pub fn retry_of(task: &TaskRow, permanent: bool, now: DateTime<Utc>) -> Retry {
    if permanent || task.attempt >= task.max_attempts {
        return Retry::Never;
    }
    let doublings = u32::try_from(task.attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(40);
    let backoff = task
        .backoff_ms
        .saturating_mul(1i64 << doublings)
        .min(task.max_backoff_ms);
    Retry::At(now + chrono::Duration::milliseconds(backoff))
}

/// Fails the attempt of task `id` of `owner` held by `lease`: retried after its backoff
/// while attempts remain (and not `permanent`), else FAILED with its dependants
/// cancelled. `None` when the task is not RUNNING under that lease.
pub async fn fail(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Uuid,
    lease: Uuid,
    error: &str,
    permanent: bool,
    now: DateTime<Utc>,
) -> Result<Option<TaskRow>, diesel::result::Error> {
    conn.transaction(async |conn| {
        let Some(task) = diesel::sql_query(format!(
            "SELECT {TASK_COLUMNS} FROM content.tasks t \
                 WHERE t.id = $1 AND t.owner_id = $2 AND t.lease_id = $3 AND t.status = 3 \
                 FOR UPDATE"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(owner)
        .bind::<SqlUuid, _>(lease)
        .get_result::<TaskRow>(conn)
        .await
        .optional()?
        else {
            return Ok(None);
        };
        let retry = retry_of(&task, permanent, now);
        finish_attempt(conn, &task, retry, error, true, now)
            .await
            .map(Some)
    })
    .await
}

/// Ends the attempt of `task` (locked by the caller's transaction) as `retry` says;
/// `reported`: by its lease holder, whose lease is kept on the task so that a retry of the
/// report is recognised (an expired lease is dropped).
async fn finish_attempt(
    conn: &mut AsyncPgConnection,
    task: &TaskRow,
    retry: Retry,
    error: &str,
    reported: bool,
    now: DateTime<Utc>,
) -> Result<TaskRow, diesel::result::Error> {
    match retry {
        Retry::At(at) => {
            diesel::sql_query(format!(
                "WITH t AS ( \
                   UPDATE content.tasks t SET status = 2, ready_at = $2, error = $3, \
                     lease_id = CASE WHEN $5::boolean THEN t.lease_id END, lease_expires_at = NULL, \
                     updated_at = $4 \
                   WHERE t.id = $1 RETURNING {TASK_COLUMNS} \
                 ), notified AS ( \
                   SELECT count(pg_notify('{TASKS_CHANNEL}', t.owner_id::text || '/' || t.queue)) \
                     AS n FROM t WHERE t.ready_at <= $4 \
                 ) \
                 SELECT t.* FROM t, notified"
            ))
            .bind::<SqlUuid, _>(task.id)
            .bind::<Timestamptz, _>(at)
            .bind::<Text, _>(error)
            .bind::<Timestamptz, _>(now)
            .bind::<diesel::sql_types::Bool, _>(reported)
            .get_result(conn)
            .await
        }
        Retry::Never => {
            diesel::sql_query(format!(
                "WITH RECURSIVE below AS ( \
                   SELECT d.task_id FROM content.task_dependencies d WHERE d.depends_on = $1 \
                   UNION \
                   SELECT d.task_id FROM content.task_dependencies d \
                   JOIN below ON d.depends_on = below.task_id \
                 ), locked AS ( \
                   SELECT t.id FROM content.tasks t \
                   WHERE t.id IN (SELECT task_id FROM below) AND t.status IN (1, 2) \
                   ORDER BY t.id FOR UPDATE \
                 ), cancelled AS ( \
                   UPDATE content.tasks t SET status = 6, finished_at = $3, updated_at = $3, \
                     lease_id = NULL \
                   FROM locked WHERE t.id = locked.id AND t.status IN (1, 2) \
                   RETURNING t.id \
                 ), failed AS ( \
                   UPDATE content.tasks t SET status = 5, error = $2, finished_at = $3, \
                     lease_id = CASE WHEN $4::boolean THEN t.lease_id END, lease_expires_at = NULL, \
                     updated_at = $3 \
                   WHERE t.id = $1 RETURNING {TASK_COLUMNS} \
                 ), counted AS ( \
                   UPDATE content.workflows w SET failed = w.failed + 1, \
                     remaining = w.remaining - 1 - c.n, \
                     status = CASE WHEN w.remaining - 1 - c.n = 0 THEN 4 ELSE 2 END, \
                     finished_at = CASE WHEN w.remaining - 1 - c.n = 0 THEN $3 END, \
                     updated_at = $3 \
                   FROM failed, (SELECT count(*)::int AS n FROM cancelled) c \
                   WHERE w.id = failed.workflow_id AND w.status IN (1, 2) \
                 ) \
                 SELECT * FROM failed"
            ))
            .bind::<SqlUuid, _>(task.id)
            .bind::<Text, _>(error)
            .bind::<Timestamptz, _>(now)
            .bind::<diesel::sql_types::Bool, _>(reported)
            .get_result(conn)
            .await
        }
    }
}

/// The error recorded for an attempt whose lease ran out.
pub const LEASE_EXPIRED: &str = "the worker's lease expired";

/// Ends up to `limit` attempts whose lease ran out before `now` (skipping tasks another
/// transaction holds): READY again at once while attempts remain, else FAILED. How many.
pub async fn expire_leases(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<usize, diesel::result::Error> {
    conn.transaction(async |conn| {
        let expired: Vec<TaskRow> = diesel::sql_query(format!(
            "SELECT {TASK_COLUMNS} FROM content.tasks t \
                 WHERE t.status = 3 AND t.lease_expires_at < $1 \
                 ORDER BY t.lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
        for task in &expired {
            let retry = match retry_of(task, false, now) {
                Retry::At(_) => Retry::At(now),
                Retry::Never => Retry::Never,
            };
            finish_attempt(conn, task, retry, LEASE_EXPIRED, false, now).await?;
        }
        Ok(expired.len())
    })
    .await
}

/// Deletes up to `limit` workflows (with their tasks) that finished before `before`.
/// Returns how many, and the conversations that were linked to their tasks (the link is
/// emptied with them, so their cached copies must go).
pub async fn delete_finished(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<(usize, Vec<Uuid>), diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Deleted {
        #[diesel(sql_type = BigInt)]
        deleted: i64,
        #[diesel(sql_type = Array<SqlUuid>)]
        conversations: Vec<Uuid>,
    }
    let deleted: Deleted = diesel::sql_query(
        "WITH gone AS ( \
           DELETE FROM content.workflows WHERE id = ANY (ARRAY( \
             SELECT id FROM content.workflows WHERE finished_at < $1 \
             ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)) \
           RETURNING id \
         ) \
         SELECT (SELECT count(*) FROM gone) AS deleted, ARRAY( \
           SELECT c.id FROM gone JOIN content.tasks t ON t.workflow_id = gone.id \
           JOIN content.conversations c ON c.task_id = t.id) AS conversations",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .get_result(conn)
    .await?;
    Ok((
        usize::try_from(deleted.deleted).unwrap_or(0),
        deleted.conversations,
    ))
}
