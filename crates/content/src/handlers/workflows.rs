//! Workflows of agent tasks (created whole, read, listed, cancelled by their owner) and the
//! queue their workers take tasks from (claims with leases, heartbeats, completion and
//! failure with retries). The state machine lives in [`crate::store::workflows`]; this
//! file checks requests, resolves agents, and explains refusals.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use strata_errors::{ApiError, Violations};
use strata_proto::content as pb;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{Cursor, PageContext, finish_page, page_size};
use strata_runtime::time::timestamp;
use tonic::Request;
use uuid::Uuid;

use super::versioned::{self, mask, pick, request_hash};
use super::{ContentHandlers, SCOPE_READ, SCOPE_WRITE, caller, may_touch, shared};
use crate::ContentError;
use crate::store::workflows::{self as store, TaskRow, WORKFLOWS, WorkflowRow, task_status};
use crate::{validate, versions};

/// Scope an API key needs to claim and report tasks.
pub const SCOPE_WORK: &str = "tasks:work";
/// Most tasks of one workflow.
pub const MAX_TASKS: usize = 1000;
/// Most dependencies of one task.
const MAX_DEPENDENCIES: usize = 100;
/// Longest task name.
const MAX_TASK_NAME: usize = 100;
/// Longest queue name.
const MAX_QUEUE: usize = 64;
/// Longest workflow name.
const MAX_NAME: usize = 200;
/// Longest error of a failed attempt.
const MAX_ERROR: usize = 10_000;
/// Largest input or output, as JSON.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Attempts: default and most.
const ATTEMPTS: (i32, i32) = (3, 100);
/// First backoff: default and longest.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Longest backoff: default and most.
const MAX_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(300), Duration::from_secs(24 * 3600));
/// Leases: default, shortest and longest.
const LEASE: (Duration, Duration, Duration) = (
    Duration::from_secs(30),
    Duration::from_secs(1),
    Duration::from_secs(3600),
);
/// Longest wait of a claim.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Tasks of one claim: default and most.
const CLAIM: (i32, i32) = (1, 100);
/// Fields a read_mask may name.
const FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "project_id",
    "name",
    "labels",
    "status",
    "task_count",
    "succeeded_count",
    "failed_count",
    "create_time",
    "update_time",
    "finish_time",
];
const LIST: &str = "strata.content.v1.WorkflowService/ListWorkflows";

fn workflow_proto(row: &WorkflowRow) -> pb::Workflow {
    pb::Workflow {
        id: row.id.to_string(),
        owner_id: row.owner_id.to_string(),
        project_id: row.project_id.map(|p| p.to_string()).unwrap_or_default(),
        name: row.name.clone(),
        labels: validate::labels_map(&row.labels),
        status: i32::from(row.status),
        task_count: row.task_count,
        succeeded_count: row.succeeded,
        failed_count: row.failed,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        finish_time: row.finished_at.map(timestamp),
    }
}

fn masked(workflow: pb::Workflow, fields: &[&str]) -> pb::Workflow {
    mask!(
        workflow,
        fields,
        [
            id,
            owner_id,
            project_id,
            name,
            labels,
            status,
            task_count,
            succeeded_count,
            failed_count,
            create_time,
            update_time,
            finish_time,
        ]
    )
}

fn duration_proto(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn task_proto(row: &TaskRow) -> pb::Task {
    pb::Task {
        id: row.id.to_string(),
        workflow_id: row.workflow_id.to_string(),
        name: row.name.clone(),
        queue: row.queue.clone(),
        agent_id: row.agent_id.map(|a| a.to_string()).unwrap_or_default(),
        agent_version: row.agent_version.unwrap_or_default(),
        input: Some(validate::json_to_struct(&row.input)),
        output: row.output.as_ref().map(validate::json_to_struct),
        error: row.error.clone().unwrap_or_default(),
        status: i32::from(row.status),
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        initial_backoff: Some(duration_proto(row.backoff_ms)),
        max_backoff: Some(duration_proto(row.max_backoff_ms)),
        depends_on: row.depends_on.clone(),
        create_time: Some(timestamp(row.created_at)),
        ready_time: row.ready_at.map(timestamp),
        start_time: row.started_at.map(timestamp),
        finish_time: row.finished_at.map(timestamp),
        lease_expire_time: if row.status == task_status::RUNNING {
            row.lease_expires_at.map(timestamp)
        } else {
            None
        },
    }
}

/// A task status's name, as the proto spells it.
fn task_status_name(status: i16) -> &'static str {
    pb::TaskStatus::try_from(i32::from(status))
        .map(|s| s.as_str_name().trim_start_matches("TASK_STATUS_"))
        .unwrap_or("UNKNOWN")
}

