//! Who owns a project, asked of the content service over gRPC.
//!
//! A project's usage is its owner's to read (and admins'). Analytics does not keep
//! projects: it asks content's `GetProject` with the caller's own credentials (so content
//! applies its own visibility rules) and the trace context of the call, reading only the
//! owner. The owner is a fact about the project, whoever asked, so it is cached in the
//! shared two-tier cache [`PROJECT_OWNERS_CACHE`], whose entries the content service
//! invalidates when a project is deleted (or changes owner). An answer that the caller
//! cannot see the project depends on the caller, so it is never cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_cache::{Policy, Tiered};
use strata_proto::PROJECT_OWNERS_CACHE;
use strata_proto::content::{self as cpb, project_service_client::ProjectServiceClient};
use strata_runtime::AppContext;
use strata_runtime::server::Peer;
use strata_runtime::telemetry::TraceContextInterceptor;
use tonic::Code;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::AnalyticsError;

/// How long one question to the content service may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The owners of projects, from the content service, cached.
pub struct ProjectOwners {
    content: Option<Peer>,
    cache: Tiered<cpb::Project>,
}

impl std::fmt::Debug for ProjectOwners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectOwners")
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// Why the content service gave no owner.
#[derive(Debug, Clone)]
enum Refused {
    /// The caller cannot see the project (or it does not exist).
    NotVisible,
    /// The caller's credentials do not allow reading projects.
    Denied(String),
    /// The caller's credentials were refused (expired or revoked meanwhile).
    Unauthenticated,
    /// Content did not answer.
    Unavailable(String),
}

impl ProjectOwners {
    /// Owners asked of the content service at `content` (none: no project is anyone's).
    pub fn new(ctx: &AppContext, content: Option<Peer>) -> Self {
        Self {
            content,
            cache: ctx.caches.tiered(
                PROJECT_OWNERS_CACHE,
                Policy {
                    l1_ttl: Duration::from_secs(60),
                    l1_capacity: 100_000,
                    l2_ttl: Duration::from_secs(600),
                },
            ),
        }
    }

    /// Whether `caller` owns `project`, asking content with the call's `metadata`
    /// (its `authorization`). A project the caller cannot see is not theirs.
    pub async fn owned_by(
        &self,
        project: Uuid,
        caller: Uuid,
        metadata: &MetadataMap,
    ) -> Result<bool, AnalyticsError> {
        let Some(channel) = self.content.as_ref().and_then(Peer::channel) else {
            return Err(AnalyticsError::Unavailable(
                "the content service, which knows who owns a project, is not configured \
                 (STRATA_CONTENT_URL)"
                    .into(),
            ));
        };
        let authorization = metadata.get("authorization").cloned();
        let asked = AtomicBool::new(false);
        let ask = || {
            asked.store(true, Ordering::Relaxed);
            owner_of(channel.clone(), project, authorization.clone())
        };
        let answer = match self.cache.get_or_load(&project.to_string(), ask).await {
            Ok(owner) => return Ok(owner.is_some_and(|p| p.owner_id == caller.to_string())),
            // Another caller's question, shared while this one waited: its refusal may
            // be about that caller only. Ask for this one.
            Err(_) if !asked.load(Ordering::Relaxed) => {
                owner_of(channel, project, authorization).await
            }
            Err(refused) => Err(Arc::unwrap_or_clone(refused)),
        };
        match answer {
            Ok(owner) => Ok(owner.is_some_and(|p| p.owner_id == caller.to_string())),
            Err(Refused::NotVisible) => Ok(false),
            Err(Refused::Denied(message)) => Err(AnalyticsError::PermissionDenied(message)),
            Err(Refused::Unauthenticated) => Err(AnalyticsError::Unauthenticated),
            Err(Refused::Unavailable(message)) => Err(AnalyticsError::Unavailable(message)),
        }
    }
}

/// The project's id and owner, from content's `GetProject` with `authorization`.
async fn owner_of(
    channel: tonic::transport::Channel,
    project: Uuid,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> Result<Option<cpb::Project>, Refused> {
    let mut request = tonic::Request::new(cpb::GetProjectRequest {
        project_id: project.to_string(),
    });
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    request.set_timeout(ASK_TIMEOUT);
    let answer = ProjectServiceClient::with_interceptor(channel, TraceContextInterceptor)
        .get_project(request)
        .await;
    match answer {
        Ok(response) => Ok(response.into_inner().project.map(|p| cpb::Project {
            id: p.id,
            owner_id: p.owner_id,
            ..Default::default()
        })),
        Err(status) => Err(match status.code() {
            Code::NotFound | Code::InvalidArgument => Refused::NotVisible,
            Code::Unauthenticated => Refused::Unauthenticated,
            Code::PermissionDenied => Refused::Denied(format!(
                "the content service refused to say who owns the project: {}",
                status.message()
            )),
            code => {
                tracing::warn!(
                    project = %project,
                    code = ?code,
                    "content service did not say who owns a project"
                );
                Refused::Unavailable("the content service did not answer; retry later".into())
            }
        }),
    }
}
