//! Cross-cutting pieces every Strata service uses, one room each:
//!
//! - **bootstrap**: [`config`] (typed settings from the environment), [`context`]
//!   ([`AppContext`], what the services of a process share), [`server`]
//!   ([`ServerBuilder`]: routes, the tower stack, HTTP/2 limits, graceful shutdown),
//!   [`tasks`] (background work owned and drained by the server), [`health`]
//!   (`grpc.health.v1` following the database), [`telemetry`] (logs, traces, OTLP export);
//! - **request layers**: [`layers`] (request span, query accounting, panic guard, metadata
//!   limits);
//! - **caller identity**: [`identity`] (`Principal`, access-token verification, revocation
//!   checks, the authentication layer);
//! - **handler conventions**: [`error`] (the shared error vocabulary and its one mapping to
//!   `tonic::Status`), [`pagination`] (keyset page tokens bound to their list and caller),
//!   [`time`] (proto timestamps), [`clock`] (an injectable clock);
//! - **the admin RPCs** every process serves: [`admin`] (`strata.admin.v1.AdminService`
//!   and its guard);
//! - **utilities**: [`redis`] (the shared Redis handle).
//!
//! It must not own any service's tables or any service's RPC handlers (the admin service
//! is the suite's own, not a service's): services plug into [`server::ServerBuilder`].

pub mod admin;
pub mod clock;
pub mod config;
pub mod context;
pub mod error;
pub mod health;
pub mod identity;
pub mod layers;
pub mod pagination;
/// The shared Redis handle (it lives with the cache, which needs it below the runtime).
pub use strata_cache::redis;
pub mod server;
pub mod tasks;
pub mod telemetry;
pub mod time;
pub mod usage;

pub use config::{ServerConfig, Settings};
pub use context::AppContext;
pub use error::Error;
pub use server::ServerBuilder;
