//! Catalog and statistics queries behind the admin RPCs: `pg_stat_statements`, index and
//! table statistics, and a guarded `EXPLAIN`.
//!
//! Only the application schemas are reported ([`APP_SCHEMAS`]); PostgreSQL's own catalogs
//! and the migrations table are left out.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Double, Float8, Nullable, Text, Timestamptz};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

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
    limit: i64,
    min_calls: i64,
) -> Result<Vec<StatementStats>, Error> {
    // The ORDER BY column comes from an enum, never from input.
    let order_by = match order {
        SlowQueryOrder::MeanTime => "mean_exec_time",
        SlowQueryOrder::TotalTime => "total_exec_time",
    };
    let sql = format!(
        "SELECT queryid AS query_id, query, calls, rows,
                total_exec_time AS total_time_ms, mean_exec_time AS mean_time_ms,
                max_exec_time AS max_time_ms, stddev_exec_time AS stddev_time_ms,
                COALESCE(shared_blks_hit::float8 / NULLIF(shared_blks_hit + shared_blks_read, 0), 1.0) AS cache_hit_ratio
           FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND calls >= $1
          ORDER BY {order_by} DESC
          LIMIT $2"
    );
    Ok(sql_query(sql)
        .bind::<BigInt, _>(min_calls)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?)
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

/// Indexes in `schemas` never scanned since statistics were last reset, largest first.
/// Primary keys and unique indexes are excluded: they enforce constraints even unscanned.
pub async fn unused_indexes(
    conn: &mut AsyncPgConnection,
    schemas: &[String],
) -> Result<Vec<IndexStats>, Error> {
    let sql = format!(
        "{INDEX_STATS} AND s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary ORDER BY size_bytes DESC, 1, 2, 3"
    );
    Ok(sql_query(sql)
        .bind::<diesel::sql_types::Array<Text>, _>(schemas)
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

/// Why a statement was refused by [`explain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainRefusal {
    /// Nothing but whitespace and comments.
    #[error("is empty")]
    Empty,
    /// More than one statement.
    #[error("must be a single statement")]
    MultipleStatements,
    /// Not a SELECT.
    #[error("must be a SELECT (or WITH … SELECT) statement")]
    NotSelect,
    /// An unterminated quote or comment.
    #[error("has an unterminated quote or comment")]
    Unterminated,
}

/// Checks that `sql` is exactly one `SELECT` (or `WITH … SELECT`) and returns it trimmed,
/// without a trailing `;`.
///
/// This is the first of three guards: the statement is also sent as one prepared
/// statement (PostgreSQL refuses several commands in one) inside a `READ ONLY`
/// transaction (so `WITH … DELETE`, `SELECT … INTO` or `FOR UPDATE` fail even if they got
/// past the lexer).
pub fn check_select(sql: &str) -> Result<&str, ExplainRefusal> {
    let tokens = significant_text(sql)?;
    let trimmed = tokens.trim_end();
    let body = trimmed.strip_suffix(';').unwrap_or(trimmed);
    if body.trim().is_empty() {
        return Err(ExplainRefusal::Empty);
    }
    if body.contains(';') {
        return Err(ExplainRefusal::MultipleStatements);
    }
    let first = body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches('(');
    if !(first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with")) {
        return Err(ExplainRefusal::NotSelect);
    }
    // Cut the original at the position of the trailing ';', if any, keeping everything else.
    let original = sql.trim();
    Ok(if trimmed.ends_with(';') {
        original.strip_suffix(';').unwrap_or(original).trim_end()
    } else {
        original
    })
}

/// `sql` with comments removed and the contents of string literals, quoted identifiers
/// and dollar-quoted strings blanked out, so `;` and keywords inside them do not count.
fn significant_text(sql: &str) -> Result<String, ExplainRefusal> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match (c, next) {
            ('-', Some('-')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                out.push(' ');
            }
            ('/', Some('*')) => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err(ExplainRefusal::Unterminated),
                    }
                }
                out.push(' ');
            }
            ('\'', _) | ('"', _) => {
                i += 1;
                loop {
                    match chars.get(i) {
                        Some(&q) if q == c && chars.get(i + 1) == Some(&c) => i += 2,
                        Some(&q) if q == c => break,
                        Some(_) => i += 1,
                        None => return Err(ExplainRefusal::Unterminated),
                    }
                }
                i += 1;
                out.push_str(" x ");
            }
            ('$', _) => {
                // $tag$ … $tag$ (tag may be empty); a lone $n is a parameter.
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|ch| !(ch.is_alphanumeric() || *ch == '_'));
                match tag_end.map(|n| i + 1 + n) {
                    Some(end)
                        if chars[end] == '$'
                            && !chars[i + 1..end].first().is_some_and(char::is_ascii_digit) =>
                    {
                        let tag: String = chars[i..=end].iter().collect();
                        let rest: String = chars[end + 1..].iter().collect();
                        let close = rest.find(&tag).ok_or(ExplainRefusal::Unterminated)?;
                        i = end + 1 + rest[..close].chars().count() + tag.chars().count();
                        out.push_str(" x ");
                        continue;
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
                continue;
            }
            _ => {
                out.push(c);
                i += 1;
                continue;
            }
        }
        if i < chars.len() && !matches!(chars.get(i), Some('\n')) {
            continue;
        }
        i += 1;
    }
    Ok(out)
}

/// Options of [`explain`].
#[derive(Debug, Clone, Copy)]
pub struct ExplainOptions {
    /// Execute the statement (`ANALYZE, BUFFERS`).
    pub analyze: bool,
    /// JSON instead of text output.
    pub json: bool,
    /// `statement_timeout` inside the read-only transaction.
    pub timeout_ms: u64,
}

