//! Process configuration, read from the environment and optionally a TOML file; each
//! variable is one [`Setting`] below, listed in [`SETTINGS`] (the database's are in
//! [`strata_storage::config`]; `strata settings` prints them all).
//!
//! `STRATA_CONFIG_FILE` names a TOML file whose keys are the lower-cased variable names
//! (`strata_listen_addr = "0.0.0.0:50051"`); environment variables override it.

use std::net::SocketAddr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
pub use strata_storage::Secret;
use strata_storage::config::{ConfigError, DbSettings};
use strata_storage::settings::Setting;
use strata_storage::{DbConfig, Environment};

use crate::layers::RateLimits;

/// `STRATA_CONFIG_FILE`
pub const CONFIG_FILE: Setting = Setting::new("STRATA_CONFIG_FILE", "unset", "optional TOML file");
/// `STRATA_LISTEN_ADDR`
pub const LISTEN_ADDR: Setting = Setting::new(
    "STRATA_LISTEN_ADDR",
    "`127.0.0.1:50051`",
    "gRPC address (`:0` picks a free port)",
);
/// `STRATA_REQUEST_TIMEOUT_MS`
pub const REQUEST_TIMEOUT_MS: Setting = Setting::new(
    "STRATA_REQUEST_TIMEOUT_MS",
    "30000",
    "deadline of every call (a shorter client `grpc-timeout` wins)",
);
/// `STRATA_MAX_MESSAGE_BYTES`
pub const MAX_MESSAGE_BYTES: Setting = Setting::new(
    "STRATA_MAX_MESSAGE_BYTES",
    "4194304",
    "largest request message",
);
/// `STRATA_SHUTDOWN_GRACE_MS`
pub const SHUTDOWN_GRACE_MS: Setting = Setting::new(
    "STRATA_SHUTDOWN_GRACE_MS",
    "30000",
    "on SIGTERM/Ctrl-C, how long in-flight calls may finish",
);
/// `STRATA_HEALTH_INTERVAL_MS`
pub const HEALTH_INTERVAL_MS: Setting = Setting::new(
    "STRATA_HEALTH_INTERVAL_MS",
    "5000",
    "how often health re-checks the database",
);
/// `STRATA_MIGRATE_ON_START`
pub const MIGRATE_ON_START: Setting = Setting::new(
    "STRATA_MIGRATE_ON_START",
    "true",
    "apply pending migrations before serving",
);
/// `STRATA_ADMIN_TOKEN`
pub const ADMIN_TOKEN: Setting = Setting::new(
    "STRATA_ADMIN_TOKEN",
    "unset",
    "break-glass bearer token for `strata.admin.v1`, honoured only by processes that know no auth service (e.g. `strata serve admin` without `STRATA_AUTH_URL`); otherwise the ADMIN role is required",
);
/// `STRATA_AUTH_URL`
pub const AUTH_URL: Setting = Setting::new(
    "STRATA_AUTH_URL",
    "this process, when it serves auth",
    "where the auth service is: every service fetches its public keys (JWKS) there and asks it when Redis cannot confirm a session",
);
/// `STRATA_CONTENT_URL`
pub const CONTENT_URL: Setting = Setting::new(
    "STRATA_CONTENT_URL",
    "this process, when it serves content",
    "where the content service is: analytics asks it who owns a project before showing the project's usage (with the caller's credentials and trace context)",
);
/// `STRATA_ANALYTICS_URL`
pub const ANALYTICS_URL: Setting = Setting::new(
    "STRATA_ANALYTICS_URL",
    "this process, when it serves analytics",
    "where the analytics service is: content's usage shipper sends the token usage of messages there (RecordUsage, with trace context)",
);
/// `STRATA_AUTH_ISSUER`
pub const AUTH_ISSUER: Setting = Setting::new(
    "STRATA_AUTH_ISSUER",
    "`strata-auth`",
    "`iss` of access tokens",
);
/// `STRATA_AUTH_AUDIENCE`
pub const AUTH_AUDIENCE: Setting =
    Setting::new("STRATA_AUTH_AUDIENCE", "`strata`", "`aud` of access tokens");
