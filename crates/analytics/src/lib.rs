//! `strata.analytics.v1.AnalyticsService`: the LLM token-usage ledger.
//!
//! This crate owns the `analytics` schema and is the only code that reads or writes it:
//! the month-partitioned `token_usage` table ([`partitions`]), the idempotency keys, the
//! summary views and their incremental refresh ([`views`], [`scheduler`]). [`register`] adds the
//! service and its scheduler task to a server. Handlers
//! ([`service`]) validate ([`model`]), authorize with the caller's `Principal`, and call
//! plain SQL functions ([`store`]). It must not read other services' schemas: project
//! ownership, once needed, is asked of the content service over gRPC.

pub mod config;
pub mod error;
pub mod model;
pub mod partitions;
pub mod projects;
pub mod scheduler;
pub mod seed;
pub mod service;
pub mod store;
pub mod views;

use std::sync::Arc;

pub use config::AnalyticsConfig;
pub use service::AnalyticsHandlers;
use strata_proto::analytics::analytics_service_server::AnalyticsServiceServer;
use strata_proto::content::project_service_server::SERVICE_NAME as PROJECT_SERVICE_NAME;
use strata_runtime::ServerBuilder;
use strata_runtime::config::CONTENT_URL;
use strata_runtime::tasks::Task;

/// Adds the analytics service, configured by `config`, and its scheduler to `builder`.
pub fn register(builder: &mut ServerBuilder, config: AnalyticsConfig) -> Arc<AnalyticsHandlers> {
    let content = builder.peer(
        PROJECT_SERVICE_NAME,
        CONTENT_URL.name,
        builder.context().config.content_url.clone(),
    );
    let handlers =
        Arc::new(AnalyticsHandlers::new(builder.context(), config).with_content(content));
    register_handlers(builder, Arc::clone(&handlers));
    handlers
}

/// Adds `handlers` to `builder`, with the `analytics.scheduler` task (partitions ahead,
/// view refreshes) when this replica runs it.
pub fn register_handlers(builder: &mut ServerBuilder, handlers: Arc<AnalyticsHandlers>) {
    let scheduler = handlers.scheduler().clone();
    if scheduler.enabled() {
        builder.add_task(Task::every(
            "analytics.scheduler",
            scheduler.every(),
            move || {
                let scheduler = scheduler.clone();
                async move { scheduler.round().await }
            },
        ));
    }
    builder.add_service(AnalyticsServiceServer::from_arc(handlers));
}
