//! `strata serve all --demo`, what `make run` starts: on a database without accounts it
//! creates a demo admin and a demo user with known passwords and data that shows every
//! service, through the suite's own gRPC API (so everything is validated, billed and
//! shipped as a client's calls would be); then it prints where the suite listens, how to
//! log in, and commands to paste. `tests/e2e/demo.rs` runs every printed command.
//!
//! Development only: `--demo` is refused when `STRATA_ENV=production`, since anyone who
//! has read this file knows the passwords.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use strata_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use strata_proto::analytics::{self as apb};
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{self as aupb};
use strata_proto::common::Decimal;
use strata_proto::content::agent_service_client::AgentServiceClient;
use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::file_service_client::FileServiceClient;
use strata_proto::content::project_service_client::ProjectServiceClient;
use strata_proto::content::prompt_service_client::PromptServiceClient;
use strata_proto::content::workflow_service_client::WorkflowServiceClient;
use strata_proto::content::{self as cpb};
use strata_runtime::AppContext;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::bearer;

/// An account of the demo.
pub struct Account {
    /// Its email.
    pub email: &'static str,
    /// Its password, printed at every start.
    pub password: &'static str,
    name: &'static str,
    /// The idempotency key of its sign-up.
    request_id: &'static str,
}

/// The demo user: owns the demo data.
pub const USER: Account = Account {
    email: "demo@example.com",
    password: "strata-demo-password",
    name: "Demo User",
    request_id: "0193a6f0-0000-7000-8000-000000000002",
};

/// The demo admin: may call the admin RPCs and read everyone's usage.
pub const ADMIN: Account = Account {
    email: "admin@example.com",
    password: "strata-demo-admin-password",
    name: "Demo Admin",
    request_id: "0193a6f0-0000-7000-8000-000000000001",
};

/// Names the demo objects are found by again at the next start.
const AGENT: &str = "support-agent";
const CONVERSATION: &str = "Resetting a password";
const WORKFLOW: &str = "triage-inbox";
const PROJECT: &str = "hello-agent";
/// The queue of the demo workflow's tasks.
const QUEUE: &str = "demo";
/// Days of usage the demo records.
const USAGE_DAYS: i64 = 30;

/// What the printed commands refer to (each absent when it could not be found).
#[derive(Debug, Default)]
pub struct Demo {
    /// Whether this start created the data.
    pub created: bool,
    /// The demo user's `support-agent`.
    pub agent_id: Option<String>,
    /// The demo conversation.
    pub conversation_id: Option<String>,
    /// The demo workflow.
    pub workflow_id: Option<String>,
    /// Whether the demo user's password still works.
    pub login_works: bool,
    /// When the demo was created (its usage is of the month before).
    pub since: Option<DateTime<Utc>>,
}

/// Refuses the demo where it must never run.
pub fn check_allowed(production: bool, service: &str) -> anyhow::Result<()> {
    if production {
        anyhow::bail!(
            "--demo is refused when STRATA_ENV=production: it creates accounts whose passwords are published"
        );
    }
    if service != "all" {
        anyhow::bail!("--demo needs every service: `strata serve all --demo`");
    }
    Ok(())
}

/// Creates the demo on a database without accounts; else finds the demo objects again if
/// the demo accounts exist. `None`: the database holds other accounts and no demo.
pub async fn prepare(ctx: &AppContext, addr: SocketAddr) -> anyhow::Result<Option<Demo>> {
    let (people, user) = {
        let mut conn = ctx.db.get().await?;
        (
            strata_auth::service_accounts::people(&mut conn).await?,
            strata_auth::store::user_by_email(&mut conn, USER.email).await?,
        )
    };
    if people == 0 {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", reachable(addr)))?
                .connect()
                .await
                .context("connecting to the suite")?;
        return create(ctx, channel).await.map(Some);
    }
    match user {
        Some(user) => find(ctx, user).await.map(Some),
        None => Ok(None),
    }
}

