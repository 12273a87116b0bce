//! The `AnalyticsService` handlers: authorize, validate, call the store, convert to proto.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel_async::AsyncPgConnection;
use strata_errors::{ApiError, respond};
use strata_proto::analytics::analytics_service_server::AnalyticsService;
use strata_proto::analytics::{self as pb, usage_scope::Subject};
use strata_proto::common::{Decimal, TimeRange, TokenCounts};
use strata_runtime::AppContext;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{
    Cursor, KeyCursor, PageContext, finish_page, page_size, page_size_within,
};
use strata_runtime::server::Peer;
use strata_runtime::time::{from_timestamp, timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::config::AnalyticsConfig;
use crate::error::AnalyticsError;
use crate::model::{self, NewUsage, check_batch, parse_uuid};
use crate::partitions::{Partitions, month_of};
use crate::projects::ProjectOwners;
use crate::scheduler::Scheduler;
use crate::store::{self, Bucket, Group, Range, Rank, RankKey, Scope, Totals, UsageFilter};
use crate::views::{self, Contention, Refresher, ViewName};

/// Scope an API key needs to record usage.
pub const SCOPE_WRITE: &str = "usage:write";
/// Scope an API key needs to read usage.
pub const SCOPE_READ: &str = "usage:read";
/// Scope an API key (of an admin) needs for the view RPCs.
pub const SCOPE_ADMIN: &str = "usage:admin";
/// Bounds of a readable range, in seconds either side of the epoch (about 1840 to 2100):
/// far beyond any usage, and far from where bucket arithmetic could overflow.
const MAX_RANGE_SECONDS: i64 = 130 * 365 * 86_400;
/// Most buckets one summary may return.
const MAX_BUCKETS: i64 = 1000;
/// ListTopModels, whose page tokens are bound to it.
const LIST_TOP_MODELS: &str = "strata.analytics.v1.AnalyticsService/ListTopModels";
/// Default and largest `page_size` of ListTopModels.
const TOP_MODELS: (i64, i64) = (10, 100);
/// ListUsage, whose page tokens are bound to it.
const LIST_USAGE: &str = "strata.analytics.v1.AnalyticsService/ListUsage";
/// How long RefreshViews waits for a refresh running elsewhere.
const REFRESH_WAIT: Duration = Duration::from_secs(30);

/// Whether `s` is one or more ASCII digits.
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A proto duration of `ms` milliseconds (as stored).
fn duration_ms(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The handlers and what they share.
pub struct AnalyticsHandlers {
    ctx: Arc<AppContext>,
    partitions: Arc<Partitions>,
    refresher: Refresher,
    scheduler: Scheduler,
    seen: SeenWatermarks,
    /// Who owns a project (the content service's answer, cached).
    owners: ProjectOwners,
}

impl std::fmt::Debug for AnalyticsHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsHandlers")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl AnalyticsHandlers {
    /// Handlers over `ctx`; their scheduler runs once they are registered with a server
    /// (see [`crate::register_handlers`]).
    pub fn new(ctx: Arc<AppContext>, config: AnalyticsConfig) -> Self {
        let partitions = Arc::new(Partitions::default());
        let refresher = Refresher::new(
            ctx.config.db.clone(),
            config.refresh_timeout,
            format!("{}/{}", ctx.config.db.application_name, std::process::id()),
        );
        let scheduler = Scheduler::new(
            ctx.db.clone(),
            refresher.clone(),
            Arc::clone(&partitions),
            config.clone(),
        );
        Self {
            owners: ProjectOwners::new(&ctx, None),
            ctx,
            partitions,
            refresher,
            scheduler,
            seen: SeenWatermarks::default(),
        }
    }

    /// These handlers, showing a project's usage to its owner as the content service at
    /// `content` knows it (without one, only admins read project usage).
    pub fn with_content(mut self, content: Peer) -> Self {
        self.owners = ProjectOwners::new(&self.ctx, Some(content));
        self
    }

    /// The scheduler (for tests and tools that run a round by hand).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    async fn record(&self, producer: Uuid, rows: &[NewUsage]) -> Result<Vec<Uuid>, AnalyticsError> {
        let months: HashSet<_> = rows.iter().map(|r| month_of(r.occurred_at)).collect();
        let db = &self.ctx.db;
        db.retrying("record_usage", || async {
            let mut conn = db.get().await?;
            self.partitions
                .ensure(&mut conn, months.iter().copied())
                .await?;
            match store::insert_usage(&mut conn, producer, rows).await {
                // The only CHECK a validated row can fail is "no partition for this row":
                // someone dropped a partition this process thought it had.
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::CheckViolation,
                    _,
                )) => {
                    self.partitions.forget();
                    self.partitions
                        .ensure(&mut conn, months.iter().copied())
                        .await?;
                    Ok(store::insert_usage(&mut conn, producer, rows).await?)
                }
                other => Ok::<_, AnalyticsError>(other?),
            }
        })
        .await
    }

    /// Runs `read`, one statement that adds the raw rows received after `view`'s current
    /// watermark to the summary (see [`store::Watermark`]), given the newest watermark of
    /// `view` this process has seen; remembers the one it read (`watermark_of`) for the
    /// next read.
    async fn with_watermark<T: Send>(
        &self,
        view: ViewName,
        read: impl for<'c> FnOnce(&'c mut AsyncPgConnection, store::Watermark) -> Read<'c, T> + Send,
        watermark_of: impl FnOnce(&T) -> Option<DateTime<Utc>>,
    ) -> Result<T, AnalyticsError> {
        let mut conn = self.ctx.db.get().await?;
        let value = read(&mut conn, self.seen.watermark(view)).await?;
        if let Some(watermark) = watermark_of(&value) {
            self.seen.saw(view, watermark);
        }
        Ok(value)
    }

    async fn view_statuses(&self) -> Result<Vec<pb::ViewStatus>, AnalyticsError> {
        let mut conn = self.ctx.db.get().await?;
        let states = views::states(&mut conn).await?;
        Ok(ViewName::ALL
            .iter()
            .filter_map(|view| {
                let state = states.iter().find(|s| s.view_name == view.as_str())?;
                Some(pb::ViewStatus {
                    view: view_proto(*view).into(),
                    watermark: (state.refresh_count > 0).then(|| timestamp(state.watermark)),
                    last_refresh_time: state.refreshed_at.map(timestamp),
                    last_refresh_duration: state.duration_ms.map(duration_ms),
                    row_count: state.row_count.unwrap_or(0),
                    refresh_interval: prost_types::Duration::try_from(
                        self.scheduler.interval(*view),
                    )
                    .ok(),
                    refresh_count: state.refresh_count,
                })
            })
            .collect())
    }
}

