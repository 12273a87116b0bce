//! Errors of the shared layer and the one mapping from errors to `tonic::Status`.
//!
//! Services follow the same pattern with their own error type: validation →
//! `INVALID_ARGUMENT` with `BadRequest` field violations, missing (or not yours) →
//! `NOT_FOUND`, database unreachable → `UNAVAILABLE`, rate limited → `RESOURCE_EXHAUSTED`
//! with `RetryInfo`, anything else → logged with its cause and returned as `INTERNAL` with
//! a generic message. The helpers here build those statuses so every service words them
//! the same way; no SQL, no cause and no input value ever reaches the client.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Errors raised by the shared layer (admin RPCs, bootstrap).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// Field path, as in the proto (`page_size`, `items[3].model`).
        field: String,
        /// What is wrong, for the developer calling the API.
        description: String,
    },
    /// The operation needs something the deployment lacks (e.g. an extension).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Database failure.
    #[error(transparent)]
    Storage(#[from] strata_storage::Error),
    /// Configuration is unusable.
    #[error(transparent)]
    Config(#[from] strata_storage::config::ConfigError),
    /// Configuration could not be read.
    #[error(transparent)]
    ConfigLoad(#[from] Box<figment::Error>),
    /// Socket, signal or file error at startup.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// Telemetry could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { field, description } => invalid_argument(&field, &description),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Storage(e) => storage_status(&e),
            other => internal(&other),
        }
    }
}

/// `INVALID_ARGUMENT` naming `field`, with a `BadRequest` field violation.
pub fn invalid_argument(field: &str, description: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// `NOT_FOUND` for `what` (e.g. "agent"); identical whether it does not exist or belongs
/// to someone else.
pub fn not_found(what: &str) -> Status {
    Status::not_found(format!("{what} not found"))
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo` telling the client when to come back.
pub fn resource_exhausted(message: &str, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// `UNAVAILABLE` for a dependency that did not answer; retryable by the client.
pub fn unavailable() -> Status {
    Status::unavailable("service temporarily unavailable, retry later")
}

/// `INTERNAL` with a generic message; the cause is logged here, never returned.
pub fn internal(cause: &dyn std::error::Error) -> Status {
    tracing::error!(error = %cause, error.debug = ?cause, "internal error");
    Status::internal("internal error")
}

/// The status of a storage error: not found, unavailable, or internal.
pub fn storage_status(err: &strata_storage::Error) -> Status {
    if err.is_not_found() {
        not_found("resource")
    } else if err.is_unavailable() {
        tracing::warn!(error = %err, "database unavailable");
        unavailable()
    } else {
        internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_name_the_field_and_hide_causes() {
        let status = Status::from(Error::invalid("page_size", "must not be negative"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_size"));
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "page_size");

        let leaky = strata_storage::Error::Migration {
            version: "v".into(),
            problem: "SELECT secret FROM pg_authid".into(),
        };
        let status = Status::from(Error::Storage(leaky));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");

        let status = Status::from(Error::Storage(strata_storage::Error::PoolTimeout));
        assert_eq!(status.code(), Code::Unavailable);

        let status = resource_exhausted("slow down", Duration::from_secs(3));
        assert_eq!(
            status
                .get_error_details()
                .retry_info()
                .and_then(|r| r.retry_delay),
            Some(Duration::from_secs(3))
        );
    }
}