/// The address a client on this machine dials: the listener's, with loopback for an
/// unspecified IP.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// A fixed idempotency key per demo step, so that a repeated step returns what it made.
fn request_id(step: u32) -> String {
    format!("0193a6f0-0000-7000-8001-{step:012}")
}

fn fields(pairs: &[(&str, &str)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue((*v).to_owned())),
                    },
                )
            })
            .collect(),
    }
}

fn text(role: cpb::Role, text: &str, usage: Option<(&str, i64, i64, &str)>) -> cpb::NewMessage {
    cpb::NewMessage {
        role: role.into(),
        parts: vec![cpb::Part {
            kind: Some(cpb::part::Kind::Text(text.to_owned())),
        }],
        usage: usage.map(
            |(model, prompt_tokens, completion_tokens, cost)| cpb::TokenUsage {
                model: model.into(),
                provider: "openai".into(),
                prompt_tokens,
                completion_tokens,
                cost: Some(Decimal { value: cost.into() }),
            },
        ),
    }
}

async fn sign_up(channel: &Channel, account: &Account) -> anyhow::Result<aupb::SignUpResponse> {
    Ok(AuthServiceClient::new(channel.clone())
        .sign_up(aupb::SignUpRequest {
            email: account.email.into(),
            password: account.password.into(),
            display_name: account.name.into(),
            request_id: account.request_id.into(),
        })
        .await
        .with_context(|| format!("signing up {}", account.email))?
        .into_inner())
}

/// Creates the demo: both accounts, then the demo user's data, then a month of usage.
async fn create(ctx: &AppContext, channel: Channel) -> anyhow::Result<Demo> {
    let admin = sign_up(&channel, &ADMIN).await?;
    let admin_id: Uuid = admin.user.unwrap_or_default().id.parse()?;
    {
        let mut conn = ctx.db.get().await?;
        let granted = strata_auth::store::grant_admin(&mut conn, ADMIN.email, Utc::now()).await?;
        anyhow::ensure!(
            granted == Some(admin_id),
            "{} could not be made an admin",
            ADMIN.email
        );
    }
    // Replicas cache accounts: the refreshed token must carry the new role.
    strata_auth::cached::forget_user(&ctx.caches, ctx.db.clone(), admin_id).await;
    let admin_token = AuthServiceClient::new(channel.clone())
        .refresh_token(aupb::RefreshTokenRequest {
            refresh_token: admin.credentials.unwrap_or_default().refresh_token,
        })
        .await
        .context("refreshing the admin's token")?
        .into_inner()
        .credentials
        .unwrap_or_default()
        .access_token;
    let user = sign_up(&channel, &USER).await?;
    let user_id = user.user.unwrap_or_default().id;
    let token = user.credentials.unwrap_or_default().access_token;
    let t = token.as_str();

    let agent_id = agents(&channel, t).await?;
    prompts(&channel, t).await?;
    let project_id = project(&channel, t).await?;
    let conversation_id = conversation(&channel, t, &agent_id, &project_id).await?;
    let workflow_id = workflow(&channel, t, &agent_id, &project_id).await?;
    usage(&channel, &admin_token, &user_id, &project_id, &agent_id).await?;
    Ok(Demo {
        created: true,
        agent_id: Some(agent_id),
        conversation_id: Some(conversation_id),
        workflow_id: Some(workflow_id),
        login_works: true,
        since: Some(Utc::now()),
    })
}