/// `REDIS_URL`
pub const REDIS_URL: Setting = Setting::new("REDIS_URL", "unset", "Redis; unset runs without it");
/// `STRATA_REDIS_PREFIX`
pub const REDIS_PREFIX: Setting = Setting::new(
    "STRATA_REDIS_PREFIX",
    "`strata:`",
    "prefix of every Redis key",
);
/// `STRATA_LOG_FORMAT`
pub const LOG_FORMAT: Setting = Setting::new(
    "STRATA_LOG_FORMAT",
    "`auto`",
    "`auto` (`pretty` with colours when stderr is a terminal, `plain` otherwise: no ANSI codes in files), `pretty`, `plain` or `json`",
);
/// `RUST_LOG`
pub const LOG_FILTER: Setting = Setting::new(
    "RUST_LOG",
    "`info`",
    "log filter, e.g. `info,strata_storage=debug`",
);
/// `OTEL_EXPORTER_OTLP_ENDPOINT`
pub const OTLP_ENDPOINT: Setting = Setting::new(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "unset",
    "OTLP/gRPC collector for traces, e.g. `http://localhost:4317`",
);
/// `STRATA_TRACE_FILTER`
pub const TRACE_FILTER: Setting = Setting::new(
    "STRATA_TRACE_FILTER",
    "`strata=info`",
    "which spans are exported: Strata's request spans, one span per SQL statement (text with `$n` placeholders) and one client span per call to another service",
);
/// `OTEL_BSP_SCHEDULE_DELAY`
pub const TRACE_EXPORT_INTERVAL_MS: Setting = Setting::new(
    "OTEL_BSP_SCHEDULE_DELAY",
    "5000",
    "milliseconds between two exports of finished spans",
);

/// `STRATA_CACHE_DEGRADED_TTL_MS`
pub const CACHE_DEGRADED_TTL_MS: Setting = Setting::new(
    "STRATA_CACHE_DEGRADED_TTL_MS",
    "1000",
    "longest life of an in-memory cache entry while other replicas' invalidations cannot be received (Redis away): how stale a read may be then",
);

/// `STRATA_RATE_LIMIT_AUTHENTICATED`
pub const RATE_LIMIT_AUTHENTICATED: Setting = Setting::new(
    "STRATA_RATE_LIMIT_AUTHENTICATED",
    "`120/min`",
    "calls per API key, else per user (`<calls>/<period>`: `s`, `min`, `h`, `d`, e.g. `100/10s`, at most one call per microsecond; or `off`)",
);
/// `STRATA_RATE_LIMIT_USER`
pub const RATE_LIMIT_USER: Setting = Setting::new(
    "STRATA_RATE_LIMIT_USER",
    "`600/min`",
    "calls per user over all of their API keys and sessions",
);
/// `STRATA_RATE_LIMIT_UNAUTHENTICATED`
pub const RATE_LIMIT_UNAUTHENTICATED: Setting = Setting::new(
    "STRATA_RATE_LIMIT_UNAUTHENTICATED",
    "`30/min`",
    "calls per client address without a verified identity (sign-up, login, token refresh)",
);
/// `STRATA_RATE_LIMIT_SIGN_IN`
pub const RATE_LIMIT_SIGN_IN: Setting = Setting::new(
    "STRATA_RATE_LIMIT_SIGN_IN",
    "`10/min`",
    "`SignUp` and `Login` calls per client address, on top of the unauthenticated limit",
);
/// `STRATA_RATE_LIMIT_COSTS`
pub const RATE_LIMIT_COSTS: Setting = Setting::new(
    "STRATA_RATE_LIMIT_COSTS",
    "`VerifyToken` and `GetJwks` 0, `ChangePassword` 5, `ExplainQuery` 5, `RefreshViews` 10, others 1",
    "units a call uses, `package.Service/Method=cost`, comma-separated, over the defaults; 0 exempts a method",
);
/// `STRATA_TRUSTED_PROXIES`
pub const TRUSTED_PROXIES: Setting = Setting::new(
    "STRATA_TRUSTED_PROXIES",
    "none",
    "addresses or CIDR blocks (comma-separated) whose `x-forwarded-for` names the client for rate limiting; from any other peer the header is ignored",
);

