//! The materialized views and their refresh (see the `view_state` comment in the
//! migration for why summaries stay exact while the views lag).
//!
//! A refresh runs on a connection of its own (minutes at tens of millions of rows, so not
//! on the pool and not under the pool's statement timeout) and holds a session advisory
//! lock per view, so only one replica refreshes a view at a time:
//! 1. take the view's lock (the scheduler tries and skips when it is taken; an admin's
//!    RefreshViews waits for it);
//! 2. the scheduler checks again that the view is due (another replica may just have
//!    refreshed it);
//! 3. set the cut: `LOCK token_usage IN SHARE MODE`, `cut = clock_timestamp()`, commit;
//! 4. `REFRESH MATERIALIZED VIEW CONCURRENTLY` (readers are never blocked), and in the
//!    same transaction set `watermark = cut` and record duration and row count.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use strata_storage::config::DbConfig;
use strata_storage::pool::dedicated_connection;

use crate::error::AnalyticsError;

/// How long one attempt to set the cut may wait for in-flight inserts; ingest queues
/// behind the lock request meanwhile, so this stays short and is retried instead.
const CUT_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// `work_mem` of a refresh session.
const REFRESH_WORK_MEM: &str = "256MB";
/// Attempts at setting the cut before the refresh gives up.
const CUT_ATTEMPTS: u32 = 5;

/// The stored watermark as chrono can hold it: before the first refresh it is
/// `-infinity`, which reads as the epoch (equivalent: no row was received before it).
const WATERMARK: &str = "greatest(watermark, 'epoch')";

/// A materialized view of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewName {
    /// Per user, UTC day, model and operation.
    UserTokenSummary,
    /// Per project, all time.
    ProjectStats,
}

impl ViewName {
    /// Every view.
    pub const ALL: [ViewName; 2] = [ViewName::UserTokenSummary, ViewName::ProjectStats];

    /// Name in the `analytics` schema and in `view_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewName::UserTokenSummary => "user_token_summary",
            ViewName::ProjectStats => "project_stats",
        }
    }

    /// Key of the view's advisory lock ("STRATA" in ASCII, then the view's number).
    fn lock_key(self) -> i64 {
        const BASE: i64 = 0x5354_5241_5441_0000;
        match self {
            ViewName::UserTokenSummary => BASE + 1,
            ViewName::ProjectStats => BASE + 2,
        }
    }
}

/// Refresh state of a view, as stored.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ViewState {
    /// View name.
    #[diesel(sql_type = Text)]
    pub view_name: String,
    /// Rows received up to here are in the view (the epoch before the first refresh).
    #[diesel(sql_type = Timestamptz)]
    pub watermark: DateTime<Utc>,
    /// End of the last refresh.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Its duration.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub duration_ms: Option<i64>,
    /// Rows after it.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub row_count: Option<i64>,
    /// Refreshes so far.
    #[diesel(sql_type = BigInt)]
    pub refresh_count: i64,
}

/// The committed watermark of `view`: rows received up to it are in the view.
pub async fn watermark(
    conn: &mut AsyncPgConnection,
    view: ViewName,
) -> Result<DateTime<Utc>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Timestamptz)]
        watermark: DateTime<Utc>,
    }
    let row: Row = diesel::sql_query(format!(
        "SELECT {WATERMARK} AS watermark FROM analytics.view_state WHERE view_name = $1"
    ))
    .bind::<Text, _>(view.as_str())
    .get_result(conn)
    .await?;
    Ok(row.watermark)
}

/// The state of every view.
pub async fn states(conn: &mut AsyncPgConnection) -> Result<Vec<ViewState>, AnalyticsError> {
    Ok(diesel::sql_query(format!(
        "SELECT view_name, {WATERMARK} AS watermark, refreshed_at, duration_ms, row_count, \
           refresh_count \
         FROM analytics.view_state ORDER BY view_name"
    ))
    .load(conn)
    .await?)
}

/// How a refresh treats a lock held by another refresher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contention {
    /// Skip the view (the scheduler: the other replica is doing the work).
    Skip,
    /// Wait up to this long for it, then fail with [`AnalyticsError::RefreshBusy`].
    Wait(Duration),
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refreshed.
    Refreshed {
        /// New watermark.
        watermark: DateTime<Utc>,
        /// Rows in the view.
        row_count: i64,
        /// How long the refresh took.
        duration: Duration,
    },
    /// Another refresher held the lock (scheduler only).
    Locked,
    /// Not due any more: another replica refreshed it meanwhile (scheduler only).
    NotDue,
}

/// Refreshes views on dedicated connections.
#[derive(Debug, Clone)]
pub struct Refresher {
    db: DbConfig,
    timeout: Duration,
    name: String,
}

impl Refresher {
    /// A refresher connecting with `db`, each refresh bounded by `timeout`, recording
    /// itself as `name` in `view_refreshes`.
    pub fn new(db: DbConfig, timeout: Duration, name: impl Into<String>) -> Self {
        Self {
            db,
            timeout,
            name: name.into(),
        }
    }

