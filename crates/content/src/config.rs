//! Content settings, read like every other setting (environment, optional TOML file); each
//! is one [`Setting`] below, listed in [`SETTINGS`] (documented by `strata settings`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use strata_runtime::clock::{Clock, SystemClock};
use strata_runtime::config::positive_duration;
use strata_storage::Secret;
use strata_storage::config::ConfigError;
use strata_storage::settings::Setting;

/// `STRATA_CONTENT_MAX_FILE_BYTES`
pub const MAX_FILE_BYTES: Setting = Setting::new(
    "STRATA_CONTENT_MAX_FILE_BYTES",
    "1048576",
    "largest file content BatchUpsertFiles accepts, in bytes (INVALID_ARGUMENT above)",
);
/// `STRATA_CONTENT_MAX_BATCH_FILES`
pub const MAX_BATCH_FILES: Setting = Setting::new(
    "STRATA_CONTENT_MAX_BATCH_FILES",
    "1000",
    "most files one BatchUpsertFiles or DeleteFiles may name (RESOURCE_EXHAUSTED above)",
);
/// `STRATA_CONTENT_MAX_PROJECT_FILES`
pub const MAX_PROJECT_FILES: Setting = Setting::new(
    "STRATA_CONTENT_MAX_PROJECT_FILES",
    "100000",
    "most files of one project (RESOURCE_EXHAUSTED above)",
);
/// `STRATA_CONTENT_VIEW_FOLD_SECS`
pub const VIEW_FOLD_SECS: Setting = Setting::new(
    "STRATA_CONTENT_VIEW_FOLD_SECS",
    "2",
    "how often the unique viewers counted in Redis are folded into the projects' view counts",
);
/// `STRATA_CONTENT_TRENDING_SECS`
pub const TRENDING_SECS: Setting = Setting::new(
    "STRATA_CONTENT_TRENDING_SECS",
    "60",
    "how often the trending rank of the projects active in the last 7 days is recomputed",
);

/// `STRATA_CONTENT_USAGE_KEY`
pub const USAGE_KEY: Setting = Setting::new(
    "STRATA_CONTENT_USAGE_KEY",
    "unset (`make run` makes one)",
    "API key the usage shipper sends messages' token usage to analytics with: a key of an admin account with the `usage:write` scope (`strata auth service-key`); unset, usage waits in the outbox and the task reports it",
);
/// `STRATA_CONTENT_USAGE_SHIP_MS`
pub const USAGE_SHIP_MS: Setting = Setting::new(
    "STRATA_CONTENT_USAGE_SHIP_MS",
    "1000",
    "how often the usage shipper looks for usage to send to analytics (it sends everything due, in batches of 500)",
);
/// `STRATA_CONTENT_USAGE_MAX_BACKOFF_MS`
pub const USAGE_MAX_BACKOFF_MS: Setting = Setting::new(
    "STRATA_CONTENT_USAGE_MAX_BACKOFF_MS",
    "30000",
    "longest pause of the usage shipper while analytics fails (the pause doubles from the shipping interval up to this)",
);

/// `STRATA_CONTENT_RETENTION_SECS`
pub const RETENTION_SECS: Setting = Setting::new(
    "STRATA_CONTENT_RETENTION_SECS",
    "600",
    "how often conversations' retention policies are applied (archiving, then deleting, in batches)",
);

/// `STRATA_CONTENT_LEASE_SWEEP_MS`
pub const LEASE_SWEEP_MS: Setting = Setting::new(
    "STRATA_CONTENT_LEASE_SWEEP_MS",
    "1000",
    "how often running tasks whose lease ran out are handed back to the queue (or failed when their attempts are spent)",
);
/// `STRATA_CONTENT_WORKFLOW_KEEP_DAYS`
pub const WORKFLOW_KEEP_DAYS: Setting = Setting::new(
    "STRATA_CONTENT_WORKFLOW_KEEP_DAYS",
    "30",
    "how long finished workflows (and their tasks) are kept before the cleanup task deletes them",
);
/// `STRATA_CONTENT_WORKFLOW_CLEANUP_SECS`
pub const WORKFLOW_CLEANUP_SECS: Setting = Setting::new(
    "STRATA_CONTENT_WORKFLOW_CLEANUP_SECS",
    "600",
    "how often finished workflows older than STRATA_CONTENT_WORKFLOW_KEEP_DAYS are deleted, in batches",
);

