//! Tower layers of the server's request path, outermost first (the stack itself, with a
//! comment on each layer's position, is in `server.rs`):
//!
//! 1. [`RequestLayer`] (`request.rs`): span and trace context, query accounting, panic →
//!    `INTERNAL`, profiling metadata on the response.
//! 2. [`MetadataLimitLayer`] (`metadata.rs`): oversized metadata refused before anything
//!    reads it.
//! 3. [`crate::identity::AuthLayer`]: the caller's credential verified and its
//!    [`crate::identity::Principal`] put into the request extensions.

mod metadata;
mod request;

pub use metadata::{
    MAX_METADATA_BYTES, MAX_METADATA_VALUE_BYTES, MetadataLimitLayer, MetadataLimitService,
};
pub use request::{
    PROCESS_TIME_HEADER, QUERY_COUNT_HEADER, QUERY_TIME_HEADER, RequestLayer, RequestService,
};
