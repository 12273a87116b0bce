//! The auth error type and how it reads in the suite's error vocabulary
//! ([`strata_errors::ApiError`], whose one mapping to `tonic::Status` every service shares).

use strata_errors::ApiError;

/// The message of every failed sign-in, whatever the reason, so responses never tell an
/// unknown email from a wrong password or a disabled account.
pub const BAD_CREDENTIALS: &str = "invalid email or password";

/// Everything the auth service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A failure of the shared vocabulary: invalid fields (all of them), not found,
    /// permission denied, no valid credential.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Sign-in failed (unknown email, wrong password, disabled account: indistinguishable).
    #[error("bad credentials")]
    BadCredentials,
    /// Too many failed sign-ins: answered like [`AuthError::BadCredentials`], plus a
    /// `RetryInfo` saying when to try again.
    #[error("sign-in locked")]
    Locked(std::time::Duration),
    /// The email cannot be used for a new account.
    #[error("account cannot be created")]
    Conflict,
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
    /// One invalid field.
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        ApiError::invalid(field, description).into()
    }

    /// No valid credential: `why`.
    pub fn unauthenticated(why: &'static str) -> Self {
        ApiError::unauthenticated(why).into()
    }

    /// Not allowed: `why`.
    pub fn permission_denied(why: &'static str) -> Self {
        ApiError::permission_denied(why).into()
    }

    /// `what` is missing, or not the caller's.
    pub fn not_found(what: &'static str) -> Self {
        ApiError::not_found(what).into()
    }
}

/// How each failure reads in the suite's error vocabulary.
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Api(e) => e,
            AuthError::BadCredentials => ApiError::unauthenticated(BAD_CREDENTIALS),
            AuthError::Locked(retry_after) => ApiError::Unauthenticated {
                message: BAD_CREDENTIALS.into(),
                retry_after: Some(retry_after),
            },
            AuthError::Conflict => ApiError::AlreadyExists {
                message: "an account cannot be created with this email".into(),
                resource: None,
            },
            AuthError::Storage(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}
