//! The usage summaries and their refresh (see the `view_state` comment in the first
//! analytics migration for why summaries stay exact while they lag, and the
//! `fold_usage_summaries` migration for why they are folded rather than recomputed).
//!
//! A refresh folds: it adds the ledger rows received since the last one to the running
//! totals, so it costs what arrived since, not the ledger's size, and can run every few
//! seconds. It runs on a connection of its own (the first fold of a large ledger takes
//! minutes, so not on the pool and not under the pool's statement timeout) and holds a
//! session advisory lock per summary, so only one replica folds it at a time:
//! 1. take the summary's lock (the scheduler tries and skips when it is taken; an admin's
//!    RefreshViews waits for it);
//! 2. the scheduler checks again that it is due (another replica may just have folded);
//! 3. set the cut: `LOCK token_usage IN SHARE MODE`, `cut = clock_timestamp()`, commit;
//!    every row received up to the cut is committed, every later one is received later;
//! 4. in one transaction: lock the state row, upsert the rows received in
//!    `(watermark, cut]` into the totals, set `watermark = cut`, record the fold.
//!    Readers see the totals and the watermark change together.

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

/// Rows ever inserted into the ledger's partitions, from PostgreSQL's cumulative
/// statistics: free to read, shared by every replica, at most a second or so behind.
/// Compared with the figure recorded at the last cut it says how many rows wait to be
/// folded (an estimate: rolled-back inserts count too; after a statistics reset it reads
/// low, and the interval still applies).
const LEDGER_INSERTS: &str = "(SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables \
     WHERE relid IN (SELECT inhrelid FROM pg_inherits \
                     WHERE inhparent = 'analytics.token_usage'::regclass))";

/// When a summary is due for a fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Its last fold is older than this.
    pub interval: Duration,
    /// Or at least this many rows arrived since its last cut (0: the interval only).
    pub after_rows: u64,
}

/// The stored watermark as chrono can hold it: before the first refresh it is
/// `-infinity`, which reads as the epoch (equivalent: no row was received before it).
pub(crate) const WATERMARK: &str = "greatest(watermark, 'epoch')";

/// A summary of the ledger (a table of running totals).
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

    /// Refreshes (folds) `view`. With `due`, only if it is due (checked under the lock).
    pub async fn refresh(
        &self,
        view: ViewName,
        contention: Contention,
        due: Option<Due>,
    ) -> Result<Outcome, AnalyticsError> {
        let mut conn = dedicated_connection(&self.db).await?;
        // A fold groups what arrived since the last one (the first, the whole ledger): give
        // its hash aggregate room instead of spilling to disk.
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
        if let Some(due) = due
            && !is_due(&mut conn, view, due).await?
        {
            return Ok(Outcome::NotDue);
        }
        let started = Instant::now();
        let started_at = Utc::now();
        let cut = set_cut(&mut conn, view).await?;
        let name = view.as_str();
        let refresher = self.name.clone();
        let (row_count, touched) = conn
            .transaction::<_, AnalyticsError, _>(async |conn| {
                // The state row is locked until commit: the fold and the new watermark
                // become visible together.
                let (watermark, cut) = bounds(conn, view).await?;
                let folded = fold(conn, view, watermark, cut).await?;
                let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                #[derive(QueryableByName)]
                struct Count {
                    #[diesel(sql_type = BigInt)]
                    row_count: i64,
                }
                // The watermark never moves back (a clock stepped back leaves it where it
                // was; the fold of that interval was empty): reads rely on it.
                let state: Count = diesel::sql_query(
                    "UPDATE analytics.view_state SET watermark = greatest(watermark, cut), \
                       refreshed_at = clock_timestamp(), duration_ms = $2, \
                       row_count = coalesce(row_count, 0) + $3, \
                       refresh_count = refresh_count + 1 \
                     WHERE view_name = $1 RETURNING row_count",
                )
                .bind::<Text, _>(name)
                .bind::<BigInt, _>(duration_ms)
                .bind::<BigInt, _>(folded.added)
                .get_result(conn)
                .await?;
                // Operators' history keeps the folds that changed something (an idle
                // ledger folds nothing every interval).
                if folded.touched > 0 {
                    diesel::sql_query(
                        "INSERT INTO analytics.view_refreshes \
                           (view_name, watermark, started_at, duration_ms, row_count, refreshed_by) \
                         SELECT view_name, watermark, $2, $3, $4, $5 \
                         FROM analytics.view_state WHERE view_name = $1",
                    )
                    .bind::<Text, _>(name)
                    .bind::<Timestamptz, _>(started_at)
                    .bind::<BigInt, _>(duration_ms)
                    .bind::<BigInt, _>(state.row_count)
                    .bind::<Text, _>(&refresher)
                    .execute(conn)
                    .await?;
                }
                Ok((state.row_count, folded.touched))
            })
            .await?;
        // Rows arrived since the last fold: their pages may fill ranges left unsummarized.
        if touched > 0 {
            summarize_new_ranges(&mut conn).await;
        }
        let duration = started.elapsed();
        tracing::debug!(
            view = name,
            view.rows = row_count,
            db.duration_ms = duration.as_millis() as u64,
            "folded new usage into the summary"
        );
        Ok(Outcome::Refreshed {
            watermark: cut,
            row_count,
            duration,
        })
    }
}

