//! Typed database configuration; each variable is one [`Setting`] below, listed in
//! [`SETTINGS`] (documented by `strata settings`).
//!
//! Read by the runtime's config loader from the environment (or a TOML file); every
//! variable is optional except `DATABASE_URL`, and `STRATA_ENV` picks the defaults.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::Setting;

/// `DATABASE_URL`
pub const DATABASE_URL: Setting = Setting::new(
    "DATABASE_URL",
    "required",
    "`postgres://user[:password]@host:port/db`",
);
/// `STRATA_ENV`
pub const STRATA_ENV: Setting = Setting::new(
    "STRATA_ENV",
    "`development`",
    "`development` or `production`; picks the pool defaults below",
);
/// `STRATA_DB_MAX_CONNECTIONS`
pub const DB_MAX_CONNECTIONS: Setting = Setting::new(
    "STRATA_DB_MAX_CONNECTIONS",
    "10 (production: 20)",
    "pool size",
);
/// `STRATA_DB_MIN_IDLE`
pub const DB_MIN_IDLE: Setting = Setting::new(
    "STRATA_DB_MIN_IDLE",
    "2 (production: 5)",
    "idle connections kept open",
);
/// `STRATA_DB_CHECKOUT_TIMEOUT_MS`
pub const DB_CHECKOUT_TIMEOUT_MS: Setting = Setting::new(
    "STRATA_DB_CHECKOUT_TIMEOUT_MS",
    "5000",
    "how long a call waits for a connection before `UNAVAILABLE`",
);
/// `STRATA_DB_MAX_WAITING`
pub const DB_MAX_WAITING: Setting = Setting::new(
    "STRATA_DB_MAX_WAITING",
    "1024",
    "calls that may queue for a connection at once (first come, first served); more are refused at once with `UNAVAILABLE`",
);
/// `STRATA_DB_IDLE_TIMEOUT_SECS`
pub const DB_IDLE_TIMEOUT_SECS: Setting = Setting::new(
    "STRATA_DB_IDLE_TIMEOUT_SECS",
    "600",
    "idle connections above the minimum close after this (0: never)",
);
/// `STRATA_DB_MAX_LIFETIME_SECS`
pub const DB_MAX_LIFETIME_SECS: Setting = Setting::new(
    "STRATA_DB_MAX_LIFETIME_SECS",
    "1800",
    "connections are replaced after this age (0: never)",
);
/// `STRATA_DB_STATEMENT_TIMEOUT_MS`
pub const DB_STATEMENT_TIMEOUT_MS: Setting = Setting::new(
    "STRATA_DB_STATEMENT_TIMEOUT_MS",
    "30000",
    "`statement_timeout` of every connection",
);
/// `STRATA_DB_TEST_ON_CHECKOUT`
pub const DB_TEST_ON_CHECKOUT: Setting = Setting::new(
    "STRATA_DB_TEST_ON_CHECKOUT",
    "true",
    "validate a connection before handing it out: a closed one never is; one idle longer than the bypass below runs `SELECT 1` first",
);
/// `STRATA_DB_VALIDATION_BYPASS_MS`
pub const DB_VALIDATION_BYPASS_MS: Setting = Setting::new(
    "STRATA_DB_VALIDATION_BYPASS_MS",
    "500",
    "a connection whose last query succeeded this recently is handed out without `SELECT 1` (0: always validate)",
);
/// `STRATA_DB_SHARED_CONNECTIONS`
pub const DB_SHARED_CONNECTIONS: Setting = Setting::new(
    "STRATA_DB_SHARED_CONNECTIONS",
    "2",
    "connections outside the pool that many calls use at once for their key lookups (the per-call session check), pipelined: one write and one read carry many calls' statements (0: those lookups use the pool)",
);
/// `STRATA_DB_SLOW_QUERY_WARN_MS`
pub const DB_SLOW_QUERY_WARN_MS: Setting = Setting::new(
    "STRATA_DB_SLOW_QUERY_WARN_MS",
    "100",
    "slower queries are logged at WARN (SQL text, never values)",
);
/// `STRATA_DB_SLOW_QUERY_ERROR_MS`
pub const DB_SLOW_QUERY_ERROR_MS: Setting = Setting::new(
    "STRATA_DB_SLOW_QUERY_ERROR_MS",
    "500",
    "slower queries are logged at ERROR",
);

