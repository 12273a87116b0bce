//! `strata.auth.v1.AuthService`: accounts, sessions, refresh tokens and token signing.
//!
//! This crate owns the `auth` schema and is the only code that reads or writes it. It
//! hashes passwords ([`password`]), keeps the Ed25519 signing keys ([`keys`]) sealed at
//! rest with the configured key-encryption key ([`kek`]), issues access and refresh tokens
//! ([`tokens`]), publishes ended sessions to Redis from an outbox ([`revocations`]) and
//! serves the RPCs ([`service`]). Verifying access tokens, and reading revocations from
//! Redis, is shared with every service and lives in `strata_runtime`; this crate must not
//! grow verification logic of its own.

pub mod cleanup;
pub mod config;
pub mod error;
pub mod kek;
pub mod keys;
pub mod password;
pub mod revocations;
pub mod schema;
pub mod service;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod usage;

pub use config::AuthConfig;
pub use service::AuthHandlers;
