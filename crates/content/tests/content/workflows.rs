//! WorkflowService: workflows of tasks in a DAG, claimed from queues by workers with
//! leases, retried with capped exponential backoff, handed out again when a lease runs
//! out, cancelled through the workers' heartbeats, deleted once finished long enough; and
//! conversations linked to the task that produced them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_types::FieldMask;
use strata_content::workflows::Settings;
use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::project_service_client::ProjectServiceClient;
use strata_proto::content::workflow_service_client::WorkflowServiceClient;
use strata_proto::content::{self as pb};
use strata_runtime::clock::{Clock, ManualClock};
use strata_testkit::app::{self, TestUser};
use strata_testkit::{TestDb, TestServer, bearer};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use super::{Harness, start, violations};

type Client = WorkflowServiceClient<Channel>;

/// A server whose workflows run on `clock` (the system's when `None`) with `settings`.
async fn start_with(clock: Option<Arc<ManualClock>>, settings: Settings) -> Harness {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("content"), move |builder| {
        strata_auth::register(builder, strata_auth::AuthConfig::default()).unwrap();
        let mut config = strata_content::ContentConfig {
            workflows: settings,
            ..Default::default()
        };
        if let Some(clock) = clock {
            let clock: Arc<dyn Clock> = clock;
            config.clock = clock;
        }
        strata_content::register(builder, config);
    })
    .await;
    Harness { db, server }
}

/// Settings sweeping expired leases every `ms` milliseconds.
fn sweeping_every(ms: u64) -> Settings {
    Settings {
        sweep: Duration::from_millis(ms),
        ..Default::default()
    }
}

fn client(h: &Harness) -> Client {
    WorkflowServiceClient::new(h.server.channel())
}

/// Task `name` of `queue`, waiting for `deps`, with the defaults otherwise.
fn task(name: &str, queue: &str, deps: &[&str]) -> pb::NewTask {
    pb::NewTask {
        name: name.into(),
        queue: queue.into(),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

/// A Struct of string fields.
fn object(fields: &[(&str, &str)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), prost_types::Value::from(*v)))
            .collect(),
    }
}

fn secs(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

fn millis(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap(),
    }
}

/// Milliseconds since the epoch of `time`, which must be set.
fn ms(time: Option<&prost_types::Timestamp>) -> i64 {
    let time = time.unwrap_or_else(|| panic!("the time is unset"));
    time.seconds * 1000 + i64::from(time.nanos) / 1_000_000
}

/// The status's message and its violations' descriptions.
fn described(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    if let Some(bad) = status.get_error_details().bad_request() {
        for violation in &bad.field_violations {
            text.push('\n');
            text.push_str(&violation.description);
        }
    }
    text
}

/// A request for workflow `name` of `tasks`.
fn request(name: &str, tasks: Vec<pb::NewTask>) -> pb::CreateWorkflowRequest {
    pb::CreateWorkflowRequest {
        workflow: Some(pb::Workflow {
            name: name.into(),
            ..Default::default()
        }),
        tasks,
        request_id: String::new(),
    }
}

async fn create(
    c: &mut Client,
    user: &TestUser,
    request: pb::CreateWorkflowRequest,
) -> Result<pb::CreateWorkflowResponse, tonic::Status> {
    c.create_workflow(bearer(request, &user.token))
        .await
        .map(tonic::Response::into_inner)
}

/// Creates workflow `name` of `tasks`: the workflow and its tasks.
async fn new_workflow(
    c: &mut Client,
    user: &TestUser,
    name: &str,
    tasks: Vec<pb::NewTask>,
) -> pb::CreateWorkflowResponse {
    create(c, user, request(name, tasks)).await.unwrap()
}

async fn get(
    c: &mut Client,
    user: &TestUser,
    id: &str,
) -> Result<pb::GetWorkflowResponse, tonic::Status> {
    c.get_workflow(bearer(
        pb::GetWorkflowRequest {
            workflow_id: id.into(),
        },
        &user.token,
    ))
    .await
    .map(tonic::Response::into_inner)
}

async fn workflow_of(c: &mut Client, user: &TestUser, id: &str) -> pb::Workflow {
    get(c, user, id).await.unwrap().workflow.unwrap()
}

/// The status of each task of workflow `id`, in the order given.
async fn statuses(c: &mut Client, user: &TestUser, id: &str) -> Vec<pb::TaskStatus> {
    get(c, user, id)
        .await
        .unwrap()
        .tasks
        .iter()
        .map(pb::Task::status)
        .collect()
}

async fn list(
    c: &mut Client,
    user: &TestUser,
    request: pb::ListWorkflowsRequest,
) -> Result<pb::ListWorkflowsResponse, tonic::Status> {
    c.list_workflows(bearer(request, &user.token))
        .await
        .map(tonic::Response::into_inner)
}

/// The ids a list answered, in its order.
async fn listed(c: &mut Client, user: &TestUser, request: pb::ListWorkflowsRequest) -> Vec<String> {
    list(c, user, request)
        .await
        .unwrap()
        .workflows
        .into_iter()
        .map(|w| w.id)
        .collect()
}

async fn cancel(c: &mut Client, user: &TestUser, id: &str) -> Result<pb::Workflow, tonic::Status> {
    c.cancel_workflow(bearer(
        pb::CancelWorkflowRequest {
            workflow_id: id.into(),
        },
        &user.token,
    ))
    .await
    .map(|r| r.into_inner().workflow.unwrap())
}

/// A claim of up to `max_tasks` tasks of `queue`, with the default lease and no wait.
fn claim_request(queue: &str, max_tasks: i32) -> pb::ClaimTasksRequest {
    pb::ClaimTasksRequest {
        queue: queue.into(),
        max_tasks,
        lease: None,
        wait: None,
    }
}

async fn try_claim(
    c: &mut Client,
    user: &TestUser,
    request: pb::ClaimTasksRequest,
) -> Result<Vec<pb::ClaimedTask>, tonic::Status> {
    c.claim_tasks(bearer(request, &user.token))
        .await
        .map(|r| r.into_inner().tasks)
}

/// Claims up to `max_tasks` ready tasks of `queue` (default lease, no wait).
async fn claim(
    c: &mut Client,
    user: &TestUser,
    queue: &str,
    max_tasks: i32,
) -> Vec<pb::ClaimedTask> {
    try_claim(c, user, claim_request(queue, max_tasks))
        .await
        .unwrap()
}

/// The task a claim handed out.
fn held(claimed: &pb::ClaimedTask) -> &pb::Task {
    claimed.task.as_ref().unwrap()
}

/// The names of the claimed tasks, sorted.
fn names(claimed: &[pb::ClaimedTask]) -> Vec<String> {
    let mut names: Vec<String> = claimed.iter().map(|c| held(c).name.clone()).collect();
    names.sort();
    names
}

async fn heartbeat(
    c: &mut Client,
    user: &TestUser,
    task_id: &str,
    lease_id: &str,
    lease: Option<prost_types::Duration>,
) -> Result<pb::HeartbeatTaskResponse, tonic::Status> {
    c.heartbeat_task(bearer(
        pb::HeartbeatTaskRequest {
            task_id: task_id.into(),
            lease_id: lease_id.into(),
            lease,
        },
        &user.token,
    ))
    .await
    .map(tonic::Response::into_inner)
}

