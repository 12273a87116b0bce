//! Retry of transient database errors with capped exponential backoff and full jitter.
//!
//! Classification is by SQLSTATE ([`classify_sqlstate`]):
//! - class `08` (connection exception), `57P01`–`57P03` (admin shutdown, crash shutdown,
//!   cannot connect now) and closed connections are [`ErrorClass::Transient`];
//! - `40001` (serialization failure) and `40P01` (deadlock) are
//!   [`ErrorClass::RetryTransaction`]: the whole transaction must run again;
//! - everything else — constraint violations (`23xxx`), `57014` (statement timeout or
//!   cancel), syntax errors — is [`ErrorClass::Permanent`] and never retried.
//!
//! [`retry`] re-runs a whole unit of work, so only give it idempotent or keyed work: a
//! connection lost during `COMMIT` leaves it unknown whether the commit happened.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// How a failed database operation may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection or server went away; a fresh connection may succeed.
    Transient,
    /// The transaction lost a serialization or deadlock race; rerun it from the start.
    RetryTransaction,
    /// Retrying cannot help.
    Permanent,
}

/// Classifies a five-character SQLSTATE.
pub fn classify_sqlstate(sqlstate: &str) -> ErrorClass {
    match sqlstate {
        "40001" | "40P01" => ErrorClass::RetryTransaction,
        "57P01" | "57P02" | "57P03" => ErrorClass::Transient,
        s if s.starts_with("08") => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Errors that know whether retrying them can help.
pub trait Retryable {
    /// This error's class.
    fn class(&self) -> ErrorClass;
}

impl Retryable for crate::Error {
    fn class(&self) -> ErrorClass {
        crate::Error::class(self)
    }
}

/// Bounded attempts with capped exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles each retry.
    pub base_delay: Duration,
    /// Upper bound of any one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (1-based): uniformly random in
    /// `[0, min(max_delay, base_delay * 2^(retry-1))]` ("full jitter"), so replicas that
    /// failed together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Runs `op` until it succeeds, fails permanently, or `policy.max_attempts` are spent.
/// Each retry is logged at WARN with the operation name, attempt and backoff.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, operation: &str, mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable + std::fmt::Display,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < policy.max_attempts && err.class() != ErrorClass::Permanent => {
                let delay = policy.backoff(attempt);
                tracing::warn!(
                    db.operation = operation,
                    retry.attempt = attempt,
                    retry.class = ?err.class(),
                    retry.backoff_ms = delay.as_millis() as u64,
                    error = %err,
                    "retrying database operation"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn sqlstate_classes() {
        for code in [
            "08000", "08003", "08006", "08001", "08P01", "57P01", "57P02", "57P03",
        ] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Transient, "{code}");
        }
        for code in ["40001", "40P01"] {
            assert_eq!(
                classify_sqlstate(code),
                ErrorClass::RetryTransaction,
                "{code}"
            );
        }
        for code in [
            "23505", "23503", "23502", "23514", "57014", "42601", "42P01", "22001", "40002",
            "57000",
        ] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        for retry in 1..40 {
            let ceiling = Duration::from_millis(10 * 2u64.pow((retry - 1).min(20)))
                .min(Duration::from_millis(100));
            let delays: Vec<_> = (0..50).map(|_| policy.backoff(retry)).collect();
            assert!(
                delays.iter().all(|d| *d <= ceiling),
                "retry {retry}: {delays:?}"
            );
            assert!(
                delays.iter().any(|d| *d != delays[0]),
                "retry {retry} is not jittered"
            );
        }
    }

    #[derive(Debug)]
    struct Fake(ErrorClass);

    impl Retryable for Fake {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    impl std::fmt::Display for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_transient_until_success_and_stops_at_the_bound() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, Fake> = retry(&fast(), "t", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                Err(Fake(ErrorClass::Transient))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(result.ok(), Some(3));

        let calls = AtomicU32::new(0);
        let result: Result<(), Fake> = retry(&fast(), "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Fake(ErrorClass::RetryTransaction))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Fake> = retry(&fast(), "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Fake(ErrorClass::Permanent))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