/// Every setting of this crate, in documentation order.
pub const SETTINGS: &[Setting] = &[
    DATABASE_URL,
    STRATA_ENV,
    DB_MAX_CONNECTIONS,
    DB_MIN_IDLE,
    DB_CHECKOUT_TIMEOUT_MS,
    DB_MAX_WAITING,
    DB_IDLE_TIMEOUT_SECS,
    DB_MAX_LIFETIME_SECS,
    DB_STATEMENT_TIMEOUT_MS,
    DB_TEST_ON_CHECKOUT,
    DB_VALIDATION_BYPASS_MS,
    DB_SHARED_CONNECTIONS,
    DB_SLOW_QUERY_WARN_MS,
    DB_SLOW_QUERY_ERROR_MS,
];

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call sites are the places to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Deployment flavour; picks defaults that each variable can still override.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine or a test run: small pool.
    #[default]
    Development,
    /// A deployed replica: larger pool.
    Production,
}

/// Database knobs as read from the environment or a file: all optional, resolved into a
/// [`DbConfig`] by [`DbSettings::resolve`]. Field names are the lower-cased variable names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DbSettings {
    /// `DATABASE_URL`
    pub database_url: Option<Secret<String>>,
    /// `STRATA_ENV`
    pub strata_env: Option<Environment>,
    /// `STRATA_DB_MAX_CONNECTIONS`
    pub strata_db_max_connections: Option<u32>,
    /// `STRATA_DB_MIN_IDLE`
    pub strata_db_min_idle: Option<u32>,
    /// `STRATA_DB_CHECKOUT_TIMEOUT_MS`
    pub strata_db_checkout_timeout_ms: Option<u64>,
    /// `STRATA_DB_MAX_WAITING`
    pub strata_db_max_waiting: Option<u32>,
    /// `STRATA_DB_IDLE_TIMEOUT_SECS`
    pub strata_db_idle_timeout_secs: Option<u64>,
    /// `STRATA_DB_MAX_LIFETIME_SECS`
    pub strata_db_max_lifetime_secs: Option<u64>,
    /// `STRATA_DB_STATEMENT_TIMEOUT_MS`
    pub strata_db_statement_timeout_ms: Option<u64>,
    /// `STRATA_DB_TEST_ON_CHECKOUT`
    pub strata_db_test_on_checkout: Option<bool>,
    /// `STRATA_DB_VALIDATION_BYPASS_MS`
    pub strata_db_validation_bypass_ms: Option<u64>,
    /// `STRATA_DB_SHARED_CONNECTIONS`
    pub strata_db_shared_connections: Option<u32>,
    /// `STRATA_DB_SLOW_QUERY_WARN_MS`
    pub strata_db_slow_query_warn_ms: Option<u64>,
    /// `STRATA_DB_SLOW_QUERY_ERROR_MS`
    pub strata_db_slow_query_error_ms: Option<u64>,
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl DbSettings {
    /// Fills in defaults for `application_name` (the service's name, shown in
    /// `pg_stat_activity`) and checks the values that can be checked without a server.
    pub fn resolve(&self, application_name: &str) -> Result<DbConfig, ConfigError> {
        let env = self.strata_env.unwrap_or_default();
        let url = self.database_url.clone().ok_or(ConfigError {
            variable: DATABASE_URL.name,
            problem: "is not set".into(),
        })?;
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            return Err(ConfigError {
                variable: DATABASE_URL.name,
                problem: "must start with postgres:// or postgresql://".into(),
            });
        }
        let mut config = DbConfig::new(url.expose().clone(), application_name, env);
        if let Some(v) = self.strata_db_max_connections {
            config.max_connections = v;
        }
        if let Some(v) = self.strata_db_min_idle {
            config.min_idle = v;
        }
        if let Some(v) = self.strata_db_checkout_timeout_ms {
            config.checkout_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.strata_db_max_waiting {
            config.max_waiting = v;
        }
        if let Some(v) = self.strata_db_idle_timeout_secs {
            config.idle_timeout = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = self.strata_db_max_lifetime_secs {
            config.max_lifetime = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = self.strata_db_statement_timeout_ms {
            config.statement_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.strata_db_test_on_checkout {
            config.test_on_checkout = v;
        }
        if let Some(v) = self.strata_db_validation_bypass_ms {
            config.validation_bypass = Duration::from_millis(v);
        }
        if let Some(v) = self.strata_db_shared_connections {
            config.shared_connections = v;
        }
        if let Some(v) = self.strata_db_slow_query_warn_ms {
            config.slow_query.warn = Duration::from_millis(v);
        }
        if let Some(v) = self.strata_db_slow_query_error_ms {
            config.slow_query.error = Duration::from_millis(v);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Thresholds of the slow-query log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowQueryThresholds {
    /// Logged at WARN from this duration.
    pub warn: Duration,
    /// Logged at ERROR from this duration.
    pub error: Duration,
}

/// Everything needed to build the pool, with defaults resolved.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// Connection string; may hold a password.
    pub url: Secret<String>,
    /// `application_name` of every connection (the service's name).
    pub application_name: String,
    /// Pool upper bound.
    pub max_connections: u32,
    /// Idle connections kept open.
    pub min_idle: u32,
    /// How long a checkout waits before failing with `UNAVAILABLE`.
    pub checkout_timeout: Duration,
    /// Checkouts that may wait at once; the next is refused at once with `UNAVAILABLE`.
    /// Waiters are served first come, first served, so this bounds the wait too.
    pub max_waiting: u32,
    /// Idle connections above `min_idle` are closed after this.
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this age.
    pub max_lifetime: Option<Duration>,
    /// Server-side `statement_timeout` set on every new connection.
    pub statement_timeout: Duration,
    /// Run `SELECT 1` on checkout, so a connection killed server-side is replaced instead
    /// of failing the request that drew it.
    pub test_on_checkout: bool,
    /// With `test_on_checkout`, a connection whose last query succeeded less than this
    /// ago skips `SELECT 1` (a connection the server closed is still never handed out).
    pub validation_bypass: Duration,
    /// Connections outside the pool shared by many calls at once, for single key lookups
    /// (see [`crate::Db::shared`]); 0: those use the pool.
    pub shared_connections: u32,
    /// Slow-query log thresholds.
    pub slow_query: SlowQueryThresholds,
}

impl DbConfig {
    /// The defaults of `env` for `url`.
    pub fn new(url: impl Into<String>, application_name: &str, env: Environment) -> Self {
        let (max_connections, min_idle) = match env {
            Environment::Development => (10, 2),
            Environment::Production => (20, 5),
        };
        Self {
            url: Secret::new(url.into()),
            application_name: sanitize_application_name(application_name),
            max_connections,
            min_idle,
            checkout_timeout: Duration::from_secs(5),
            max_waiting: 1024,
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            statement_timeout: Duration::from_secs(30),
            test_on_checkout: true,
            validation_bypass: Duration::from_millis(500),
            shared_connections: 2,
            slow_query: SlowQueryThresholds {
                warn: Duration::from_millis(100),
                error: Duration::from_millis(500),
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |variable, problem: &str| {
            Err(ConfigError {
                variable,
                problem: problem.to_owned(),
            })
        };
        if self.max_connections == 0 {
            return fail(DB_MAX_CONNECTIONS.name, "must be at least 1");
        }
        if self.min_idle > self.max_connections {
            return fail(
                DB_MIN_IDLE.name,
                "must not exceed STRATA_DB_MAX_CONNECTIONS",
            );
        }
        if self.checkout_timeout.is_zero() {
            return fail(DB_CHECKOUT_TIMEOUT_MS.name, "must be positive");
        }
        if self.slow_query.error < self.slow_query.warn {
            return fail(
                DB_SLOW_QUERY_ERROR_MS.name,
                "must not be below STRATA_DB_SLOW_QUERY_WARN_MS",
            );
        }
        Ok(())
    }
}

/// `application_name` is interpolated into a `SET`; keep it to a safe alphabet and
/// PostgreSQL's 63-byte limit.
fn sanitize_application_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn settings(url: &str) -> DbSettings {
        DbSettings {
            database_url: Some(Secret::new(url.to_owned())),
            ..DbSettings::default()
        }
    }

    #[test]
    fn environment_picks_pool_defaults_and_variables_override_them() {
        let dev = settings("postgres://x/y").resolve("svc").unwrap();
        assert_eq!((dev.max_connections, dev.min_idle), (10, 2));
        let mut prod = settings("postgres://x/y");
        prod.strata_env = Some(Environment::Production);
        let resolved = prod.resolve("svc").unwrap();
        assert_eq!((resolved.max_connections, resolved.min_idle), (20, 5));
        assert_eq!(resolved.checkout_timeout, Duration::from_secs(5));
        assert_eq!(resolved.max_lifetime, Some(Duration::from_secs(1800)));
        assert_eq!(resolved.statement_timeout, Duration::from_secs(30));
        prod.strata_db_max_connections = Some(50);
        prod.strata_db_idle_timeout_secs = Some(0);
        let resolved = prod.resolve("svc").unwrap();
        assert_eq!(resolved.max_connections, 50);
        assert_eq!(resolved.idle_timeout, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(
            DbSettings::default().resolve("s").unwrap_err().variable,
            DATABASE_URL.name
        );
        assert_eq!(
            settings("mysql://x").resolve("s").unwrap_err().variable,
            DATABASE_URL.name
        );
        let mut s = settings("postgres://x/y");
        s.strata_db_min_idle = Some(11);
        assert_eq!(s.resolve("s").unwrap_err().variable, DB_MIN_IDLE.name);
    }

    #[test]
    fn secrets_never_print() {
        let config = settings("postgres://u:hunter2@h/d")
            .resolve("a'; DROP")
            .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.application_name, "aDROP");
    }
}
