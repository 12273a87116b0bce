//! The suite's one error vocabulary ([`ApiError`]) and its one mapping to `tonic::Status`
//! with `tonic-types` details.
//!
//! Every service, the auth layer, the admin RPCs and the request decoder answer through
//! here, so a client sees one shape everywhere:
//!
//! | error | code | details |
//! |---|---|---|
//! | [`ApiError::InvalidArgument`] | `INVALID_ARGUMENT` | `BadRequest` listing every violation |
//! | [`ApiError::NotFound`] | `NOT_FOUND` | none: missing and not-yours look alike |
//! | [`ApiError::AlreadyExists`] | `ALREADY_EXISTS` | `ResourceInfo` when the resource is named |
//! | [`ApiError::PermissionDenied`] | `PERMISSION_DENIED` | |
//! | [`ApiError::Unauthenticated`] | `UNAUTHENTICATED` | `RetryInfo` when locked out |
//! | [`ApiError::FailedPrecondition`] | `FAILED_PRECONDITION` | |
//! | [`ApiError::Aborted`] | `ABORTED` | |
//! | [`ApiError::Unavailable`] | `UNAVAILABLE` | |
//! | [`ApiError::ResourceExhausted`] | `RESOURCE_EXHAUSTED` | `RetryInfo`, `QuotaFailure` naming the limits |
//! | [`ApiError::DeadlineExceeded`] | `DEADLINE_EXCEEDED` | |
//! | [`ApiError::Internal`] | `INTERNAL` | none; the cause is logged, never returned |
//!
//! [`ApiError::with_info`] adds an `ErrorInfo` (reason, domain, metadata) to any of them.
//! Crates keep their own error types (`thiserror`) and say how each variant reads in this
//! vocabulary with `impl From<TheirError> for ApiError`; handlers answer through
//! [`respond`]. This crate must not know any service: it sits below `proto`, whose request
//! decoder reports through it too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
pub use tonic_types::QuotaViolation;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// Most field violations reported for one request; the rest are counted in the message.
pub const MAX_VIOLATIONS: usize = 100;

/// The message of every `INTERNAL` answer.
const INTERNAL_MESSAGE: &str = "internal error";

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Proto path of the field, e.g. `events[3].model`.
    pub field: String,
    /// What is wrong, for the developer calling the API.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects every violation of a request (up to [`MAX_VIOLATIONS`]), so one answer lists
/// them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.push(Violation::new(field, description));
    }

    fn push(&mut self, violation: Violation) {
        if self.0.len() < MAX_VIOLATIONS {
            self.0.push(violation);
        }
    }

    /// Keeps the value of a check, or records its violation and returns `None`.
    pub fn check<T>(&mut self, result: Result<T, Violation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.push(violation);
                None
            }
        }
    }

    /// Records the violations of a nested check (its `InvalidArgument`); any other error
    /// is returned as it is.
    pub fn absorb<T>(&mut self, result: Result<T, ApiError>) -> Result<Option<T>, ApiError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(ApiError::InvalidArgument(violations)) => {
                violations.into_iter().for_each(|v| self.push(v));
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The violations recorded.
    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }

    /// `Ok` when nothing was recorded, else `InvalidArgument` with every violation.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }

    /// Like [`Violations::finish`], returning `value` when nothing was recorded; `value`
    /// is `None` only if something was.
    pub fn finish_with<T>(self, value: Option<T>) -> Result<T, ApiError> {
        self.finish()?;
        value.ok_or_else(|| ApiError::InvalidArgument(Vec::new()))
    }
}

/// `ErrorInfo` detail: a machine-readable reason within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// UPPER_SNAKE_CASE reason, e.g. `SQL_STATEMENT_FAILED`.
    pub reason: String,
    /// The API that defines the reason, e.g. `strata.admin.v1`.
    pub domain: String,
    /// Structured facts about this occurrence.
    pub metadata: HashMap<String, String>,
}

