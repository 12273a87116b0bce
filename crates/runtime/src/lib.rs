//! Cross-cutting pieces every Strata service uses.
//!
//! This crate owns configuration loading ([`config`]), telemetry ([`telemetry`]), the
//! tower layers of the request path ([`layers`]), the error → `tonic::Status` mapping
//! ([`error`]), the Redis handle ([`redis`]), the admin RPCs ([`admin`]), health
//! ([`health`]) and the server bootstrap ([`server`]). It must not own any service's
//! tables or RPC handlers: services plug into [`server::ServerBuilder`].

pub mod admin;
pub mod auth;
pub mod authn;
pub mod clock;
pub mod config;
pub mod error;
pub mod health;
pub mod layers;
pub mod pagination;
pub mod redis;
pub mod server;
pub mod telemetry;
pub mod time;

pub use config::{ServerConfig, Settings};
pub use error::Error;
pub use server::{AppContext, ServerBuilder};