/// The watermark aggregate rows were read at (every row carries it).
fn read_at(rows: &[store::Aggregate]) -> Option<DateTime<Utc>> {
    rows.first().and_then(|row| row.watermark)
}

/// The newest watermark of each summary that a read in this process has seen (microseconds
/// since the epoch; the epoch before any).
#[derive(Debug, Default)]
struct SeenWatermarks([AtomicI64; 2]);

impl SeenWatermarks {
    fn slot(&self, view: ViewName) -> &AtomicI64 {
        match view {
            ViewName::UserTokenSummary => &self.0[0],
            ViewName::ProjectStats => &self.0[1],
        }
    }

    fn watermark(&self, view: ViewName) -> store::Watermark {
        let micros = self.slot(view).load(Ordering::Relaxed);
        store::Watermark::new(
            view,
            DateTime::from_timestamp_micros(micros).unwrap_or_default(),
        )
    }

    fn saw(&self, view: ViewName, watermark: DateTime<Utc>) {
        self.slot(view)
            .fetch_max(watermark.timestamp_micros(), Ordering::Relaxed);
    }
}

/// A read run by [`AnalyticsHandlers::with_watermark`].
type Read<'c, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, diesel::result::Error>> + Send + 'c>,
>;

fn view_proto(view: ViewName) -> pb::View {
    match view {
        ViewName::UserTokenSummary => pb::View::UserTokenSummary,
        ViewName::ProjectStats => pb::View::ProjectStats,
    }
}