/// Two agents, each with two versions and a `production` label; the first's id.
async fn agents(channel: &Channel, token: &str) -> anyhow::Result<String> {
    let mut client = AgentServiceClient::new(channel.clone());
    let specs = [
        (
            AGENT,
            "support",
            (
                "gpt-4o-mini",
                "You answer customers' questions about their accounts.",
            ),
            (
                "gpt-4o",
                "You answer customers' questions about their accounts. Be brief, and link to the help centre.",
            ),
        ),
        (
            "code-reviewer",
            "coding",
            ("claude-3-haiku", "You review pull requests."),
            (
                "claude-3-5-sonnet",
                "You review pull requests: correctness first, then style.",
            ),
        ),
    ];
    let mut first = None;
    for (i, (name, kind, v1, v2)) in (0u32..).zip(specs) {
        let agent = client
            .create_agent(bearer(
                cpb::CreateAgentRequest {
                    agent: Some(cpb::Agent {
                        name: name.into(),
                        r#type: kind.into(),
                        ..Default::default()
                    }),
                    version: Some(cpb::AgentVersion {
                        model: v1.0.into(),
                        system_prompt: v1.1.into(),
                        ..Default::default()
                    }),
                    request_id: request_id(10 + i * 2),
                },
                token,
            ))
            .await
            .with_context(|| format!("creating the agent {name}"))?
            .into_inner()
            .agent
            .unwrap_or_default();
        let version = client
            .create_agent_version(bearer(
                cpb::CreateAgentVersionRequest {
                    agent_id: agent.id.clone(),
                    version: Some(cpb::AgentVersion {
                        model: v2.0.into(),
                        system_prompt: v2.1.into(),
                        ..Default::default()
                    }),
                    request_id: request_id(11 + i * 2),
                },
                token,
            ))
            .await
            .with_context(|| format!("creating version 2 of {name}"))?
            .into_inner()
            .version
            .unwrap_or_default();
        client
            .set_agent_label(bearer(
                cpb::SetAgentLabelRequest {
                    agent_id: agent.id.clone(),
                    label: "production".into(),
                    versions: vec![cpb::WeightedVersion {
                        version: version.version,
                        weight: 100,
                    }],
                },
                token,
            ))
            .await
            .with_context(|| format!("labelling {name}"))?;
        first.get_or_insert(agent.id);
    }
    first.context("no agent was created")
}

/// Two prompts, each with two versions and a `production` label.
async fn prompts(channel: &Channel, token: &str) -> anyhow::Result<()> {
    let mut client = PromptServiceClient::new(channel.clone());
    let specs = [
        (
            "summarize",
            "Summarize this in {{words}} words:\n{{text}}",
            "Summarize this for {{audience}} in {{words}} words:\n{{text}}",
        ),
        (
            "translate",
            "Translate into {{language}}:\n{{text}}",
            "Translate into {{language}}, keeping the tone:\n{{text}}",
        ),
    ];
    for (i, (name, v1, v2)) in (0u32..).zip(specs) {
        let prompt = client
            .create_prompt(bearer(
                cpb::CreatePromptRequest {
                    prompt: Some(cpb::Prompt {
                        name: name.into(),
                        tags: vec!["demo".into()],
                        ..Default::default()
                    }),
                    version: Some(cpb::PromptVersion {
                        template: v1.into(),
                        ..Default::default()
                    }),
                    request_id: request_id(20 + i * 2),
                },
                token,
            ))
            .await
            .with_context(|| format!("creating the prompt {name}"))?
            .into_inner()
            .prompt
            .unwrap_or_default();
        let version = client
            .create_prompt_version(bearer(
                cpb::CreatePromptVersionRequest {
                    prompt_id: prompt.id.clone(),
                    version: Some(cpb::PromptVersion {
                        template: v2.into(),
                        ..Default::default()
                    }),
                    request_id: request_id(21 + i * 2),
                },
                token,
            ))
            .await
            .with_context(|| format!("creating version 2 of {name}"))?
            .into_inner()
            .version
            .unwrap_or_default();
        client
            .set_prompt_label(bearer(
                cpb::SetPromptLabelRequest {
                    prompt_id: prompt.id,
                    label: "production".into(),
                    versions: vec![cpb::WeightedVersion {
                        version: version.version,
                        weight: 100,
                    }],
                },
                token,
            ))
            .await
            .with_context(|| format!("labelling {name}"))?;
    }
    Ok(())
}

