//! `strata.auth.v1.AuthService`: accounts, sessions, refresh tokens, API keys and token
//! signing.
//!
//! This crate owns the `auth` schema and is the only code that reads or writes it. It
//! hashes passwords ([`password`]), keeps the Ed25519 signing keys ([`keys`]) sealed at
//! rest with the configured key-encryption key ([`kek`]), issues access and refresh tokens
//! ([`tokens`]), throttles sign-in ([`throttle`]), records API-key use in batches
//! ([`usage`]), deletes expired credentials ([`cleanup`]), publishes ended sessions to
//! Redis from an outbox ([`revocations`]), and serves the RPCs ([`handlers`], one file per
//! resource) over its queries ([`store`], [`schema`]), reading sessions and accounts
//! through the two-tier caches ([`cached`]). [`register`] adds all of it to a
//! server. Verifying access tokens and checking revocations is shared with every service
//! and lives in `strata_runtime::identity`; this crate must not grow verification logic of
//! its own.

pub mod cached;
pub mod cleanup;
pub mod config;
pub mod error;
pub mod handlers;
pub mod kek;
pub mod keys;
pub mod password;
pub mod revocations;
pub mod schema;
pub mod service_accounts;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

pub use config::AuthConfig;
pub use error::AuthError;
pub use handlers::AuthHandlers;
use strata_proto::auth::auth_service_server::AuthServiceServer;
use strata_runtime::ServerBuilder;
use strata_runtime::tasks::Task;

/// How often API key uses are written.
const KEY_USAGE_FLUSH: Duration = Duration::from_secs(30);
/// How often expired credentials are deleted.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(600);

/// Adds the auth service, configured by `config`, and its background tasks to `builder`;
/// returns the handlers (the CLI and tests reach the key ring through them).
pub fn register(
    builder: &mut ServerBuilder,
    config: AuthConfig,
) -> Result<Arc<AuthHandlers>, AuthError> {
    let handlers = Arc::new(AuthHandlers::new(builder.context(), config)?);
    register_handlers(builder, Arc::clone(&handlers));
    Ok(handlers)
}

/// Adds `handlers` (built by the caller, e.g. with a test clock) and their background
/// tasks to `builder`:
/// - `auth.key_usage` writes noted API-key uses every 30 s, and once more at shutdown;
/// - `auth.revocations` drains the revocation outbox to Redis every second, re-seeding
///   when Redis lost data, and vouches for its completeness;
/// - `auth.cleanup` deletes expired credentials every 10 minutes.
pub fn register_handlers(builder: &mut ServerBuilder, handlers: Arc<AuthHandlers>) {
    let usage = Arc::clone(handlers.key_usage());
    let last = Arc::clone(&usage);
    builder.add_task(
        Task::every("auth.key_usage", KEY_USAGE_FLUSH, move || {
            let usage = Arc::clone(&usage);
            async move { usage.flush().await.map(|_| ()) }
        })
        .on_shutdown(move || {
            let usage = Arc::clone(&last);
            async move { usage.flush().await.map(|_| ()) }
        }),
    );
    let revocations = Arc::clone(handlers.revocations());
    builder.add_task(Task::every(
        "auth.revocations",
        revocations::TICK,
        move || {
            let revocations = Arc::clone(&revocations);
            async move { revocations.round().await }
        },
    ));
    let db = handlers.context().db.clone();
    builder.add_task(Task::every("auth.cleanup", CLEANUP_INTERVAL, move || {
        let db = db.clone();
        async move { cleanup::round(&db).await }
    }));
    builder.add_service(AuthServiceServer::from_arc(handlers));
}