/// Every setting of this crate, in documentation order.
pub const SETTINGS: &[Setting] = &[
    CONFIG_FILE,
    LISTEN_ADDR,
    REQUEST_TIMEOUT_MS,
    MAX_MESSAGE_BYTES,
    SHUTDOWN_GRACE_MS,
    HEALTH_INTERVAL_MS,
    MIGRATE_ON_START,
    ADMIN_TOKEN,
    AUTH_URL,
    CONTENT_URL,
    ANALYTICS_URL,
    AUTH_ISSUER,
    AUTH_AUDIENCE,
    REDIS_URL,
    REDIS_PREFIX,
    CACHE_DEGRADED_TTL_MS,
    RATE_LIMIT_AUTHENTICATED,
    RATE_LIMIT_USER,
    RATE_LIMIT_UNAUTHENTICATED,
    RATE_LIMIT_SIGN_IN,
    RATE_LIMIT_COSTS,
    TRUSTED_PROXIES,
    LOG_FORMAT,
    LOG_FILTER,
    OTLP_ENDPOINT,
    TRACE_FILTER,
    TRACE_EXPORT_INTERVAL_MS,
];

/// The configuration sources: `STRATA_CONFIG_FILE` (if set), then the environment
/// variables of `settings` on top of it (others in the environment are ignored). Service
/// crates extract their own settings structs from it, with their own `SETTINGS`.
pub fn figment(settings: &'static [Setting]) -> Figment {
    let mut figment = Figment::new();
    if let Ok(path) = std::env::var(CONFIG_FILE.name) {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment.merge(Env::raw().filter(|key| {
        settings
            .iter()
            .any(|s| key.as_str().eq_ignore_ascii_case(s.name))
    }))
}

/// A duration setting that must be positive: `value` in the unit `unit` makes (e.g.
/// `Duration::from_secs`), or `default` when the variable is unset.
pub fn positive_duration(
    variable: &'static str,
    value: Option<u64>,
    unit: fn(u64) -> Duration,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(0) => Err(ConfigError {
            variable,
            problem: "must be positive".into(),
        }),
        Some(v) => Ok(unit(v)),
        None => Ok(default),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `Pretty` when stderr is a terminal, `Plain` otherwise (a file, a pipe).
    #[default]
    Auto,
    /// Human-readable with colours, for terminals (colours only when stderr is one).
    Pretty,
    /// Human-readable, no colours: no ANSI codes in files.
    Plain,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Raw settings as read: every knob optional. Field names are lower-cased variable names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    /// Database variables (extracted on their own so errors keep the variable name).
    #[serde(skip)]
    pub db: DbSettings,
    /// `STRATA_LISTEN_ADDR`
    pub strata_listen_addr: Option<String>,
    /// `STRATA_REQUEST_TIMEOUT_MS`
    pub strata_request_timeout_ms: Option<u64>,
    /// `STRATA_MAX_MESSAGE_BYTES`
    pub strata_max_message_bytes: Option<usize>,
    /// `STRATA_SHUTDOWN_GRACE_MS`
    pub strata_shutdown_grace_ms: Option<u64>,
    /// `STRATA_HEALTH_INTERVAL_MS`
    pub strata_health_interval_ms: Option<u64>,
    /// `STRATA_MIGRATE_ON_START`
    pub strata_migrate_on_start: Option<bool>,
    /// `STRATA_ADMIN_TOKEN`
    #[serde(default, deserialize_with = "lenient_secret")]
    pub strata_admin_token: Option<Secret<String>>,
    /// `STRATA_AUTH_URL`
    pub strata_auth_url: Option<String>,
    /// `STRATA_CONTENT_URL`
    pub strata_content_url: Option<String>,
    /// `STRATA_ANALYTICS_URL`
    pub strata_analytics_url: Option<String>,
    /// `STRATA_AUTH_ISSUER`
    pub strata_auth_issuer: Option<String>,
    /// `STRATA_AUTH_AUDIENCE`
    pub strata_auth_audience: Option<String>,
    /// `REDIS_URL`
    pub redis_url: Option<Secret<String>>,
    /// `STRATA_REDIS_PREFIX`
    pub strata_redis_prefix: Option<String>,
    /// `STRATA_CACHE_DEGRADED_TTL_MS`
    pub strata_cache_degraded_ttl_ms: Option<u64>,
    /// `STRATA_RATE_LIMIT_AUTHENTICATED`
    pub strata_rate_limit_authenticated: Option<String>,
    /// `STRATA_RATE_LIMIT_USER`
    pub strata_rate_limit_user: Option<String>,
    /// `STRATA_RATE_LIMIT_UNAUTHENTICATED`
    pub strata_rate_limit_unauthenticated: Option<String>,
    /// `STRATA_RATE_LIMIT_SIGN_IN`
    pub strata_rate_limit_sign_in: Option<String>,
    /// `STRATA_RATE_LIMIT_COSTS`
    pub strata_rate_limit_costs: Option<String>,
    /// `STRATA_TRUSTED_PROXIES`
    pub strata_trusted_proxies: Option<String>,
    /// `STRATA_LOG_FORMAT`
    pub strata_log_format: Option<LogFormat>,
    /// `RUST_LOG`
    pub rust_log: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `STRATA_TRACE_FILTER`
    pub strata_trace_filter: Option<String>,
    /// `OTEL_BSP_SCHEDULE_DELAY`
    pub otel_bsp_schedule_delay: Option<u64>,
}

/// Tokens may look like numbers; figment parses such environment values as integers.
fn lenient_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Secret<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
        Float(f64),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| {
        Secret::new(match raw {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        })
    }))
}

