//! The content handlers, one file per resource ([`prompts`], [`agents`], [`projects`],
//! [`files`], [`conversations`], [`workflows`]), and what they share: the
//! caller, scopes, visibility, and the caches.
//!
//! Each handler is a plain function returning [`ContentError`]; the trait impls only
//! answer (`respond`), where the suite's one mapping to `tonic::Status` happens.

pub mod agents;
pub mod conversations;
pub mod files;
pub mod projects;
pub mod prompts;
mod versioned;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use strata_cache::{Policy, Tiered};
use strata_proto::content as pb;
use strata_runtime::AppContext;
use strata_runtime::identity::Principal;
use tonic::Request;
use uuid::Uuid;

use crate::ContentError;
use crate::config::ContentConfig;
use crate::views::Views;

/// Scope an API key needs to read content.
pub const SCOPE_READ: &str = "content:read";
/// Scope an API key needs to change content.
pub const SCOPE_WRITE: &str = "content:write";

/// The handlers and what they share.
pub struct ContentHandlers {
    ctx: Arc<AppContext>,
    /// A prompt without its body, with its labels (`latest` included), by id: what every
    /// read and resolution of a prompt starts from. Invalidated by every write to the
    /// prompt, its versions or its labels, so a label move reaches every replica at once.
    prompts: Tiered<pb::Prompt>,
    /// Versions of prompts, by `id/number`. Immutable: invalidated only when deleted.
    prompt_versions: Tiered<pb::PromptVersion>,
    /// An agent without its definition, with its labels, by id (as `prompts`).
    agents: Tiered<pb::Agent>,
    /// Versions of agents, by `id/number`. Immutable: invalidated only when deleted.
    agent_versions: Tiered<pb::AgentVersion>,
    /// A project by id (without files). Invalidated by every write to it, its files, its
    /// likes, forks and folded views.
    projects: Tiered<pb::Project>,
    /// Who owns a project, as this service's clients cache it
    /// ([`strata_proto::PROJECT_OWNERS_CACHE`]): only invalidated here, when a project is
    /// deleted.
    project_owners: Tiered<pb::Project>,
    /// A conversation by id (without messages). Invalidated by every update, append and
    /// deletion.
    conversations: Tiered<pb::Conversation>,
    /// Project views, counted in Redis.
    views: Views,
    /// The conversation watchers of this replica.
    hub: Arc<crate::watch::Hub>,
    /// The claims of this replica waiting for tasks.
    wakeups: Arc<crate::workflows::Wakeups>,
    /// Commits this replica's concurrent task completions together.
    completer: crate::workflows::Completer,
    /// Limits and intervals.
    config: ContentConfig,
}

impl std::fmt::Debug for ContentHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentHandlers").finish_non_exhaustive()
    }
}

/// The current time at PostgreSQL's precision (microseconds).
fn db_now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

/// The caller, as verified by the auth layer, allowed `scope`.
fn caller<T>(request: &Request<T>, scope: &str) -> Result<Principal, ContentError> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            ContentError::Api(strata_errors::ApiError::unauthenticated(
                "missing credentials",
            ))
        })?;
    if !principal.has_scope(scope) {
        return Err(ContentError::Api(
            strata_errors::ApiError::permission_denied(format!(
                "the API key lacks the {scope} scope"
            )),
        ));
    }
    Ok(principal)
}

/// Whether `principal` may see and change an object of `owner` (its owner, or an admin).
fn may_touch(principal: &Principal, owner: Uuid) -> bool {
    owner == principal.user_id || principal.is_admin()
}

/// The error of a cache load, which every caller that waited for it shares.
fn shared(e: Arc<strata_storage::Error>) -> ContentError {
    ContentError::Api(strata_storage::Error::shared_into_api(e))
}

impl ContentHandlers {
    /// The process context.
    pub fn context(&self) -> &Arc<AppContext> {
        &self.ctx
    }

    /// Handlers over the process context.
    pub fn new(ctx: Arc<AppContext>, config: ContentConfig) -> Self {
        Self {
            projects: ctx.caches.tiered(
                "content_projects",
                Policy {
                    l1_ttl: Duration::from_secs(30),
                    l1_capacity: 100_000,
                    l2_ttl: Duration::from_secs(300),
                },
            ),
            conversations: ctx.caches.tiered(
                "content_conversations",
                Policy {
                    l1_ttl: Duration::from_secs(30),
                    l1_capacity: 100_000,
                    l2_ttl: Duration::from_secs(300),
                },
            ),
            project_owners: ctx.caches.tiered(
                strata_proto::PROJECT_OWNERS_CACHE,
                Policy {
                    l1_ttl: Duration::from_secs(60),
                    l1_capacity: 1_000,
                    l2_ttl: Duration::from_secs(600),
                },
            ),
            views: Views::new(ctx.redis.clone(), ctx.db.clone()),
            hub: Arc::new(crate::watch::Hub::new(config.watch)),
            wakeups: Arc::new(crate::workflows::Wakeups::default()),
            completer: crate::workflows::Completer::default(),
            config,
            prompts: ctx.caches.tiered(
                "content_prompts",
                Policy {
                    l1_ttl: Duration::from_secs(60),
                    l1_capacity: 100_000,
                    l2_ttl: Duration::from_secs(600),
                },
            ),
            prompt_versions: ctx.caches.tiered(
                "content_prompt_versions",
                Policy {
                    l1_ttl: Duration::from_secs(600),
                    l1_capacity: 20_000,
                    l2_ttl: Duration::from_secs(3600),
                },
            ),
            agents: ctx.caches.tiered(
                "content_agents",
                Policy {
                    l1_ttl: Duration::from_secs(60),
                    l1_capacity: 100_000,
                    l2_ttl: Duration::from_secs(600),
                },
            ),
            agent_versions: ctx.caches.tiered(
                "content_agent_versions",
                Policy {
                    l1_ttl: Duration::from_secs(600),
                    l1_capacity: 20_000,
                    l2_ttl: Duration::from_secs(3600),
                },
            ),
            ctx,
        }
    }
}
