//! Generated protobuf messages and gRPC clients/servers for every `strata.*.v1` package.
//!
//! This crate owns the generated code, the descriptor set (reflection), and the codec the
//! generated code is served with ([`codec`]), whose request checks ([`wire`]) read that
//! descriptor set: a request that breaks a wire rule (NUL or invalid UTF-8 in a string, an
//! unknown enum value, an impossible timestamp) or does not decode is `INVALID_ARGUMENT`
//! before any handler runs, and [`GrpcServer`], through which the server bootstrap sets every
//! generated server's limits once. It must not grow service logic. Packages are re-exported along
//! their proto path, so `strata.admin.v1` is [`strata::admin::v1`], with shorter aliases at
//! the crate root.

pub mod codec;
pub mod wire;

/// Encoded `FileDescriptorSet` of every Strata proto file and its imports, for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));

/// Every method of the suite's services, as gRPC paths without the leading slash
/// (`strata.auth.v1.AuthService/Login`), read from [`FILE_DESCRIPTOR_SET`].
pub fn method_paths() -> Vec<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .filter(|file| file.package().starts_with("strata."))
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    format!("{}.{}/{}", file.package(), service.name(), method.name())
                })
            })
        })
        .collect()
}

/// Packages, nested like their proto names.
pub mod strata {
    /// `strata.common.*`
    pub mod common {
        /// `strata.common.v1`: messages shared across services.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/strata.common.v1.rs"));
        }
    }
    /// `strata.auth.*`
    pub mod auth {
        /// `strata.auth.v1`: accounts, sessions and tokens.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/strata.auth.v1.rs"));
        }
    }
    /// `strata.analytics.*`
    pub mod analytics {
        /// `strata.analytics.v1`: the LLM token-usage ledger and its summaries.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/strata.analytics.v1.rs"));
        }
    }
    /// `strata.content.*`
    pub mod content {
        /// `strata.content.v1`: prompts (and agents, projects, conversations) with versions.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/strata.content.v1.rs"));
        }
    }
    /// `strata.admin.*`
    pub mod admin {
        /// `strata.admin.v1`: operational RPCs served by every process.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/strata.admin.v1.rs"));
        }
    }
}

pub use strata::admin::v1 as admin;
pub use strata::analytics::v1 as analytics;
pub use strata::auth::v1 as auth;
pub use strata::common::v1 as common;
pub use strata::content::v1 as content;

/// The shared cache (see `strata_cache`) in which the content service's clients keep who
/// owns a project (a [`content::Project`] holding only `id` and `owner_id`), by project
/// id. Part of content's contract: it invalidates an entry when its project is deleted or
/// changes owner, on every replica, at once.
pub const PROJECT_OWNERS_CACHE: &str = "content_project_owners";

/// A generated gRPC server. The server bootstrap adds every service through this trait, so
/// the limits below are applied once for all, and a service that is not listed here cannot
/// be served (a compile error, not a forgotten limit).
pub trait GrpcServer: Sized {
    /// This server, refusing a request message over `bytes` (`RESOURCE_EXHAUSTED`).
    fn with_message_limit(self, bytes: usize) -> Self;
}

macro_rules! grpc_servers {
    ($($package:ident :: $module:ident :: $server:ident < $service:ident >),* $(,)?) => {$(
        impl<T: $package::$module::$service> GrpcServer for $package::$module::$server<T> {
            fn with_message_limit(self, bytes: usize) -> Self {
                self.max_decoding_message_size(bytes)
            }
        }
    )*};
}

grpc_servers!(
    admin::admin_service_server::AdminServiceServer<AdminService>,
    analytics::analytics_service_server::AnalyticsServiceServer<AnalyticsService>,
    auth::auth_service_server::AuthServiceServer<AuthService>,
    content::agent_service_server::AgentServiceServer<AgentService>,
    content::conversation_service_server::ConversationServiceServer<ConversationService>,
    content::file_service_server::FileServiceServer<FileService>,
    content::project_service_server::ProjectServiceServer<ProjectService>,
    content::prompt_service_server::PromptServiceServer<PromptService>,
    content::workflow_service_server::WorkflowServiceServer<WorkflowService>,
);