impl Settings {
    /// Reads `STRATA_CONFIG_FILE` (if set), then the environment on top of it.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        let mut settings: Settings = figment(SETTINGS).extract().map_err(Box::new)?;
        settings.db = figment(strata_storage::config::SETTINGS)
            .extract()
            .map_err(Box::new)?;
        Ok(settings)
    }

    /// Resolves defaults for the service called `service`.
    pub fn resolve(&self, service: &str) -> Result<ServerConfig, ConfigError> {
        let listen = self
            .strata_listen_addr
            .as_deref()
            .unwrap_or("127.0.0.1:50051");
        let listen_addr = listen.parse().map_err(|_| ConfigError {
            variable: LISTEN_ADDR.name,
            problem: format!("{listen:?} is not an IP:port address"),
        })?;
        let positive = |variable: &'static str, value: Option<u64>, default: u64| {
            positive_duration(
                variable,
                value,
                Duration::from_millis,
                Duration::from_millis(default),
            )
        };
        Ok(ServerConfig {
            service: service.to_owned(),
            environment: self.db.strata_env.unwrap_or_default(),
            listen_addr,
            request_timeout: positive(
                REQUEST_TIMEOUT_MS.name,
                self.strata_request_timeout_ms,
                30_000,
            )?,
            max_message_bytes: self.strata_max_message_bytes.unwrap_or(4 * 1024 * 1024),
            shutdown_grace: positive(
                SHUTDOWN_GRACE_MS.name,
                self.strata_shutdown_grace_ms,
                30_000,
            )?,
            health_interval: positive(
                HEALTH_INTERVAL_MS.name,
                self.strata_health_interval_ms,
                5_000,
            )?,
            migrate_on_start: self.strata_migrate_on_start.unwrap_or(true),
            admin_token: self
                .strata_admin_token
                .clone()
                .filter(|t| !t.expose().is_empty()),
            redis_url: self.redis_url.clone().filter(|u| !u.expose().is_empty()),
            auth_url: self.strata_auth_url.clone().filter(|u| !u.is_empty()),
            content_url: self.strata_content_url.clone().filter(|u| !u.is_empty()),
            analytics_url: self.strata_analytics_url.clone().filter(|u| !u.is_empty()),
            tokens: crate::identity::TokenSettings {
                issuer: self
                    .strata_auth_issuer
                    .clone()
                    .unwrap_or_else(|| crate::identity::TokenSettings::default().issuer),
                audience: self
                    .strata_auth_audience
                    .clone()
                    .unwrap_or_else(|| crate::identity::TokenSettings::default().audience),
                ..crate::identity::TokenSettings::default()
            },
            redis_prefix: self
                .strata_redis_prefix
                .clone()
                .unwrap_or_else(|| "strata:".into()),
            cache: strata_cache::CacheConfig {
                degraded_l1_ttl: positive(
                    CACHE_DEGRADED_TTL_MS.name,
                    self.strata_cache_degraded_ttl_ms,
                    1_000,
                )?,
                ..strata_cache::CacheConfig::default()
            },
            rate_limits: self.rate_limits()?,
            log_format: self.strata_log_format.unwrap_or_default(),
            log_filter: self.rust_log.clone().unwrap_or_else(|| "info".into()),
            otlp_endpoint: self
                .otel_exporter_otlp_endpoint
                .clone()
                .filter(|e| !e.is_empty()),
            trace_filter: self
                .strata_trace_filter
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| DEFAULT_TRACE_FILTER.into()),
            trace_export_interval: positive(
                TRACE_EXPORT_INTERVAL_MS.name,
                self.otel_bsp_schedule_delay,
                5_000,
            )?,
            db: self.db.resolve(&format!("strata-{service}"))?,
        })
    }
}

