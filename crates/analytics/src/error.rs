//! The analytics error type and its one mapping to `tonic::Status`.

use strata_runtime::error::{internal, storage_status};
use tonic::Status;

/// Most field violations reported for one request; the rest are counted in the message.
pub use strata_proto::wire::MAX_VIOLATIONS;
/// One invalid field of a request (the same type the wire checks report).
pub use strata_proto::wire::Violation;

/// Everything the analytics service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// Request fields are invalid (all of them listed, up to [`MAX_VIOLATIONS`]).
    #[error("invalid request: {} violation(s)", .0.len())]
    InvalidArgument(Vec<Violation>),
    /// No credentials on the call.
    #[error("unauthenticated")]
    Unauthenticated,
    /// Authenticated, but not allowed.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Missing, or not the caller's (indistinguishable).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Another refresh of the view holds its lock for longer than the call may wait.
    #[error("view refresh busy")]
    RefreshBusy,
    /// Database failure.
    #[error(transparent)]
    Storage(#[from] strata_storage::Error),
    /// Anything else that is not the caller's fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<diesel::result::Error> for AnalyticsError {
    fn from(err: diesel::result::Error) -> Self {
        AnalyticsError::Storage(err.into())
    }
}

impl strata_storage::retry::Retryable for AnalyticsError {
    fn class(&self) -> strata_storage::retry::ErrorClass {
        match self {
            AnalyticsError::Storage(e) => e.class(),
            _ => strata_storage::retry::ErrorClass::Permanent,
        }
    }
}

impl AnalyticsError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        AnalyticsError::InvalidArgument(vec![Violation {
            field: field.into(),
            description: description.into(),
        }])
    }
}

impl From<strata_runtime::Error> for AnalyticsError {
    fn from(err: strata_runtime::Error) -> Self {
        match err {
            strata_runtime::Error::InvalidArgument { field, description } => {
                AnalyticsError::InvalidArgument(vec![Violation { field, description }])
            }
            strata_runtime::Error::Storage(e) => AnalyticsError::Storage(e),
            other => AnalyticsError::Internal(other.to_string()),
        }
    }
}

impl From<AnalyticsError> for Status {
    fn from(err: AnalyticsError) -> Self {
        match err {
            AnalyticsError::InvalidArgument(violations) => {
                strata_proto::codec::invalid_request(&violations)
            }
            AnalyticsError::Unauthenticated => Status::unauthenticated("missing credentials"),
            AnalyticsError::PermissionDenied(message) => Status::permission_denied(message),
            AnalyticsError::NotFound(what) => strata_runtime::error::not_found(what),
            AnalyticsError::RefreshBusy => Status::aborted(
                "another refresh of this view is running; retry when it has finished",
            ),
            AnalyticsError::Storage(e) => storage_status(&e),
            other @ AnalyticsError::Internal(_) => internal(&other),
        }
    }
}