/// A public project with three files; its id.
async fn project(channel: &Channel, token: &str) -> anyhow::Result<String> {
    let project = ProjectServiceClient::new(channel.clone())
        .create_project(bearer(
            cpb::CreateProjectRequest {
                project: Some(cpb::Project {
                    name: PROJECT.into(),
                    description: "A support agent, its prompts and a tool, to fork and change."
                        .into(),
                    visibility: cpb::Visibility::Public.into(),
                    r#type: "agent".into(),
                    tags: vec!["demo".into(), "support".into()],
                    ..Default::default()
                }),
                request_id: request_id(30),
            },
            token,
        ))
        .await
        .context("creating the project")?
        .into_inner()
        .project
        .unwrap_or_default();
    let files = [
        (
            "README.md",
            "# hello-agent\n\nA support agent for Strata's demo: `agent.yaml` describes it, \
             `tools/lookup.py` is its one tool.\n",
        ),
        (
            "agent.yaml",
            "name: support-agent\nmodel: gpt-4o\nlabel: production\ntools: [lookup_account]\n",
        ),
        (
            "tools/lookup.py",
            "def lookup_account(email: str) -> dict:\n    \"\"\"The account of `email`.\"\"\"\n    \
             return {\"email\": email, \"plan\": \"free\"}\n",
        ),
    ];
    FileServiceClient::new(channel.clone())
        .batch_upsert_files(bearer(
            cpb::BatchUpsertFilesRequest {
                project_id: project.id.clone(),
                files: files
                    .iter()
                    .map(|(path, content)| cpb::File {
                        path: (*path).into(),
                        content: content.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            },
            token,
        ))
        .await
        .context("writing the project's files")?;
    Ok(project.id)
}

/// A conversation with the agent in the project: four messages, then the second question
/// edited (a branch) and answered again; its id.
async fn conversation(
    channel: &Channel,
    token: &str,
    agent_id: &str,
    project_id: &str,
) -> anyhow::Result<String> {
    use cpb::Role::{Assistant, User};
    let mut client = ConversationServiceClient::new(channel.clone());
    let conversation = client
        .create_conversation(bearer(
            cpb::CreateConversationRequest {
                conversation: Some(cpb::Conversation {
                    agent_id: agent_id.into(),
                    project_id: project_id.into(),
                    title: CONVERSATION.into(),
                    ..Default::default()
                }),
                request_id: request_id(40),
            },
            token,
        ))
        .await
        .context("creating the conversation")?
        .into_inner()
        .conversation
        .unwrap_or_default();
    let id = conversation.id;
    let appended = client
        .append_messages(bearer(
            cpb::AppendMessagesRequest {
                conversation_id: id.clone(),
                messages: vec![
                    text(User, "How do I reset my password?", None),
                    text(
                        Assistant,
                        "Choose \"Forgot password\" on the sign-in page; the link we email you works for an hour.",
                        Some(("gpt-4o", 412, 38, "0.00141")),
                    ),
                    text(User, "The email never arrived.", None),
                    text(
                        Assistant,
                        "Check your spam folder, then ask for a new link: each one replaces the last.",
                        Some(("gpt-4o", 475, 29, "0.00148")),
                    ),
                ],
                request_id: request_id(41),
                ..Default::default()
            },
            token,
        ))
        .await
        .context("appending messages")?
        .into_inner()
        .messages;
    let second_question = appended
        .get(2)
        .context("the append answered fewer messages than it was given")?;
    // An edit is a sibling branch of the edited message; the original stays.
    client
        .edit_message(bearer(
            cpb::EditMessageRequest {
                conversation_id: id.clone(),
                message_id: second_question.id.clone(),
                parts: vec![cpb::Part {
                    kind: Some(cpb::part::Kind::Text(
                        "The email never arrived, and I no longer use that address.".into(),
                    )),
                }],
                request_id: request_id(42),
            },
            token,
        ))
        .await
        .context("editing a message")?;
    client
        .append_messages(bearer(
            cpb::AppendMessagesRequest {
                conversation_id: id.clone(),
                messages: vec![text(
                    Assistant,
                    "Then sign in with your recovery code, and change the address under Profile.",
                    Some(("gpt-4o", 503, 31, "0.00157")),
                )],
                request_id: request_id(43),
                ..Default::default()
            },
            token,
        ))
        .await
        .context("answering the edited question")?;
    Ok(id)
}

/// A workflow of four tasks (fetch, then classify, then reply and notify): the first is
/// claimed and completed, and a conversation records its work; the workflow's id.
async fn workflow(
    channel: &Channel,
    token: &str,
    agent_id: &str,
    project_id: &str,
) -> anyhow::Result<String> {
    let mut client = WorkflowServiceClient::new(channel.clone());
    let task = |name: &str, depends_on: &[&str]| cpb::NewTask {
        name: name.into(),
        queue: QUEUE.into(),
        agent_id: agent_id.into(),
        input: Some(fields(&[("mailbox", "support@example.com")])),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        max_attempts: 3,
        ..Default::default()
    };
    let created = client
        .create_workflow(bearer(
            cpb::CreateWorkflowRequest {
                workflow: Some(cpb::Workflow {
                    name: WORKFLOW.into(),
                    project_id: project_id.into(),
                    ..Default::default()
                }),
                tasks: vec![
                    task("fetch", &[]),
                    task("classify", &["fetch"]),
                    task("reply", &["classify"]),
                    task("notify", &["classify"]),
                ],
                request_id: request_id(50),
            },
            token,
        ))
        .await
        .context("creating the workflow")?
        .into_inner();
    let workflow_id = created.workflow.unwrap_or_default().id;
    let claimed = client
        .claim_tasks(bearer(
            cpb::ClaimTasksRequest {
                queue: QUEUE.into(),
                max_tasks: 1,
                ..Default::default()
            },
            token,
        ))
        .await
        .context("claiming a task")?
        .into_inner()
        .tasks;
    let Some(claimed) = claimed.into_iter().next() else {
        anyhow::bail!("the demo workflow's first task was not ready");
    };
    let task_id = claimed.task.unwrap_or_default().id;
    ConversationServiceClient::new(channel.clone())
        .create_conversation(bearer(
            cpb::CreateConversationRequest {
                conversation: Some(cpb::Conversation {
                    agent_id: agent_id.into(),
                    title: "fetch: support@example.com".into(),
                    task_id: task_id.clone(),
                    ..Default::default()
                }),
                request_id: request_id(51),
            },
            token,
        ))
        .await
        .context("creating the task's conversation")?;
    client
        .complete_task(bearer(
            cpb::CompleteTaskRequest {
                task_id,
                lease_id: claimed.lease_id,
                output: Some(fields(&[("emails", "3")])),
            },
            token,
        ))
        .await
        .context("completing a task")?;
    Ok(workflow_id)
}

/// A month of the demo user's model calls, recorded by the admin (a platform's service
/// would, with a `usage:write` key), then folded into the summaries.
async fn usage(
    channel: &Channel,
    admin_token: &str,
    user_id: &str,
    project_id: &str,
    agent_id: &str,
) -> anyhow::Result<()> {
    let models = [
        ("gpt-4o", "openai", "0.0025"),
        ("gpt-4o-mini", "openai", "0.00015"),
        ("claude-3-5-sonnet", "anthropic", "0.003"),
    ];
    let now = Utc::now();
    let mut events = Vec::new();
    for day in 0..USAGE_DAYS {
        // A weekly rhythm, growing over the month.
        let calls = 4 + (USAGE_DAYS - day) % 7 + (USAGE_DAYS - day) / 6;
        for call in 0..calls {
            let (model, provider, cost_per_call) = models[((day + call) % 3) as usize];
            let at: DateTime<Utc> = now - Duration::days(day) - Duration::minutes(call * 37 + 5);
            events.push(apb::UsageEvent {
                idempotency_key: format!("demo-{day}-{call}"),
                user_id: user_id.into(),
                project_id: project_id.into(),
                agent_id: agent_id.into(),
                agent_version: 2,
                model: model.into(),
                provider: provider.into(),
                operation: if call % 5 == 4 {
                    apb::Operation::Embedding
                } else {
                    apb::Operation::Chat
                }
                .into(),
                prompt_tokens: 300 + (day * 37 + call * 91) % 1_500,
                completion_tokens: 40 + (day * 13 + call * 29) % 400,
                cost: Some(Decimal {
                    value: cost_per_call.into(),
                }),
                latency: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 200_000_000 + ((day * 7 + call) % 8) as i32 * 100_000_000,
                }),
                status: if call % 23 == 22 {
                    apb::CallStatus::Failed
                } else {
                    apb::CallStatus::Succeeded
                }
                .into(),
                occur_time: Some(prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            });
        }
    }
    let mut client = AnalyticsServiceClient::new(channel.clone());
    for batch in events.chunks(1000) {
        client
            .record_usage(bearer(
                apb::RecordUsageRequest {
                    events: batch.to_vec(),
                },
                admin_token,
            ))
            .await
            .context("recording usage")?;
    }
    client
        .refresh_views(bearer(apb::RefreshViewsRequest::default(), admin_token))
        .await
        .context("refreshing the summaries")?;
    Ok(())
}

/// The demo objects of an earlier start, found by name in the database (logging in to
/// look would spend the address's sign-in budget, which a newcomer may have used up).
async fn find(ctx: &AppContext, user: strata_auth::store::UserRow) -> anyhow::Result<Demo> {
    let named = {
        let mut conn = ctx.db.get().await?;
        strata_content::seed::named(&mut conn, user.id, AGENT, CONVERSATION, WORKFLOW).await?
    };
    let login_works = user.status == strata_auth::store::ACTIVE
        && strata_auth::password::Passwords::new()?
            .verify(USER.password.to_owned(), Some(user.password_hash))
            .await?;
    Ok(Demo {
        created: false,
        agent_id: named.agent_id.map(|id| id.to_string()),
        conversation_id: named.conversation_id.map(|id| id.to_string()),
        workflow_id: named.workflow_id.map(|id| id.to_string()),
        login_works,
        since: Some(user.created_at),
    })
}

/// Where `make grpcurl` installs grpcurl (grpcurl-rs, a Rust port with grpcurl's flags:
/// Debian has no package of grpcurl and its releases are on GitHub), relative to the
/// checkout `make run` starts the suite in.
pub const GRPCURL_DIR: &str = ".strata/tools/grpcurl-rs-0.2.1/bin";

/// When grpcurl is not on the PATH: how to get it, and a command that puts it there.
fn grpcurl_path(out: &mut String) {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("grpcurl").is_file()));
    if on_path {
        return;
    }
    let dir = std::env::current_dir()
        .map(|cwd| cwd.join(GRPCURL_DIR))
        .unwrap_or_else(|_| GRPCURL_DIR.into());
    if !dir.join("grpcurl").is_file() {
        let _ = writeln!(
            out,
            "  # grpcurl is not installed: `make grpcurl` builds it from crates.io into {GRPCURL_DIR} \
             (grpcurl-rs, a Rust port with grpcurl's flags; about 3 minutes, once), then:"
        );
    }
    let _ = writeln!(out, "  export PATH=\"{}:$PATH\"", dir.display());
}