impl Settings {
    /// The rate limits, defaults for what is unset.
    fn rate_limits(&self) -> Result<RateLimits, ConfigError> {
        let limits = self.rate_limits_unchecked()?;
        limits.check_costs().map_err(|problem| ConfigError {
            variable: RATE_LIMIT_COSTS.name,
            problem,
        })?;
        Ok(limits)
    }

    fn rate_limits_unchecked(&self) -> Result<RateLimits, ConfigError> {
        let defaults = RateLimits::default();
        let policy = |setting: &Setting,
                      value: &Option<String>,
                      default: &Option<std::sync::Arc<strata_ratelimit::Policy>>,
                      name: &str| {
            match value.as_deref() {
                None => Ok(default.clone()),
                Some(value) => {
                    RateLimits::parse_policy(name, value).map_err(|problem| ConfigError {
                        variable: setting.name,
                        problem,
                    })
                }
            }
        };
        Ok(RateLimits {
            authenticated: policy(
                &RATE_LIMIT_AUTHENTICATED,
                &self.strata_rate_limit_authenticated,
                &defaults.authenticated,
                "authenticated",
            )?,
            user: policy(
                &RATE_LIMIT_USER,
                &self.strata_rate_limit_user,
                &defaults.user,
                "user",
            )?,
            unauthenticated: policy(
                &RATE_LIMIT_UNAUTHENTICATED,
                &self.strata_rate_limit_unauthenticated,
                &defaults.unauthenticated,
                "unauthenticated",
            )?,
            sign_in: policy(
                &RATE_LIMIT_SIGN_IN,
                &self.strata_rate_limit_sign_in,
                &defaults.sign_in,
                "sign_in",
            )?,
            costs: match self.strata_rate_limit_costs.as_deref() {
                None => defaults.costs,
                Some(value) => RateLimits::parse_costs(value, &strata_proto::method_paths())
                    .map_err(|problem| ConfigError {
                        variable: RATE_LIMIT_COSTS.name,
                        problem,
                    })?,
            },
            trusted_proxies: RateLimits::parse_proxies(
                self.strata_trusted_proxies.as_deref().unwrap_or_default(),
            )
            .map_err(|problem| ConfigError {
                variable: TRUSTED_PROXIES.name,
                problem,
            })?,
        })
    }
}

/// Everything a Strata process needs, defaults resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name of the service set this process serves (`all`, `auth`, …).
    pub service: String,
    /// Deployment flavour.
    pub environment: Environment,
    /// Listen address.
    pub listen_addr: SocketAddr,
    /// Server-side deadline of every RPC.
    pub request_timeout: Duration,
    /// Largest request message accepted.
    pub max_message_bytes: usize,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Health re-check period.
    pub health_interval: Duration,
    /// Apply pending migrations before serving.
    pub migrate_on_start: bool,
    /// Admin bearer token.
    pub admin_token: Option<Secret<String>>,
    /// Auth service URL (`None`: this process, when it serves auth).
    pub auth_url: Option<String>,
    /// Content service URL (`None`: this process, when it serves content).
    pub content_url: Option<String>,
    /// Analytics service URL (`None`: this process, when it serves analytics).
    pub analytics_url: Option<String>,
    /// Issuer and audience of access tokens.
    pub tokens: crate::identity::TokenSettings,
    /// Redis URL.
    pub redis_url: Option<Secret<String>>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// The caches' shared settings.
    pub cache: strata_cache::CacheConfig,
    /// Rate limits of every call.
    pub rate_limits: RateLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_filter: String,
    /// OTLP endpoint.
    pub otlp_endpoint: Option<String>,
    /// Which spans are exported.
    pub trace_filter: String,
    /// Time between two exports of finished spans.
    pub trace_export_interval: Duration,
    /// Database.
    pub db: DbConfig,
}