/// A plan and the numbers read off it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The plan text or JSON.
    pub text: String,
    /// Planner total cost of the top node.
    pub total_cost: f64,
    /// Execution time (ANALYZE only).
    pub execution_time_ms: f64,
    /// Planning time (ANALYZE only).
    pub planning_time_ms: f64,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct Cost {
    #[diesel(sql_type = Nullable<Float8>)]
    total_cost: Option<f64>,
    #[diesel(sql_type = Nullable<Float8>)]
    execution_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Float8>)]
    planning_ms: Option<f64>,
}

/// How the explain transaction ends: always in a rollback, carrying the plan out.
enum ExplainExit {
    Plan(Plan),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for ExplainExit {
    fn from(err: diesel::result::Error) -> Self {
        ExplainExit::Db(err)
    }
}

/// EXPLAINs one SELECT (checked with [`check_select`] by the caller) inside a READ ONLY
/// transaction with a `SET LOCAL statement_timeout`, always in JSON so the cost can be
/// read off, and returns text or JSON as asked.
///
/// The transaction always rolls back, even on success: with ANALYZE the statement runs,
/// and a `set_config(…, false)` in it would otherwise outlive the call on a pooled
/// connection.
pub async fn explain(
    conn: &mut AsyncPgConnection,
    select: &str,
    options: ExplainOptions,
) -> Result<Plan, Error> {
    let select = select.to_owned();
    let outcome = conn
        .build_transaction()
        .read_only()
        .run(async |conn| {
            let plan = explain_in_transaction(conn, &select, options).await?;
            Err::<(), _>(ExplainExit::Plan(plan))
        })
        .await;
    match outcome {
        Err(ExplainExit::Plan(plan)) => Ok(plan),
        Err(ExplainExit::Db(err)) => Err(err.into()),
        Ok(()) => Err(Error::Query(diesel::result::Error::RollbackTransaction)),
    }
}

async fn explain_in_transaction(
    conn: &mut AsyncPgConnection,
    select: &str,
    options: ExplainOptions,
) -> Result<Plan, diesel::result::Error> {
    conn.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        options.timeout_ms
    ))
    .await?;
    let flags = if options.analyze {
        "ANALYZE, BUFFERS, "
    } else {
        ""
    };
    let json_rows: Vec<PlanLine> = sql_query(format!("EXPLAIN ({flags}FORMAT JSON) {select}"))
        .load(conn)
        .await?;
    let json = json_rows.into_iter().map(|l| l.line).collect::<String>();
    let numbers: Vec<Cost> = sql_query(
        "SELECT (($1::jsonb)->0->'Plan'->>'Total Cost')::float8 AS total_cost,
                (($1::jsonb)->0->>'Execution Time')::float8 AS execution_ms,
                (($1::jsonb)->0->>'Planning Time')::float8 AS planning_ms",
    )
    .bind::<Text, _>(&json)
    .load(conn)
    .await?;
    let numbers = <[Cost]>::first(&numbers);
    let text = if options.json {
        json
    } else {
        let lines: Vec<PlanLine> = sql_query(format!("EXPLAIN ({flags}FORMAT TEXT) {select}"))
            .load(conn)
            .await?;
        lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Plan {
        text,
        total_cost: numbers.and_then(|n| n.total_cost).unwrap_or_default(),
        execution_time_ms: numbers.and_then(|n| n.execution_ms).unwrap_or_default(),
        planning_time_ms: numbers.and_then(|n| n.planning_ms).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_selects_pass() {
        let ok = [
            ("SELECT 1", "SELECT 1"),
            ("select 1;", "select 1"),
            (
                "  WITH x AS (SELECT 1) SELECT * FROM x ; ",
                "WITH x AS (SELECT 1) SELECT * FROM x",
            ),
            ("SELECT ';' AS semi", "SELECT ';' AS semi"),
            ("SELECT $$a;b$$", "SELECT $$a;b$$"),
            ("-- comment; here\nSELECT 1", "-- comment; here\nSELECT 1"),
            (
                "/* ; /* nested ; */ */ SELECT \"a;b\" FROM t",
                "/* ; /* nested ; */ */ SELECT \"a;b\" FROM t",
            ),
            ("(SELECT 1)", "(SELECT 1)"),
        ];
        for (input, expected) in ok {
            assert_eq!(check_select(input), Ok(expected), "{input}");
        }
        let refused = [
            ("", ExplainRefusal::Empty),
            (" ; ", ExplainRefusal::Empty),
            ("-- only a comment", ExplainRefusal::Empty),
            ("SELECT 1; SELECT 2", ExplainRefusal::MultipleStatements),
            (
                "SELECT 1; DROP TABLE x;",
                ExplainRefusal::MultipleStatements,
            ),
            ("DELETE FROM t", ExplainRefusal::NotSelect),
            ("UPDATE t SET a = 1", ExplainRefusal::NotSelect),
            ("EXPLAIN SELECT 1", ExplainRefusal::NotSelect),
            (
                "/* SELECT */ INSERT INTO t VALUES (1)",
                ExplainRefusal::NotSelect,
            ),
            ("SELECT 'unterminated", ExplainRefusal::Unterminated),
            ("SELECT $a$ never closed", ExplainRefusal::Unterminated),
            ("SELECT 1 /* open", ExplainRefusal::Unterminated),
        ];
        for (input, refusal) in refused {
            assert_eq!(check_select(input), Err(refusal), "{input}");
        }
    }
}