fn workflow_status_name(status: i16) -> &'static str {
    pb::WorkflowStatus::try_from(i32::from(status))
        .map(|s| s.as_str_name().trim_start_matches("WORKFLOW_STATUS_"))
        .unwrap_or("UNKNOWN")
}

/// A duration field in milliseconds, within `min..=max` (`default` when unset).
fn duration_ms(
    v: &mut Violations,
    field: &str,
    value: Option<&prost_types::Duration>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> i64 {
    let as_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let Some(value) = value else {
        return as_ms(default);
    };
    let ms = value
        .seconds
        .checked_mul(1000)
        .and_then(|s| s.checked_add(i64::from(value.nanos) / 1_000_000));
    match ms {
        Some(ms)
            if (0..1_000_000_000).contains(&value.nanos)
                && ms >= as_ms(min)
                && ms <= as_ms(max) =>
        {
            ms
        }
        _ => {
            v.add(
                field,
                format!("must be {} ms to {} ms", as_ms(min), as_ms(max)),
            );
            as_ms(default)
        }
    }
}

/// Whether `name` is 1 to `max` letters, digits and `extra` characters.
fn check_name(v: &mut Violations, field: &str, name: &str, max: usize, extra: &[u8]) {
    let ok = (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if !ok {
        let extra: Vec<String> = extra.iter().map(|b| format!("`{}`", *b as char)).collect();
        v.add(
            field,
            format!("must be 1 to {max} letters, digits, {}", extra.join(", ")),
        );
    }
}

/// Checks the tasks' dependencies: known names of the request, no cycle. Returns each
/// task's dependencies as indexes (duplicates dropped).
fn check_graph(v: &mut Violations, tasks: &[pb::NewTask]) -> Vec<Vec<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, task) in tasks.iter().enumerate() {
        if index.insert(task.name.as_str(), i).is_some() {
            v.add(format!("tasks[{i}].name"), "is the name of an earlier task");
        }
    }
    let mut deps = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        let mut mine: Vec<usize> = Vec::new();
        if task.depends_on.len() > MAX_DEPENDENCIES {
            v.add(
                format!("tasks[{i}].depends_on"),
                format!("must name at most {MAX_DEPENDENCIES} tasks"),
            );
        } else {
            for (j, name) in task.depends_on.iter().enumerate() {
                match index.get(name.as_str()) {
                    Some(&d) if !mine.contains(&d) => mine.push(d),
                    Some(_) => {}
                    None => v.add(
                        format!("tasks[{i}].depends_on[{j}]"),
                        "is not the name of a task of this workflow",
                    ),
                }
            }
        }
        deps.push(mine);
    }
    if v.is_empty()
        && let Some(cycle) = find_cycle(&deps)
    {
        let names: Vec<&str> = cycle.iter().map(|&i| tasks[i].name.as_str()).collect();
        v.add(
            format!("tasks[{}].depends_on", cycle[0]),
            format!(
                "makes a cycle: {} -> {}",
                names.join(" -> "),
                names.first().copied().unwrap_or_default()
            ),
        );
    }
    deps
}

/// A cycle of the graph (each task waits for the next, the last for the first), if any.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    // Kahn: remove tasks nothing unremoved waits on; what stays is on or behind a cycle.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    for (task, mine) in deps.iter().enumerate() {
        for &d in mine {
            dependants[d].push(task);
        }
    }
    let mut free: Vec<usize> = (0..deps.len()).filter(|&t| waiting[t] == 0).collect();
    let mut done = vec![false; deps.len()];
    while let Some(t) = free.pop() {
        done[t] = true;
        for &next in &dependants[t] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                free.push(next);
            }
        }
    }
    let start = (0..deps.len()).find(|&t| !done[t])?;
    // Follow unfinished dependencies until a task repeats: that loop is a cycle.
    let mut path = vec![start];
    let mut at = start;
    loop {
        let next = *deps[at].iter().find(|&&d| !done[d])?;
        if let Some(pos) = path.iter().position(|&p| p == next) {
            return Some(path.split_off(pos));
        }
        path.push(next);
        at = next;
    }
}