    /// Refreshes `view`. With `due_after`, only if its last refresh is older than that
    /// (checked under the lock).
    pub async fn refresh(
        &self,
        view: ViewName,
        contention: Contention,
        due_after: Option<Duration>,
    ) -> Result<Outcome, AnalyticsError> {
        let mut conn = dedicated_connection(&self.db).await?;
        // The refresh aggregates the whole ledger and diffs the result against the view:
        // give its sorts and hashes room instead of spilling to disk.
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET work_mem = '{REFRESH_WORK_MEM}'",
            self.timeout.as_millis()
        ))
        .await?;
        if !lock(&mut conn, view, contention).await? {
            return Ok(Outcome::Locked);
        }
        // The lock belongs to this session; closing the connection (on every path out of
        // here) releases it, so there is no unlock to forget.
        if let Some(interval) = due_after
            && !is_due(&mut conn, view, interval).await?
        {
            return Ok(Outcome::NotDue);
        }
        let started = Instant::now();
        let started_at = Utc::now();
        let cut = set_cut(&mut conn, view).await?;
        let mv = view.as_str();
        let refresher = self.name.clone();
        let row_count = conn
            .transaction::<_, AnalyticsError, _>(async |conn| {
                // Always CONCURRENTLY, the first fill too: it keeps the view readable, and
                // its rows stay MVCC-visible only to snapshots after this commit. A plain
                // REFRESH writes frozen rows that a reader holding the old (lower)
                // watermark would count a second time from the raw table.
                conn.batch_execute(&format!(
                    "REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.{mv}"
                ))
                .await?;
                #[derive(QueryableByName)]
                struct Count {
                    #[diesel(sql_type = BigInt)]
                    n: i64,
                }
                let count: Count =
                    diesel::sql_query(format!("SELECT count(*) AS n FROM analytics.{mv}"))
                        .get_result(conn)
                        .await?;
                let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                diesel::sql_query(
                    "WITH state AS ( \
                       UPDATE analytics.view_state SET watermark = cut, \
                         refreshed_at = clock_timestamp(), duration_ms = $2, row_count = $3, \
                         refresh_count = refresh_count + 1 \
                       WHERE view_name = $1 RETURNING view_name, watermark \
                     ) \
                     INSERT INTO analytics.view_refreshes \
                       (view_name, watermark, started_at, duration_ms, row_count, refreshed_by) \
                     SELECT view_name, watermark, $4, $2, $3, $5 FROM state",
                )
                .bind::<Text, _>(mv)
                .bind::<BigInt, _>(duration_ms)
                .bind::<BigInt, _>(count.n)
                .bind::<Timestamptz, _>(started_at)
                .bind::<Text, _>(&refresher)
                .execute(conn)
                .await?;
                Ok(count.n)
            })
            .await?;
        let duration = started.elapsed();
        tracing::info!(
            view = mv,
            view.rows = row_count,
            db.duration_ms = duration.as_millis() as u64,
            "refreshed materialized view"
        );
        Ok(Outcome::Refreshed {
            watermark: cut,
            row_count,
            duration,
        })
    }
}

/// Takes the view's advisory lock; false when skipping a lock held elsewhere.
async fn lock(
    conn: &mut AsyncPgConnection,
    view: ViewName,
    contention: Contention,
) -> Result<bool, AnalyticsError> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    match contention {
        Contention::Skip => {
            let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
                .bind::<BigInt, _>(view.lock_key())
                .get_result(conn)
                .await?;
            Ok(row.locked)
        }
        Contention::Wait(limit) => {
            conn.batch_execute(&format!("SET lock_timeout = {}", limit.as_millis()))
                .await?;
            let result = diesel::sql_query("SELECT pg_advisory_lock($1) IS NULL AS locked")
                .bind::<BigInt, _>(view.lock_key())
                .get_result::<Locked>(conn)
                .await;
            match result.map_err(strata_storage::Error::from) {
                Ok(_) => {
                    conn.batch_execute("SET lock_timeout = 0").await?;
                    Ok(true)
                }
                Err(e) if is_lock_timeout(&e) => Err(AnalyticsError::RefreshBusy),
                Err(e) => Err(e.into()),
            }
        }
    }
}

fn is_lock_timeout(err: &strata_storage::Error) -> bool {
    err.sqlstate() == Some("55P03")
}

/// Whether `view` was last refreshed more than `interval` ago (or never).
pub async fn is_due(
    conn: &mut AsyncPgConnection,
    view: ViewName,
    interval: Duration,
) -> Result<bool, AnalyticsError> {
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = Bool)]
        due: bool,
    }
    let row: Due = diesel::sql_query(
        "SELECT refreshed_at IS NULL OR refreshed_at <= clock_timestamp() - make_interval(secs => $2) AS due \
         FROM analytics.view_state WHERE view_name = $1",
    )
    .bind::<Text, _>(view.as_str())
    .bind::<diesel::sql_types::Double, _>(interval.as_secs_f64())
    .get_result(conn)
    .await?;
    Ok(row.due)
}

/// Sets the view's cut under a brief SHARE lock on `token_usage` (see the module docs),
/// retrying when in-flight inserts hold the lock too long.
async fn set_cut(
    conn: &mut AsyncPgConnection,
    view: ViewName,
) -> Result<DateTime<Utc>, AnalyticsError> {
    #[derive(QueryableByName)]
    struct Cut {
        #[diesel(sql_type = Timestamptz)]
        cut: DateTime<Utc>,
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                conn.batch_execute(&format!(
                    "SET LOCAL lock_timeout = {}; LOCK TABLE analytics.token_usage IN SHARE MODE",
                    CUT_LOCK_TIMEOUT.as_millis()
                ))
                .await?;
                diesel::sql_query(
                    "UPDATE analytics.view_state SET cut = clock_timestamp() \
                     WHERE view_name = $1 RETURNING cut",
                )
                .bind::<Text, _>(view.as_str())
                .get_result::<Cut>(conn)
                .await
            })
            .await;
        match result.map_err(strata_storage::Error::from) {
            Ok(cut) => return Ok(cut.cut),
            Err(e) if is_lock_timeout(&e) && attempt < CUT_ATTEMPTS => {
                tracing::warn!(
                    view = view.as_str(),
                    attempt,
                    "in-flight inserts held the ledger too long; retrying the refresh cut"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
