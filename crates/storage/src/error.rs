//! The storage error type and its classification for retries and for clients (how it reads
//! in the suite's error vocabulary).

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

use crate::retry::{ErrorClass, classify_sqlstate};

/// Anything that can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be checked out within the checkout timeout.
    #[error("timed out waiting for a database connection")]
    PoolTimeout,
    /// The line for a connection was full (`max_waiting`): refused without waiting.
    #[error("too many calls waiting for a database connection")]
    PoolSaturated,
    /// A new connection could not be established.
    #[error("could not connect to the database: {0}")]
    Connect(#[source] diesel::ConnectionError),
    /// A statement failed.
    #[error("database query failed: {0}")]
    Query(#[from] DieselError),
    /// Migrations could not be applied or inspected.
    #[error("migration {version}: {problem}")]
    Migration {
        /// The migration at fault.
        version: String,
        /// What went wrong.
        problem: String,
    },
}

impl From<bb8::RunError<PoolError>> for Error {
    fn from(err: bb8::RunError<PoolError>) -> Self {
        match err {
            bb8::RunError::TimedOut => Error::PoolTimeout,
            bb8::RunError::User(PoolError::ConnectionError(e)) => Error::Connect(e),
            bb8::RunError::User(PoolError::QueryError(e)) => Error::Query(e),
        }
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(err: diesel::ConnectionError) -> Self {
        Error::Connect(err)
    }
}

/// What a client is told: no row → `NOT_FOUND`, database unreachable → `UNAVAILABLE`,
/// anything else → `INTERNAL` (cause logged, never returned).
impl From<Error> for strata_errors::ApiError {
    fn from(err: Error) -> Self {
        if err.is_not_found() {
            strata_errors::ApiError::not_found("resource")
        } else if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            strata_errors::ApiError::unavailable("service temporarily unavailable, retry later")
        } else {
            strata_errors::ApiError::internal(err)
        }
    }
}

impl Error {
    /// How a failure shared by several callers (one cache load they all waited for)
    /// reads in the error vocabulary: as the failure itself would.
    pub fn shared_into_api(err: std::sync::Arc<Error>) -> strata_errors::ApiError {
        match std::sync::Arc::try_unwrap(err) {
            Ok(err) => err.into(),
            Err(shared) if shared.is_not_found() => strata_errors::ApiError::not_found("resource"),
            Err(shared) if shared.is_unavailable() => {
                tracing::warn!(error = %shared, "database unavailable");
                strata_errors::ApiError::unavailable("service temporarily unavailable, retry later")
            }
            Err(shared) => strata_errors::ApiError::internal(shared.to_string()),
        }
    }

    /// True when no row matched (`diesel::NotFound`), which services map to `NOT_FOUND`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Query(DieselError::NotFound))
    }

    /// True when the database could not be reached at all (pool timeout, connection
    /// refused or lost), which services map to `UNAVAILABLE`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::PoolTimeout | Error::PoolSaturated | Error::Connect(_) => true,
            Error::Query(_) => self.class() == ErrorClass::Transient,
            Error::Migration { .. } => false,
        }
    }

    /// The PostgreSQL SQLSTATE of a failed statement, where it can be known.
    ///
    /// diesel exposes the SQLSTATE only as a [`DatabaseErrorKind`] for a handful of
    /// codes and hides it otherwise; for the codes retries depend on we fall back to the
    /// server's message text (PostgreSQL's English messages, `lc_messages = C`/`en`).
    pub fn sqlstate(&self) -> Option<&'static str> {
        let Error::Query(DieselError::DatabaseError(kind, info)) = self else {
            return None;
        };
        Some(match kind {
            DatabaseErrorKind::UniqueViolation => "23505",
            DatabaseErrorKind::ForeignKeyViolation => "23503",
            DatabaseErrorKind::NotNullViolation => "23502",
            DatabaseErrorKind::CheckViolation => "23514",
            DatabaseErrorKind::RestrictViolation => "23001",
            DatabaseErrorKind::ExclusionViolation => "23P01",
            DatabaseErrorKind::SerializationFailure => "40001",
            DatabaseErrorKind::ReadOnlyTransaction => "25006",
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection => "08006",
            _ => sqlstate_from_message(info.message())?,
        })
    }

    /// How a retry loop should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            // The pool already waited its whole checkout timeout: the caller's deadline is
            // better spent failing fast than queueing again.
            Error::PoolTimeout => ErrorClass::Permanent,
            // Overload: retrying at once would only lengthen the line.
            Error::PoolSaturated => ErrorClass::Permanent,
            Error::Connect(_) => ErrorClass::Transient,
            Error::Query(DieselError::BrokenTransactionManager) => ErrorClass::Transient,
            Error::Query(_) => self
                .sqlstate()
                .map(classify_sqlstate)
                .unwrap_or(ErrorClass::Permanent),
            Error::Migration { .. } => ErrorClass::Permanent,
        }
    }
}