/// The `grpc-timeout` a client set, if any.
fn grpc_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl ContentHandlers {
    /// Now, by the content clock, at millisecond precision.
    fn clock_now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.config.clock.now_ms()).unwrap_or_else(Utc::now)
    }

    /// Hands expired leases back to the queue (or fails their tasks); how many.
    pub async fn sweep_leases(&self) -> Result<usize, strata_storage::Error> {
        let mut total = 0;
        loop {
            let now = self.clock_now();
            let mut conn = self.ctx.db.get().await?;
            let n = store::expire_leases(&mut conn, now, crate::workflows::SWEEP_BATCH).await?;
            total += n;
            if n < usize::try_from(crate::workflows::SWEEP_BATCH).unwrap_or(usize::MAX) {
                return Ok(total);
            }
        }
    }

    /// Deletes the workflows that finished longer ago than the retention; how many.
    pub async fn delete_finished_workflows(&self) -> Result<usize, strata_storage::Error> {
        let keep =
            chrono::Duration::from_std(self.config.workflows.keep).unwrap_or(chrono::Duration::MAX);
        // Kept longer than time goes back: nothing to delete.
        let Some(before) = self.clock_now().checked_sub_signed(keep) else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            let mut conn = self.ctx.db.get().await?;
            let (n, unlinked) =
                store::delete_finished(&mut conn, before, crate::workflows::CLEANUP_BATCH).await?;
            drop(conn);
            if !unlinked.is_empty() {
                let keys: Vec<String> = unlinked.iter().map(Uuid::to_string).collect();
                self.conversations.invalidate(&keys).await;
            }
            total += n;
            if n < usize::try_from(crate::workflows::CLEANUP_BATCH).unwrap_or(usize::MAX) {
                return Ok(total);
            }
        }
    }

    /// Workflow `id` and its tasks, if `principal` may see it.
    async fn visible_workflow(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<(WorkflowRow, Vec<TaskRow>), ContentError> {
        let mut conn = self.ctx.db.get().await?;
        let row = store::workflow(&mut conn, id)
            .await?
            .filter(|w| may_touch(principal, w.owner_id))
            .ok_or_else(|| ContentError::not_found("workflow"))?;
        let tasks = store::tasks_of(&mut conn, id).await?;
        Ok((row, tasks))
    }

    /// Task `id` of `principal`, if it exists (for conversations linked to it).
    pub(super) async fn visible_task(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<TaskRow, ContentError> {
        let mut conn = self.ctx.db.get().await?;
        store::task(&mut conn, id, principal.user_id)
            .await?
            .ok_or_else(|| ContentError::not_found("task"))
    }

    /// Why a report on task `id` under `lease` changed nothing: the task as it is when the
    /// report was already applied (`replayed` says which states that is), else the error.
    async fn refused(
        &self,
        principal: &Principal,
        id: Uuid,
        lease: Uuid,
        replayed: &[i16],
    ) -> Result<TaskRow, ContentError> {
        let task = self.visible_task(principal, id).await?;
        if task.lease_id == Some(lease) && replayed.contains(&task.status) {
            return Ok(task);
        }
        let status = task_status_name(task.status);
        Err(ContentError::Api(ApiError::failed_precondition(
            if task.lease_id == Some(lease) || task.status != task_status::RUNNING {
                format!("the task is {status}")
            } else {
                format!("the lease is not the task's current lease; the task is {status}")
            },
        )))
    }
}

/// `CreateWorkflow`.
pub async fn create_workflow(
    h: &ContentHandlers,
    request: Request<pb::CreateWorkflowRequest>,
) -> Result<pb::CreateWorkflowResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let workflow = req.workflow.unwrap_or_default();
    let mut v = Violations::new();
    validate::text(&mut v, "workflow.name", &workflow.name, 0, MAX_NAME);
    validate::labels(&mut v, "workflow.labels", &workflow.labels);
    let project = validate::optional_id(&mut v, "workflow.project_id", &workflow.project_id);
    let request_id = validate::request_id(&mut v, &req.request_id);
    if req.tasks.is_empty() || req.tasks.len() > MAX_TASKS {
        v.add("tasks", format!("must hold 1 to {MAX_TASKS} tasks"));
        return Err(ApiError::InvalidArgument(v.into_vec()).into());
    }
    let mut checked = Vec::with_capacity(req.tasks.len());
    for (i, task) in req.tasks.iter().enumerate() {
        let at = |f: &str| format!("tasks[{i}].{f}");
        check_name(&mut v, &at("name"), &task.name, MAX_TASK_NAME, b"_-.");
        check_name(&mut v, &at("queue"), &task.queue, MAX_QUEUE, b"_-.:");
        let agent = validate::optional_id(&mut v, &at("agent_id"), &task.agent_id);
        let input = validate::json_within(
            &mut v,
            &at("input"),
            task.input.as_ref(),
            MAX_DOCUMENT_BYTES,
        );
        let max_attempts = match task.max_attempts {
            0 => ATTEMPTS.0,
            n if (1..=ATTEMPTS.1).contains(&n) => n,
            _ => {
                v.add(at("max_attempts"), format!("must be 1 to {}", ATTEMPTS.1));
                ATTEMPTS.0
            }
        };
        let backoff = duration_ms(
            &mut v,
            &at("initial_backoff"),
            task.initial_backoff.as_ref(),
            BACKOFF.0,
            (Duration::ZERO, BACKOFF.1),
        );
        let max_backoff = duration_ms(
            &mut v,
            &at("max_backoff"),
            task.max_backoff.as_ref(),
            MAX_BACKOFF
                .0
                .max(Duration::from_millis(backoff.unsigned_abs())),
            (Duration::ZERO, MAX_BACKOFF.1),
        );
        if max_backoff < backoff {
            v.add(at("max_backoff"), "must be at least initial_backoff");
        }
        checked.push((agent, input, max_attempts, backoff, max_backoff));
    }
    let deps = check_graph(&mut v, &req.tasks);
    v.finish()?;

    let labels = validate::labels_json(&workflow.labels);
    let mut hashed: Vec<Vec<u8>> = vec![
        workflow.name.as_bytes().to_vec(),
        workflow.project_id.as_bytes().to_vec(),
        labels.to_string().into_bytes(),
    ];
    hashed.extend(req.tasks.iter().map(prost::Message::encode_to_vec));
    let hash = request_hash(&hashed.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let owner = principal.user_id;
    let mut conn = h.ctx.db.get().await?;
    let replayed = versioned::replayed(&mut conn, WORKFLOWS, owner, request_id, &hash).await?;
    drop(conn);
    if let Some(id) = replayed {
        let (row, tasks) = h.visible_workflow(&principal, id).await?;
        return Ok(pb::CreateWorkflowResponse {
            workflow: Some(workflow_proto(&row)),
            tasks: tasks.iter().map(task_proto).collect(),
        });
    }
    if let Some(project) = project {
        h.visible_project(&principal, project).await?;
    }
    // Each agent's version selection, resolved once per agent.
    let mut selections = HashMap::new();
    for (agent, ..) in &checked {
        if let Some(agent) = agent
            && !selections.contains_key(agent)
        {
            let head = h.visible_agent(&principal, *agent).await?;
            selections.insert(*agent, versions::select(None, &head.version_labels)?);
        }
    }
    let ids: Vec<Uuid> = req.tasks.iter().map(|_| Uuid::now_v7()).collect();
    let tasks: Vec<store::NewTask> = req
        .tasks
        .iter()
        .zip(checked)
        .zip(&deps)
        .enumerate()
        .map(
            |(i, ((task, (agent, input, max_attempts, backoff, max_backoff)), mine))| {
                let id = ids[i];
                let agent_version = agent.and_then(|a| {
                    selections
                        .get(&a)
                        .map(|selected| pick(a, selected, &id.to_string()).1)
                });
                store::NewTask {
                    id,
                    position: i32::try_from(i).unwrap_or(i32::MAX),
                    name: task.name.clone(),
                    queue: task.queue.clone(),
                    agent_id: agent,
                    agent_version,
                    input,
                    max_attempts,
                    backoff_ms: backoff,
                    max_backoff_ms: max_backoff,
                    depends_on: mine.iter().map(|&d| ids[d]).collect(),
                    depends_on_names: mine.iter().map(|&d| req.tasks[d].name.clone()).collect(),
                }
            },
        )
        .collect();
    let new = store::NewWorkflow {
        id: Uuid::now_v7(),
        owner_id: owner,
        project_id: project,
        name: workflow.name,
        labels,
        request_id,
        request_hash: hash.clone(),
    };
    let now = h.clock_now();
    let mut conn = h.ctx.db.get().await?;
    let id = match store::insert_workflow(&mut conn, &new, &tasks, now).await {
        Ok(()) => new.id,
        Err(e) => {
            let request = (request_id, hash.as_slice());
            versioned::create_failed(&mut conn, (WORKFLOWS, "workflow"), owner, request, e, None)
                .await?
        }
    };
    drop(conn);
    let (row, tasks) = h.visible_workflow(&principal, id).await?;
    Ok(pb::CreateWorkflowResponse {
        workflow: Some(workflow_proto(&row)),
        tasks: tasks.iter().map(task_proto).collect(),
    })
}

/// `GetWorkflow`.
pub async fn get_workflow(
    h: &ContentHandlers,
    request: Request<pb::GetWorkflowRequest>,
) -> Result<pb::GetWorkflowResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let id = validate::id("workflow_id", &request.get_ref().workflow_id)?;
    let (row, tasks) = h.visible_workflow(&principal, id).await?;
    Ok(pb::GetWorkflowResponse {
        workflow: Some(workflow_proto(&row)),
        tasks: tasks.iter().map(task_proto).collect(),
    })
}

