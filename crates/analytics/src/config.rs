//! Analytics settings, read like every other setting (environment, optional TOML file);
//! each is one [`Setting`] below, listed in [`SETTINGS`] (documented by `strata settings`).

use std::time::Duration;

use serde::Deserialize;
use strata_runtime::config::positive_duration;
use strata_storage::config::ConfigError;
use strata_storage::settings::Setting;

/// `STRATA_ANALYTICS_SUMMARY_REFRESH_SECS`
pub const SUMMARY_REFRESH_SECS: Setting = Setting::new(
    "STRATA_ANALYTICS_SUMMARY_REFRESH_SECS",
    "60",
    "longest interval between folds of new usage into the `user_token_summary` table",
);
/// `STRATA_ANALYTICS_PROJECT_STATS_REFRESH_SECS`
pub const PROJECT_STATS_REFRESH_SECS: Setting = Setting::new(
    "STRATA_ANALYTICS_PROJECT_STATS_REFRESH_SECS",
    "60",
    "longest interval between folds of new usage into the `project_stats` table",
);
/// `STRATA_ANALYTICS_REFRESH_AFTER_ROWS`
pub const REFRESH_AFTER_ROWS: Setting = Setting::new(
    "STRATA_ANALYTICS_REFRESH_AFTER_ROWS",
    "10000",
    "fold sooner, at the next tick, once this many usage rows arrived since the last fold (0: on the interval only)",
);
/// `STRATA_ANALYTICS_SCHEDULER`
pub const SCHEDULER: Setting = Setting::new(
    "STRATA_ANALYTICS_SCHEDULER",
    "true",
    "run summary folds and partition upkeep in this process (safe on every replica: one folds a summary at a time)",
);
/// `STRATA_ANALYTICS_TICK_SECS`
pub const TICK_SECS: Setting = Setting::new(
    "STRATA_ANALYTICS_TICK_SECS",
    "1",
    "how often the scheduler looks for due work",
);
/// `STRATA_ANALYTICS_PARTITIONS_AHEAD`
pub const PARTITIONS_AHEAD: Setting = Setting::new(
    "STRATA_ANALYTICS_PARTITIONS_AHEAD",
    "3",
    "months of ledger partitions created ahead of time",
);
/// `STRATA_ANALYTICS_REFRESH_TIMEOUT_SECS`
pub const REFRESH_TIMEOUT_SECS: Setting = Setting::new(
    "STRATA_ANALYTICS_REFRESH_TIMEOUT_SECS",
    "1800",
    "statement timeout of one fold (the first, over a large ledger, is the long one)",
);

/// Every setting of this crate, in documentation order.
pub const SETTINGS: &[Setting] = &[
    SUMMARY_REFRESH_SECS,
    PROJECT_STATS_REFRESH_SECS,
    REFRESH_AFTER_ROWS,
    SCHEDULER,
    TICK_SECS,
    PARTITIONS_AHEAD,
    REFRESH_TIMEOUT_SECS,
];

/// Most months of partitions kept ahead.
const MAX_PARTITIONS_AHEAD: u32 = 24;

/// Raw settings; field names are the lower-cased variable names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AnalyticsSettings {
    /// `STRATA_ANALYTICS_SUMMARY_REFRESH_SECS`
    pub strata_analytics_summary_refresh_secs: Option<u64>,
    /// `STRATA_ANALYTICS_PROJECT_STATS_REFRESH_SECS`
    pub strata_analytics_project_stats_refresh_secs: Option<u64>,
    /// `STRATA_ANALYTICS_REFRESH_AFTER_ROWS`
    pub strata_analytics_refresh_after_rows: Option<u64>,
    /// `STRATA_ANALYTICS_SCHEDULER`
    pub strata_analytics_scheduler: Option<bool>,
    /// `STRATA_ANALYTICS_TICK_SECS`
    pub strata_analytics_tick_secs: Option<u64>,
    /// `STRATA_ANALYTICS_PARTITIONS_AHEAD`
    pub strata_analytics_partitions_ahead: Option<u32>,
    /// `STRATA_ANALYTICS_REFRESH_TIMEOUT_SECS`
    pub strata_analytics_refresh_timeout_secs: Option<u64>,
}