async fn complete(
    c: &mut Client,
    user: &TestUser,
    task_id: &str,
    lease_id: &str,
    output: Option<prost_types::Struct>,
) -> Result<pb::Task, tonic::Status> {
    c.complete_task(bearer(
        pb::CompleteTaskRequest {
            task_id: task_id.into(),
            lease_id: lease_id.into(),
            output,
        },
        &user.token,
    ))
    .await
    .map(|r| r.into_inner().task.unwrap())
}

/// Completes a claimed task with the output `{"result": <its name>}`.
async fn finish(c: &mut Client, user: &TestUser, claimed: &pb::ClaimedTask) -> pb::Task {
    let task = held(claimed);
    let done = complete(
        c,
        user,
        &task.id,
        &claimed.lease_id,
        Some(object(&[("result", task.name.as_str())])),
    )
    .await
    .unwrap();
    assert_eq!(done.status(), pb::TaskStatus::Succeeded, "{done:?}");
    done
}

async fn fail(
    c: &mut Client,
    user: &TestUser,
    task_id: &str,
    lease_id: &str,
    error: &str,
    permanent: bool,
) -> Result<pb::Task, tonic::Status> {
    c.fail_task(bearer(
        pb::FailTaskRequest {
            task_id: task_id.into(),
            lease_id: lease_id.into(),
            error: error.into(),
            permanent,
        },
        &user.token,
    ))
    .await
    .map(|r| r.into_inner().task.unwrap())
}

