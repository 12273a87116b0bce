//! Catalog and statistics queries behind the admin RPCs: `pg_stat_statements`, index and
//! table statistics. The guarded `EXPLAIN` lives in [`crate::explain`].
//!
//! Only the application schemas are reported ([`APP_SCHEMAS`]); PostgreSQL's own catalogs
//! and the migrations table are left out.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text, Timestamptz};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::Error;

/// Schemas owned by Strata services.
pub const APP_SCHEMAS: &[&str] = &["auth", "content", "analytics"];

/// One row of `pg_stat_statements`.
#[derive(Debug, Clone, QueryableByName)]
pub struct StatementStats {
    /// Query id.
    #[diesel(sql_type = BigInt)]
    pub query_id: i64,
    /// Normalized text.
    #[diesel(sql_type = Text)]
    pub query: String,
    /// Executions.
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
    /// Rows.
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// Total execution time, ms.
    #[diesel(sql_type = Double)]
    pub total_time_ms: f64,
    /// Mean execution time, ms.
    #[diesel(sql_type = Double)]
    pub mean_time_ms: f64,
    /// Max execution time, ms.
    #[diesel(sql_type = Double)]
    pub max_time_ms: f64,
    /// Standard deviation, ms.
    #[diesel(sql_type = Double)]
    pub stddev_time_ms: f64,
    /// Shared-buffer hit ratio, 0..1.
    #[diesel(sql_type = Double)]
    pub cache_hit_ratio: f64,
    /// The role that ran it (part of the entry's key).
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    /// 1 when run at top level, 0 inside a function (part of the entry's key).
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub top_level: i32,
}

/// Order of [`slow_queries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowQueryOrder {
    /// By mean execution time.
    MeanTime,
    /// By total execution time.
    TotalTime,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    value: bool,
}

/// Whether `pg_stat_statements` is installed in this database (and so readable).
pub async fn has_pg_stat_statements(conn: &mut AsyncPgConnection) -> Result<bool, Error> {
    let rows: Vec<Flag> = sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS value",
    )
    .load(conn)
    .await?;
    Ok(rows.iter().any(|f| f.value))
}

/// Top `limit` statements of the current database from `pg_stat_statements`. Callers
/// check [`has_pg_stat_statements`] first.
pub async fn slow_queries(
    conn: &mut AsyncPgConnection,
    order: SlowQueryOrder,
    after: Option<&SlowQueryKey>,
    limit: i64,
    min_calls: i64,
) -> Result<Vec<StatementStats>, Error> {
    // The ORDER BY column comes from an enum, never from input.
    let order_by = match order {
        SlowQueryOrder::MeanTime => "mean_exec_time",
        SlowQueryOrder::TotalTime => "total_exec_time",
    };
    let sql = format!(
        "SELECT queryid AS query_id, query, calls, rows, userid::bigint AS user_id, toplevel::int AS top_level,
                total_exec_time AS total_time_ms, mean_exec_time AS mean_time_ms,
                max_exec_time AS max_time_ms, stddev_exec_time AS stddev_time_ms,
                COALESCE(shared_blks_hit::float8 / NULLIF(shared_blks_hit + shared_blks_read, 0), 1.0) AS cache_hit_ratio
           FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND calls >= $1
            AND ($3::float8 IS NULL OR ({order_by}, queryid, userid::bigint, toplevel::int) < ($3, $4, $5, $6))
          ORDER BY {order_by} DESC, queryid DESC, userid DESC, toplevel DESC
          LIMIT $2"
    );
    Ok(sql_query(sql)
        .bind::<BigInt, _>(min_calls)
        .bind::<BigInt, _>(limit)
        .bind::<Nullable<diesel::sql_types::Double>, _>(after.map(|a| a.time_ms))
        .bind::<Nullable<BigInt>, _>(after.map(|a| a.query_id))
        .bind::<Nullable<BigInt>, _>(after.map(|a| a.user_id))
        .bind::<Nullable<diesel::sql_types::Integer>, _>(after.map(|a| a.top_level))
        .load(conn)
        .await?)
}

/// Where a page of [`slow_queries`] ended: the ordering's time, then the key of a
/// `pg_stat_statements` entry (query id, user, top level).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowQueryKey {
    /// Mean or total time of the last statement, milliseconds.
    pub time_ms: f64,
    /// Its query id.
    pub query_id: i64,
    /// The role that ran it.
    pub user_id: i64,
    /// 1 when run at top level, 0 inside a function.
    pub top_level: i32,
}

/// Usage statistics of one index.
#[derive(Debug, Clone, QueryableByName)]
pub struct IndexStats {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub table: String,
    /// Index.
    #[diesel(sql_type = Text)]
    pub index: String,
    /// Scans.
    #[diesel(sql_type = BigInt)]
    pub scans: i64,
    /// Entries read.
    #[diesel(sql_type = BigInt)]
    pub tuples_read: i64,
    /// Rows fetched.
    #[diesel(sql_type = BigInt)]
    pub tuples_fetched: i64,
    /// Size on disk.
    #[diesel(sql_type = BigInt)]
    pub size_bytes: i64,
    /// Unique.
    #[diesel(sql_type = Bool)]
    pub unique: bool,
    /// Primary key.
    #[diesel(sql_type = Bool)]
    pub primary: bool,
    /// Definition.
    #[diesel(sql_type = Text)]
    pub definition: String,
}

