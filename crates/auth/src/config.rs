//! Auth settings, read like every other setting (environment, optional TOML file); each is
//! one [`Setting`] below, listed in [`SETTINGS`] (documented by `strata settings`).
//!
//! Issuer and audience (`STRATA_AUTH_ISSUER`, `STRATA_AUTH_AUDIENCE`) are read by the
//! runtime's config, since every service verifies tokens with them.

use std::time::Duration;

use serde::Deserialize;
use strata_runtime::config::{Secret, positive_duration};
use strata_runtime::identity::TokenSettings;
use strata_storage::Environment;
use strata_storage::config::ConfigError;
use strata_storage::settings::Setting;

use crate::kek::{self, Kek, KeyEncryption};

/// `STRATA_AUTH_ACCESS_TTL_SECS`
pub const ACCESS_TTL_SECS: Setting = Setting::new(
    "STRATA_AUTH_ACCESS_TTL_SECS",
    "900",
    "access-token lifetime",
);
/// `STRATA_AUTH_REFRESH_IDLE_SECS`
pub const REFRESH_IDLE_SECS: Setting = Setting::new(
    "STRATA_AUTH_REFRESH_IDLE_SECS",
    "604800 (7 days)",
    "a session ends if not refreshed for this long",
);
/// `STRATA_AUTH_REFRESH_ABSOLUTE_SECS`
pub const REFRESH_ABSOLUTE_SECS: Setting = Setting::new(
    "STRATA_AUTH_REFRESH_ABSOLUTE_SECS",
    "2592000 (30 days)",
    "a session ends this long after sign-in",
);
/// `STRATA_AUTH_KEY_ENCRYPTION_KEY`
pub const KEY_ENCRYPTION_KEY: Setting = Setting::new(
    "STRATA_AUTH_KEY_ENCRYPTION_KEY",
    "required",
    "base64 of 32 random bytes that seals the token-signing keys at rest (`make run` generates `.strata/kek`); only with `STRATA_ENV=development` set explicitly may it be left out, for a built-in, public key (with a warning)",
);
/// `STRATA_AUTH_PREVIOUS_KEY_ENCRYPTION_KEYS`
pub const PREVIOUS_KEY_ENCRYPTION_KEYS: Setting = Setting::new(
    "STRATA_AUTH_PREVIOUS_KEY_ENCRYPTION_KEYS",
    "unset",
    "comma-separated earlier keys, accepted to open what they sealed (rotation)",
);

/// Every setting of this crate, in documentation order.
pub const SETTINGS: &[Setting] = &[
    ACCESS_TTL_SECS,
    REFRESH_IDLE_SECS,
    REFRESH_ABSOLUTE_SECS,
    KEY_ENCRYPTION_KEY,
    PREVIOUS_KEY_ENCRYPTION_KEYS,
];

/// Raw settings; field names are the lower-cased variable names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthSettings {
    /// `STRATA_AUTH_ACCESS_TTL_SECS`
    pub strata_auth_access_ttl_secs: Option<u64>,
    /// `STRATA_AUTH_REFRESH_IDLE_SECS`
    pub strata_auth_refresh_idle_secs: Option<u64>,
    /// `STRATA_AUTH_REFRESH_ABSOLUTE_SECS`
    pub strata_auth_refresh_absolute_secs: Option<u64>,
    /// `STRATA_AUTH_KEY_ENCRYPTION_KEY`
    pub strata_auth_key_encryption_key: Option<Secret<String>>,
    /// `STRATA_AUTH_PREVIOUS_KEY_ENCRYPTION_KEYS`
    pub strata_auth_previous_key_encryption_keys: Option<Secret<String>>,
}

impl AuthSettings {
    /// Reads the settings from the environment and `STRATA_CONFIG_FILE`.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        strata_runtime::config::figment(SETTINGS)
            .extract()
            .map_err(Box::new)
    }

    /// Resolves defaults and checks the values; `tokens` comes from the server config,
    /// `environment` is `STRATA_ENV` as set (`None`: unset).
    pub fn resolve(
        &self,
        tokens: TokenSettings,
        environment: Option<Environment>,
    ) -> Result<AuthConfig, ConfigError> {
        let defaults = AuthConfig::default();
        let secs = |variable, value, default| {
            positive_duration(variable, value, Duration::from_secs, default)
        };
        let config = AuthConfig {
            tokens,
            access_ttl: secs(
                ACCESS_TTL_SECS.name,
                self.strata_auth_access_ttl_secs,
                defaults.access_ttl,
            )?,
            refresh_idle: secs(
                REFRESH_IDLE_SECS.name,
                self.strata_auth_refresh_idle_secs,
                defaults.refresh_idle,
            )?,
            refresh_absolute: secs(
                REFRESH_ABSOLUTE_SECS.name,
                self.strata_auth_refresh_absolute_secs,
                defaults.refresh_absolute,
            )?,
            key_encryption: self.key_encryption(environment)?,
        };
        if config.refresh_idle > config.refresh_absolute {
            return Err(ConfigError {
                variable: REFRESH_IDLE_SECS.name,
                problem: "must not exceed STRATA_AUTH_REFRESH_ABSOLUTE_SECS".into(),
            });
        }
        Ok(config)
    }
}