impl AnalyticsSettings {
    /// Reads the settings from the environment and `STRATA_CONFIG_FILE`.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        strata_runtime::config::figment(SETTINGS)
            .extract()
            .map_err(Box::new)
    }

    /// Resolves defaults and checks the values.
    pub fn resolve(&self) -> Result<AnalyticsConfig, ConfigError> {
        let defaults = AnalyticsConfig::default();
        let secs = |variable, value, default| {
            positive_duration(variable, value, Duration::from_secs, default)
        };
        let partitions_ahead = match self.strata_analytics_partitions_ahead {
            Some(n) if n > MAX_PARTITIONS_AHEAD => {
                return Err(ConfigError {
                    variable: PARTITIONS_AHEAD.name,
                    problem: format!("must be at most {MAX_PARTITIONS_AHEAD}"),
                });
            }
            Some(n) => n,
            None => defaults.partitions_ahead,
        };
        Ok(AnalyticsConfig {
            summary_refresh: secs(
                SUMMARY_REFRESH_SECS.name,
                self.strata_analytics_summary_refresh_secs,
                defaults.summary_refresh,
            )?,
            project_stats_refresh: secs(
                PROJECT_STATS_REFRESH_SECS.name,
                self.strata_analytics_project_stats_refresh_secs,
                defaults.project_stats_refresh,
            )?,
            refresh_after_rows: self
                .strata_analytics_refresh_after_rows
                .unwrap_or(defaults.refresh_after_rows),
            scheduler: self
                .strata_analytics_scheduler
                .unwrap_or(defaults.scheduler),
            tick: secs(
                TICK_SECS.name,
                self.strata_analytics_tick_secs,
                defaults.tick,
            )?,
            partitions_ahead,
            refresh_timeout: secs(
                REFRESH_TIMEOUT_SECS.name,
                self.strata_analytics_refresh_timeout_secs,
                defaults.refresh_timeout,
            )?,
        })
    }
}

/// Resolved analytics settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// Interval between scheduled refreshes of `user_token_summary`.
    pub summary_refresh: Duration,
    /// Interval between scheduled refreshes of `project_stats`.
    pub project_stats_refresh: Duration,
    /// A summary is due once this many rows arrived since its last cut (0: never early).
    pub refresh_after_rows: u64,
    /// Whether this process runs the scheduler.
    pub scheduler: bool,
    /// How often the scheduler looks for due work.
    pub tick: Duration,
    /// Months of partitions kept ready beyond the current one.
    pub partitions_ahead: u32,
    /// Statement timeout of one refresh.
    pub refresh_timeout: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            summary_refresh: Duration::from_secs(60),
            project_stats_refresh: Duration::from_secs(60),
            refresh_after_rows: 10_000,
            scheduler: true,
            tick: Duration::from_secs(1),
            partitions_ahead: 3,
            refresh_timeout: Duration::from_secs(30 * 60),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let config = AnalyticsSettings::default().resolve().unwrap();
        assert_eq!(config, AnalyticsConfig::default());
        assert_eq!(config.summary_refresh, Duration::from_secs(60));
        assert_eq!(config.project_stats_refresh, Duration::from_secs(60));
        assert_eq!(config.refresh_after_rows, 10_000);

        let zero = AnalyticsSettings {
            strata_analytics_tick_secs: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.resolve().unwrap_err().variable, TICK_SECS.name);
        let far = AnalyticsSettings {
            strata_analytics_partitions_ahead: Some(100),
            ..Default::default()
        };
        assert_eq!(far.resolve().unwrap_err().variable, PARTITIONS_AHEAD.name);
    }
}
