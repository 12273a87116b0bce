//! `grpc.health.v1` status that follows the database.
//!
//! A background task pings the database every `STRATA_HEALTH_INTERVAL_MS` and sets every
//! registered service name (and the overall `""` entry) to `SERVING` or `NOT_SERVING`.
//! Redis does not count: the suite keeps working without it.

use std::time::Duration;

use strata_storage::Db;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Pings `db` every `interval` and publishes the result for `names` until aborted.
pub fn spawn_monitor(
    reporter: HealthReporter,
    db: Db,
    names: Vec<String>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // The ping must not outlive the period, or a hung database would freeze health.
            let healthy = matches!(
                tokio::time::timeout(interval.max(Duration::from_millis(500)), db.ping()).await,
                Ok(Ok(_))
            );
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last != Some(status) {
                tracing::info!(health.serving = healthy, "health status changed");
                set_all(&reporter, &names, status).await;
                last = Some(status);
            }
        }
    })
}

/// Sets `status` for the overall entry and every name.
pub async fn set_all(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}