impl AuthSettings {
    /// The KEKs: the configured one (required unless `STRATA_ENV=development` is set
    /// explicitly, which falls back to the built-in key), the previous ones, and outside
    /// production the built-in key as a previous one (so configuring a real key re-seals
    /// what ran without one).
    fn key_encryption(
        &self,
        environment: Option<Environment>,
    ) -> Result<KeyEncryption, ConfigError> {
        let parse = |variable: &'static str, text: &str| {
            Kek::parse(text).map_err(|problem| ConfigError { variable, problem })
        };
        let development = kek::development_kek();
        let production = environment == Some(Environment::Production);
        let current = match (&self.strata_auth_key_encryption_key, environment) {
            (Some(text), _) if !text.expose().trim().is_empty() => {
                parse(KEY_ENCRYPTION_KEY.name, text.expose())?
            }
            // Only a deliberate development setting falls back to the public key: a
            // deployment that forgot STRATA_ENV must not seal its keys with it.
            (_, Some(Environment::Development)) => development.clone(),
            _ => {
                return Err(ConfigError {
                    variable: KEY_ENCRYPTION_KEY.name,
                    problem: "is required (the key-encryption key of the signing keys: \
                              generate one with `head -c 32 /dev/urandom | base64`), unless \
                              STRATA_ENV=development, which uses a built-in, public key"
                        .into(),
                });
            }
        };
        if production && current.id() == development.id() {
            return Err(ConfigError {
                variable: KEY_ENCRYPTION_KEY.name,
                problem: "must not be the built-in development key in production".into(),
            });
        }
        let mut previous = Vec::new();
        if let Some(list) = &self.strata_auth_previous_key_encryption_keys {
            for text in list.expose().split(',').filter(|t| !t.trim().is_empty()) {
                previous.push(parse(PREVIOUS_KEY_ENCRYPTION_KEYS.name, text)?);
            }
        }
        if !production && current.id() != development.id() {
            previous.push(development);
        }
        Ok(KeyEncryption::new(current, previous))
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
    /// The key-encryption keys of the signing keys.
    pub key_encryption: KeyEncryption,
}

impl AuthConfig {
    /// Whether the signing keys are sealed with the built-in development KEK.
    pub fn uses_development_kek(&self) -> bool {
        self.key_encryption.current().id() == kek::development_kek().id()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: TokenSettings::default(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_idle: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute: Duration::from_secs(30 * 24 * 3600),
            key_encryption: KeyEncryption::new(kek::development_kek(), Vec::new()),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn settings(current: Option<&str>, previous: Option<&str>) -> AuthSettings {
        AuthSettings {
            strata_auth_key_encryption_key: current.map(|c| Secret::new(c.to_owned())),
            strata_auth_previous_key_encryption_keys: previous.map(|p| Secret::new(p.to_owned())),
            ..AuthSettings::default()
        }
    }

    #[test]
    fn production_requires_a_real_kek_and_errors_never_echo_it() {
        let resolve = |s: &AuthSettings, env| s.resolve(TokenSettings::default(), Some(env));
        let err = resolve(&settings(None, None), Environment::Production).unwrap_err();
        assert_eq!(err.variable, KEY_ENCRYPTION_KEY.name);
        // Unset STRATA_ENV is no excuse either.
        let err = settings(None, None)
            .resolve(TokenSettings::default(), None)
            .unwrap_err();
        assert_eq!(err.variable, KEY_ENCRYPTION_KEY.name);
        let development =
            base64::engine::general_purpose::STANDARD.encode(b"strata development KEK: NOT SAFE");
        let err =
            resolve(&settings(Some(&development), None), Environment::Production).unwrap_err();
        assert_eq!(err.variable, KEY_ENCRYPTION_KEY.name);
        let short = "c2hvcnQ=";
        let err = resolve(&settings(Some(short), None), Environment::Production).unwrap_err();
        assert!(!err.to_string().contains(short), "{err}");
        let real = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let config = resolve(&settings(Some(&real), None), Environment::Production).unwrap();
        assert!(!config.uses_development_kek());
        let printed = format!("{config:?}");
        assert!(
            !printed.contains(&real) && !printed.contains("7, 7"),
            "{printed}"
        );
        let err = resolve(
            &settings(Some(&real), Some("nope,")),
            Environment::Production,
        )
        .unwrap_err();
        assert_eq!(err.variable, PREVIOUS_KEY_ENCRYPTION_KEYS.name);
        // Development runs without one, on the built-in key, with a warning at start.
        let config = resolve(&settings(None, None), Environment::Development).unwrap();
        assert!(config.uses_development_kek());
    }
}