/// SQLSTATEs recovered from PostgreSQL's message text when diesel reports `Unknown`.
fn sqlstate_from_message(message: &str) -> Option<&'static str> {
    const KNOWN: &[(&str, &str)] = &[
        ("deadlock detected", "40P01"),
        ("could not serialize access", "40001"),
        (
            "terminating connection due to administrator command",
            "57P01",
        ),
        (
            "terminating connection due to crash of another server process",
            "57P02",
        ),
        ("the database system is in recovery mode", "57P02"),
        ("the database system is shutting down", "57P03"),
        ("the database system is starting up", "57P03"),
        (
            "the database system is not yet accepting connections",
            "57P03",
        ),
        ("canceling statement due to statement timeout", "57014"),
        ("canceling statement due to lock timeout", "55P03"),
        ("canceling statement due to user request", "57014"),
        ("connection closed", "08006"),
    ];
    KNOWN
        .iter()
        .find(|(text, _)| message.contains(text))
        .map(|(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Info(&'static str);

    impl diesel::result::DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db_error(kind: DatabaseErrorKind, message: &'static str) -> Error {
        Error::Query(DieselError::DatabaseError(kind, Box::new(Info(message))))
    }

    #[test]
    fn diesel_errors_map_to_sqlstates_and_classes() {
        let cases = [
            (
                db_error(DatabaseErrorKind::UniqueViolation, "dup"),
                Some("23505"),
                ErrorClass::Permanent,
            ),
            (
                db_error(DatabaseErrorKind::SerializationFailure, "x"),
                Some("40001"),
                ErrorClass::RetryTransaction,
            ),
            (
                db_error(DatabaseErrorKind::Unknown, "deadlock detected"),
                Some("40P01"),
                ErrorClass::RetryTransaction,
            ),
            (
                db_error(
                    DatabaseErrorKind::Unknown,
                    "terminating connection due to administrator command",
                ),
                Some("57P01"),
                ErrorClass::Transient,
            ),
            (
                db_error(DatabaseErrorKind::ClosedConnection, "gone"),
                Some("08006"),
                ErrorClass::Transient,
            ),
            (
                db_error(DatabaseErrorKind::UnableToSendCommand, "io"),
                Some("08006"),
                ErrorClass::Transient,
            ),
            (
                db_error(
                    DatabaseErrorKind::Unknown,
                    "canceling statement due to statement timeout",
                ),
                Some("57014"),
                ErrorClass::Permanent,
            ),
            (
                db_error(DatabaseErrorKind::Unknown, "syntax error"),
                None,
                ErrorClass::Permanent,
            ),
            (
                Error::Query(DieselError::NotFound),
                None,
                ErrorClass::Permanent,
            ),
            (Error::PoolTimeout, None, ErrorClass::Permanent),
        ];
        for (error, sqlstate, class) in cases {
            assert_eq!(error.sqlstate(), sqlstate, "{error:?}");
            assert_eq!(error.class(), class, "{error:?}");
        }
    }

    #[test]
    fn not_found_and_unavailable() {
        assert!(Error::Query(DieselError::NotFound).is_not_found());
        assert!(Error::PoolTimeout.is_unavailable());
        assert!(db_error(DatabaseErrorKind::ClosedConnection, "x").is_unavailable());
        assert!(!db_error(DatabaseErrorKind::UniqueViolation, "x").is_unavailable());
    }
}