/// The caller, as verified by the auth layer.
fn principal<T>(request: &Request<T>) -> Result<Principal, AnalyticsError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or(AnalyticsError::Unauthenticated)
}

/// The scope of content's reads (`strata.content.v1`), which asking who owns a project
/// needs.
const CONTENT_SCOPE_READ: &str = "content:read";

fn require_scope(principal: &Principal, scope: &str) -> Result<(), AnalyticsError> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(AnalyticsError::PermissionDenied(format!(
            "the API key lacks the {scope} scope"
        )))
    }
}

fn require_admin(principal: &Principal) -> Result<(), AnalyticsError> {
    require_scope(principal, SCOPE_ADMIN)?;
    if principal.is_admin() {
        Ok(())
    } else {
        Err(AnalyticsError::PermissionDenied(
            "only admins may do this".into(),
        ))
    }
}

/// Whose usage a read covers, checked against who is asking. Naming another user is
/// refused whether or not that user exists; a project the caller may not read is
/// reported missing, exactly like a project that does not exist.
async fn resolve_scope(
    owners: &ProjectOwners,
    principal: &Principal,
    scope: Option<pb::UsageScope>,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Scope, AnalyticsError> {
    match scope.and_then(|s| s.subject) {
        None | Some(Subject::AllUsers(false)) => Ok(Scope::User(principal.user_id)),
        Some(Subject::UserId(id)) => {
            let id = parse_uuid(&id).map_err(|e| AnalyticsError::invalid("scope.user_id", e))?;
            if id == principal.user_id || principal.is_admin() {
                Ok(Scope::User(id))
            } else {
                Err(AnalyticsError::PermissionDenied(
                    "only admins read other users' usage".into(),
                ))
            }
        }
        Some(Subject::ProjectId(id)) => {
            let id = parse_uuid(&id).map_err(|e| AnalyticsError::invalid("scope.project_id", e))?;
            // Admins read any project's usage; its owner (as the content service
            // says) reads theirs; to anyone else it is missing.
            // The owner is asked of content with the caller's credentials: an API key
            // needs content's read scope too, checked here so that a cached owner
            // answers exactly as content would.
            if !principal.is_admin() {
                require_scope(principal, CONTENT_SCOPE_READ)?;
            }
            if principal.is_admin() || owners.owned_by(id, principal.user_id, metadata).await? {
                Ok(Scope::Project(id))
            } else {
                Err(AnalyticsError::NotFound("project"))
            }
        }
        Some(Subject::AllUsers(true)) => {
            if principal.is_admin() {
                Ok(Scope::All)
            } else {
                Err(AnalyticsError::PermissionDenied(
                    "only admins read every user's usage".into(),
                ))
            }
        }
    }
}

/// The request's range widened to whole buckets, checked for order and size.
fn bucket_range(range: Option<&TimeRange>, bucket: Bucket) -> Result<Range, AnalyticsError> {
    let range = range.ok_or_else(|| AnalyticsError::invalid("time_range", "is required"))?;
    let bound = |field: &'static str, t: Option<&prost_types::Timestamp>| {
        t.ok_or_else(|| AnalyticsError::invalid(field, "is required"))
            .and_then(|t| {
                from_timestamp(t)
                    .filter(|t| t.timestamp().abs() < MAX_RANGE_SECONDS)
                    .ok_or_else(|| AnalyticsError::invalid(field, "is not a valid timestamp"))
            })
    };
    let start = bound("time_range.start_time", range.start_time.as_ref())?;
    let end = bound("time_range.end_time", range.end_time.as_ref())?;
    if start >= end {
        return Err(AnalyticsError::invalid(
            "time_range.end_time",
            "must be after start_time",
        ));
    }
    let width = match bucket {
        Bucket::Day => TimeDelta::days(1),
        Bucket::Hour => TimeDelta::hours(1),
    };
    let invalid = || AnalyticsError::invalid("time_range", "is out of range");
    let start = start.duration_trunc(width).map_err(|_| invalid())?;
    let floor = end.duration_trunc(width).map_err(|_| invalid())?;
    let end = if floor == end { end } else { floor + width };
    let buckets = (end - start).num_seconds() / width.num_seconds();
    if buckets > MAX_BUCKETS {
        return Err(AnalyticsError::invalid(
            "time_range",
            format!("spans {buckets} buckets; at most {MAX_BUCKETS} are allowed"),
        ));
    }
    Ok(Range { start, end })
}