/// `ResourceInfo` detail: which resource an `ALREADY_EXISTS` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Full message name, e.g. `strata.auth.v1.ApiKey`.
    pub kind: String,
    /// The resource's id.
    pub name: String,
    /// Why it is named, for the developer.
    pub description: String,
}

/// Every way a call can fail, as a client sees it. See the module docs for the codes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Request fields are invalid; all of them are listed.
    #[error("{}", invalid_request_message(.0))]
    InvalidArgument(Vec<Violation>),
    /// Missing, or not the caller's: the two look exactly alike.
    #[error("{0} not found")]
    NotFound(Cow<'static, str>),
    /// The resource the call would create exists.
    #[error("already exists: {message}")]
    AlreadyExists {
        /// What exists.
        message: Cow<'static, str>,
        /// The existing resource, when the caller may know it.
        resource: Option<Resource>,
    },
    /// Authenticated, but not allowed.
    #[error("permission denied: {0}")]
    PermissionDenied(Cow<'static, str>),
    /// No valid credential, or a refused sign-in.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// What the caller may be told.
        message: Cow<'static, str>,
        /// When a locked-out caller may try again.
        retry_after: Option<Duration>,
    },
    /// The system is not in the state the call needs.
    #[error("failed precondition: {0}")]
    FailedPrecondition(Cow<'static, str>),
    /// A concurrent operation got in the way; retry the whole call.
    #[error("aborted: {0}")]
    Aborted(Cow<'static, str>),
    /// A dependency did not answer; retryable.
    #[error("unavailable: {0}")]
    Unavailable(Cow<'static, str>),
    /// The caller is over a limit.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// Which limit.
        message: Cow<'static, str>,
        /// When to come back.
        retry_after: Duration,
        /// The limits that refused the call (`QuotaFailure`; none: no such detail).
        quota: Vec<QuotaViolation>,
    },
    /// The operation ran out of time.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(Cow<'static, str>),
    /// Anything that is not the caller's fault; the cause is logged, never returned.
    #[error("internal: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync>),
    /// Any of the above with an `ErrorInfo`.
    #[error("{error}")]
    WithInfo {
        /// The error.
        error: Box<ApiError>,
        /// Its reason, domain and metadata.
        info: ErrorInfo,
    },
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![Violation::new(field, description)])
    }

    /// `what` not found (e.g. "agent").
    pub fn not_found(what: impl Into<Cow<'static, str>>) -> Self {
        ApiError::NotFound(what.into())
    }

    /// Not allowed: `why`.
    pub fn permission_denied(why: impl Into<Cow<'static, str>>) -> Self {
        ApiError::PermissionDenied(why.into())
    }

    /// No valid credential: `message`.
    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Unauthenticated {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A dependency did not answer.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Unavailable(message.into())
    }

    /// The system lacks what the call needs.
    pub fn failed_precondition(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::FailedPrecondition(message.into())
    }

    /// An internal failure caused by `cause`.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(cause.into())
    }

    /// This error with an `ErrorInfo` detail.
    pub fn with_info(self, info: ErrorInfo) -> Self {
        ApiError::WithInfo {
            error: Box::new(self),
            info,
        }
    }

    /// The gRPC code clients receive.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unauthenticated { .. } => Code::Unauthenticated,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Internal(_) => Code::Internal,
            ApiError::WithInfo { error, .. } => error.code(),
        }
    }

    /// The client's message, and its details when it has any.
    fn message_and_details(self) -> (String, Option<ErrorDetails>) {
        match self {
            ApiError::InvalidArgument(violations) => {
                let (message, details) = invalid_request(&violations);
                (message, Some(details))
            }
            ApiError::NotFound(what) => (format!("{what} not found"), None),
            ApiError::AlreadyExists { message, resource } => (
                message.into_owned(),
                resource.map(|r| {
                    let mut details = ErrorDetails::new();
                    details.set_resource_info(r.kind, r.name, "", r.description);
                    details
                }),
            ),
            ApiError::Unauthenticated {
                message,
                retry_after,
            } => (
                message.into_owned(),
                retry_after.map(|after| ErrorDetails::with_retry_info(Some(after))),
            ),
            ApiError::ResourceExhausted {
                message,
                retry_after,
                quota,
            } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                if !quota.is_empty() {
                    details.set_quota_failure(quota);
                }
                (message.into_owned(), Some(details))
            }
            ApiError::PermissionDenied(m)
            | ApiError::FailedPrecondition(m)
            | ApiError::Aborted(m)
            | ApiError::Unavailable(m)
            | ApiError::DeadlineExceeded(m) => (m.into_owned(), None),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, error.debug = ?cause, "internal error");
                (INTERNAL_MESSAGE.to_owned(), None)
            }
            ApiError::WithInfo { error, info } => {
                let (message, details) = error.message_and_details();
                let mut details = details.unwrap_or_default();
                details.set_error_info(info.reason, info.domain, info.metadata);
                (message, Some(details))
            }
        }
    }
}