const INDEX_STATS: &str = "SELECT s.schemaname::text AS schema, s.relname::text AS \"table\", s.indexrelname::text AS index,
        s.idx_scan AS scans, s.idx_tup_read AS tuples_read, s.idx_tup_fetch AS tuples_fetched,
        pg_relation_size(s.indexrelid) AS size_bytes, i.indisunique AS \"unique\", i.indisprimary AS \"primary\",
        pg_get_indexdef(s.indexrelid) AS definition
   FROM pg_stat_user_indexes s
   JOIN pg_index i ON i.indexrelid = s.indexrelid
  WHERE s.schemaname = ANY($1)";

/// Statistics of every index in `schemas`, optionally of one `table`.
pub async fn index_usage(
    conn: &mut AsyncPgConnection,
    schemas: &[String],
    table: Option<&str>,
) -> Result<Vec<IndexStats>, Error> {
    let sql = format!("{INDEX_STATS} AND ($2::text IS NULL OR s.relname = $2) ORDER BY 1, 2, 3");
    Ok(sql_query(sql)
        .bind::<diesel::sql_types::Array<Text>, _>(schemas)
        .bind::<Nullable<Text>, _>(table)
        .load(conn)
        .await?)
}

/// Where a page of [`unused_indexes`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedIndexKey {
    /// Size of the last index.
    pub size_bytes: i64,
    /// Its schema.
    pub schema: String,
    /// Its table.
    pub table: String,
    /// Its name.
    pub index: String,
}

/// Indexes in `schemas` never scanned since statistics were last reset, largest first,
/// after `after`.
/// Primary keys and unique indexes are excluded: they enforce constraints even unscanned.
pub async fn unused_indexes(
    conn: &mut AsyncPgConnection,
    schemas: &[String],
    after: Option<&UnusedIndexKey>,
    limit: i64,
) -> Result<Vec<IndexStats>, Error> {
    let sql = format!(
        "SELECT * FROM ({INDEX_STATS} AND s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary) x
          WHERE $2::bigint IS NULL OR x.size_bytes < $2
             OR (x.size_bytes = $2 AND (x.schema, x.\"table\", x.index) > ($3, $4, $5))
          ORDER BY x.size_bytes DESC, 1, 2, 3
          LIMIT $6"
    );
    Ok(sql_query(sql)
        .bind::<diesel::sql_types::Array<Text>, _>(schemas)
        .bind::<Nullable<BigInt>, _>(after.map(|a| a.size_bytes))
        .bind::<Nullable<Text>, _>(after.map(|a| a.schema.as_str()))
        .bind::<Nullable<Text>, _>(after.map(|a| a.table.as_str()))
        .bind::<Nullable<Text>, _>(after.map(|a| a.index.as_str()))
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?)
}

/// Statistics of one table.
#[derive(Debug, Clone, QueryableByName)]
pub struct TableStats {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub table: String,
    /// Live rows (estimate).
    #[diesel(sql_type = BigInt)]
    pub live_rows: i64,
    /// Dead rows (estimate).
    #[diesel(sql_type = BigInt)]
    pub dead_rows: i64,
    /// Heap + TOAST bytes.
    #[diesel(sql_type = BigInt)]
    pub table_size_bytes: i64,
    /// Index bytes.
    #[diesel(sql_type = BigInt)]
    pub index_size_bytes: i64,
    /// Total bytes.
    #[diesel(sql_type = BigInt)]
    pub total_size_bytes: i64,
    /// Sequential scans.
    #[diesel(sql_type = BigInt)]
    pub seq_scans: i64,
    /// Index scans.
    #[diesel(sql_type = BigInt)]
    pub index_scans: i64,
    /// Latest vacuum, manual or automatic.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_vacuum: Option<DateTime<Utc>>,
    /// Latest analyze, manual or automatic.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_analyze: Option<DateTime<Utc>>,
}

/// Statistics of every table in `schemas`, optionally of one `table`.
pub async fn table_stats(
    conn: &mut AsyncPgConnection,
    schemas: &[String],
    table: Option<&str>,
) -> Result<Vec<TableStats>, Error> {
    Ok(sql_query(
        "SELECT schemaname::text AS schema, relname::text AS \"table\",
                n_live_tup AS live_rows, n_dead_tup AS dead_rows,
                pg_table_size(relid) AS table_size_bytes, pg_indexes_size(relid) AS index_size_bytes,
                pg_total_relation_size(relid) AS total_size_bytes,
                seq_scan AS seq_scans, COALESCE(idx_scan, 0) AS index_scans,
                GREATEST(last_vacuum, last_autovacuum) AS last_vacuum,
                GREATEST(last_analyze, last_autoanalyze) AS last_analyze
           FROM pg_stat_user_tables
          WHERE schemaname = ANY($1) AND ($2::text IS NULL OR relname = $2)
          ORDER BY 1, 2",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(schemas)
    .bind::<Nullable<Text>, _>(table)
    .load(conn)
    .await?)
}