fn totals(t: &Totals) -> pb::UsageTotals {
    pb::UsageTotals {
        request_count: t.request_count,
        tokens: Some(TokenCounts {
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            total_tokens: t.total_tokens,
        }),
        cost: Some(Decimal {
            value: t.cost.clone(),
        }),
    }
}

fn empty_totals() -> pb::UsageTotals {
    pb::UsageTotals {
        request_count: 0,
        tokens: Some(TokenCounts::default()),
        cost: Some(Decimal { value: "0".into() }),
    }
}

fn time_range(range: Range) -> TimeRange {
    TimeRange {
        start_time: Some(timestamp(range.start)),
        end_time: Some(timestamp(range.end)),
    }
}

fn record_proto(row: store::UsageRow) -> pb::UsageRecord {
    pb::UsageRecord {
        id: row.id.to_string(),
        total_tokens: row.total_tokens,
        producer_id: row.producer_id.to_string(),
        receive_time: Some(timestamp(row.received_at)),
        event: Some(pb::UsageEvent {
            idempotency_key: row.idempotency_key,
            user_id: row.user_id.to_string(),
            project_id: row.project_id.map(|p| p.to_string()).unwrap_or_default(),
            conversation_id: row
                .conversation_id
                .map(|c| c.to_string())
                .unwrap_or_default(),
            agent_id: row.agent_id.map(|a| a.to_string()).unwrap_or_default(),
            agent_version: row.agent_version.unwrap_or_default(),
            model: row.model,
            provider: row.provider,
            operation: model::operation_of(&row.operation).into(),
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            cost: Some(Decimal { value: row.cost }),
            latency: row.latency_ms.map(|ms| duration_ms(i64::from(ms))),
            status: model::status_of(&row.status).into(),
            occur_time: Some(timestamp(row.occurred_at)),
        }),
    }
}