/// The rows a fold adds: received after the watermark, up to the cut; the state row is
/// locked until the transaction ends.
async fn bounds(
    conn: &mut AsyncPgConnection,
    view: ViewName,
) -> Result<(DateTime<Utc>, DateTime<Utc>), AnalyticsError> {
    #[derive(QueryableByName)]
    struct Bounds {
        #[diesel(sql_type = Timestamptz)]
        watermark: DateTime<Utc>,
        #[diesel(sql_type = Timestamptz)]
        cut: DateTime<Utc>,
    }
    let row: Bounds = diesel::sql_query(format!(
        "SELECT {WATERMARK} AS watermark, cut FROM analytics.view_state \
         WHERE view_name = $1 FOR UPDATE"
    ))
    .bind::<Text, _>(view.as_str())
    .get_result(conn)
    .await?;
    Ok((row.watermark, row.cut))
}

/// What one fold did.
#[derive(Debug, QueryableByName)]
struct Folded {
    /// Summary rows created.
    #[diesel(sql_type = BigInt)]
    added: i64,
    /// Summary rows created or updated.
    #[diesel(sql_type = BigInt)]
    touched: i64,
}

/// Adds the ledger rows received in `(watermark, cut]` to `view`'s running totals. The
/// BRIN index on `received_at` finds them in every partition (late rows land in old
/// months); `xmax = 0` tells a row the upsert created from one it updated.
async fn fold(
    conn: &mut AsyncPgConnection,
    view: ViewName,
    watermark: DateTime<Utc>,
    cut: DateTime<Utc>,
) -> Result<Folded, AnalyticsError> {
    let upsert = match view {
        ViewName::UserTokenSummary => {
            "INSERT INTO analytics.user_token_summary AS s \
               (user_id, day, model, operation, request_count, prompt_tokens, \
                completion_tokens, total_tokens, cost) \
             SELECT u.user_id, (u.occurred_at AT TIME ZONE 'UTC')::date, u.model, u.operation, \
               count(*), sum(u.prompt_tokens)::bigint, sum(u.completion_tokens)::bigint, \
               sum(u.total_tokens)::bigint, sum(u.cost) \
             FROM analytics.token_usage u \
             WHERE u.received_at > $1 AND u.received_at <= $2 \
             GROUP BY 1, 2, 3, 4 \
             ON CONFLICT (user_id, day, model, operation) DO UPDATE SET \
               request_count = s.request_count + excluded.request_count, \
               prompt_tokens = s.prompt_tokens + excluded.prompt_tokens, \
               completion_tokens = s.completion_tokens + excluded.completion_tokens, \
               total_tokens = s.total_tokens + excluded.total_tokens, \
               cost = s.cost + excluded.cost \
             RETURNING (xmax = 0) AS created"
        }
        ViewName::ProjectStats => {
            "INSERT INTO analytics.project_stats AS p \
               (project_id, request_count, prompt_tokens, completion_tokens, total_tokens, \
                cost, first_activity_at, last_activity_at, models) \
             SELECT u.project_id, count(*), sum(u.prompt_tokens)::bigint, \
               sum(u.completion_tokens)::bigint, sum(u.total_tokens)::bigint, sum(u.cost), \
               min(u.occurred_at), max(u.occurred_at), \
               array_agg(DISTINCT u.model ORDER BY u.model) \
             FROM analytics.token_usage u \
             WHERE u.project_id IS NOT NULL AND u.received_at > $1 AND u.received_at <= $2 \
             GROUP BY u.project_id \
             ON CONFLICT (project_id) DO UPDATE SET \
               request_count = p.request_count + excluded.request_count, \
               prompt_tokens = p.prompt_tokens + excluded.prompt_tokens, \
               completion_tokens = p.completion_tokens + excluded.completion_tokens, \
               total_tokens = p.total_tokens + excluded.total_tokens, \
               cost = p.cost + excluded.cost, \
               first_activity_at = least(p.first_activity_at, excluded.first_activity_at), \
               last_activity_at = greatest(p.last_activity_at, excluded.last_activity_at), \
               models = ARRAY(SELECT DISTINCT m FROM unnest(p.models || excluded.models) AS m \
                              ORDER BY m) \
             RETURNING (xmax = 0) AS created"
        }
    };
    Ok(diesel::sql_query(format!(
        "WITH folded AS ({upsert}) \
         SELECT count(*) FILTER (WHERE created) AS added, count(*) AS touched FROM folded"
    ))
    .bind::<Timestamptz, _>(watermark)
    .bind::<Timestamptz, _>(cut)
    .get_result(conn)
    .await?)
}

