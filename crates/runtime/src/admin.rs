//! `strata.admin.v1.AdminService`: detailed health and database diagnostics, served by
//! every process and guarded by [`AdminGuard`].

use std::sync::Arc;
use std::time::Duration;

use strata_proto::admin::admin_service_server::AdminService;
use strata_proto::admin::{self as pb, ComponentStatus};
use strata_proto::common::PoolState;
use strata_storage::explain::{self, ExplainError, ExplainOptions, Failure};
use strata_storage::stats::{self, SlowQueryOrder};
use tonic::{Request, Response, Status};

use crate::config::Secret;
use crate::context::AppContext;
use crate::pagination::{KeyCursor, PageContext, finish_page, page_size, page_size_within};
use crate::time::timestamp;
use strata_errors::{ApiError, ErrorInfo, Violations, respond};
use uuid::Uuid;

const DEFAULT_SLOW_QUERIES: i64 = 20;
const MAX_SLOW_QUERIES: i64 = 500;
/// The list RPCs, whose page tokens are bound to them.
const LIST_SLOW_QUERIES: &str = "strata.admin.v1.AdminService/ListSlowQueries";
const LIST_UNUSED_INDEXES: &str = "strata.admin.v1.AdminService/ListUnusedIndexes";
const DEFAULT_EXPLAIN_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_EXPLAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(2);
/// ExplainQuery calls running at once in a process; more wait, at most the pool's checkout
/// timeout.
const CONCURRENT_EXPLAINS: usize = 2;
/// `ErrorInfo.domain` of failed statements.
const EXPLAIN_DOMAIN: &str = "strata.admin.v1";

/// Guards the admin RPCs (a cheap synchronous check, so an interceptor). A caller
/// authenticated by the auth layer must have the ADMIN role (and, with an API key, the
/// `ops:admin` scope). Processes without an auth service have no auth layer; there the
/// static token `STRATA_ADMIN_TOKEN` is the only way in, and without it every admin RPC is
/// refused.
#[derive(Clone)]
pub struct AdminGuard {
    token: Option<Arc<Secret<String>>>,
}

impl AdminGuard {
    /// A guard also accepting `Bearer <token>` where no auth layer runs.
    pub fn new(token: Option<Secret<String>>) -> Self {
        Self {
            token: token.map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for AdminGuard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(principal) = request.extensions().get::<crate::identity::Principal>() {
            return if principal.is_admin() && principal.has_scope("ops:admin") {
                Ok(request)
            } else {
                Err(ApiError::permission_denied("requires the ADMIN role").into())
            };
        }
        let Some(expected) = &self.token else {
            return Err(ApiError::permission_denied(
                "admin RPCs need an ADMIN user; this process knows no auth service and no admin token",
            )
            .into());
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            Ok(request)
        } else {
            Err(ApiError::unauthenticated("missing or invalid admin credentials").into())
        }
    }
}

/// Compares without an early exit, so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

/// The admin RPC handlers.
pub struct Admin {
    ctx: Arc<AppContext>,
    // Each ExplainQuery holds a connection of its own for up to 30 s: few at a time, so
    // they never crowd out the pools of the services.
    explains: tokio::sync::Semaphore,
}

impl Admin {
    /// Handlers over the process's shared context.
    pub fn new(ctx: Arc<AppContext>) -> Self {
        Self {
            ctx,
            explains: tokio::sync::Semaphore::new(CONCURRENT_EXPLAINS),
        }
    }

    /// The schemas to report (`schema`, or every application schema when empty) and the
    /// optional table filter, both checked to be plain identifiers.
    fn filters<'a>(
        schema: &str,
        table: &'a str,
    ) -> Result<(Vec<String>, Option<&'a str>), ApiError> {
        let schemas = if schema.is_empty() {
            stats::APP_SCHEMAS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            check_identifier("schema", schema)?;
            vec![schema.to_owned()]
        };
        if table.is_empty() {
            return Ok((schemas, None));
        }
        check_identifier("table", table)?;
        Ok((schemas, Some(table)))
    }
}

fn check_identifier(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > 63 || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ApiError::invalid(
            field,
            "must be a PostgreSQL identifier of at most 63 letters, digits or '_'",
        ));
    }
    Ok(())
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

/// A duration of `ms` milliseconds (PostgreSQL's statistics), zero when not a real one.
fn millis(ms: f64) -> prost_types::Duration {
    duration(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default())
}