/// The handlers, returning the crate's error; the trait impl below only answers.
impl AnalyticsHandlers {
    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<pb::RecordUsageResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_scope(&principal, SCOPE_WRITE)?;
        let req = request.into_inner();
        let rows = check_batch(&req.events, Utc::now()).map_err(AnalyticsError::InvalidArgument)?;
        if !principal.is_admin()
            && let Some(index) = rows.iter().position(|r| r.user_id != principal.user_id)
        {
            return Err(AnalyticsError::PermissionDenied(format!(
                "events[{index}].user_id: only admins and their service keys record usage for other users"
            )));
        }
        let inserted: HashSet<Uuid> = self
            .record(principal.user_id, &rows)
            .await?
            .into_iter()
            .collect();
        let duplicate_indexes: Vec<i32> = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| !inserted.contains(&row.id))
            .filter_map(|(i, _)| i32::try_from(i).ok())
            .collect();
        Ok(pb::RecordUsageResponse {
            recorded_count: i32::try_from(inserted.len()).unwrap_or(i32::MAX),
            duplicate_indexes,
        })
    }

    async fn get_usage_summary(
        &self,
        request: Request<pb::GetUsageSummaryRequest>,
    ) -> Result<pb::GetUsageSummaryResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_scope(&principal, SCOPE_READ)?;
        let (metadata, _, req) = request.into_parts();
        let scope = resolve_scope(&self.owners, &principal, req.scope, &metadata).await?;
        let bucket = match pb::BucketWidth::try_from(req.bucket_width) {
            Ok(pb::BucketWidth::Unspecified | pb::BucketWidth::Day) => Bucket::Day,
            Ok(pb::BucketWidth::Hour) => Bucket::Hour,
            Err(_) => return Err(AnalyticsError::invalid("bucket_width", "unknown value")),
        };
        let group = match pb::GroupBy::try_from(req.group_by) {
            Ok(pb::GroupBy::Unspecified) => Group::None,
            Ok(pb::GroupBy::Model) => Group::Model,
            Ok(pb::GroupBy::Operation) => Group::Operation,
            Err(_) => return Err(AnalyticsError::invalid("group_by", "unknown value")),
        };
        let range = bucket_range(req.time_range.as_ref(), bucket)?;
        // Day buckets of users come from the view (plus what arrived after it); hour
        // buckets and projects, which the view does not hold, from the raw rows.
        let rows = if bucket == Bucket::Day && !matches!(scope, Scope::Project(_)) {
            self.with_watermark(
                ViewName::UserTokenSummary,
                |conn, watermark| {
                    Box::pin(store::summary(
                        conn,
                        scope,
                        range,
                        bucket,
                        group,
                        Some(watermark),
                    ))
                },
                |rows| read_at(rows),
            )
            .await?
        } else {
            let mut conn = self.ctx.db.get().await.map_err(AnalyticsError::from)?;
            store::summary(&mut conn, scope, range, bucket, group, None)
                .await
                .map_err(AnalyticsError::from)?
        };
        let watermark = read_at(&rows);
        let mut response = pb::GetUsageSummaryResponse {
            buckets: Vec::new(),
            totals: Some(empty_totals()),
            time_range: Some(time_range(range)),
            watermark: watermark.filter(|w| w.timestamp() > 0).map(timestamp),
        };
        for row in &rows {
            if row.total {
                response.totals = Some(totals(&row.totals));
                continue;
            }
            let Some(start) = row.bucket else { continue };
            response.buckets.push(pb::UsageBucket {
                start_time: Some(timestamp(start)),
                model: if group == Group::Model {
                    row.grp.clone()
                } else {
                    String::new()
                },
                operation: if group == Group::Operation {
                    model::operation_of(&row.grp).into()
                } else {
                    pb::Operation::Unspecified.into()
                },
                totals: Some(totals(&row.totals)),
            });
        }
        Ok(response)
    }

    async fn get_project_stats(
        &self,
        request: Request<pb::GetProjectStatsRequest>,
    ) -> Result<pb::GetProjectStatsResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_scope(&principal, SCOPE_READ)?;
        let project = parse_uuid(&request.get_ref().project_id)
            .map_err(|e| AnalyticsError::invalid("project_id", e))?;
        let Scope::Project(project) = resolve_scope(
            &self.owners,
            &principal,
            Some(pb::UsageScope {
                subject: Some(Subject::ProjectId(project.to_string())),
            }),
            request.metadata(),
        )
        .await?
        else {
            return Err(AnalyticsError::NotFound("project"));
        };
        let stats = self
            .with_watermark(
                ViewName::ProjectStats,
                |conn, watermark| Box::pin(store::project_stats(conn, project, watermark)),
                |stats| Some(stats.watermark),
            )
            .await?;
        if stats.totals.request_count == 0 {
            return Err(AnalyticsError::NotFound("project"));
        }
        Ok(pb::GetProjectStatsResponse {
            stats: Some(pb::ProjectStats {
                project_id: project.to_string(),
                totals: Some(totals(&stats.totals)),
                first_activity_time: stats.first_activity_at.map(timestamp),
                last_activity_time: stats.last_activity_at.map(timestamp),
                models: stats.models,
            }),
        })
    }

    async fn list_top_models(
        &self,
        request: Request<pb::ListTopModelsRequest>,
    ) -> Result<pb::ListTopModelsResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_scope(&principal, SCOPE_READ)?;
        let (metadata, _, req) = request.into_parts();
        let scope = resolve_scope(&self.owners, &principal, req.scope, &metadata).await?;
        let rank = match pb::RankBy::try_from(req.rank_by) {
            Ok(pb::RankBy::Unspecified | pb::RankBy::TotalTokens) => Rank::Tokens,
            Ok(pb::RankBy::Cost) => Rank::Cost,
            Err(_) => return Err(AnalyticsError::invalid("rank_by", "unknown value")),
        };
        let limit = page_size_within(req.page_size, TOP_MODELS.0, TOP_MODELS.1)?;
        let range = bucket_range(req.time_range.as_ref(), Bucket::Day)?;
        let context = PageContext::new(
            LIST_TOP_MODELS,
            &principal.user_id,
            &[
                &format!("{scope:?}"),
                &range.start.timestamp().to_string(),
                &range.end.timestamp().to_string(),
                &req.rank_by.to_string(),
            ],
        );
        let after = match KeyCursor::decode(&req.page_token, &context)? {
            Some(cursor) => {
                let mut keys = cursor.reader();
                let key = RankKey {
                    value: keys.str()?,
                    model: keys.str()?,
                };
                keys.end()?;
                // The value goes to SQL as numeric text: a whole number of tokens, or a
                // cost of digits with at most one point.
                let numeric = match rank {
                    Rank::Tokens => key.value.parse::<i64>().is_ok_and(|v| v >= 0),
                    Rank::Cost => key
                        .value
                        .split_once('.')
                        .map_or(is_digits(&key.value), |(whole, fraction)| {
                            is_digits(whole) && is_digits(fraction)
                        }),
                };
                if !numeric {
                    return Err(ApiError::invalid(
                        "page_token",
                        "is not a token from a previous response",
                    )
                    .into());
                }
                Some(key)
            }
            None => None,
        };
        let rows = if matches!(scope, Scope::Project(_)) {
            let mut conn = self.ctx.db.get().await?;
            store::top_models(&mut conn, scope, range, rank, after, limit + 1, None).await?
        } else {
            self.with_watermark(
                ViewName::UserTokenSummary,
                |conn, watermark| {
                    Box::pin(store::top_models(
                        conn,
                        scope,
                        range,
                        rank,
                        after,
                        limit + 1,
                        Some(watermark),
                    ))
                },
                |rows| read_at(rows),
            )
            .await?
        };
        let (rows, next_page_token) = finish_page(rows, limit, |last| {
            let value = match rank {
                Rank::Tokens => last.totals.total_tokens.to_string(),
                Rank::Cost => last.totals.cost.clone(),
            };
            KeyCursor::default()
                .push_str(&value)
                .push_str(&last.grp)
                .encode(&context)
        });
        Ok(pb::ListTopModelsResponse {
            models: rows
                .iter()
                .map(|row| pb::ModelUsage {
                    model: row.grp.clone(),
                    totals: Some(totals(&row.totals)),
                })
                .collect(),
            time_range: Some(time_range(range)),
            next_page_token,
        })
    }

    async fn list_usage(
        &self,
        request: Request<pb::ListUsageRequest>,
    ) -> Result<pb::ListUsageResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_scope(&principal, SCOPE_READ)?;
        let (metadata, _, req) = request.into_parts();
        let scope = resolve_scope(&self.owners, &principal, req.scope, &metadata).await?;
        let limit = page_size(req.page_size).map_err(AnalyticsError::from)?;
        let bound = |field: &'static str, t: Option<&prost_types::Timestamp>| match t {
            None => Ok(None),
            Some(t) => from_timestamp(t)
                .map(Some)
                .ok_or_else(|| AnalyticsError::invalid(field, "is not a valid timestamp")),
        };
        let range = req.time_range.unwrap_or_default();
        let operation = match pb::Operation::try_from(req.operation) {
            Ok(op) => model::operation_name(op),
            Err(_) => return Err(AnalyticsError::invalid("operation", "unknown value")),
        };
        let filter = UsageFilter {
            start: bound("time_range.start_time", range.start_time.as_ref())?,
            end: bound("time_range.end_time", range.end_time.as_ref())?,
            model: Some(req.model.trim().to_owned()).filter(|m| !m.is_empty()),
            operation,
        };
        let context = PageContext::new(
            LIST_USAGE,
            &principal.user_id,
            &[
                &format!("{scope:?}"),
                &format!("{:?}", filter.start),
                &format!("{:?}", filter.end),
                filter.model.as_deref().unwrap_or_default(),
                filter.operation.unwrap_or_default(),
            ],
        );
        let after = Cursor::decode(&req.page_token, &context)
            .map_err(AnalyticsError::from)?
            .map(|c| (c.time, c.id));
        let mut conn = self.ctx.db.get().await.map_err(AnalyticsError::from)?;
        let rows = store::list_usage(&mut conn, scope, &filter, after, limit + 1)
            .await
            .map_err(AnalyticsError::from)?;
        let (rows, next_page_token) = finish_page(rows, limit, |row| {
            Cursor {
                time: row.occurred_at,
                id: row.id,
            }
            .encode(&context)
        });
        Ok(pb::ListUsageResponse {
            records: rows.into_iter().map(record_proto).collect(),
            next_page_token,
        })
    }

    async fn refresh_views(
        &self,
        request: Request<pb::RefreshViewsRequest>,
    ) -> Result<pb::RefreshViewsResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_admin(&principal)?;
        let mut wanted = Vec::new();
        for (i, view) in request.get_ref().views.iter().enumerate() {
            match pb::View::try_from(*view) {
                Ok(pb::View::UserTokenSummary) => wanted.push(ViewName::UserTokenSummary),
                Ok(pb::View::ProjectStats) => wanted.push(ViewName::ProjectStats),
                _ => {
                    return Err(AnalyticsError::invalid(
                        format!("views[{i}]"),
                        "must be a view",
                    ));
                }
            }
        }
        if wanted.is_empty() {
            wanted = ViewName::ALL.to_vec();
        }
        let mut seen = HashSet::new();
        wanted.retain(|view| seen.insert(*view));
        for view in &wanted {
            // Detached, so a refresh that outlives the caller's deadline still finishes
            // and records its watermark instead of being cut off half-way.
            let refresher = self.refresher.clone();
            let view = *view;
            tokio::spawn(async move {
                refresher
                    .refresh(view, Contention::Wait(REFRESH_WAIT), None)
                    .await
            })
            .await
            .map_err(|e| AnalyticsError::Internal(e.to_string()))??;
        }
        let views = self
            .view_statuses()
            .await?
            .into_iter()
            .filter(|s| wanted.iter().any(|v| i32::from(view_proto(*v)) == s.view))
            .collect();
        Ok(pb::RefreshViewsResponse { views })
    }

    async fn get_view_status(
        &self,
        request: Request<pb::GetViewStatusRequest>,
    ) -> Result<pb::GetViewStatusResponse, AnalyticsError> {
        let principal = principal(&request)?;
        require_admin(&principal)?;
        Ok(pb::GetViewStatusResponse {
            views: self.view_statuses().await?,
        })
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsHandlers {
    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        respond(AnalyticsHandlers::record_usage(self, request).await)
    }

    async fn get_usage_summary(
        &self,
        request: Request<pb::GetUsageSummaryRequest>,
    ) -> Result<Response<pb::GetUsageSummaryResponse>, Status> {
        respond(AnalyticsHandlers::get_usage_summary(self, request).await)
    }

    async fn get_project_stats(
        &self,
        request: Request<pb::GetProjectStatsRequest>,
    ) -> Result<Response<pb::GetProjectStatsResponse>, Status> {
        respond(AnalyticsHandlers::get_project_stats(self, request).await)
    }

    async fn list_top_models(
        &self,
        request: Request<pb::ListTopModelsRequest>,
    ) -> Result<Response<pb::ListTopModelsResponse>, Status> {
        respond(AnalyticsHandlers::list_top_models(self, request).await)
    }

    async fn list_usage(
        &self,
        request: Request<pb::ListUsageRequest>,
    ) -> Result<Response<pb::ListUsageResponse>, Status> {
        respond(AnalyticsHandlers::list_usage(self, request).await)
    }

    async fn refresh_views(
        &self,
        request: Request<pb::RefreshViewsRequest>,
    ) -> Result<Response<pb::RefreshViewsResponse>, Status> {
        respond(AnalyticsHandlers::refresh_views(self, request).await)
    }

    async fn get_view_status(
        &self,
        request: Request<pb::GetViewStatusRequest>,
    ) -> Result<Response<pb::GetViewStatusResponse>, Status> {
        respond(AnalyticsHandlers::get_view_status(self, request).await)
    }
}
