//! `strata.content.v1`: the content services. `PromptService` and `AgentService` (prompts
//! and agents with immutable versions and movable, weighted labels); projects and
//! conversations join the same crate with the same layout.
//!
//! This crate owns the `content` schema and is the only code that reads or writes it.
//! Handlers ([`handlers`], one file per resource) authorize with the caller's `Principal`,
//! validate ([`validate`]), and call plain SQL functions ([`store`], and [`versions`] for
//! what every versioned resource shares). Reads go through the two-tier caches; every
//! write invalidates what it changed, in the same code path, after it commits.

pub mod error;
pub mod handlers;
pub mod store;
pub mod template;
pub mod validate;
pub mod versions;

use std::sync::Arc;

pub use error::ContentError;
pub use handlers::ContentHandlers;
use strata_proto::content::agent_service_server::AgentServiceServer;
use strata_proto::content::prompt_service_server::PromptServiceServer;
use strata_runtime::ServerBuilder;

/// Adds the content services to `builder`; returns their handlers.
pub fn register(builder: &mut ServerBuilder) -> Arc<ContentHandlers> {
    let handlers = Arc::new(ContentHandlers::new(builder.context()));
    builder.add_service(PromptServiceServer::from_arc(Arc::clone(&handlers)));
    builder.add_service(AgentServiceServer::from_arc(Arc::clone(&handlers)));
    handlers
}
