//! The task queue's scenarios: throughput of whole task lives (a workflow created, its
//! tasks claimed in batches and completed one by one) beside `pgbench` TPC-B, and the
//! latency from a task becoming ready to a long-polling worker holding it.
//!
//! Targets answer the engines users pick for this (Hatchet reports about 10,000 tasks/s
//! on larger machines): at least 5,000 tasks/s here, and a ready task handed to a waiting
//! worker within 25 ms at p99.

use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};
use strata_bench::load::{Load, Report};
use strata_proto::content::workflow_service_client::WorkflowServiceClient;
use strata_proto::content::{self as cpb};
use tonic::transport::Channel;

use super::{Limit, Recorder, Target, bearer, sign_up};

/// Tasks of each workflow the throughput scenario runs.
const TASKS: usize = 50;
/// Tasks one claim asks for.
const CLAIM_BATCH: i32 = 50;
/// Completions in flight per workflow.
const COMPLETING: usize = 2;
/// Workflows in flight per connection.
const WORKFLOWS_IN_FLIGHT: usize = 4;
/// Tasks per second the queue should reach.
const TARGET_TASKS: f64 = 5_000.0;

/// Measures the task queue's scenarios.
pub(super) async fn run(
    bench: &mut Recorder<'_>,
    channel: &Channel,
    wide: &Load,
    run_id: u32,
) -> anyhow::Result<()> {
    let progress = |what: &str| eprintln!("strata bench: {what}");
    let owner = sign_up(channel.clone(), format!("w.{run_id}@bench.example")).await?;

    // The latency first, on a quiet database (autovacuum follows the throughput run).
    progress("ClaimTasks long-poll latency");
    let operation = "ClaimTasks long-poll: a task ready (CreateWorkflow sent) to a waiting worker \
                     holding it, one at a time";
    if !bench.left_out(operation) {
        let before = bench.probe.sample().await;
        let report = claim_latency(
            channel.clone(),
            owner.token.clone(),
            run_id,
            wide.measure * 2,
        )
        .await;
        bench
            .record_p99(operation, &report, &before, Duration::from_millis(25))
            .await;
    }
    progress("workflows");
    // A workflow's life takes about a second under this load: measure for a few.
    let measure = wide.measure.max(Duration::from_secs(3));
    let load = Load::closed(wide.connections, WORKFLOWS_IN_FLIGHT, measure);
    let operation = format!(
        "workflows of {TASKS} tasks: CreateWorkflow, ClaimTasks of {CLAIM_BATCH}, CompleteTask \
         each ({COMPLETING} at a time); a call is one workflow"
    );
    let token = owner.token.clone();
    let life = move |c: Channel, seq: u64| {
        let token = token.clone();
        async move { workflow_life(c, token, format!("t{run_id}.{seq}")).await }
    };
    bench
        .measure(
            &operation,
            &load,
            Limit::PgbenchTpcb,
            "",
            Target::Events {
                per_call: TASKS as f64,
                at_least: TARGET_TASKS,
            },
            life,
        )
        .await;
    if let Some(row) = bench.last(&operation) {
        let tasks = row.rate * TASKS as f64;
        let tpcb = row.limit_rate;
        row.operation.push_str(&format!(
            "; {tasks:.0} tasks/s, {:.2} × TPC-B",
            tasks / tpcb.max(f64::EPSILON)
        ));
    }

    Ok(())
}

fn task(name: String, queue: &str) -> cpb::NewTask {
    cpb::NewTask {
        name,
        queue: queue.to_owned(),
        ..Default::default()
    }
}

/// One workflow's life: created with [`TASKS`] tasks in its own queue, claimed in batches,
/// each task completed.
async fn workflow_life(c: Channel, token: String, queue: String) -> Result<(), tonic::Status> {
    let mut client = WorkflowServiceClient::new(c);
    client
        .create_workflow(bearer(
            cpb::CreateWorkflowRequest {
                workflow: Some(cpb::Workflow {
                    name: queue.clone(),
                    ..Default::default()
                }),
                tasks: (0..TASKS).map(|i| task(format!("t{i}"), &queue)).collect(),
                request_id: String::new(),
            },
            &token,
        ))
        .await?;
    let mut done = 0;
    while done < TASKS {
        let claimed = client
            .claim_tasks(bearer(
                cpb::ClaimTasksRequest {
                    queue: queue.clone(),
                    max_tasks: CLAIM_BATCH,
                    lease: None,
                    wait: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                },
                &token,
            ))
            .await?
            .into_inner()
            .tasks;
        if claimed.is_empty() {
            return Err(tonic::Status::deadline_exceeded("no task was handed out"));
        }
        done += claimed.len();
        futures_util::stream::iter(claimed)
            .map(|claimed| {
                let mut client = client.clone();
                let token = token.clone();
                async move {
                    let task_id = claimed.task.map(|t| t.id).unwrap_or_default();
                    client
                        .complete_task(bearer(
                            cpb::CompleteTaskRequest {
                                task_id,
                                lease_id: claimed.lease_id,
                                output: None,
                            },
                            &token,
                        ))
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(COMPLETING)
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(())
}

/// For `measure`: a worker waits on an empty queue, a workflow with one task in it is
/// created, and the time from sending the create to the worker holding the task is
/// recorded (the task is ready at the create's commit, so this bounds it from above).
async fn claim_latency(c: Channel, token: String, run_id: u32, measure: Duration) -> Report {
    let mut latency = strata_bench::load::histogram();
    let mut errors = std::collections::BTreeMap::new();
    let mut ok = 0u64;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < measure {
        n += 1;
        let queue = format!("l{run_id}.{n}");
        let waiting = {
            let (mut client, token, queue) = (
                WorkflowServiceClient::new(c.clone()),
                token.clone(),
                queue.clone(),
            );
            tokio::spawn(async move {
                let claimed = client
                    .claim_tasks(bearer(
                        cpb::ClaimTasksRequest {
                            queue,
                            max_tasks: 1,
                            lease: None,
                            wait: Some(prost_types::Duration {
                                seconds: 10,
                                nanos: 0,
                            }),
                        },
                        &token,
                    ))
                    .await;
                (claimed, Instant::now())
            })
        };
        // Let the claim find the queue empty and wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        let created = WorkflowServiceClient::new(c.clone())
            .create_workflow(bearer(
                cpb::CreateWorkflowRequest {
                    workflow: None,
                    tasks: vec![task("only".into(), &queue)],
                    request_id: String::new(),
                },
                &token,
            ))
            .await;
        if created.is_err() {
            *errors.entry("create failed".to_owned()).or_insert(0) += 1;
        }
        match waiting.await {
            Ok((Ok(claimed), at)) if !claimed.get_ref().tasks.is_empty() => {
                let micros = at.saturating_duration_since(sent).as_micros();
                let _ = latency.record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                ok += 1;
            }
            _ => *errors.entry("not handed out".to_owned()).or_insert(0) += 1,
        }
    }
    Report {
        load: Load::closed(1, 1, measure),
        ok,
        errors,
        latency,
    }
}