/// Spans exported by default: Strata's own, at INFO and above.
pub const DEFAULT_TRACE_FILTER: &str = "strata=info";

impl ServerConfig {
    /// Defaults for a test or tool: `database_url`, listening on `127.0.0.1:0`.
    pub fn for_database(service: &str, database_url: &str) -> Self {
        let settings = Settings {
            db: DbSettings {
                database_url: Some(Secret::new(database_url.to_owned())),
                ..DbSettings::default()
            },
            strata_listen_addr: Some("127.0.0.1:0".into()),
            ..Settings::default()
        };
        match settings.resolve(service) {
            Ok(config) => config,
            // Only reachable with a malformed URL; fall back to the raw defaults.
            Err(_) => ServerConfig {
                service: service.to_owned(),
                environment: Environment::Development,
                listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                request_timeout: Duration::from_secs(30),
                max_message_bytes: 4 * 1024 * 1024,
                shutdown_grace: Duration::from_secs(30),
                health_interval: Duration::from_secs(5),
                migrate_on_start: true,
                admin_token: None,
                redis_url: None,
                auth_url: None,
                content_url: None,
                analytics_url: None,
                tokens: crate::identity::TokenSettings::default(),
                redis_prefix: "strata:".into(),
                cache: strata_cache::CacheConfig::default(),
                rate_limits: RateLimits::default(),
                log_format: LogFormat::Auto,
                log_filter: "info".into(),
                otlp_endpoint: None,
                trace_filter: DEFAULT_TRACE_FILTER.into(),
                trace_export_interval: Duration::from_secs(5),
                db: DbConfig::new(database_url, service, Environment::Development),
            },
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
mod tests {
    use super::*;

    #[test]
    fn loads_from_environment_and_file_with_env_winning() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "strata.toml",
                "strata_listen_addr = \"0.0.0.0:1\"\nstrata_request_timeout_ms = 1000\n",
            )?;
            jail.set_env(CONFIG_FILE.name, "strata.toml");
            jail.set_env("DATABASE_URL", "postgres://u:pw@h/db");
            jail.set_env("STRATA_REQUEST_TIMEOUT_MS", "2500");
            jail.set_env("STRATA_ADMIN_TOKEN", "123456");
            jail.set_env("STRATA_ENV", "production");
            jail.set_env("STRATA_DB_MAX_CONNECTIONS", "33");
            let config = Settings::load().map_err(|e| *e)?.resolve("svc").unwrap();
            assert_eq!(config.listen_addr, "0.0.0.0:1".parse().unwrap());
            assert_eq!(config.request_timeout, Duration::from_millis(2500));
            assert_eq!(
                config.admin_token.as_ref().map(|t| t.expose().as_str()),
                Some("123456")
            );
            assert_eq!(config.db.max_connections, 33);
            assert_eq!(config.db.min_idle, 5);
            assert_eq!(config.db.application_name, "strata-svc");
            assert!(!format!("{config:?}").contains("pw@"));
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_reported_with_their_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://h/db");
            jail.set_env("STRATA_LISTEN_ADDR", "nonsense");
            assert_eq!(
                Settings::load()
                    .map_err(|e| *e)?
                    .resolve("s")
                    .unwrap_err()
                    .variable,
                LISTEN_ADDR.name
            );
            jail.set_env("STRATA_DB_MAX_CONNECTIONS", "many");
            let err = Settings::load().unwrap_err();
            assert!(
                err.to_string().contains("STRATA_DB_MAX_CONNECTIONS"),
                "{err}"
            );
            Ok(())
        });
    }
}