/// `invalid <field>: <description>` of the first violation, and how many more.
fn invalid_request_message(violations: &[Violation]) -> String {
    let Some(first) = violations.first() else {
        return "invalid request".to_owned();
    };
    let mut message = format!("invalid {}: {}", first.field, first.description);
    if violations.len() > 1 {
        message.push_str(&format!(" (and {} more)", violations.len() - 1));
    }
    message
}

/// The first violation in the message (`invalid <field>: <description>`, and how many
/// more), all of them (up to [`MAX_VIOLATIONS`]) as `BadRequest` field violations.
fn invalid_request(violations: &[Violation]) -> (String, ErrorDetails) {
    let message = invalid_request_message(violations);
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .take(MAX_VIOLATIONS)
            .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    (message, details)
}

/// The one mapping from errors to `tonic::Status`.
impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        match err.message_and_details() {
            (message, Some(details)) => Status::with_error_details(code, message, details),
            // No `grpc-status-details-bin` trailer when there is nothing to detail.
            (message, None) => Status::new(code, message),
        }
    }
}

/// A handler's answer: the message, or its error in the suite's vocabulary. Trait impls of
/// generated services end in `respond(inner(self, request).await)`.
pub fn respond<T, E: Into<ApiError>>(result: Result<T, E>) -> Result<tonic::Response<T>, Status> {
    result
        .map(tonic::Response::new)
        .map_err(|e| Status::from(e.into()))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn violations_are_all_listed_and_internal_causes_hidden() {
        let mut violations = Violations::new();
        violations.add("email", "is required");
        violations.add("password", "is too short");
        let status = Status::from(violations.finish().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid email: is required (and 1 more)");
        let fields: Vec<_> = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["email", "password"]);

        let status = Status::from(ApiError::internal("SELECT secret FROM pg_authid"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");

        let status = Status::from(ApiError::ResourceExhausted {
            message: "slow down".into(),
            retry_after: Duration::from_secs(3),
            quota: vec![QuotaViolation::new("user", "10 calls per minute")],
        });
        let details = status.get_error_details();
        let delay = details.retry_info().and_then(|r| r.retry_delay);
        assert_eq!(delay, Some(Duration::from_secs(3)));
        let quota: Vec<_> = details
            .quota_failure()
            .map(|q| q.violations.iter().map(|v| v.subject.clone()).collect())
            .unwrap_or_default();
        assert_eq!(quota, ["user"]);

        let plain = Status::from(ApiError::not_found("agent"));
        assert!(
            plain.details().is_empty(),
            "no details trailer without details"
        );

        let status = Status::from(ApiError::not_found("agent").with_info(ErrorInfo {
            reason: "GONE".into(),
            domain: "strata.test.v1".into(),
            metadata: HashMap::new(),
        }));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "agent not found");
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.clone()),
            Some("GONE".to_owned())
        );
    }
}
