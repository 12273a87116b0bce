//! Auth settings, read like every other setting (environment, optional TOML file):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `STRATA_AUTH_ACCESS_TTL_SECS` | 900 | access-token lifetime |
//! | `STRATA_AUTH_REFRESH_IDLE_SECS` | 604800 (7 days) | a session ends if not refreshed for this long |
//! | `STRATA_AUTH_REFRESH_ABSOLUTE_SECS` | 2592000 (30 days) | a session ends this long after sign-in, whatever happens |
//!
//! Issuer and audience (`STRATA_AUTH_ISSUER`, `STRATA_AUTH_AUDIENCE`) are read by the
//! runtime's config, since every service verifies tokens with them.

use std::time::Duration;

use serde::Deserialize;
use strata_runtime::auth::TokenSettings;
use strata_runtime::config::positive_duration;
use strata_storage::config::ConfigError;

/// `STRATA_AUTH_ACCESS_TTL_SECS`
pub const ACCESS_TTL_SECS: &str = "STRATA_AUTH_ACCESS_TTL_SECS";
/// `STRATA_AUTH_REFRESH_IDLE_SECS`
pub const REFRESH_IDLE_SECS: &str = "STRATA_AUTH_REFRESH_IDLE_SECS";
/// `STRATA_AUTH_REFRESH_ABSOLUTE_SECS`
pub const REFRESH_ABSOLUTE_SECS: &str = "STRATA_AUTH_REFRESH_ABSOLUTE_SECS";

const KNOWN: &[&str] = &[ACCESS_TTL_SECS, REFRESH_IDLE_SECS, REFRESH_ABSOLUTE_SECS];

/// Raw settings; field names are the lower-cased variable names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthSettings {
    /// `STRATA_AUTH_ACCESS_TTL_SECS`
    pub strata_auth_access_ttl_secs: Option<u64>,
    /// `STRATA_AUTH_REFRESH_IDLE_SECS`
    pub strata_auth_refresh_idle_secs: Option<u64>,
    /// `STRATA_AUTH_REFRESH_ABSOLUTE_SECS`
    pub strata_auth_refresh_absolute_secs: Option<u64>,
}

impl AuthSettings {
    /// Reads the settings from the environment and `STRATA_CONFIG_FILE`.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        strata_runtime::config::figment(KNOWN)
            .extract()
            .map_err(Box::new)
    }

    /// Resolves defaults and checks the values; `tokens` comes from the server config.
    pub fn resolve(&self, tokens: TokenSettings) -> Result<AuthConfig, ConfigError> {
        let defaults = AuthConfig::default();
        let secs = |variable, value, default| {
            positive_duration(variable, value, Duration::from_secs, default)
        };
        let config = AuthConfig {
            tokens,
            access_ttl: secs(
                ACCESS_TTL_SECS,
                self.strata_auth_access_ttl_secs,
                defaults.access_ttl,
            )?,
            refresh_idle: secs(
                REFRESH_IDLE_SECS,
                self.strata_auth_refresh_idle_secs,
                defaults.refresh_idle,
            )?,
            refresh_absolute: secs(
                REFRESH_ABSOLUTE_SECS,
                self.strata_auth_refresh_absolute_secs,
                defaults.refresh_absolute,
            )?,
        };
        if config.refresh_idle > config.refresh_absolute {
            return Err(ConfigError {
                variable: REFRESH_IDLE_SECS,
                problem: "must not exceed STRATA_AUTH_REFRESH_ABSOLUTE_SECS".into(),
            });
        }
        Ok(config)
    }
}

/// Resolved auth settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Issuer, audience and leeway of access tokens.
    pub tokens: TokenSettings,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Idle expiry of sessions and refresh tokens.
    pub refresh_idle: Duration,
    /// Absolute expiry of sessions.
    pub refresh_absolute: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: TokenSettings::default(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_idle: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute: Duration::from_secs(30 * 24 * 3600),
        }
    }
}
