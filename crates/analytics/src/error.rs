//! The analytics error type and how it reads in the suite's error vocabulary.

use strata_errors::ApiError;
/// Most field violations reported for one request; the rest are counted in the message.
pub use strata_errors::MAX_VIOLATIONS;
/// One invalid field of a request (the same type the wire checks report).
pub use strata_errors::Violation;

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
    /// A service this one depends on did not answer (the message says which; no cause).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Database failure.
    #[error(transparent)]
    Storage(#[from] strata_storage::Error),
    /// A shared convention refused the request (a page size or token).
    #[error(transparent)]
    Api(#[from] ApiError),
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
        AnalyticsError::InvalidArgument(vec![Violation::new(field, description)])
    }
}

/// How each failure reads in the suite's error vocabulary.
impl From<AnalyticsError> for ApiError {
    fn from(err: AnalyticsError) -> Self {
        match err {
            AnalyticsError::InvalidArgument(violations) => ApiError::InvalidArgument(violations),
            AnalyticsError::Unauthenticated => ApiError::unauthenticated("missing credentials"),
            AnalyticsError::PermissionDenied(message) => ApiError::permission_denied(message),
            AnalyticsError::NotFound(what) => ApiError::not_found(what),
            AnalyticsError::RefreshBusy => ApiError::Aborted(
                "another refresh of this view is running; retry when it has finished".into(),
            ),
            AnalyticsError::Unavailable(message) => ApiError::unavailable(message),
            AnalyticsError::Storage(e) => e.into(),
            AnalyticsError::Api(e) => e,
            other @ AnalyticsError::Internal(_) => ApiError::internal(other),
        }
    }
}