/// `ListWorkflows`.
pub async fn list_workflows(
    h: &ContentHandlers,
    request: Request<pb::ListWorkflowsRequest>,
) -> Result<pb::ListWorkflowsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let mut v = Violations::new();
    let project_id = validate::optional_id(&mut v, "project_id", &req.project_id);
    let status = match pb::WorkflowStatus::try_from(req.status) {
        Ok(pb::WorkflowStatus::Unspecified) => None,
        Ok(status) => Some(status as i16),
        Err(_) => {
            v.add("status", "is not a WorkflowStatus");
            None
        }
    };
    v.finish()?;
    let filter = store::WorkflowFilter { status, project_id };
    let status_key = req.status.to_string();
    let context = PageContext::new(LIST, &principal.user_id, &[&status_key, &req.project_id]);
    let after = Cursor::decode(&req.page_token, &context)?.map(|c| (c.time, c.id));
    let mut conn = h.ctx.db.get().await?;
    let rows =
        store::list_workflows(&mut conn, principal.user_id, &filter, after, limit + 1).await?;
    drop(conn);
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.created_at,
            id: last.id,
        }
        .encode(&context)
    });
    Ok(pb::ListWorkflowsResponse {
        workflows: rows
            .iter()
            .map(|r| masked(workflow_proto(r), &fields))
            .collect(),
        next_page_token,
    })
}