/// A count as the API's `int32`.
fn count(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

fn index_usage(i: stats::IndexStats) -> pb::IndexUsage {
    pb::IndexUsage {
        schema: i.schema,
        table: i.table,
        index: i.index,
        scans: i.scans,
        tuples_read: i.tuples_read,
        tuples_fetched: i.tuples_fetched,
        size_bytes: i.size_bytes,
        unique: i.unique,
        primary: i.primary,
        definition: i.definition,
    }
}

/// How a failed `ExplainQuery` reads. The caller's statement is described by its SQLSTATE,
/// its position and a phrase of a fixed vocabulary (also as `ErrorInfo` metadata), never by
/// PostgreSQL's message, which can quote database values.
fn explain_error(err: ExplainError) -> ApiError {
    let statement = match err {
        ExplainError::Storage(e) => return e.into(),
        ExplainError::Statement(statement) => statement,
    };
    let description = statement.to_string();
    let message = format!("sql: {description}");
    let error = match statement.failure {
        Failure::Invalid | Failure::ReadOnly => ApiError::invalid("sql", description),
        Failure::PermissionDenied => ApiError::permission_denied(message),
        Failure::Timeout => ApiError::DeadlineExceeded(message.into()),
        Failure::Unavailable => ApiError::unavailable(message),
    };
    let mut metadata =
        std::collections::HashMap::from([("sqlstate".to_owned(), statement.sqlstate.clone())]);
    if let Some(position) = statement.position {
        metadata.insert("position".to_owned(), position.to_string());
    }
    error.with_info(ErrorInfo {
        reason: "SQL_STATEMENT_FAILED".into(),
        domain: EXPLAIN_DOMAIN.into(),
        metadata,
    })
}

/// The handlers, returning the suite's error; the trait impl below only answers.
impl Admin {
    async fn get_health(
        &self,
        _request: Request<pb::GetHealthRequest>,
    ) -> Result<pb::GetHealthResponse, ApiError> {
        let ctx = &self.ctx;
        let pool = ctx.db.state();
        let pool = PoolState {
            connections: count(pool.connections),
            idle: count(pool.idle),
            in_use: count(pool.in_use),
            max_size: count(pool.max_size),
            waiting: count(pool.waiting),
        };
        let database = match tokio::time::timeout(DEPENDENCY_TIMEOUT, ctx.db.ping()).await {
            Ok(Ok(rtt)) => pb::DatabaseHealth {
                status: ComponentStatus::Up.into(),
                round_trip: Some(duration(rtt)),
                pool: Some(pool),
                error: String::new(),
            },
            Ok(Err(e)) => pb::DatabaseHealth {
                status: ComponentStatus::Down.into(),
                round_trip: None,
                pool: Some(pool),
                error: if e.is_unavailable() {
                    "unreachable".into()
                } else {
                    "query failed".into()
                },
            },
            Err(_) => pb::DatabaseHealth {
                status: ComponentStatus::Down.into(),
                round_trip: None,
                pool: Some(pool),
                error: "timed out".into(),
            },
        };
        let redis = match &ctx.redis {
            None => pb::RedisHealth {
                status: ComponentStatus::Disabled.into(),
                ..Default::default()
            },
            Some(redis) => match tokio::time::timeout(DEPENDENCY_TIMEOUT, redis.ping()).await {
                Ok(Ok(rtt)) => pb::RedisHealth {
                    status: ComponentStatus::Up.into(),
                    round_trip: Some(duration(rtt)),
                    error: String::new(),
                },
                Ok(Err(_)) => pb::RedisHealth {
                    status: ComponentStatus::Down.into(),
                    round_trip: None,
                    error: "unreachable".into(),
                },
                Err(_) => pb::RedisHealth {
                    status: ComponentStatus::Down.into(),
                    round_trip: None,
                    error: "timed out".into(),
                },
            },
        };
        let migrations = if database.status == i32::from(ComponentStatus::Up) {
            let mut conn = ctx.db.get().await?;
            let status = ctx.migrations.status(&mut conn).await?;
            Some(pb::MigrationHealth {
                applied: count(status.applied().len()),
                pending: count(status.pending().len()),
                drifted: status.drifted(),
                unknown: status.unknown(),
                latest_applied: status.latest_applied().unwrap_or_default().to_owned(),
            })
        } else {
            None
        };
        Ok(pb::GetHealthResponse {
            service: ctx.config.service.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime: Some(duration(ctx.started_at.elapsed())),
            database: Some(database),
            redis: Some(redis),
            migrations,
            // This call went through the limiter itself: its state is current.
            rate_limiter: Some(pb::RateLimiterHealth {
                status: if !ctx.limiter.shared() {
                    ComponentStatus::Disabled
                } else if ctx.limiter.degraded() {
                    ComponentStatus::Down
                } else {
                    ComponentStatus::Up
                }
                .into(),
                replicas: i32::try_from(ctx.limiter.known_replicas()).unwrap_or(i32::MAX),
            }),
            tasks: ctx
                .tasks
                .snapshot()
                .into_iter()
                .map(|t| pb::BackgroundTask {
                    name: t.name,
                    interval: Some(duration(t.every)),
                    last_run_time: t.last_run.map(prost_types::Timestamp::from),
                    last_run_failed: t.last_failed,
                    run_count: i64::try_from(t.runs).unwrap_or(i64::MAX),
                    failure_count: i64::try_from(t.failures).unwrap_or(i64::MAX),
                })
                .collect(),
        })
    }

    async fn list_slow_queries(
        &self,
        request: Request<pb::ListSlowQueriesRequest>,
    ) -> Result<pb::ListSlowQueriesResponse, ApiError> {
        let req = request.into_inner();
        let mut violations = Violations::new();
        let limit = violations.absorb(page_size_within(
            req.page_size,
            DEFAULT_SLOW_QUERIES,
            MAX_SLOW_QUERIES,
        ))?;
        if req.min_calls < 0 {
            violations.add("min_calls", "must not be negative");
        }
        let order = match pb::SlowQueryOrder::try_from(req.order_by) {
            Ok(pb::SlowQueryOrder::Unspecified | pb::SlowQueryOrder::MeanTime) => {
                SlowQueryOrder::MeanTime
            }
            Ok(pb::SlowQueryOrder::TotalTime) => SlowQueryOrder::TotalTime,
            Err(_) => {
                violations.add("order_by", "unknown value");
                SlowQueryOrder::MeanTime
            }
        };
        let limit = violations.finish_with(limit)?;
        // Bound to the order and filter: a token of another ordering would skip rows.
        let context = PageContext::new(
            LIST_SLOW_QUERIES,
            &Uuid::nil(),
            &[&req.order_by.to_string(), &req.min_calls.to_string()],
        );
        let after = match KeyCursor::decode(&req.page_token, &context)? {
            Some(cursor) => {
                let mut keys = cursor.reader();
                let key = stats::SlowQueryKey {
                    time_ms: keys.f64()?,
                    query_id: keys.i64()?,
                    user_id: keys.i64()?,
                    top_level: i32::try_from(keys.i64()?).unwrap_or_default(),
                };
                keys.end()?;
                Some(key)
            }
            None => None,
        };
        let mut conn = self.ctx.db.get().await?;
        if !stats::has_pg_stat_statements(&mut conn).await? {
            return Err(ApiError::failed_precondition(
                "pg_stat_statements is not installed: preload it (shared_preload_libraries) and rerun migrations",
            ));
        }
        let rows =
            stats::slow_queries(&mut conn, order, after.as_ref(), limit + 1, req.min_calls).await?;
        let (rows, next_page_token) = finish_page(rows, limit, |last| {
            let key = match order {
                SlowQueryOrder::MeanTime => last.mean_time_ms,
                SlowQueryOrder::TotalTime => last.total_time_ms,
            };
            KeyCursor::default()
                .push_f64(key)
                .push_i64(last.query_id)
                .push_i64(last.user_id)
                .push_i64(i64::from(last.top_level))
                .encode(&context)
        });
        Ok(pb::ListSlowQueriesResponse {
            next_page_token,
            queries: rows
                .into_iter()
                .map(|q| pb::SlowQuery {
                    query_id: q.query_id,
                    query: q.query,
                    calls: q.calls,
                    rows: q.rows,
                    total_time: Some(millis(q.total_time_ms)),
                    mean_time: Some(millis(q.mean_time_ms)),
                    max_time: Some(millis(q.max_time_ms)),
                    stddev_time: Some(millis(q.stddev_time_ms)),
                    cache_hit_ratio: q.cache_hit_ratio,
                })
                .collect(),
        })
    }

    async fn get_index_usage(
        &self,
        request: Request<pb::GetIndexUsageRequest>,
    ) -> Result<pb::GetIndexUsageResponse, ApiError> {
        let req = request.into_inner();
        let (schemas, table) = Self::filters(&req.schema, &req.table)?;
        let mut conn = self.ctx.db.get().await?;
        let rows = stats::index_usage(&mut conn, &schemas, table).await?;
        Ok(pb::GetIndexUsageResponse {
            indexes: rows.into_iter().map(index_usage).collect(),
        })
    }

    async fn list_unused_indexes(
        &self,
        request: Request<pb::ListUnusedIndexesRequest>,
    ) -> Result<pb::ListUnusedIndexesResponse, ApiError> {
        let req = request.into_inner();
        let mut violations = Violations::new();
        let schemas = violations.absorb(Self::filters(&req.schema, "").map(|(s, _)| s))?;
        let limit = violations.absorb(page_size(req.page_size))?;
        let limit = limit.unwrap_or_default();
        let schemas = violations.finish_with(schemas)?;
        let context = PageContext::new(LIST_UNUSED_INDEXES, &Uuid::nil(), &[&req.schema]);
        let after = match KeyCursor::decode(&req.page_token, &context)? {
            Some(cursor) => {
                let mut keys = cursor.reader();
                let key = stats::UnusedIndexKey {
                    size_bytes: keys.i64()?,
                    schema: keys.str()?,
                    table: keys.str()?,
                    index: keys.str()?,
                };
                keys.end()?;
                Some(key)
            }
            None => None,
        };
        let mut conn = self.ctx.db.get().await?;
        let rows = stats::unused_indexes(&mut conn, &schemas, after.as_ref(), limit + 1).await?;
        let (rows, next_page_token) = finish_page(rows, limit, |last| {
            KeyCursor::default()
                .push_i64(last.size_bytes)
                .push_str(&last.schema)
                .push_str(&last.table)
                .push_str(&last.index)
                .encode(&context)
        });
        Ok(pb::ListUnusedIndexesResponse {
            indexes: rows.into_iter().map(index_usage).collect(),
            next_page_token,
        })
    }

    async fn get_table_stats(
        &self,
        request: Request<pb::GetTableStatsRequest>,
    ) -> Result<pb::GetTableStatsResponse, ApiError> {
        let req = request.into_inner();
        let (schemas, table) = Self::filters(&req.schema, &req.table)?;
        let mut conn = self.ctx.db.get().await?;
        let rows = stats::table_stats(&mut conn, &schemas, table).await?;
        Ok(pb::GetTableStatsResponse {
            tables: rows
                .into_iter()
                .map(|t| pb::TableStats {
                    schema: t.schema,
                    table: t.table,
                    live_rows: t.live_rows,
                    dead_rows: t.dead_rows,
                    table_size_bytes: t.table_size_bytes,
                    index_size_bytes: t.index_size_bytes,
                    total_size_bytes: t.total_size_bytes,
                    seq_scans: t.seq_scans,
                    index_scans: t.index_scans,
                    last_vacuum_time: t.last_vacuum.map(timestamp),
                    last_analyze_time: t.last_analyze.map(timestamp),
                })
                .collect(),
        })
    }

    async fn explain_query(
        &self,
        request: Request<pb::ExplainQueryRequest>,
    ) -> Result<pb::ExplainQueryResponse, ApiError> {
        let req = request.into_inner();
        let select = explain::check_select(&req.sql)
            .map_err(|refusal| ApiError::invalid("sql", refusal.to_string()))?;
        let json = match pb::ExplainFormat::try_from(req.format) {
            Ok(pb::ExplainFormat::Unspecified | pb::ExplainFormat::Text) => false,
            Ok(pb::ExplainFormat::Json) => true,
            Err(_) => return Err(ApiError::invalid("format", "unknown value")),
        };
        let timeout = match req.timeout {
            None => DEFAULT_EXPLAIN_TIMEOUT,
            Some(d) => match Duration::try_from(d) {
                Ok(d) if !d.is_zero() && d <= MAX_EXPLAIN_TIMEOUT => d,
                _ => {
                    return Err(ApiError::invalid(
                        "timeout",
                        "must be positive and at most 30s",
                    ));
                }
            },
        };
        let options = ExplainOptions {
            analyze: req.analyze,
            json,
            timeout_ms: u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        };
        let wait = self.ctx.config.db.checkout_timeout;
        let _permit = tokio::time::timeout(wait, self.explains.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ApiError::unavailable("too many ExplainQuery calls at once; retry shortly")
            })?;
        let plan = explain::explain(&self.ctx.config.db, &req.sql, select, options)
            .await
            .map_err(explain_error)?;
        Ok(pb::ExplainQueryResponse {
            plan: plan.text,
            total_cost: plan.total_cost,
            execution_time: req.analyze.then(|| millis(plan.execution_time_ms)),
            planning_time: req.analyze.then(|| millis(plan.planning_time_ms)),
        })
    }
}

