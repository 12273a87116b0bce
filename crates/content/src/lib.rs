//! `strata.content.v1`: the content services. `PromptService` and `AgentService` (prompts
//! and agents with immutable versions and movable, weighted labels), `ProjectService` and
//! `FileService`, `ConversationService` (conversations and their message trees), and
//! `WorkflowService` (workflows of agent tasks and the queue their workers claim from).
//!
//! This crate owns the `content` schema and is the only code that reads or writes it.
//! Handlers ([`handlers`], one file per resource) authorize with the caller's `Principal`,
//! validate ([`validate`]), and call plain SQL functions ([`store`], and [`versions`] for
//! what every versioned resource shares). Reads go through the two-tier caches; every
//! write invalidates what it changed, in the same code path, after it commits.

pub mod config;
pub mod error;
pub mod handlers;
pub mod retention;
pub mod seed;
pub mod seed_conversations;
pub mod store;
pub mod template;
pub mod usage;
pub mod validate;
pub mod versions;
pub mod views;
pub mod watch;
pub mod workflows;

use std::sync::Arc;

pub use error::ContentError;
pub use handlers::ContentHandlers;
use strata_proto::analytics::analytics_service_server::SERVICE_NAME as ANALYTICS_SERVICE_NAME;
use strata_proto::content::agent_service_server::AgentServiceServer;
use strata_proto::content::conversation_service_server::ConversationServiceServer;
use strata_proto::content::file_service_server::FileServiceServer;
use strata_proto::content::project_service_server::ProjectServiceServer;
use strata_proto::content::prompt_service_server::PromptServiceServer;
use strata_proto::content::workflow_service_server::WorkflowServiceServer;
use strata_runtime::ServerBuilder;
use strata_runtime::config::ANALYTICS_URL;
use strata_runtime::tasks::Task;

pub use crate::config::ContentConfig;

/// Adds the content services and their background tasks (folding views, ranking
/// trending projects, shipping messages' usage to analytics: [`usage`], applying
/// conversations' retention policies: [`retention`], handing expired task leases back and
/// deleting finished workflows: [`workflows`]) to `builder`;
/// returns their handlers.
pub fn register(builder: &mut ServerBuilder, config: ContentConfig) -> Arc<ContentHandlers> {
    let (fold_every, trending_every) = (config.view_fold, config.trending);
    let analytics = builder.peer(
        ANALYTICS_SERVICE_NAME,
        ANALYTICS_URL.name,
        builder.context().config.analytics_url.clone(),
    );
    let shipper = Arc::new(usage::Shipper::new(
        builder.context().db.clone(),
        analytics,
        config.usage_key.clone(),
        config.usage_ship,
        config.usage_max_backoff,
    ));
    let ship_every = config.usage_ship;
    let retention_every = config.retention;
    let workflows = config.workflows;
    let handlers = Arc::new(ContentHandlers::new(builder.context(), config));
    let folder = Arc::clone(&handlers);
    builder.add_task(
        Task::every("content.fold_views", fold_every, move || {
            let handlers = Arc::clone(&folder);
            async move { handlers.fold_views().await.map(|_| ()) }
        })
        .on_shutdown({
            let handlers = Arc::clone(&handlers);
            move || {
                let handlers = Arc::clone(&handlers);
                async move { handlers.fold_views().await.map(|_| ()) }
            }
        }),
    );
    let ranker = Arc::clone(&handlers);
    builder.add_task(Task::every("content.trending", trending_every, move || {
        let handlers = Arc::clone(&ranker);
        async move { handlers.recompute_trending().await.map(|_| ()) }
    }));
    let keeper = Arc::clone(&handlers);
    builder.add_task(Task::every(
        "content.retention",
        retention_every,
        move || {
            let handlers = Arc::clone(&keeper);
            async move { handlers.apply_retention().await.map(|_| ()) }
        },
    ));
    let sweeper = Arc::clone(&handlers);
    builder.add_task(Task::every(
        "content.task_leases",
        workflows.sweep,
        move || {
            let handlers = Arc::clone(&sweeper);
            async move { handlers.sweep_leases().await.map(|_| ()) }
        },
    ));
    let cleaner = Arc::clone(&handlers);
    builder.add_task(Task::every(
        "content.workflow_retention",
        workflows.cleanup,
        move || {
            let handlers = Arc::clone(&cleaner);
            async move { handlers.delete_finished_workflows().await.map(|_| ()) }
        },
    ));
    let last = Arc::clone(&shipper);
    builder.add_task(
        Task::every("content.ship_usage", ship_every, move || {
            let shipper = Arc::clone(&shipper);
            async move { shipper.round().await.map(|_| ()) }
        })
        .on_shutdown(move || {
            let shipper = Arc::clone(&last);
            async move { shipper.drain().await.map(|_| ()) }
        }),
    );
    builder.add_service(PromptServiceServer::from_arc(Arc::clone(&handlers)));
    builder.add_service(AgentServiceServer::from_arc(Arc::clone(&handlers)));
    builder.add_service(ProjectServiceServer::from_arc(Arc::clone(&handlers)));
    builder.add_service(ConversationServiceServer::from_arc(Arc::clone(&handlers)));
    builder.add_service(FileServiceServer::from_arc(Arc::clone(&handlers)));
    builder.add_service(WorkflowServiceServer::from_arc(Arc::clone(&handlers)));
    handlers
}
