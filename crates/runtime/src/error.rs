//! Errors of the bootstrap (configuration, sockets, telemetry, migrations at start-up), and
//! how they read in the suite's error vocabulary ([`strata_errors::ApiError`]) when an
//! admin RPC meets one. Handlers of every service answer through `strata_errors`; this
//! crate re-exports it as [`api`] for them.

pub use strata_errors as api;
use strata_errors::ApiError;

/// Errors raised by the bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The deployment lacks something the process needs (a URL, reflection data).
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

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::FailedPrecondition(message) => ApiError::failed_precondition(message),
            Error::Storage(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    #[test]
    fn storage_failures_read_as_the_vocabulary_says_and_hide_causes() {
        let leaky = strata_storage::Error::Migration {
            version: "v".into(),
            problem: "SELECT secret FROM pg_authid".into(),
        };
        let status = Status::from(ApiError::from(Error::Storage(leaky)));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");

        let status = Status::from(ApiError::from(Error::Storage(
            strata_storage::Error::PoolTimeout,
        )));
        assert_eq!(status.code(), Code::Unavailable);

        let status = Status::from(ApiError::from(Error::FailedPrecondition("no url".into())));
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
}