/// Every setting of this crate, in documentation order.
pub const SETTINGS: &[Setting] = &[
    MAX_FILE_BYTES,
    MAX_BATCH_FILES,
    MAX_PROJECT_FILES,
    VIEW_FOLD_SECS,
    TRENDING_SECS,
    USAGE_KEY,
    USAGE_SHIP_MS,
    USAGE_MAX_BACKOFF_MS,
    RETENTION_SECS,
    LEASE_SWEEP_MS,
    WORKFLOW_KEEP_DAYS,
    WORKFLOW_CLEANUP_SECS,
];

/// Raw settings; field names are the lower-cased variable names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContentSettings {
    /// `STRATA_CONTENT_MAX_FILE_BYTES`
    pub strata_content_max_file_bytes: Option<u64>,
    /// `STRATA_CONTENT_MAX_BATCH_FILES`
    pub strata_content_max_batch_files: Option<u64>,
    /// `STRATA_CONTENT_MAX_PROJECT_FILES`
    pub strata_content_max_project_files: Option<u64>,
    /// `STRATA_CONTENT_VIEW_FOLD_SECS`
    pub strata_content_view_fold_secs: Option<u64>,
    /// `STRATA_CONTENT_TRENDING_SECS`
    pub strata_content_trending_secs: Option<u64>,
    /// `STRATA_CONTENT_USAGE_KEY`
    pub strata_content_usage_key: Option<Secret<String>>,
    /// `STRATA_CONTENT_USAGE_SHIP_MS`
    pub strata_content_usage_ship_ms: Option<u64>,
    /// `STRATA_CONTENT_USAGE_MAX_BACKOFF_MS`
    pub strata_content_usage_max_backoff_ms: Option<u64>,
    /// `STRATA_CONTENT_RETENTION_SECS`
    pub strata_content_retention_secs: Option<u64>,
    /// `STRATA_CONTENT_LEASE_SWEEP_MS`
    pub strata_content_lease_sweep_ms: Option<u64>,
    /// `STRATA_CONTENT_WORKFLOW_KEEP_DAYS`
    pub strata_content_workflow_keep_days: Option<u64>,
    /// `STRATA_CONTENT_WORKFLOW_CLEANUP_SECS`
    pub strata_content_workflow_cleanup_secs: Option<u64>,
}

