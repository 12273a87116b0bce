//! Synthetic usage for benchmarks and demos (`strata seed usage --rows N`).
//!
//! Rows are generated inside PostgreSQL (`INSERT … SELECT` over `generate_series`, in
//! chunks) rather than sent over the wire, which is the fastest way to load tens of
//! millions of rows while still writing every index and an idempotency key per row, as
//! real ingest does. The data has the shape of real traffic: users follow a power law
//! (user 0 is the heaviest), 70% of calls belong to one of the projects, eight models
//! with their own prices, mostly chat, a few failures, spread over the last `days` days.

use chrono::{DateTime, Duration, Utc};
use diesel::sql_types::{BigInt, Double, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use strata_storage::config::DbConfig;
use strata_storage::pool::{dedicated_connection, run_workers};
use uuid::Uuid;

use crate::partitions::{Partitions, month_of};

/// Producer id of seeded rows.
pub const SEED_PRODUCER: Uuid = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000);

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedOptions {
    /// Rows to insert.
    pub rows: u64,
    /// Distinct users.
    pub users: u32,
    /// Distinct projects.
    pub projects: u32,
    /// Rows occur over the last this many days.
    pub days: u32,
    /// Rows per statement.
    pub chunk: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            rows: 1_000_000,
            users: 2_000,
            projects: 20_000,
            days: 90,
            chunk: 50_000,
        }
    }
}

/// The id of seeded user `n` (0 is the heaviest).
pub fn seed_user(n: u32) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | u128::from(n))
}

/// The id of seeded project `n`.
pub fn seed_project(n: u32) -> Uuid {
    Uuid::from_u128(0x0000_0001_0000_4000_8000_0000_0000_0000 | u128::from(n))
}