#[tokio::test]
async fn a_diamond_runs_in_dependency_order_and_workflows_are_listed_filtered_and_paged() {
    let h = start().await;
    let mut c = client(&h);
    let ada = h.user().await;
    let mut projects = ProjectServiceClient::new(h.server.channel());
    let project = super::projects::create(&mut projects, &ada, "lab", "", false, &[]).await;
    let q = "agents.diamond";
    let with_input = |name: &str, deps: &[&str]| pb::NewTask {
        input: Some(object(&[("step", name)])),
        ..task(name, q, deps)
    };
    let made = create(
        &mut c,
        &ada,
        pb::CreateWorkflowRequest {
            workflow: Some(pb::Workflow {
                name: "diamond".into(),
                project_id: project.id.clone(),
                labels: HashMap::from([("team".to_owned(), "ml".to_owned())]),
                ..Default::default()
            }),
            tasks: vec![
                with_input("a", &[]),
                with_input("b", &["a"]),
                with_input("c", &["a"]),
                with_input("d", &["b", "c"]),
            ],
            request_id: String::new(),
        },
    )
    .await
    .unwrap();
    let workflow = made.workflow.clone().unwrap();
    assert_eq!(workflow.name, "diamond");
    assert_eq!(workflow.project_id, project.id);
    assert_eq!(workflow.owner_id, ada.id.to_string());
    assert_eq!(workflow.labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(workflow.status(), pb::WorkflowStatus::Pending);
    assert_eq!(
        (
            workflow.task_count,
            workflow.succeeded_count,
            workflow.failed_count
        ),
        (4, 0, 0)
    );
    assert!(workflow.create_time.is_some());
    assert!(workflow.finish_time.is_none());

    // The tasks, in the order given: only `a` is ready.
    let shape = |tasks: &[pb::Task]| -> Vec<(String, pb::TaskStatus, Vec<String>)> {
        tasks
            .iter()
            .map(|t| (t.name.clone(), t.status(), t.depends_on.clone()))
            .collect()
    };
    let expected = vec![
        ("a".to_owned(), pb::TaskStatus::Ready, vec![]),
        (
            "b".to_owned(),
            pb::TaskStatus::Pending,
            vec!["a".to_owned()],
        ),
        (
            "c".to_owned(),
            pb::TaskStatus::Pending,
            vec!["a".to_owned()],
        ),
        (
            "d".to_owned(),
            pb::TaskStatus::Pending,
            vec!["b".to_owned(), "c".to_owned()],
        ),
    ];
    assert_eq!(shape(&made.tasks[..]), expected);
    let got = get(&mut c, &ada, &workflow.id).await.unwrap();
    assert_eq!(got.workflow.unwrap().id, workflow.id);
    assert_eq!(shape(&got.tasks[..]), expected);
    for (read, given) in got.tasks.iter().zip(&made.tasks) {
        assert_eq!(read.id, given.id);
        assert_eq!(read.workflow_id, workflow.id);
        assert_eq!(read.queue, q);
        assert_eq!(read.input, Some(object(&[("step", read.name.as_str())])));
        assert_eq!((read.attempt, read.max_attempts), (0, 3), "{read:?}");
        assert_eq!(read.initial_backoff, Some(secs(1)));
        assert_eq!(read.max_backoff, Some(secs(300)));
        assert!(read.output.is_none() && read.lease_expire_time.is_none());
        assert!(read.create_time.is_some());
    }
    assert!(got.tasks[0].ready_time.is_some());

    // `a` first, alone.
    let first = claim(&mut c, &ada, q, 10).await;
    assert_eq!(names(&first), ["a"]);
    let a = held(&first[0]);
    assert_eq!((a.status(), a.attempt), (pb::TaskStatus::Running, 1));
    assert!(a.lease_expire_time.is_some() && a.start_time.is_some());
    assert!(
        uuid::Uuid::parse_str(&first[0].lease_id).is_ok(),
        "{:?}",
        first[0].lease_id
    );
    assert_eq!(
        workflow_of(&mut c, &ada, &workflow.id).await.status(),
        pb::WorkflowStatus::Running
    );
    assert!(
        claim(&mut c, &ada, q, 10).await.is_empty(),
        "b and c wait for a"
    );
    let done = finish(&mut c, &ada, &first[0]).await;
    assert_eq!(done.output, Some(object(&[("result", "a")])));
    assert!(done.finish_time.is_some());

    // Then `b` and `c` together; `d` only once both succeeded.
    let middle = claim(&mut c, &ada, q, 10).await;
    assert_eq!(names(&middle), ["b", "c"]);
    assert!(
        claim(&mut c, &ada, q, 10).await.is_empty(),
        "d waits for b and c"
    );
    let b = middle.iter().find(|t| held(t).name == "b").unwrap();
    let c_task = middle.iter().find(|t| held(t).name == "c").unwrap();
    finish(&mut c, &ada, b).await;
    assert!(
        claim(&mut c, &ada, q, 10).await.is_empty(),
        "d still waits for c"
    );
    assert_eq!(
        statuses(&mut c, &ada, &workflow.id).await,
        [
            pb::TaskStatus::Succeeded,
            pb::TaskStatus::Succeeded,
            pb::TaskStatus::Running,
            pb::TaskStatus::Pending
        ]
    );
    finish(&mut c, &ada, c_task).await;
    let last = claim(&mut c, &ada, q, 10).await;
    assert_eq!(names(&last), ["d"]);
    assert_eq!(
        workflow_of(&mut c, &ada, &workflow.id).await.status(),
        pb::WorkflowStatus::Running
    );
    finish(&mut c, &ada, &last[0]).await;

    let got = get(&mut c, &ada, &workflow.id).await.unwrap();
    let finished = got.workflow.unwrap();
    assert_eq!(finished.status(), pb::WorkflowStatus::Succeeded);
    assert_eq!(
        (
            finished.task_count,
            finished.succeeded_count,
            finished.failed_count
        ),
        (4, 4, 0)
    );
    assert!(finished.finish_time.is_some());
    for t in &got.tasks {
        assert_eq!(
            (t.status(), t.attempt),
            (pb::TaskStatus::Succeeded, 1),
            "{t:?}"
        );
        assert_eq!(t.output, Some(object(&[("result", t.name.as_str())])));
        assert!(t.finish_time.is_some());
    }

    // Listing: newest first, by status, by project, in pages, with a mask.
    let other = new_workflow(&mut c, &ada, "other", vec![task("solo", "elsewhere", &[])])
        .await
        .workflow
        .unwrap();
    let (wid, oid) = (workflow.id.clone(), other.id.clone());
    assert_eq!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default()).await,
        [oid.clone(), wid.clone()]
    );
    let by_status = |status: pb::WorkflowStatus| pb::ListWorkflowsRequest {
        status: status.into(),
        ..Default::default()
    };
    assert_eq!(
        listed(&mut c, &ada, by_status(pb::WorkflowStatus::Succeeded)).await,
        std::slice::from_ref(&wid)
    );
    assert_eq!(
        listed(&mut c, &ada, by_status(pb::WorkflowStatus::Pending)).await,
        std::slice::from_ref(&oid)
    );
    assert!(
        listed(&mut c, &ada, by_status(pb::WorkflowStatus::Running))
            .await
            .is_empty()
    );
    let in_project = pb::ListWorkflowsRequest {
        project_id: project.id.clone(),
        ..Default::default()
    };
    assert_eq!(
        listed(&mut c, &ada, in_project.clone()).await,
        std::slice::from_ref(&wid)
    );
    let page = |token: String| pb::ListWorkflowsRequest {
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let first_page = list(&mut c, &ada, page(String::new())).await.unwrap();
    assert_eq!(first_page.workflows.len(), 1);
    assert_eq!(first_page.workflows[0].id, oid);
    assert!(!first_page.next_page_token.is_empty());
    let second_page = list(&mut c, &ada, page(first_page.next_page_token.clone()))
        .await
        .unwrap();
    assert_eq!(second_page.workflows.len(), 1);
    assert_eq!(second_page.workflows[0].id, wid);
    assert!(second_page.next_page_token.is_empty());
    let mixed = list(
        &mut c,
        &ada,
        pb::ListWorkflowsRequest {
            page_token: first_page.next_page_token.clone(),
            ..by_status(pb::WorkflowStatus::Pending)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(mixed.code(), Code::InvalidArgument);
    assert_eq!(violations(&mixed), ["page_token"]);
    let masked = list(
        &mut c,
        &ada,
        pb::ListWorkflowsRequest {
            read_mask: Some(FieldMask {
                paths: vec!["id".into(), "status".into()],
            }),
            ..in_project.clone()
        },
    )
    .await
    .unwrap();
    let only = &masked.workflows[..];
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, wid);
    assert_eq!(only[0].status(), pb::WorkflowStatus::Succeeded);
    assert!(only[0].name.is_empty() && only[0].labels.is_empty());
    assert_eq!(only[0].task_count, 0);
    assert!(only[0].create_time.is_none());
    let bad_mask = list(
        &mut c,
        &ada,
        pb::ListWorkflowsRequest {
            read_mask: Some(FieldMask {
                paths: vec!["password".into()],
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&bad_mask), ["read_mask"]);
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_field_and_write_nothing() {
    let h = start().await;
    let mut c = client(&h);
    let ada = h.user().await;
    let ok = || task("t", "q", &[]);
    let one = |t: pb::NewTask| request("w", vec![t]);
    let blob = "x".repeat(1 << 20);
    let cases: Vec<(&str, pb::CreateWorkflowRequest, &str)> = vec![
        ("no tasks", request("w", vec![]), "tasks"),
        (
            "1001 tasks",
            request(
                "w",
                (0..1001)
                    .map(|i| task(&format!("t{i}"), "q", &[]))
                    .collect(),
            ),
            "tasks",
        ),
        ("empty name", one(task("", "q", &[])), "tasks[0].name"),
        (
            "name with a space",
            one(task("a b", "q", &[])),
            "tasks[0].name",
        ),
        (
            "name with a slash",
            one(task("a/b", "q", &[])),
            "tasks[0].name",
        ),
        (
            "name with a NUL",
            one(task("a\0b", "q", &[])),
            "tasks[0].name",
        ),
        (
            "101-character name",
            one(task(&"n".repeat(101), "q", &[])),
            "tasks[0].name",
        ),
        (
            "duplicate name",
            request("w", vec![ok(), ok()]),
            "tasks[1].name",
        ),
        ("empty queue", one(task("t", "", &[])), "tasks[0].queue"),
        (
            "queue with a space",
            one(task("t", "my queue", &[])),
            "tasks[0].queue",
        ),
        (
            "65-character queue",
            one(task("t", &"q".repeat(65), &[])),
            "tasks[0].queue",
        ),
        (
            "unknown dependency",
            request("w", vec![ok(), task("u", "q", &["t", "missing"])]),
            "tasks[1].depends_on[1]",
        ),
        (
            "self dependency",
            request("w", vec![ok(), task("u", "q", &["u"])]),
            "tasks[1].depends_on",
        ),
        (
            "101 attempts",
            one(pb::NewTask {
                max_attempts: 101,
                ..ok()
            }),
            "tasks[0].max_attempts",
        ),
        (
            "negative attempts",
            one(pb::NewTask {
                max_attempts: -1,
                ..ok()
            }),
            "tasks[0].max_attempts",
        ),
        (
            "negative backoff",
            one(pb::NewTask {
                initial_backoff: Some(secs(-1)),
                ..ok()
            }),
            "tasks[0].initial_backoff",
        ),
        (
            "backoff over an hour",
            one(pb::NewTask {
                initial_backoff: Some(secs(3601)),
                max_backoff: Some(secs(3601)),
                ..ok()
            }),
            "tasks[0].initial_backoff",
        ),
        (
            "max backoff below the initial one",
            one(pb::NewTask {
                initial_backoff: Some(secs(10)),
                max_backoff: Some(secs(5)),
                ..ok()
            }),
            "tasks[0].max_backoff",
        ),
        (
            "max backoff over a day",
            one(pb::NewTask {
                max_backoff: Some(secs(86_401)),
                ..ok()
            }),
            "tasks[0].max_backoff",
        ),
        (
            "request id not a UUID",
            pb::CreateWorkflowRequest {
                request_id: "nope".into(),
                ..one(ok())
            },
            "request_id",
        ),
        (
            "agent id not a UUID",
            one(pb::NewTask {
                agent_id: "nope".into(),
                ..ok()
            }),
            "tasks[0].agent_id",
        ),
        (
            "project id not a UUID",
            pb::CreateWorkflowRequest {
                workflow: Some(pb::Workflow {
                    name: "w".into(),
                    project_id: "nope".into(),
                    ..Default::default()
                }),
                ..one(ok())
            },
            "workflow.project_id",
        ),
        (
            "201-character workflow name",
            request(&"w".repeat(201), vec![ok()]),
            "workflow.name",
        ),
        (
            "input over 1 MiB",
            one(pb::NewTask {
                input: Some(object(&[("blob", blob.as_str())])),
                ..ok()
            }),
            "tasks[0].input",
        ),
    ];
    for (case, bad, field) in cases {
        let status = create(&mut c, &ada, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(violations(&status), [field], "{case}: {status:?}");
    }
    // A cycle of three is named on one of its tasks, and the message names all three.
    let cycle = create(
        &mut c,
        &ada,
        request(
            "w",
            vec![
                task("start", "q", &[]),
                task("alpha", "q", &["start", "gamma"]),
                task("beta", "q", &["alpha"]),
                task("gamma", "q", &["beta"]),
            ],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(cycle.code(), Code::InvalidArgument, "{cycle:?}");
    let fields = violations(&cycle);
    assert_eq!(fields.len(), 1, "{cycle:?}");
    assert!(
        [
            "tasks[1].depends_on",
            "tasks[2].depends_on",
            "tasks[3].depends_on"
        ]
        .contains(&fields[0].as_str()),
        "{cycle:?}"
    );
    let said = described(&cycle);
    for name in ["alpha", "beta", "gamma"] {
        assert!(said.contains(name), "{name} is not named: {said}");
    }
    // Nothing was written.
    assert!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default())
            .await
            .is_empty()
    );

    let claims: Vec<(&str, pb::ClaimTasksRequest, &str)> = vec![
        ("empty queue", claim_request("", 1), "queue"),
        ("queue with a space", claim_request("a queue", 1), "queue"),
        ("101 tasks", claim_request("q", 101), "max_tasks"),
        ("negative tasks", claim_request("q", -1), "max_tasks"),
        (
            "no lease",
            pb::ClaimTasksRequest {
                lease: Some(secs(0)),
                ..claim_request("q", 1)
            },
            "lease",
        ),
        (
            "a 2 h lease",
            pb::ClaimTasksRequest {
                lease: Some(secs(7200)),
                ..claim_request("q", 1)
            },
            "lease",
        ),
        (
            "a 61 s wait",
            pb::ClaimTasksRequest {
                wait: Some(secs(61)),
                ..claim_request("q", 1)
            },
            "wait",
        ),
    ];
    for (case, bad, field) in claims {
        let status = try_claim(&mut c, &ada, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(violations(&status), [field], "{case}: {status:?}");
    }

    let some_task = uuid::Uuid::now_v7().to_string();
    let some_lease = uuid::Uuid::now_v7().to_string();
    for (task_id, lease_id, field) in [
        ("nope", some_lease.as_str(), "task_id"),
        ("", some_lease.as_str(), "task_id"),
        (some_task.as_str(), "nope", "lease_id"),
        (some_task.as_str(), "", "lease_id"),
    ] {
        let beat = heartbeat(&mut c, &ada, task_id, lease_id, None)
            .await
            .unwrap_err();
        let done = complete(
            &mut c,
            &ada,
            task_id,
            lease_id,
            Some(object(&[("ok", "yes")])),
        )
        .await
        .unwrap_err();
        let failed = fail(&mut c, &ada, task_id, lease_id, "x", false)
            .await
            .unwrap_err();
        for (rpc, status) in [("heartbeat", beat), ("complete", done), ("fail", failed)] {
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{rpc} {task_id:?} {lease_id:?}: {status:?}"
            );
            assert_eq!(
                violations(&status),
                [field],
                "{rpc} {task_id:?} {lease_id:?}: {status:?}"
            );
        }
    }
    for error in [String::new(), "e".repeat(10_001)] {
        let status = fail(&mut c, &ada, &some_task, &some_lease, &error, false)
            .await
            .unwrap_err();
        assert_eq!(violations(&status), ["error"], "{status:?}");
    }
    let status = heartbeat(&mut c, &ada, &some_task, &some_lease, Some(secs(0)))
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["lease"], "{status:?}");
    // Still nothing written.
    assert!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn another_users_workflows_and_tasks_look_exactly_like_missing_ones() {
    let h = start().await;
    let mut c = client(&h);
    let (ada, eve) = (h.user().await, h.user().await);
    let made = new_workflow(
        &mut c,
        &ada,
        "secret",
        vec![
            task("first", "shared", &[]),
            task("spare", "shared", &[]),
            task("second", "shared", &["first"]),
        ],
    )
    .await;
    let workflow_id = made.workflow.unwrap().id;
    let adas = claim(&mut c, &ada, "shared", 1).await;
    assert_eq!(adas.len(), 1);
    let (task_id, lease_id) = (held(&adas[0]).id.clone(), adas[0].lease_id.clone());

    // Ada's workflow and task (even with her valid lease) answer as missing ones do.
    let nobody = uuid::Uuid::now_v7().to_string();
    let mut answers: Vec<Vec<(&str, Code, String)>> = Vec::new();
    for (workflow, task) in [
        (workflow_id.as_str(), task_id.as_str()),
        (nobody.as_str(), nobody.as_str()),
    ] {
        let refusals = vec![
            ("get", get(&mut c, &eve, workflow).await.unwrap_err()),
            ("cancel", cancel(&mut c, &eve, workflow).await.unwrap_err()),
            (
                "heartbeat",
                heartbeat(&mut c, &eve, task, &lease_id, None)
                    .await
                    .unwrap_err(),
            ),
            (
                "complete",
                complete(&mut c, &eve, task, &lease_id, Some(object(&[("x", "y")])))
                    .await
                    .unwrap_err(),
            ),
            (
                "fail",
                fail(&mut c, &eve, task, &lease_id, "mine now", true)
                    .await
                    .unwrap_err(),
            ),
        ];
        for (rpc, status) in &refusals {
            assert_eq!(
                status.code(),
                Code::NotFound,
                "{rpc} {workflow}: {status:?}"
            );
        }
        answers.push(
            refusals
                .into_iter()
                .map(|(rpc, s)| (rpc, s.code(), s.message().to_owned()))
                .collect(),
        );
    }
    assert_eq!(answers[0], answers[1]);
    // Eve's workers see none of Ada's work, even in a queue of the same name.
    assert!(claim(&mut c, &eve, "shared", 10).await.is_empty());
    assert!(
        listed(&mut c, &eve, pb::ListWorkflowsRequest::default())
            .await
            .is_empty()
    );
    let mut conversations = ConversationServiceClient::new(h.server.channel());
    let linked = conversations
        .create_conversation(bearer(
            pb::CreateConversationRequest {
                conversation: Some(pb::Conversation {
                    task_id: task_id.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &eve.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(linked.code(), Code::NotFound, "{linked:?}");
    // Nothing of Ada's changed: her lease holds, the other task is still ready.
    let beat = heartbeat(&mut c, &ada, &task_id, &lease_id, None)
        .await
        .unwrap();
    assert!(!beat.cancelled && beat.lease_expire_time.is_some());
    let got = get(&mut c, &ada, &workflow_id).await.unwrap();
    assert_eq!(got.workflow.unwrap().status(), pb::WorkflowStatus::Running);
    let spare = got
        .tasks
        .iter()
        .find(|t| t.id != task_id && t.name != "second");
    assert_eq!(spare.unwrap().status(), pb::TaskStatus::Ready);

    // Scopes: reading is not working, and working is not writing.
    let reader = TestUser {
        token: app::api_key(h.server.channel(), &ada, &["content:read"]).await,
        ..ada.clone()
    };
    get(&mut c, &reader, &workflow_id).await.unwrap();
    let denied = try_claim(&mut c, &reader, claim_request("shared", 10))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = heartbeat(&mut c, &reader, &task_id, &lease_id, None)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let worker = TestUser {
        token: app::api_key(h.server.channel(), &ada, &["tasks:work"]).await,
        ..ada.clone()
    };
    let denied = create(&mut c, &worker, request("w", vec![task("t", "q", &[])]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let claimed = claim(&mut c, &worker, "shared", 10).await;
    assert_eq!(claimed.len(), 1);
    let spare = held(&claimed[0]);
    assert_ne!(spare.id, task_id);
    assert!(["first", "spare"].contains(&spare.name.as_str()));
    finish(&mut c, &worker, &claimed[0]).await;
}

#[tokio::test]
async fn a_retried_create_returns_the_first_workflow_and_another_request_is_refused() {
    let h = start().await;
    let mut c = client(&h);
    let ada = h.user().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let keyed = |name: &str| pb::CreateWorkflowRequest {
        request_id: request_id.clone(),
        ..request(
            "nightly",
            vec![task(name, "q", &[]), task("next", "q", &[name])],
        )
    };
    let first = create(&mut c, &ada, keyed("t")).await.unwrap();
    let again = create(&mut c, &ada, keyed("t")).await.unwrap();
    assert_eq!(
        first.workflow.as_ref().unwrap().id,
        again.workflow.as_ref().unwrap().id
    );
    let ids = |r: &pb::CreateWorkflowResponse| -> Vec<String> {
        r.tasks.iter().map(|t| t.id.clone()).collect()
    };
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default())
            .await
            .len(),
        1
    );
    let other = create(&mut c, &ada, keyed("u")).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert_eq!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default())
            .await
            .len(),
        1
    );
    // Without a request id, each create makes a workflow.
    let plain = || request("nightly", vec![task("t", "q", &[])]);
    let one = create(&mut c, &ada, plain()).await.unwrap();
    let two = create(&mut c, &ada, plain()).await.unwrap();
    assert_ne!(one.workflow.unwrap().id, two.workflow.unwrap().id);
    assert_eq!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default())
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn a_failed_task_is_retried_after_a_capped_backoff_until_its_attempts_are_spent() {
    let clock = Arc::new(ManualClock::new());
    let h = start_with(Some(Arc::clone(&clock)), Settings::default()).await;
    let mut c = client(&h);
    let ada = h.user().await;
    let made = new_workflow(
        &mut c,
        &ada,
        "flaky",
        vec![
            pb::NewTask {
                max_attempts: 3,
                initial_backoff: Some(secs(10)),
                max_backoff: Some(secs(15)),
                ..task("flaky", "retry", &[])
            },
            task("after", "retry", &["flaky"]),
        ],
    )
    .await;
    let wid = made.workflow.unwrap().id;
    assert_eq!(ms(made.tasks[0].ready_time.as_ref()), clock.now_ms());

    // Attempt 1 fails: ready again in 10 s, not before.
    let first = claim(&mut c, &ada, "retry", 10).await;
    assert_eq!(names(&first), ["flaky"]);
    assert_eq!(held(&first[0]).attempt, 1);
    let id = held(&first[0]).id.clone();
    let retried = fail(&mut c, &ada, &id, &first[0].lease_id, "boom", false)
        .await
        .unwrap();
    assert_eq!(
        (retried.status(), retried.attempt, retried.error.as_str()),
        (pb::TaskStatus::Ready, 1, "boom")
    );
    assert_eq!(ms(retried.ready_time.as_ref()), clock.now_ms() + 10_000);
    assert!(
        claim(&mut c, &ada, "retry", 10).await.is_empty(),
        "claimed before its backoff"
    );
    clock.advance(Duration::from_secs(10));

    // Attempt 2 fails: 20 s doubled, capped at 15 s.
    let second = claim(&mut c, &ada, "retry", 10).await;
    assert_eq!(names(&second), ["flaky"]);
    assert_eq!(held(&second[0]).attempt, 2);
    assert_ne!(second[0].lease_id, first[0].lease_id);
    let retried = fail(&mut c, &ada, &id, &second[0].lease_id, "boom again", false)
        .await
        .unwrap();
    assert_eq!(
        (retried.status(), retried.attempt),
        (pb::TaskStatus::Ready, 2)
    );
    assert_eq!(ms(retried.ready_time.as_ref()), clock.now_ms() + 15_000);
    clock.advance(Duration::from_secs(14));
    assert!(
        claim(&mut c, &ada, "retry", 10).await.is_empty(),
        "claimed a second before its capped backoff ended"
    );
    clock.advance(Duration::from_secs(1));

    // Attempt 3, the last, fails: the task FAILED, its dependant is cancelled.
    let third = claim(&mut c, &ada, "retry", 10).await;
    assert_eq!(names(&third), ["flaky"]);
    assert_eq!(held(&third[0]).attempt, 3);
    let failed = fail(
        &mut c,
        &ada,
        &id,
        &third[0].lease_id,
        "boom for good",
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (failed.status(), failed.attempt, failed.error.as_str()),
        (pb::TaskStatus::Failed, 3, "boom for good")
    );
    assert!(failed.finish_time.is_some());
    let got = get(&mut c, &ada, &wid).await.unwrap();
    let task_statuses: Vec<pb::TaskStatus> = got.tasks.iter().map(pb::Task::status).collect();
    assert_eq!(
        task_statuses,
        [pb::TaskStatus::Failed, pb::TaskStatus::Cancelled]
    );
    let workflow = got.workflow.unwrap();
    assert_eq!(workflow.status(), pb::WorkflowStatus::Failed);
    assert_eq!(
        (
            workflow.task_count,
            workflow.succeeded_count,
            workflow.failed_count
        ),
        (2, 0, 1)
    );
    assert!(workflow.finish_time.is_some());
    clock.advance(Duration::from_secs(3600));
    assert!(claim(&mut c, &ada, "retry", 10).await.is_empty());

    // A permanent failure is final on the first attempt.
    let doomed = new_workflow(
        &mut c,
        &ada,
        "doomed",
        vec![
            pb::NewTask {
                max_attempts: 3,
                ..task("doomed", "perm", &[])
            },
            task("never", "perm", &["doomed"]),
        ],
    )
    .await;
    let claimed = claim(&mut c, &ada, "perm", 10).await;
    assert_eq!(names(&claimed), ["doomed"]);
    let failed = fail(
        &mut c,
        &ada,
        &held(&claimed[0]).id,
        &claimed[0].lease_id,
        "bad input",
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        (failed.status(), failed.attempt),
        (pb::TaskStatus::Failed, 1)
    );
    let doomed_id = doomed.workflow.unwrap().id;
    assert_eq!(
        statuses(&mut c, &ada, &doomed_id).await,
        [pb::TaskStatus::Failed, pb::TaskStatus::Cancelled]
    );
    assert_eq!(
        workflow_of(&mut c, &ada, &doomed_id).await.status(),
        pb::WorkflowStatus::Failed
    );
    assert!(claim(&mut c, &ada, "perm", 10).await.is_empty());
}

#[tokio::test]
async fn a_task_whose_lease_ran_out_is_handed_out_again_and_its_old_holder_is_refused() {
    let clock = Arc::new(ManualClock::new());
    let h = start_with(Some(Arc::clone(&clock)), sweeping_every(100)).await;
    let mut c = client(&h);
    let ada = h.user().await;
    let wid = new_workflow(&mut c, &ada, "slow", vec![task("slow", "stale", &[])])
        .await
        .workflow
        .unwrap()
        .id;
    let old = try_claim(
        &mut c,
        &ada,
        pb::ClaimTasksRequest {
            lease: Some(secs(5)),
            ..claim_request("stale", 1)
        },
    )
    .await
    .unwrap();
    assert_eq!(names(&old), ["slow"]);
    let task_id = held(&old[0]).id.clone();
    let old_lease = old[0].lease_id.clone();
    assert_eq!(
        ms(held(&old[0]).lease_expire_time.as_ref()),
        clock.now_ms() + 5_000
    );

    // The lease runs out; the sweeper makes the task ready again.
    clock.advance(Duration::from_secs(6));
    let swept = Instant::now();
    loop {
        let got = get(&mut c, &ada, &wid).await.unwrap();
        let t = &got.tasks[0];
        if t.status() == pb::TaskStatus::Ready {
            assert_eq!(t.attempt, 1);
            break;
        }
        assert_eq!(t.status(), pb::TaskStatus::Running, "{t:?}");
        assert!(
            swept.elapsed() < Duration::from_secs(5),
            "the expired lease was not swept within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = claim(&mut c, &ada, "stale", 1).await;
    assert_eq!(names(&new), ["slow"]);
    assert_eq!(held(&new[0]).id, task_id);
    assert_eq!(held(&new[0]).attempt, 2);
    let new_lease = new[0].lease_id.clone();
    assert_ne!(new_lease, old_lease);

    // The old holder may do nothing more with it.
    let stale = [
        (
            "heartbeat",
            heartbeat(&mut c, &ada, &task_id, &old_lease, None)
                .await
                .unwrap_err(),
        ),
        (
            "complete",
            complete(
                &mut c,
                &ada,
                &task_id,
                &old_lease,
                Some(object(&[("by", "old")])),
            )
            .await
            .unwrap_err(),
        ),
        (
            "fail",
            fail(&mut c, &ada, &task_id, &old_lease, "late", false)
                .await
                .unwrap_err(),
        ),
    ];
    for (rpc, status) in stale {
        assert_eq!(status.code(), Code::FailedPrecondition, "{rpc}: {status:?}");
    }

    // The new one keeps it alive and completes it, and a retry of that answers the same.
    let beat = heartbeat(&mut c, &ada, &task_id, &new_lease, None)
        .await
        .unwrap();
    assert!(!beat.cancelled);
    assert_eq!(
        ms(beat.lease_expire_time.as_ref()),
        clock.now_ms() + 30_000,
        "extended by the claim's default lease"
    );
    let beat = heartbeat(&mut c, &ada, &task_id, &new_lease, Some(secs(60)))
        .await
        .unwrap();
    assert_eq!(ms(beat.lease_expire_time.as_ref()), clock.now_ms() + 60_000);
    let output = Some(object(&[("by", "new")]));
    let done = complete(&mut c, &ada, &task_id, &new_lease, output.clone())
        .await
        .unwrap();
    assert_eq!(
        (done.status(), done.attempt),
        (pb::TaskStatus::Succeeded, 2)
    );
    assert_eq!(done.output, output);
    let again = complete(&mut c, &ada, &task_id, &new_lease, output.clone())
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.status(), &again.output),
        (task_id.as_str(), pb::TaskStatus::Succeeded, &output)
    );
    let late = complete(&mut c, &ada, &task_id, &old_lease, output.clone())
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    let workflow = workflow_of(&mut c, &ada, &wid).await;
    assert_eq!(workflow.status(), pb::WorkflowStatus::Succeeded);
    assert_eq!(workflow.succeeded_count, 1);
}

#[tokio::test]
async fn a_cancelled_workflow_tells_its_running_workers_through_their_heartbeat() {
    let h = start().await;
    let mut c = client(&h);
    let ada = h.user().await;
    let wid = new_workflow(
        &mut c,
        &ada,
        "doomed",
        vec![
            task("run", "cancel", &[]),
            task("next", "cancel", &["run"]),
            task("idle", "cancel-idle", &[]),
        ],
    )
    .await
    .workflow
    .unwrap()
    .id;
    let held_now = claim(&mut c, &ada, "cancel", 10).await;
    assert_eq!(names(&held_now), ["run"]);
    let (task_id, lease_id) = (held(&held_now[0]).id.clone(), held_now[0].lease_id.clone());

    let cancelled = cancel(&mut c, &ada, &wid).await.unwrap();
    assert_eq!(cancelled.status(), pb::WorkflowStatus::Cancelled);
    assert!(cancelled.finish_time.is_some());
    let got = get(&mut c, &ada, &wid).await.unwrap();
    assert_eq!(
        got.workflow.unwrap().status(),
        pb::WorkflowStatus::Cancelled
    );
    for t in &got.tasks {
        assert_eq!(t.status(), pb::TaskStatus::Cancelled, "{t:?}");
    }
    // The worker learns it from its heartbeat (its lease is still its own).
    let beat = heartbeat(&mut c, &ada, &task_id, &lease_id, None)
        .await
        .unwrap();
    assert!(beat.cancelled);
    assert!(beat.lease_expire_time.is_none());
    let refused = complete(
        &mut c,
        &ada,
        &task_id,
        &lease_id,
        Some(object(&[("late", "yes")])),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("CANCELLED"), "{refused:?}");
    assert!(claim(&mut c, &ada, "cancel", 10).await.is_empty());
    assert!(claim(&mut c, &ada, "cancel-idle", 10).await.is_empty());
    // A finished workflow is not cancelled again, nor is a succeeded one.
    let again = cancel(&mut c, &ada, &wid).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("CANCELLED"), "{again:?}");
    let quick = new_workflow(&mut c, &ada, "quick", vec![task("only", "quick", &[])])
        .await
        .workflow
        .unwrap()
        .id;
    let claimed = claim(&mut c, &ada, "quick", 1).await;
    finish(&mut c, &ada, &claimed[0]).await;
    let succeeded = cancel(&mut c, &ada, &quick).await.unwrap_err();
    assert_eq!(succeeded.code(), Code::FailedPrecondition, "{succeeded:?}");
    assert!(succeeded.message().contains("SUCCEEDED"), "{succeeded:?}");
    assert_eq!(
        workflow_of(&mut c, &ada, &quick).await.status(),
        pb::WorkflowStatus::Succeeded
    );
}

/// SplitMix64: a small seeded generator, so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n).unwrap()).unwrap()
    }
}

const LOAD_QUEUE: &str = "load";

/// What the workers of the load test share.
struct Shared {
    /// Each task's dependencies, by id.
    deps: HashMap<String, Vec<String>>,
    /// Tasks about to be completed, with a global sequence number, in that order.
    recorded: Mutex<Vec<(String, u64)>>,
    /// Successful CompleteTask answers, by task id.
    completed: Mutex<HashMap<String, u32>>,
    sequence: AtomicU64,
    /// Tasks dropped by a "dying" worker.
    deaths: AtomicUsize,
    stop: AtomicBool,
}

/// A worker: claims batches until told to stop; drops about 5 % of its tasks as if it
/// died, completes the rest after checking their dependencies were completed first.
async fn work(seed: u64, shared: Arc<Shared>, channel: Channel, user: TestUser) {
    let mut c = Client::new(channel);
    let mut rng = Rng(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        let batch = try_claim(
            &mut c,
            &user,
            pb::ClaimTasksRequest {
                lease: Some(secs(1)),
                wait: Some(secs(1)),
                ..claim_request(LOAD_QUEUE, 10)
            },
        )
        .await
        .unwrap();
        assert!(batch.len() <= 10);
        {
            // Checked as the claim answers: a lease of 1 s may run out while the batch is
            // worked through, and the task be completed by another worker meanwhile.
            let completed = shared.completed.lock().unwrap();
            for claimed in &batch {
                let task = held(claimed);
                assert_eq!(task.status(), pb::TaskStatus::Running, "{task:?}");
                assert!((1..=100).contains(&task.attempt), "{task:?}");
                assert!(
                    !completed.contains_key(&task.id),
                    "{} of {} was handed out after it was completed",
                    task.name,
                    task.workflow_id
                );
            }
        }
        for claimed in batch {
            let task = claimed.task.unwrap();
            if rng.below(100) < 5 {
                // Dies with it: no heartbeat, no completion; its lease runs out.
                shared.deaths.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            {
                let mut recorded = shared.recorded.lock().unwrap();
                for dep in &shared.deps[&task.id] {
                    assert!(
                        recorded.iter().any(|(id, _)| id == dep),
                        "{} of {} was handed out before its dependency {dep} was completed",
                        task.name,
                        task.workflow_id
                    );
                }
                let sequence = shared.sequence.fetch_add(1, Ordering::SeqCst);
                recorded.push((task.id.clone(), sequence));
            }
            let by = format!("worker {seed}");
            let output = Some(object(&[("by", by.as_str())]));
            match complete(&mut c, &user, &task.id, &claimed.lease_id, output).await {
                Ok(done) => {
                    assert_eq!(done.status(), pb::TaskStatus::Succeeded, "{done:?}");
                    *shared
                        .completed
                        .lock()
                        .unwrap()
                        .entry(task.id.clone())
                        .or_default() += 1;
                }
                // The lease ran out and the task went to another worker: not counted.
                Err(status) if status.code() == Code::FailedPrecondition => {}
                Err(status) => panic!("completing {}: {status:?}", task.id),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_run_a_thousand_tasks_in_dependency_order_each_completed_once() {
    let h = start_with(None, sweeping_every(100)).await;
    let mut c = client(&h);
    let ada = h.user().await;

    // 10 workflows of 100 tasks, each depending on 0 to 3 random earlier ones.
    let mut rng = Rng(0x5EED_F00D);
    let mut workflow_ids = Vec::new();
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for w in 0..10 {
        let tasks: Vec<pb::NewTask> = (0..100)
            .map(|i| {
                let mut on = BTreeSet::new();
                for _ in 0..rng.below(4).min(i) {
                    on.insert(rng.below(i));
                }
                pb::NewTask {
                    max_attempts: 100,
                    depends_on: on.iter().map(|j| format!("t{j:03}")).collect(),
                    ..task(&format!("t{i:03}"), LOAD_QUEUE, &[])
                }
            })
            .collect();
        let id = new_workflow(&mut c, &ada, &format!("load {w}"), tasks)
            .await
            .workflow
            .unwrap()
            .id;
        let got = get(&mut c, &ada, &id).await.unwrap();
        assert_eq!(got.tasks.len(), 100);
        let by_name: HashMap<&str, &str> = got
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.id.as_str()))
            .collect();
        for t in &got.tasks {
            let on = t
                .depends_on
                .iter()
                .map(|name| by_name[name.as_str()].to_owned())
                .collect();
            deps.insert(t.id.clone(), on);
        }
        workflow_ids.push(id);
    }
    assert_eq!(deps.len(), 1000);

    let shared = Arc::new(Shared {
        deps,
        recorded: Mutex::new(Vec::new()),
        completed: Mutex::new(HashMap::new()),
        sequence: AtomicU64::new(0),
        deaths: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<tokio::task::JoinHandle<()>> = (0..4)
        .map(|n| {
            let (shared, channel, user) = (Arc::clone(&shared), h.server.channel(), ada.clone());
            tokio::spawn(work(n, shared, channel, user))
        })
        .collect();

    // Until every workflow succeeded (or a worker stopped on a failed check).
    let started = Instant::now();
    let by_status = |status: pb::WorkflowStatus| pb::ListWorkflowsRequest {
        status: status.into(),
        ..Default::default()
    };
    loop {
        if workers.iter().any(tokio::task::JoinHandle::is_finished) {
            break;
        }
        let failed = listed(&mut c, &ada, by_status(pb::WorkflowStatus::Failed)).await;
        assert!(failed.is_empty(), "workflows failed: {failed:?}");
        let succeeded = listed(&mut c, &ada, by_status(pb::WorkflowStatus::Succeeded))
            .await
            .len();
        if succeeded == workflow_ids.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{succeeded} of 10 workflows succeeded in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for worker in workers {
        if let Err(e) = worker.await {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "workers failed: {failures:#?}");

    // Every task succeeded, and was completed once; some were retried after a death.
    let mut retried = 0;
    for id in &workflow_ids {
        let got = get(&mut c, &ada, id).await.unwrap();
        let workflow = got.workflow.unwrap();
        assert_eq!(workflow.status(), pb::WorkflowStatus::Succeeded);
        assert_eq!((workflow.succeeded_count, workflow.failed_count), (100, 0));
        assert!(workflow.finish_time.is_some());
        for t in &got.tasks {
            assert_eq!(t.status(), pb::TaskStatus::Succeeded, "{t:?}");
            if t.attempt > 1 {
                retried += 1;
            }
        }
    }
    let completed = shared.completed.lock().unwrap().clone();
    assert_eq!(completed.len(), 1000, "every task completed");
    let twice: Vec<(&String, &u32)> = completed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let deaths = shared.deaths.load(Ordering::SeqCst);
    assert!(deaths > 0, "no worker died");
    assert!(retried > 0, "no task was retried after {deaths} deaths");
    // In the record, each task's first entry follows its dependencies' first entries.
    let recorded = shared.recorded.lock().unwrap().clone();
    let mut first: HashMap<&str, u64> = HashMap::new();
    for (id, sequence) in &recorded {
        first.entry(id.as_str()).or_insert(*sequence);
    }
    for (id, on) in &shared.deps {
        for dep in on {
            assert!(
                first[dep.as_str()] < first[id.as_str()],
                "{id} recorded before its dependency {dep}"
            );
        }
    }
}

#[tokio::test]
async fn a_waiting_claim_is_woken_by_new_work_and_otherwise_waits_its_time() {
    let h = start().await;
    let ada = h.user().await;
    let waiter = {
        let (mut c, ada) = (client(&h), ada.clone());
        tokio::spawn(async move {
            let asked = Instant::now();
            let got = try_claim(
                &mut c,
                &ada,
                pb::ClaimTasksRequest {
                    wait: Some(secs(10)),
                    ..claim_request("inbox", 1)
                },
            )
            .await
            .unwrap();
            (got, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = client(&h);
    let made = new_workflow(&mut c, &ada, "wake", vec![task("job", "inbox", &[])]).await;
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(held(&got[0]).id, made.tasks[0].id);
    assert!(
        waited >= Duration::from_millis(250),
        "it answered before the work came: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the new task did not wake the claim: {waited:?}"
    );
    // With nothing coming, a claim waits its time and answers empty.
    let asked = Instant::now();
    let none = try_claim(
        &mut c,
        &ada,
        pb::ClaimTasksRequest {
            wait: Some(millis(500)),
            ..claim_request("silence", 1)
        },
    )
    .await
    .unwrap();
    let waited = asked.elapsed();
    assert!(none.is_empty());
    assert!(
        waited >= Duration::from_millis(450),
        "it did not wait: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn finished_workflows_are_deleted_after_keep_and_unfinished_ones_stay() {
    let h = start_with(
        None,
        Settings {
            keep: Duration::from_secs(1),
            cleanup: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await;
    let mut c = client(&h);
    let ada = h.user().await;
    let done = new_workflow(&mut c, &ada, "done", vec![task("t", "q", &[])]).await;
    let done_id = done.workflow.unwrap().id;
    let open_id = new_workflow(&mut c, &ada, "open", vec![task("t", "q2", &[])])
        .await
        .workflow
        .unwrap()
        .id;
    // A conversation the finished workflow's task produced loses the link with it.
    let mut conversations = ConversationServiceClient::new(h.server.channel());
    let conversation = super::conversations::create(
        &mut conversations,
        &ada,
        pb::Conversation {
            task_id: done.tasks[0].id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(conversation.task_id, done.tasks[0].id);
    cancel(&mut c, &ada, &done_id).await.unwrap();
    let finished = Instant::now();
    loop {
        match get(&mut c, &ada, &done_id).await {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(_) => {}
            Err(status) => panic!("{status:?}"),
        }
        assert!(
            finished.elapsed() < Duration::from_secs(10),
            "the finished workflow was not deleted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        finished.elapsed() >= Duration::from_millis(900),
        "deleted before it was kept for 1 s: {:?}",
        finished.elapsed()
    );
    // Past `keep` and a few cleanups more, the unfinished one is still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = workflow_of(&mut c, &ada, &open_id).await;
    assert_eq!(open.status(), pb::WorkflowStatus::Pending);
    assert_eq!(
        listed(&mut c, &ada, pb::ListWorkflowsRequest::default()).await,
        std::slice::from_ref(&open_id)
    );
    let kept = conversations
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: conversation.id.clone(),
                message_count: 0,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert!(kept.task_id.is_empty(), "{kept:?}");
}

#[tokio::test]
async fn a_conversation_links_to_its_task_and_is_listed_by_it() {
    let h = start().await;
    let mut c = client(&h);
    let ada = h.user().await;
    let made = new_workflow(&mut c, &ada, "chat", vec![task("write", "chat", &[])]).await;
    let task_id = made.tasks[0].id.clone();
    let mut conversations = ConversationServiceClient::new(h.server.channel());
    let linked = super::conversations::create(
        &mut conversations,
        &ada,
        pb::Conversation {
            title: "draft".into(),
            task_id: task_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(linked.task_id, task_id);
    let plain =
        super::conversations::create(&mut conversations, &ada, pb::Conversation::default()).await;
    assert!(plain.task_id.is_empty());
    let read = conversations
        .get_conversation(bearer(
            pb::GetConversationRequest {
                conversation_id: linked.id.clone(),
                message_count: 0,
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert_eq!(read.task_id, task_id);
    let list_by = async |conversations: &mut ConversationServiceClient<Channel>,
                         request: pb::ListConversationsRequest|
           -> Vec<String> {
        conversations
            .list_conversations(bearer(request, &ada.token))
            .await
            .unwrap()
            .into_inner()
            .conversations
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(
        list_by(
            &mut conversations,
            pb::ListConversationsRequest {
                task_id: task_id.clone(),
                ..Default::default()
            }
        )
        .await,
        std::slice::from_ref(&linked.id)
    );
    assert_eq!(
        list_by(&mut conversations, pb::ListConversationsRequest::default())
            .await
            .len(),
        2
    );
    // A task id that is not one, or no task of Ada's.
    let refused = async |conversations: &mut ConversationServiceClient<Channel>, task_id: &str| {
        conversations
            .create_conversation(bearer(
                pb::CreateConversationRequest {
                    conversation: Some(pb::Conversation {
                        task_id: task_id.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &ada.token,
            ))
            .await
            .unwrap_err()
    };
    let bad = refused(&mut conversations, "nope").await;
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert_eq!(violations(&bad), ["conversation.task_id"]);
    let missing = refused(&mut conversations, &uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

/// The pids of this database's connections whose last statement was the task queue's LISTEN.
async fn listeners(h: &Harness) -> Vec<i32> {
    #[derive(diesel::QueryableByName)]
    struct Backend {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut conn = h.db.connect().await;
    let backends: Vec<Backend> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'LISTEN content_tasks'",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    backends.into_iter().map(|b| b.pid).collect()
}

/// Waits (up to 10 s) until a task queue listener other than `gone` is connected.
async fn listener_other_than(h: &Harness, gone: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = listeners(h).await.into_iter().find(|p| Some(*p) != gone) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no listener came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_task_queue_listener_connects_again_when_its_connection_is_killed() {
    let h = start().await;
    let ada = h.user().await;
    let mut c = client(&h);
    // A claim that waits starts the listener.
    try_claim(
        &mut c,
        &ada,
        pb::ClaimTasksRequest {
            wait: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            ..claim_request("inbox", 1)
        },
    )
    .await
    .unwrap();
    let first = listener_other_than(&h, None).await;
    let mut conn = h.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!("SELECT pg_terminate_backend({first})")),
        &mut conn,
    )
    .await
    .unwrap();
    let second = listener_other_than(&h, Some(first)).await;
    assert_ne!(first, second);
    // And it still wakes a waiting claim.
    let waiter = {
        let (mut c, ada) = (client(&h), ada.clone());
        tokio::spawn(async move {
            try_claim(
                &mut c,
                &ada,
                pb::ClaimTasksRequest {
                    wait: Some(secs(10)),
                    ..claim_request("inbox", 1)
                },
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let made = new_workflow(&mut c, &ada, "again", vec![task("job", "inbox", &[])]).await;
    let got = waiter.await.unwrap();
    assert_eq!(held(&got[0]).id, made.tasks[0].id);
}