/// Summarizes the page ranges of the ledger's BRIN index on `received_at` that rows filled
/// since it was last summarized.
///
/// The index answers a fold's `received_at` range only from summarized ranges: ranges
/// filled since autovacuum last summarized are read whole by every fold. Under steady
/// ingest a fold then cost everything inserted since the last autovacuum instead of what
/// arrived since the last fold (at 10M rows, 200–550 ms per fold of one second of ingest,
/// 170,000 rows rechecked to find 1,200). A summarized range stays accurate as rows are
/// added to it, so summarizing after each fold keeps the next one as short as its rows;
/// the pages were just read by the fold. A lock held by autovacuum or DDL is not waited
/// for: autovacuum summarizes too.
async fn summarize_new_ranges(conn: &mut AsyncPgConnection) {
    let result = async {
        conn.batch_execute("SET lock_timeout = 100").await?;
        diesel::sql_query(
            "SELECT brin_summarize_new_values(i.inhrelid) FROM pg_inherits i \
             WHERE i.inhparent = 'analytics.token_usage_received_brin'::regclass",
        )
        .execute(conn)
        .await?;
        conn.batch_execute("SET lock_timeout = 0").await
    }
    .await;
    if let Err(e) = result.map_err(strata_storage::Error::from) {
        if is_lock_timeout(&e) {
            tracing::debug!("BRIN ranges left to autovacuum: a lock is held");
        } else {
            tracing::warn!(error = %e, "cannot summarize the ledger's BRIN ranges; folds read unsummarized ranges whole");
        }
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

/// Whether `view` is due: never folded, last folded longer than `due.interval` ago, or
/// `due.after_rows` rows arrived since its last cut.
pub async fn is_due(
    conn: &mut AsyncPgConnection,
    view: ViewName,
    due: Due,
) -> Result<bool, AnalyticsError> {
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = Bool)]
        due: bool,
    }
    let row: Due = diesel::sql_query(format!(
        "SELECT refreshed_at IS NULL \
             OR refreshed_at <= clock_timestamp() - make_interval(secs => $2) \
             OR ($3 > 0 AND {LEDGER_INSERTS} - coalesce(inserted_at_cut, 0) >= $3) AS due \
         FROM analytics.view_state WHERE view_name = $1"
    ))
    .bind::<Text, _>(view.as_str())
    .bind::<diesel::sql_types::Double, _>(due.interval.as_secs_f64())
    .bind::<BigInt, _>(i64::try_from(due.after_rows).unwrap_or(i64::MAX))
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
                diesel::sql_query(format!(
                    "UPDATE analytics.view_state \
                     SET cut = clock_timestamp(), inserted_at_cut = {LEDGER_INSERTS} \
                     WHERE view_name = $1 RETURNING cut"
                ))
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