/// What `strata serve` prints once it answers: where, how to log in, commands to paste.
/// Commands are the lines indented by two spaces that are not comments (`#`).
pub fn banner(addr: SocketAddr, service: &str, demo: Option<&Demo>, now: DateTime<Utc>) -> String {
    let addr = reachable(addr);
    let mut out = String::new();
    let served = match service {
        "all" => "auth, content, analytics and admin",
        "admin" => "admin",
        one => one,
    };
    let _ = writeln!(
        out,
        "{served} (with health and reflection) answer on {addr}: gRPC without TLS"
    );
    if let Some(demo) = demo {
        if demo.created {
            let _ = writeln!(
                out,
                "demo data created: agents ({AGENT}, code-reviewer) with versions 1 and 2 and a `production` label, \
                 prompts, a public project with files ({PROJECT}), a conversation with a branch, \
                 a workflow of 4 tasks ({WORKFLOW}) and {USAGE_DAYS} days of usage"
            );
        }
        let _ = writeln!(
            out,
            "log in as the demo user {} with the password {} (the demo admin: {} / {}); development only",
            USER.email, USER.password, ADMIN.email, ADMIN.password
        );
        if !demo.login_works {
            let _ = writeln!(
                out,
                "(the demo user's password no longer works here: `make clean-db && make run` starts afresh)"
            );
        }
    }
    let _ = writeln!(out, "try it with grpcurl:");
    grpcurl_path(&mut out);
    let _ = writeln!(out, "  grpcurl -plaintext {addr} list");
    let (email, password) = match demo {
        Some(d) if d.login_works => (USER.email, USER.password),
        _ => {
            let _ = writeln!(
                out,
                "  grpcurl -plaintext -d '{{\"email\":\"me@example.com\",\"password\":\"a long passphrase\",\"display_name\":\"Me\"}}' {addr} strata.auth.v1.AuthService/SignUp"
            );
            ("me@example.com", "a long passphrase")
        }
    };
    let _ = writeln!(
        out,
        "  TOKEN=$(grpcurl -plaintext -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}' {addr} strata.auth.v1.AuthService/Login | sed -n 's/.*\"accessToken\": \"\\(.*\\)\".*/\\1/p')"
    );
    let auth = "grpcurl -plaintext -H \"authorization: Bearer $TOKEN\"";
    let _ = writeln!(out, "  {auth} {addr} strata.auth.v1.AuthService/GetProfile");
    if let Some(demo) = demo.filter(|d| d.login_works) {
        if let Some(agent) = &demo.agent_id {
            let _ = writeln!(
                out,
                "  {auth} -d '{{\"agent_id\":\"{agent}\",\"label\":\"production\"}}' {addr} strata.content.v1.AgentService/ResolveAgent"
            );
        }
        if let Some(conversation) = &demo.conversation_id {
            let _ = writeln!(
                out,
                "  {auth} -d '{{\"conversation_id\":\"{conversation}\"}}' {addr} strata.content.v1.ConversationService/ListMessages"
            );
        }
        if let Some(workflow) = &demo.workflow_id {
            let _ = writeln!(
                out,
                "  {auth} -d '{{\"workflow_id\":\"{workflow}\"}}' {addr} strata.content.v1.WorkflowService/GetWorkflow"
            );
        }
        let _ = writeln!(
            out,
            "  {auth} -d '{{\"order\":\"PROJECT_ORDER_TRENDING\"}}' {addr} strata.content.v1.ProjectService/ListPublicProjects"
        );
        // The demo's usage is of the month before it was made; the range reaches it, within
        // the year analytics keeps.
        let start = (demo.since.unwrap_or(now) - Duration::days(USAGE_DAYS))
            .max(now - Duration::days(360))
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let end = (now + Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let _ = writeln!(
            out,
            "  {auth} -d '{{\"time_range\":{{\"start_time\":\"{start}\",\"end_time\":\"{end}\"}},\"group_by\":\"GROUP_BY_MODEL\"}}' {addr} strata.analytics.v1.AnalyticsService/GetUsageSummary"
        );
    }
    let examples = [
        ("Python", "examples/python/run.sh"),
        ("TypeScript", "examples/typescript/run.sh"),
    ];
    for (language, script) in examples {
        if Path::new(script).is_file() {
            let _ = writeln!(
                out,
                "the {language} example (sign up, an agent, a conversation, usage, errors):"
            );
            let _ = writeln!(out, "  {script} {addr}");
        }
    }
    let _ = writeln!(out, "{READY}");
    out
}

/// The banner's last line.
pub const READY: &str = "ready; Ctrl-C stops the suite";
