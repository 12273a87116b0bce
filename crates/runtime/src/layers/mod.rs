//! Tower layers of the server's request path, outermost first (the stack itself, with a
//! comment on each layer's position, is in `server.rs`):
//!
//! 1. [`RequestLayer`] (`request.rs`): span and trace context, query accounting, panic →
//!    `INTERNAL`, profiling metadata on the response.
//! 2. [`MetadataLimitLayer`] (`metadata.rs`): oversized metadata refused before anything
//!    reads it.
//! 3. [`crate::identity::AuthLayer`]: the caller's credential verified and its
//!    [`crate::identity::Principal`] put into the request extensions.
//! 4. [`RateLimitLayer`] (`ratelimit.rs`): the call checked against the rate limits of its
//!    caller (API key, user, or address), metadata saying what is left.

mod metadata;
mod ratelimit;
mod request;

/// Services of the gRPC machinery (probes, tooling): neither authenticated nor limited.
pub const INFRASTRUCTURE_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The inner service of a middleware, to handle the call it was polled ready for: tower
/// allows `call` only on the service that answered `poll_ready`, so that one is taken and
/// a clone takes its place for the next call.
pub fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// The service part of a gRPC path (`/package.Service/Method`).
pub fn grpc_service(path: &str) -> Option<&str> {
    path.strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .map(|(service, _)| service)
}

pub use metadata::{
    MAX_METADATA_BYTES, MAX_METADATA_VALUE_BYTES, MetadataLimitLayer, MetadataLimitService,
};
pub use ratelimit::{
    DEFAULT_COSTS, IpNet, RATELIMIT_HEADER, RATELIMIT_POLICY_HEADER, RETRY_AFTER_HEADER,
    RateLimitFuture, RateLimitLayer, RateLimitMetadata, RateLimitService, RateLimits,
    X_RATELIMIT_LIMIT_HEADER, X_RATELIMIT_REMAINING_HEADER, X_RATELIMIT_RESET_HEADER,
    client_address,
};
pub use request::{
    PROCESS_TIME_HEADER, QUERY_COUNT_HEADER, QUERY_TIME_HEADER, RequestLayer, RequestService,
};
