//! Background deletion of what can no longer be used: refresh tokens past their expiry
//! and sessions that expired or were revoked, once a grace period has passed (kept a day
//! so a replayed token still finds its family and triggers reuse detection while it could
//! matter). Deletes run in batches of [`BATCH`] rows (`FOR UPDATE SKIP LOCKED`, so
//! replicas running it at once neither block nor repeat each other's work), each a short
//! transaction of its own, and use the expiry indexes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use strata_storage::Db;

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;
/// Age past expiry or revocation before a row is deleted.
pub const GRACE: Duration = Duration::from_secs(24 * 3600);

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Refresh tokens deleted.
    pub refresh_tokens: usize,
    /// Sessions deleted (their remaining tokens with them).
    pub sessions: usize,
}

const DELETE_TOKENS: &str = "DELETE FROM auth.refresh_tokens WHERE id = ANY(ARRAY(
    SELECT id FROM auth.refresh_tokens WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";
const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM auth.sessions WHERE id = ANY(ARRAY(
    SELECT id FROM auth.sessions WHERE idle_expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";
const DELETE_REVOKED_SESSIONS: &str = "DELETE FROM auth.sessions WHERE id = ANY(ARRAY(
    SELECT id FROM auth.sessions WHERE revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// Deletes everything older than `cutoff`, batch by batch.
pub async fn run_once(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> Result<Report, strata_storage::Error> {
    let mut deleted = [0usize; 3];
    for (sql, total) in [
        DELETE_TOKENS,
        DELETE_EXPIRED_SESSIONS,
        DELETE_REVOKED_SESSIONS,
    ]
    .into_iter()
    .zip(deleted.iter_mut())
    {
        loop {
            let batch = diesel::sql_query(sql)
                .bind::<Timestamptz, _>(cutoff)
                .bind::<BigInt, _>(BATCH)
                .execute(conn)
                .await?;
            *total += batch;
            if batch < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
    }
    let report = Report {
        refresh_tokens: deleted[0],
        sessions: deleted[1] + deleted[2],
    };
    Ok(report)
}

/// One round of the `auth.cleanup` task: deletes what expired more than the grace period
/// ago, and logs what it deleted.
pub async fn round(db: &Db) -> Result<(), strata_storage::Error> {
    let cutoff = Utc::now() - chrono::Duration::from_std(GRACE).unwrap_or_default();
    let report = run_once(&mut *db.get().await?, cutoff).await?;
    if report != Report::default() {
        tracing::info!(
            cleanup.refresh_tokens = report.refresh_tokens,
            cleanup.sessions = report.sessions,
            "deleted expired credentials"
        );
    }
    Ok(())
}
