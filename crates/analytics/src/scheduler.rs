//! The background work of every analytics replica: keeping partitions ahead of time and
//! folding new usage into the summaries when due (on time, or on volume: enough rows
//! arrived, so the raw tail real-time reads add stays short under heavy ingest). Every
//! replica may run it; the summaries' advisory locks and the "still due?" check under
//! them make a summary fold once per turn whatever the number of replicas.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use strata_storage::Db;

use crate::config::AnalyticsConfig;
use crate::error::AnalyticsError;
use crate::partitions::{Partitions, months_ahead};
use crate::views::{self, Contention, Due, Outcome, Refresher, ViewName};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    db: Db,
    refresher: Refresher,
    partitions: Arc<Partitions>,
    config: AnalyticsConfig,
}

impl Scheduler {
    /// A scheduler over `db`, refreshing with `refresher`.
    pub fn new(
        db: Db,
        refresher: Refresher,
        partitions: Arc<Partitions>,
        config: AnalyticsConfig,
    ) -> Self {
        Self {
            db,
            refresher,
            partitions,
            config,
        }
    }

    /// The configured interval of `view`.
    pub fn interval(&self, view: ViewName) -> Duration {
        match view {
            ViewName::UserTokenSummary => self.config.summary_refresh,
            ViewName::ProjectStats => self.config.project_stats_refresh,
        }
    }

    /// When `view` is due: its interval, or the configured volume of new rows.
    pub fn due_rule(&self, view: ViewName) -> Due {
        Due {
            interval: self.interval(view),
            after_rows: self.config.refresh_after_rows,
        }
    }

    /// One round: partitions ahead, then every due view. Returns what each view did; a
    /// failed view does not stop the others.
    ///
    /// Most rounds find nothing to do, and then cost one pooled query per view: months
    /// known to exist are not asked about, and a refresh connection is only opened for a
    /// view that is due (and checked again under its lock).
    pub async fn tick(&self) -> Vec<(ViewName, Result<Outcome, AnalyticsError>)> {
        let months = self
            .partitions
            .unknown(months_ahead(Utc::now(), self.config.partitions_ahead));
        if !months.is_empty() {
            let created = async {
                let mut conn = self.db.get().await?;
                self.partitions.ensure(&mut conn, months).await?;
                Ok::<_, AnalyticsError>(())
            };
            if let Err(e) = created.await {
                tracing::warn!(error = %e, "could not create token_usage partitions ahead; will retry");
            }
        }
        let mut outcomes = Vec::new();
        for view in ViewName::ALL {
            let outcome = match self.due(view).await {
                Ok(false) => Ok(Outcome::NotDue),
                Ok(true) => {
                    self.refresher
                        .refresh(view, Contention::Skip, Some(self.due_rule(view)))
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &outcome {
                tracing::warn!(view = view.as_str(), error = %e, "view refresh failed; will retry");
            }
            outcomes.push((view, outcome));
        }
        outcomes
    }

    async fn due(&self, view: ViewName) -> Result<bool, AnalyticsError> {
        let mut conn = self.db.get().await?;
        views::is_due(&mut conn, view, self.due_rule(view)).await
    }

    /// Whether this replica runs the `analytics.scheduler` task (`STRATA_ANALYTICS_SCHEDULER`).
    pub fn enabled(&self) -> bool {
        self.config.scheduler
    }

    /// How often the task ticks.
    pub fn every(&self) -> Duration {
        self.config.tick
    }

    /// One round of the `analytics.scheduler` task: [`tick`](Self::tick), failing when a
    /// view could not be refreshed (each failure is logged by the tick).
    pub async fn round(&self) -> Result<(), AnalyticsError> {
        let failed = self.tick().await.into_iter().find_map(|(_, o)| o.err());
        failed.map_or(Ok(()), Err)
    }
}
