//! The auth error type and its one mapping to `tonic::Status`.

use strata_runtime::error::{internal, invalid_argument, storage_status};
use tonic::Status;
use tonic_types::StatusExt as _;

/// The message of every failed sign-in, whatever the reason, so responses never tell an
/// unknown email from a wrong password or a disabled account.
pub const BAD_CREDENTIALS: &str = "invalid email or password";

/// Everything the auth service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A request field is invalid.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        description: String,
    },
    /// Sign-in failed (unknown email, wrong password, disabled account: indistinguishable).
    #[error("bad credentials")]
    BadCredentials,
    /// Too many failed sign-ins: answered like [`AuthError::BadCredentials`], plus a
    /// `RetryInfo` saying when to try again.
    #[error("sign-in locked")]
    Locked(std::time::Duration),
    /// No valid credential on the call, or a token that is invalid, expired or revoked.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// Authenticated, but lacking the role the RPC needs.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// The email cannot be used for a new account.
    #[error("account cannot be created")]
    Conflict,
    /// Missing, or not the caller's.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Database failure.
    #[error(transparent)]
    Storage(#[from] strata_storage::Error),
    /// Password hashing failed (a corrupt stored hash, or the blocking pool is gone).
    #[error("password hashing: {0}")]
    Hashing(String),
    /// Token signing failed.
    #[error("token signing: {0}")]
    Signing(String),
    /// Redis failed (background publishing only; calls never depend on it).
    #[error("redis: {0}")]
    Redis(String),
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        AuthError::Storage(err.into())
    }
}

impl strata_storage::retry::Retryable for AuthError {
    fn class(&self) -> strata_storage::retry::ErrorClass {
        match self {
            AuthError::Storage(e) => e.class(),
            _ => strata_storage::retry::ErrorClass::Permanent,
        }
    }
}

impl AuthError {
    /// Shorthand for [`AuthError::InvalidArgument`].
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        AuthError::InvalidArgument {
            field,
            description: description.into(),
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidArgument { field, description } => {
                invalid_argument(field, &description)
            }
            AuthError::BadCredentials => Status::unauthenticated(BAD_CREDENTIALS),
            AuthError::Locked(retry_after) => Status::with_error_details(
                tonic::Code::Unauthenticated,
                BAD_CREDENTIALS,
                tonic_types::ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            AuthError::Unauthenticated(message) => Status::unauthenticated(message),
            AuthError::PermissionDenied(message) => Status::permission_denied(message),
            AuthError::Conflict => {
                Status::already_exists("an account cannot be created with this email")
            }
            AuthError::NotFound(what) => strata_runtime::error::not_found(what),
            AuthError::Storage(e) => storage_status(&e),
            other => internal(&other),
        }
    }
}