/// The caches' figures as the API reports them.
fn cache_stats(c: strata_cache::CacheStats) -> pb::CacheStats {
    let tier = |t: &strata_cache::TierStats| pb::CacheTierStats {
        hits: t.hits,
        misses: t.misses,
        hit_rate: t.hit_rate(),
        evictions: t.evictions,
        entries: t.entries,
        errors: t.errors,
    };
    pb::CacheStats {
        memory: Some(tier(&c.l1)),
        redis: Some(tier(&c.l2)),
        name: c.name,
        loads: c.loads,
        load_errors: c.load_errors,
        load_time: Some(duration(c.load_time)),
        refused_fills: c.refused_fills,
    }
}

/// The cache handlers.
impl Admin {
    async fn get_cache_stats(&self) -> pb::GetCacheStatsResponse {
        let caches = &self.ctx.caches;
        pb::GetCacheStatsResponse {
            caches: caches.stats().await.into_iter().map(cache_stats).collect(),
            listening: caches.listening(),
        }
    }

    async fn clear_cache(
        &self,
        request: Request<pb::ClearCacheRequest>,
    ) -> Result<pb::ClearCacheResponse, ApiError> {
        let name = request.into_inner().name;
        let caches = &self.ctx.caches;
        let only = (!name.is_empty()).then_some(name.as_str());
        let cleared = caches.clear(only).await.map_err(|_| {
            ApiError::invalid(
                "name",
                format!(
                    "no such cache; the caches are: {}",
                    caches.names().join(", ")
                ),
            )
        })?;
        tracing::info!(
            cache = only.unwrap_or("*"),
            cache.memory_entries = cleared.l1_entries,
            cache.redis_entries = cleared.l2_entries,
            "cache cleared"
        );
        Ok(pb::ClearCacheResponse {
            names: only.map_or_else(|| caches.names(), |n| vec![n.to_owned()]),
            memory_entries: cleared.l1_entries,
            redis_entries: cleared.l2_entries,
        })
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn get_cache_stats(
        &self,
        _request: Request<pb::GetCacheStatsRequest>,
    ) -> Result<Response<pb::GetCacheStatsResponse>, Status> {
        Ok(Response::new(Admin::get_cache_stats(self).await))
    }

    async fn clear_cache(
        &self,
        request: Request<pb::ClearCacheRequest>,
    ) -> Result<Response<pb::ClearCacheResponse>, Status> {
        respond(Admin::clear_cache(self, request).await)
    }

    async fn get_health(
        &self,
        request: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::GetHealthResponse>, Status> {
        respond(Admin::get_health(self, request).await)
    }

    async fn list_slow_queries(
        &self,
        request: Request<pb::ListSlowQueriesRequest>,
    ) -> Result<Response<pb::ListSlowQueriesResponse>, Status> {
        respond(Admin::list_slow_queries(self, request).await)
    }

    async fn get_index_usage(
        &self,
        request: Request<pb::GetIndexUsageRequest>,
    ) -> Result<Response<pb::GetIndexUsageResponse>, Status> {
        respond(Admin::get_index_usage(self, request).await)
    }

    async fn list_unused_indexes(
        &self,
        request: Request<pb::ListUnusedIndexesRequest>,
    ) -> Result<Response<pb::ListUnusedIndexesResponse>, Status> {
        respond(Admin::list_unused_indexes(self, request).await)
    }

    async fn get_table_stats(
        &self,
        request: Request<pb::GetTableStatsRequest>,
    ) -> Result<Response<pb::GetTableStatsResponse>, Status> {
        respond(Admin::get_table_stats(self, request).await)
    }

    async fn explain_query(
        &self,
        request: Request<pb::ExplainQueryRequest>,
    ) -> Result<Response<pb::ExplainQueryResponse>, Status> {
        respond(Admin::explain_query(self, request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"secretx", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"Secret", b"secret"));
    }
}
