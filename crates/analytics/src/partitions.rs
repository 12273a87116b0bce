//! Monthly partitions of `analytics.token_usage`.
//!
//! The scheduler keeps the current month and `STRATA_ANALYTICS_PARTITIONS_AHEAD` months
//! after it ready, so ingest never waits for DDL. A late event for an older month (up to
//! the 366 days `RecordUsage` accepts) gets its partition on demand before its batch is
//! inserted. Months known to exist are remembered, so the common path asks nothing.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Date};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// How long creating a partition may wait for its locks (attaching conflicts with a
/// refresh's brief SHARE lock and with other DDL); the caller retries later.
const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// First day of the month of `t` (UTC).
pub fn month_of(t: DateTime<Utc>) -> NaiveDate {
    let date = t.date_naive();
    date.with_day(1).unwrap_or(date)
}

/// The month of `now` and the `ahead` months after it.
pub fn months_ahead(now: DateTime<Utc>, ahead: u32) -> Vec<NaiveDate> {
    let first = month_of(now);
    (0..=ahead)
        .filter_map(|n| first.checked_add_months(Months::new(n)))
        .collect()
}

/// Creates the partition of `month` unless it exists; returns whether it was created.
pub async fn create(
    conn: &mut AsyncPgConnection,
    month: NaiveDate,
) -> Result<bool, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Created {
        #[diesel(sql_type = Bool)]
        created: bool,
    }
    conn.transaction(async |conn| {
        conn.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            DDL_LOCK_TIMEOUT.as_millis()
        ))
        .await?;
        let row: Created =
            diesel::sql_query("SELECT analytics.create_token_usage_partition($1) AS created")
                .bind::<Date, _>(month)
                .get_result(conn)
                .await?;
        Ok(row.created)
    })
    .await
}

/// Months whose partitions are known to exist.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<NaiveDate>>,
}

impl Partitions {
    /// Which of `months` are not known to exist, sorted, without repeats. Asks nothing of
    /// the database, so callers check out a connection only when there is work.
    pub fn unknown(&self, months: impl IntoIterator<Item = NaiveDate>) -> Vec<NaiveDate> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut unknown: Vec<_> = months.into_iter().filter(|m| !known.contains(m)).collect();
        unknown.sort();
        unknown.dedup();
        unknown
    }

    /// Makes sure the partitions of `months` exist, creating the missing ones.
    pub async fn ensure(
        &self,
        conn: &mut AsyncPgConnection,
        months: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<(), diesel::result::Error> {
        for month in self.unknown(months) {
            if create(conn, month).await? {
                tracing::info!(partition.month = %month, "created token_usage partition");
            }
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(month);
        }
        Ok(())
    }

    /// Forgets what is known (after an insert found a partition missing).
    pub fn forget(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first_in_utc() {
        let t = DateTime::parse_from_rfc3339("2026-10-31T23:59:59.999Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(month_of(t), NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
        let t = DateTime::parse_from_rfc3339("2026-11-01T00:30:00+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(month_of(t), NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
    }
}
