//! The content error type: the suite's [`ApiError`], and database failures, which read as
//! `UNAVAILABLE` or `INTERNAL` without their cause.

use strata_errors::ApiError;

/// Everything a content handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// An answer for the caller (invalid field, missing object, precondition …).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Database failure.
    #[error(transparent)]
    Storage(#[from] strata_storage::Error),
}

impl From<diesel::result::Error> for ContentError {
    fn from(err: diesel::result::Error) -> Self {
        ContentError::Storage(err.into())
    }
}

impl From<strata_errors::Violations> for ContentError {
    fn from(violations: strata_errors::Violations) -> Self {
        ContentError::Api(ApiError::InvalidArgument(violations.into_vec()))
    }
}

impl From<ContentError> for ApiError {
    fn from(err: ContentError) -> Self {
        match err {
            ContentError::Api(e) => e,
            ContentError::Storage(e) => e.into(),
        }
    }
}

impl ContentError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ContentError::Api(ApiError::invalid(field, description))
    }

    /// A missing object, or one the caller may not see (indistinguishable).
    pub fn not_found(what: &'static str) -> Self {
        ContentError::Api(ApiError::not_found(what))
    }

    /// A write the object's state forbids.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        ContentError::Api(ApiError::failed_precondition(message.into()))
    }
}