impl ContentSettings {
    /// Reads the settings from the environment and `STRATA_CONFIG_FILE`.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        strata_runtime::config::figment(SETTINGS)
            .extract()
            .map_err(Box::new)
    }

    /// Resolves defaults and checks the values.
    pub fn resolve(&self) -> Result<ContentConfig, ConfigError> {
        let defaults = ContentConfig::default();
        let count = |setting: Setting, value: Option<u64>, default: usize, max: u64| match value {
            Some(0) => Err(ConfigError {
                variable: setting.name,
                problem: "must be positive".into(),
            }),
            Some(n) if n > max => Err(ConfigError {
                variable: setting.name,
                problem: format!("must be at most {max}"),
            }),
            Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            None => Ok(default),
        };
        let secs = |setting: Setting, value, default| {
            positive_duration(setting.name, value, Duration::from_secs, default)
        };
        let millis = |setting: Setting, value, default| {
            positive_duration(setting.name, value, Duration::from_millis, default)
        };
        Ok(ContentConfig {
            max_file_bytes: count(
                MAX_FILE_BYTES,
                self.strata_content_max_file_bytes,
                defaults.max_file_bytes,
                64 << 20,
            )?,
            max_batch_files: count(
                MAX_BATCH_FILES,
                self.strata_content_max_batch_files,
                defaults.max_batch_files,
                10_000,
            )?,
            max_project_files: count(
                MAX_PROJECT_FILES,
                self.strata_content_max_project_files,
                defaults.max_project_files,
                10_000_000,
            )?,
            view_fold: secs(
                VIEW_FOLD_SECS,
                self.strata_content_view_fold_secs,
                defaults.view_fold,
            )?,
            trending: secs(
                TRENDING_SECS,
                self.strata_content_trending_secs,
                defaults.trending,
            )?,
            usage_key: self
                .strata_content_usage_key
                .clone()
                .filter(|k| !k.expose().is_empty()),
            usage_ship: millis(
                USAGE_SHIP_MS,
                self.strata_content_usage_ship_ms,
                defaults.usage_ship,
            )?,
            usage_max_backoff: millis(
                USAGE_MAX_BACKOFF_MS,
                self.strata_content_usage_max_backoff_ms,
                defaults.usage_max_backoff,
            )?,
            retention: secs(
                RETENTION_SECS,
                self.strata_content_retention_secs,
                defaults.retention,
            )?,
            watch: defaults.watch,
            workflows: crate::workflows::Settings {
                sweep: millis(
                    LEASE_SWEEP_MS,
                    self.strata_content_lease_sweep_ms,
                    defaults.workflows.sweep,
                )?,
                keep: positive_duration(
                    WORKFLOW_KEEP_DAYS.name,
                    self.strata_content_workflow_keep_days,
                    |days| Duration::from_secs(days.saturating_mul(86_400)),
                    defaults.workflows.keep,
                )?,
                cleanup: secs(
                    WORKFLOW_CLEANUP_SECS,
                    self.strata_content_workflow_cleanup_secs,
                    defaults.workflows.cleanup,
                )?,
            },
            clock: defaults.clock,
        })
    }
}

/// Resolved content settings.
#[derive(Debug, Clone)]
pub struct ContentConfig {
    /// Largest file content, in bytes.
    pub max_file_bytes: usize,
    /// Most files of one batch.
    pub max_batch_files: usize,
    /// Most files of one project.
    pub max_project_files: usize,
    /// Interval between folds of views.
    pub view_fold: Duration,
    /// Interval between recomputations of the trending rank.
    pub trending: Duration,
    /// The usage shipper's API key (`None`: usage waits in the outbox).
    pub usage_key: Option<Secret<String>>,
    /// Interval between the usage shipper's rounds.
    pub usage_ship: Duration,
    /// Longest pause of the usage shipper while analytics fails.
    pub usage_max_backoff: Duration,
    /// Interval between retention rounds.
    pub retention: Duration,
    /// What a conversation watcher holds for a slow client, and for how long.
    pub watch: crate::watch::Limits,
    /// The task queue's intervals and retention.
    pub workflows: crate::workflows::Settings,
    /// The time of workflows and tasks (ready times, backoff, leases, retention):
    /// tests move a manual clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 1 << 20,
            max_batch_files: 1000,
            max_project_files: 100_000,
            view_fold: Duration::from_secs(2),
            trending: Duration::from_secs(60),
            usage_key: None,
            usage_ship: Duration::from_secs(1),
            usage_max_backoff: Duration::from_secs(30),
            retention: Duration::from_secs(600),
            watch: crate::watch::Limits::default(),
            workflows: crate::workflows::Settings::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let config = ContentSettings::default().resolve().unwrap();
        assert_eq!(
            format!("{config:?}"),
            format!("{:?}", ContentConfig::default())
        );
        let zero = ContentSettings {
            strata_content_max_batch_files: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.resolve().unwrap_err().variable, MAX_BATCH_FILES.name);
        let huge = ContentSettings {
            strata_content_max_file_bytes: Some(1 << 40),
            ..Default::default()
        };
        assert_eq!(huge.resolve().unwrap_err().variable, MAX_FILE_BYTES.name);
    }
}