/// Inserts `options.rows` rows over `workers` connections made with `db` (chunks are
/// handed out in order, so time still advances roughly chunk by chunk), calling
/// `progress(done, total)` about twice a second and at the end. Returns the rows
/// inserted.
pub async fn seed(
    db: &DbConfig,
    options: SeedOptions,
    workers: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, strata_storage::Error> {
    let now = Utc::now();
    let first = now - Duration::days(i64::from(options.days));
    let mut months = vec![month_of(first)];
    while let Some(next) = months
        .last()
        .and_then(|m| m.checked_add_months(chrono::Months::new(1)))
        .filter(|m| *m <= month_of(now))
    {
        months.push(next);
    }
    let mut config = db.clone();
    // A chunk writes every index for tens of thousands of rows: no pool-sized timeout.
    config.statement_timeout = std::time::Duration::ZERO;
    let mut conn = dedicated_connection(&config).await?;
    Partitions::default().ensure(&mut conn, months).await?;
    drop(conn);
    // Keys must be unique per producer across runs too.
    let run = Uuid::new_v4().simple().to_string();
    let next_chunk = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let chunks = options.rows.div_ceil(options.chunk.max(1));
    let worker = async || -> Result<(), strata_storage::Error> {
        let mut conn = dedicated_connection(&config).await?;
        loop {
            let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
            if chunk >= chunks {
                return Ok(());
            }
            let start = chunk * options.chunk;
            let n = options.chunk.min(options.rows - start);
            let first_n = i64::try_from(start).unwrap_or(i64::MAX);
            let last_n = i64::try_from(start + n - 1).unwrap_or(i64::MAX);
            insert_chunk(&mut conn, &options, &run, first, first_n, last_n).await?;
            done.fetch_add(n, Ordering::Relaxed);
        }
    };
    run_workers(workers, worker, &done, options.rows, &mut progress).await?;
    let done = AtomicU64::load(&done, Ordering::Relaxed);
    // After a bulk load, statistics now rather than whenever autovacuum gets to them: a
    // partition without any reads as nearly empty, and the planner then scans a user's
    // whole range by time where a few rows by arrival would do.
    analyze_ledger(&config).await?;
    Ok(done)
}

/// `ANALYZE` of every ledger partition.
pub async fn analyze_ledger(db: &DbConfig) -> Result<(), strata_storage::Error> {
    let mut conn = dedicated_connection(db).await?;
    conn.batch_execute("ANALYZE analytics.token_usage").await?;
    Ok(())
}

async fn insert_chunk(
    conn: &mut AsyncPgConnection,
    options: &SeedOptions,
    run: &str,
    first: DateTime<Utc>,
    start: i64,
    end: i64,
) -> Result<usize, diesel::result::Error> {
    // Rows are spread evenly over the period in the order they are generated, so each
    // chunk covers its own slice of time: indexes led by time grow at their right edge,
    // as they do under real ingest, instead of taking random inserts.
    let span = Duration::days(i64::from(options.days))
        .num_microseconds()
        .unwrap_or(i64::MAX) as f64;
    let step_micros = span / options.rows.max(1) as f64;
    diesel::sql_query(
        "WITH models(i, model, provider, price_in, price_out) AS (VALUES \
           (0, 'gpt-4o-mini', 'openai', 0.00000015, 0.0000006), \
           (1, 'gpt-4o', 'openai', 0.0000025, 0.00001), \
           (2, 'claude-3-5-sonnet', 'anthropic', 0.000003, 0.000015), \
           (3, 'claude-3-haiku', 'anthropic', 0.00000025, 0.00000125), \
           (4, 'gemini-1.5-pro', 'google', 0.00000125, 0.000005), \
           (5, 'llama-3.1-70b', 'groq', 0.00000059, 0.00000079), \
           (6, 'mistral-large', 'mistral', 0.000002, 0.000006), \
           (7, 'text-embedding-3-small', 'openai', 0.00000002, 0)), \
         gen AS ( \
           SELECT gen_random_uuid() AS id, \
                  'seed-' || $2 || '-' || g.n AS idempotency_key, \
                  ('00000000-0000-4000-8000-' || lpad(to_hex(floor(pow(random(), 2) * $3)::int), 12, '0'))::uuid AS user_id, \
                  CASE WHEN random() < 0.7 THEN ('00000001-0000-4000-8000-' || lpad(to_hex(floor(pow(random(), 2) * $4)::int), 12, '0'))::uuid END AS project_id, \
                  CASE WHEN random() < 0.5 THEN gen_random_uuid() END AS conversation_id, \
                  floor(pow(random(), 1.5) * 8)::int AS m, \
                  floor(50 + random() * 4000)::bigint AS prompt_tokens, \
                  floor(random() * 1200)::bigint AS completion, \
                  random() AS r, \
                  (200 + random() * 3000)::int AS latency_ms, \
                  $5::timestamptz + (g.n + random()) * $8::float8 * interval '1 microsecond' AS occurred_at \
           FROM generate_series($6::bigint, $7::bigint) AS g(n) \
         ), rows AS ( \
           SELECT gen.*, models.model, models.provider, \
                  CASE WHEN models.i = 7 THEN 'embedding' WHEN gen.r < 0.85 THEN 'chat' ELSE 'completion' END AS operation, \
                  CASE WHEN models.i = 7 THEN 0 ELSE gen.completion END AS completion_tokens, \
                  models.price_in, models.price_out, \
                  CASE WHEN gen.r < 0.97 THEN 'succeeded' WHEN gen.r < 0.99 THEN 'failed' ELSE 'cancelled' END AS status \
           FROM gen JOIN models ON models.i = gen.m \
         ), fresh AS ( \
           INSERT INTO analytics.usage_keys (producer_id, idempotency_key, usage_id) \
           SELECT $1, idempotency_key, id FROM rows \
           ON CONFLICT DO NOTHING RETURNING usage_id \
         ) \
         INSERT INTO analytics.token_usage (id, producer_id, idempotency_key, user_id, \
             project_id, conversation_id, model, provider, operation, prompt_tokens, \
             completion_tokens, cost, latency_ms, status, occurred_at) \
         SELECT r.id, $1, r.idempotency_key, r.user_id, r.project_id, r.conversation_id, \
                r.model, r.provider, r.operation, r.prompt_tokens, r.completion_tokens, \
                round(r.prompt_tokens * r.price_in + r.completion_tokens * r.price_out, 10), \
                r.latency_ms, r.status, r.occurred_at \
         FROM rows r JOIN fresh f ON f.usage_id = r.id")
    .bind::<SqlUuid, _>(SEED_PRODUCER)
    .bind::<Text, _>(run)
    .bind::<Integer, _>(i32::try_from(options.users.max(1)).unwrap_or(i32::MAX))
    .bind::<Integer, _>(i32::try_from(options.projects.max(1)).unwrap_or(i32::MAX))
    .bind::<Timestamptz, _>(first)
    .bind::<BigInt, _>(start)
    .bind::<BigInt, _>(end)
    .bind::<Double, _>(step_micros)
    .execute(conn)
    .await
}