/// `CancelWorkflow`.
pub async fn cancel_workflow(
    h: &ContentHandlers,
    request: Request<pb::CancelWorkflowRequest>,
) -> Result<pb::CancelWorkflowResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let id = validate::id("workflow_id", &request.get_ref().workflow_id)?;
    let now = h.clock_now();
    let db = h.ctx.db.clone();
    let outcome = h
        .ctx
        .db
        .retrying("cancel workflow", || async {
            let mut conn = db.get().await?;
            Ok::<_, strata_storage::Error>(
                store::cancel_workflow(&mut conn, id, principal.user_id, now).await?,
            )
        })
        .await?;
    match outcome {
        None => Err(ContentError::not_found("workflow")),
        Some((row, false)) => Err(ContentError::Api(ApiError::failed_precondition(format!(
            "the workflow already finished: it is {}",
            workflow_status_name(row.status)
        )))),
        Some((row, true)) => Ok(pb::CancelWorkflowResponse {
            workflow: Some(workflow_proto(&row)),
        }),
    }
}

/// `ClaimTasks`: claims at once, and when nothing is ready and the caller waits, again at
/// each wake-up of the queue (or [`crate::workflows::RECHECK`]) until the wait ends.
pub async fn claim_tasks(
    h: &ContentHandlers,
    request: Request<pb::ClaimTasksRequest>,
) -> Result<pb::ClaimTasksResponse, ContentError> {
    let principal = caller(&request, SCOPE_WORK)?;
    let client_deadline = grpc_timeout(&request);
    let req = request.into_inner();
    let mut v = Violations::new();
    check_name(&mut v, "queue", &req.queue, MAX_QUEUE, b"_-.:");
    let max = match req.max_tasks {
        0 => CLAIM.0,
        n if (1..=CLAIM.1).contains(&n) => n,
        _ => {
            v.add("max_tasks", format!("must be 1 to {}", CLAIM.1));
            CLAIM.0
        }
    };
    let lease = duration_ms(
        &mut v,
        "lease",
        req.lease.as_ref(),
        LEASE.0,
        (LEASE.1, LEASE.2),
    );
    let wait = duration_ms(
        &mut v,
        "wait",
        req.wait.as_ref(),
        Duration::ZERO,
        (Duration::ZERO, MAX_WAIT),
    );
    v.finish()?;
    let mut wait = Duration::from_millis(wait.unsigned_abs());
    // Answer before the client gives up: a claim it never reads would hold its tasks
    // until their leases expire.
    if let Some(timeout) = client_deadline {
        wait = wait.min(timeout.mul_f64(0.8));
    }
    let deadline = Instant::now() + wait;
    let owner = principal.user_id;
    let waiter = (!wait.is_zero()).then(|| {
        h.wakeups.wait_on(
            format!("{owner}/{}", req.queue),
            &h.ctx.config.db,
            h.ctx.stopping.subscribe(),
        )
    });
    let mut stopping = h.ctx.stopping.subscribe();
    loop {
        // Listen before looking, so a wake-up between the two is not missed.
        let notified = waiter.as_ref().map(|w| w.notify.notified());
        let mut notified = std::pin::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        let now = h.clock_now();
        let mut conn = h.ctx.db.get().await?;
        let rows = store::claim(&mut conn, owner, &req.queue, i64::from(max), lease, now).await?;
        drop(conn);
        let left = deadline.saturating_duration_since(Instant::now());
        if !rows.is_empty() || waiter.is_none() || left.is_zero() || *stopping.borrow() {
            return Ok(pb::ClaimTasksResponse {
                tasks: rows
                    .iter()
                    .map(|t| pb::ClaimedTask {
                        task: Some(task_proto(t)),
                        lease_id: t.lease_id.map(|l| l.to_string()).unwrap_or_default(),
                    })
                    .collect(),
            });
        }
        let pause = left.min(h.wakeups.recheck());
        tokio::select! {
            () = async { if let Some(n) = notified.as_mut().as_pin_mut() { n.await } } => {}
            () = tokio::time::sleep(pause) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// The task and lease a worker report names.
fn task_and_lease(task_id: &str, lease_id: &str) -> Result<(Uuid, Uuid), ContentError> {
    let mut v = Violations::new();
    let mut required = |field: &str, value: &str| {
        if value.is_empty() {
            v.add(field, "is required");
            return None;
        }
        validate::optional_id(&mut v, field, value)
    };
    let ids = required("task_id", task_id).zip(required("lease_id", lease_id));
    Ok(v.finish_with(ids)?)
}

/// `HeartbeatTask`.
pub async fn heartbeat_task(
    h: &ContentHandlers,
    request: Request<pb::HeartbeatTaskRequest>,
) -> Result<pb::HeartbeatTaskResponse, ContentError> {
    let principal = caller(&request, SCOPE_WORK)?;
    let req = request.into_inner();
    let (id, lease) = task_and_lease(&req.task_id, &req.lease_id)?;
    let mut v = Violations::new();
    let length = req
        .lease
        .as_ref()
        .map(|l| duration_ms(&mut v, "lease", Some(l), LEASE.0, (LEASE.1, LEASE.2)));
    v.finish()?;
    let now = h.clock_now();
    let mut conn = h.ctx.db.get().await?;
    let row = store::heartbeat(&mut conn, id, principal.user_id, lease, length, now).await?;
    drop(conn);
    let row = match row {
        Some(row) => row,
        None => h.refused(&principal, id, lease, &[]).await?,
    };
    let cancelled = row.status == task_status::CANCELLED;
    Ok(pb::HeartbeatTaskResponse {
        cancelled,
        lease_expire_time: if cancelled {
            None
        } else {
            row.lease_expires_at.map(timestamp)
        },
    })
}

/// `CompleteTask`.
pub async fn complete_task(
    h: &ContentHandlers,
    request: Request<pb::CompleteTaskRequest>,
) -> Result<pb::CompleteTaskResponse, ContentError> {
    let principal = caller(&request, SCOPE_WORK)?;
    let req = request.into_inner();
    let (id, lease) = task_and_lease(&req.task_id, &req.lease_id)?;
    let mut v = Violations::new();
    let output = validate::json_within(&mut v, "output", req.output.as_ref(), MAX_DOCUMENT_BYTES);
    v.finish()?;
    let task = store::Completion {
        id,
        owner: principal.user_id,
        lease,
        output,
    };
    let row = h
        .completer
        .complete(&h.ctx.db, &h.config.clock, task)
        .await
        .map_err(shared)?;
    let row = match row {
        Some(row) => row,
        None => {
            h.refused(&principal, id, lease, &[task_status::SUCCEEDED])
                .await?
        }
    };
    Ok(pb::CompleteTaskResponse {
        task: Some(task_proto(&row)),
    })
}

/// `FailTask`.
pub async fn fail_task(
    h: &ContentHandlers,
    request: Request<pb::FailTaskRequest>,
) -> Result<pb::FailTaskResponse, ContentError> {
    let principal = caller(&request, SCOPE_WORK)?;
    let req = request.into_inner();
    let (id, lease) = task_and_lease(&req.task_id, &req.lease_id)?;
    let mut v = Violations::new();
    if req.error.is_empty() {
        v.add("error", "must not be empty");
    }
    validate::long_text(&mut v, "error", &req.error, MAX_ERROR);
    v.finish()?;
    let now = h.clock_now();
    let db = h.ctx.db.clone();
    let owner = principal.user_id;
    let row = h
        .ctx
        .db
        .retrying("fail task", || async {
            let mut conn = db.get().await?;
            Ok::<_, strata_storage::Error>(
                store::fail(&mut conn, id, owner, lease, &req.error, req.permanent, now).await?,
            )
        })
        .await?;
    let row = match row {
        Some(row) => row,
        None => {
            // A retry of the same report: READY again (a retryable failure) or FAILED;
            // a permanent failure after a retryable one is not that.
            let replayed: &[i16] = if req.permanent {
                &[task_status::FAILED]
            } else {
                &[task_status::READY, task_status::FAILED]
            };
            h.refused(&principal, id, lease, replayed).await?
        }
    };
    Ok(pb::FailTaskResponse {
        task: Some(task_proto(&row)),
    })
}

#[tonic::async_trait]
impl pb::workflow_service_server::WorkflowService for ContentHandlers {
    async fn create_workflow(
        &self,
        request: Request<pb::CreateWorkflowRequest>,
    ) -> Result<tonic::Response<pb::CreateWorkflowResponse>, tonic::Status> {
        strata_errors::respond(create_workflow(self, request).await)
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<tonic::Response<pb::GetWorkflowResponse>, tonic::Status> {
        strata_errors::respond(get_workflow(self, request).await)
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<tonic::Response<pb::ListWorkflowsResponse>, tonic::Status> {
        strata_errors::respond(list_workflows(self, request).await)
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<tonic::Response<pb::CancelWorkflowResponse>, tonic::Status> {
        strata_errors::respond(cancel_workflow(self, request).await)
    }

    async fn claim_tasks(
        &self,
        request: Request<pb::ClaimTasksRequest>,
    ) -> Result<tonic::Response<pb::ClaimTasksResponse>, tonic::Status> {
        strata_errors::respond(claim_tasks(self, request).await)
    }

    async fn heartbeat_task(
        &self,
        request: Request<pb::HeartbeatTaskRequest>,
    ) -> Result<tonic::Response<pb::HeartbeatTaskResponse>, tonic::Status> {
        strata_errors::respond(heartbeat_task(self, request).await)
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<tonic::Response<pb::CompleteTaskResponse>, tonic::Status> {
        strata_errors::respond(complete_task(self, request).await)
    }

    async fn fail_task(
        &self,
        request: Request<pb::FailTaskRequest>,
    ) -> Result<tonic::Response<pb::FailTaskResponse>, tonic::Status> {
        strata_errors::respond(fail_task(self, request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn cycles_are_found_and_dags_pass() {
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0]));
        let cycle = find_cycle(&[vec![], vec![3], vec![1], vec![2], vec![0]]);
        let mut sorted = cycle.clone().unwrap_or_default();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3], "{cycle:?}");
    }
}
