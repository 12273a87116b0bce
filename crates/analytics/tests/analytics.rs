//! AnalyticsService through its generated client against a real server, PostgreSQL and
//! Redis. The server also serves the auth service, which signs the callers' tokens and
//! verifies their API keys, exactly as in production.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use rand::{Rng, SeedableRng};
use strata_analytics::config::AnalyticsConfig;
use strata_analytics::views::{Contention, Due, Outcome, Refresher, ViewName};
use strata_analytics::{AnalyticsHandlers, scheduler::Scheduler};
use strata_auth::config::AuthConfig;
use strata_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use strata_proto::analytics::{self as pb, usage_scope::Subject};
use strata_proto::common::{Decimal, TimeRange};
use strata_proto::content::project_service_client::ProjectServiceClient;
use strata_proto::content::{self as cpb};
use strata_runtime::identity::Role;
use strata_runtime::time::timestamp as ts;
use strata_testkit::app::{self, TestUser};
use strata_testkit::{TestDb, TestRedis, TestServer, bearer};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;
use uuid::Uuid;

type Client = AnalyticsServiceClient<Channel>;
/// `(request_count, prompt, completion, total, cost)` of an aggregate.
type Figures = (i64, i64, i64, i64, String);
/// Figures per `(bucket start, group)`.
type Buckets = BTreeMap<(i64, String), Figures>;

struct Harness {
    db: TestDb,
    _redis: TestRedis,
    server: TestServer,
    handlers: Arc<AnalyticsHandlers>,
}

/// A caller: a user with an access token.
#[derive(Clone)]
struct Caller {
    id: Uuid,
    token: String,
}

async fn start() -> Harness {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let config = db.server_config("analytics");
    let (server, handlers) = serve(config, &redis).await;
    Harness {
        db,
        _redis: redis,
        server,
        handlers,
    }
}

/// The auth and analytics services (no scheduler) for `config`, with `redis`, once the
/// auth service vouches for Redis's revocations: tokens minted by [`access_token`] name
/// sessions the database does not have, which verifiers accept only then.
async fn serve(
    mut config: strata_runtime::ServerConfig,
    redis: &TestRedis,
) -> (TestServer, Arc<AnalyticsHandlers>) {
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    let slot = Arc::new(Mutex::new(None));
    let handlers_slot = Arc::clone(&slot);
    let server = TestServer::start(config, move |builder| {
        strata_auth::register(builder, AuthConfig::default()).unwrap();
        // Content, which analytics asks who owns a project (over gRPC, to this server).
        strata_content::register(builder, strata_content::config::ContentConfig::default());
        let content = builder.peer(
            strata_proto::content::project_service_server::SERVICE_NAME,
            "STRATA_CONTENT_URL",
            None,
        );
        let analytics = AnalyticsHandlers::new(
            builder.context(),
            AnalyticsConfig {
                scheduler: false,
                ..AnalyticsConfig::default()
            },
        );
        let analytics = Arc::new(analytics.with_content(content));
        *handlers_slot.lock().unwrap() = Some(Arc::clone(&analytics));
        strata_analytics::register_handlers(builder, analytics);
    })
    .await;
    let handlers = slot.lock().unwrap().take().unwrap();
    redis
        .wait_for(strata_runtime::identity::REVOCATIONS_COMPLETE_KEY)
        .await;
    (server, handlers)
}

impl Harness {
    fn client(&self) -> Client {
        AnalyticsServiceClient::new(self.server.channel())
    }

    async fn conn(&self) -> AsyncPgConnection {
        self.db.connect().await
    }

    /// A user (an admin with `Role::Admin`) and an access token of theirs, made through
    /// the auth service's API.
    async fn user(&self, role: Role) -> Caller {
        let mut user = app::sign_up(self.server.channel()).await;
        if role == Role::Admin {
            app::promote(&self.db, self.server.channel(), &mut user).await;
        }
        Caller {
            id: user.id,
            token: user.token,
        }
    }

    /// An API key of `owner` with `scopes`.
    async fn api_key(&self, owner: &Caller, scopes: &[&str]) -> String {
        let user = TestUser {
            id: owner.id,
            email: String::new(),
            token: owner.token.clone(),
            refresh_token: String::new(),
        };
        app::api_key(self.server.channel(), &user, scopes).await
    }

    async fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(sql)
            .get_result::<Count>(&mut self.conn().await)
            .await
            .unwrap()
            .n
    }

    async fn refresh(&self, admin: &Caller) -> pb::RefreshViewsResponse {
        self.client()
            .refresh_views(bearer(pb::RefreshViewsRequest::default(), &admin.token))
            .await
            .unwrap()
            .into_inner()
    }
}

fn range(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<TimeRange> {
    Some(TimeRange {
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
    })
}

fn event(
    key: &str,
    user: Uuid,
    model: &str,
    prompt: i64,
    completion: i64,
    cost: &str,
    at: DateTime<Utc>,
) -> pb::UsageEvent {
    pb::UsageEvent {
        idempotency_key: key.into(),
        user_id: user.to_string(),
        project_id: String::new(),
        conversation_id: String::new(),
        model: model.into(),
        provider: "openai".into(),
        operation: pb::Operation::Chat.into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost: Some(Decimal { value: cost.into() }),
        latency: Some(prost_types::Duration {
            seconds: 0,
            nanos: 420_000_000,
        }),
        status: pb::CallStatus::Succeeded.into(),
        occur_time: Some(ts(at)),
        ..Default::default()
    }
}

async fn record(
    client: &mut Client,
    token: &str,
    events: Vec<pb::UsageEvent>,
) -> Result<pb::RecordUsageResponse, tonic::Status> {
    client
        .record_usage(bearer(pb::RecordUsageRequest { events }, token))
        .await
        .map(tonic::Response::into_inner)
}

fn user_scope(id: Uuid) -> Option<pb::UsageScope> {
    Some(pb::UsageScope {
        subject: Some(Subject::UserId(id.to_string())),
    })
}

fn project_scope(id: Uuid) -> Option<pb::UsageScope> {
    Some(pb::UsageScope {
        subject: Some(Subject::ProjectId(id.to_string())),
    })
}

async fn summary(
    client: &mut Client,
    token: &str,
    request: pb::GetUsageSummaryRequest,
) -> Result<pb::GetUsageSummaryResponse, tonic::Status> {
    client
        .get_usage_summary(bearer(request, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn project_stats(
    client: &mut Client,
    token: &str,
    project: impl ToString,
) -> Result<pb::GetProjectStatsResponse, tonic::Status> {
    client
        .get_project_stats(bearer(
            pb::GetProjectStatsRequest {
                project_id: project.to_string(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn list_usage(
    client: &mut Client,
    token: &str,
    request: pb::ListUsageRequest,
) -> Result<pb::ListUsageResponse, tonic::Status> {
    client
        .list_usage(bearer(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// `(request_count, prompt, completion, total, cost)` of totals.
fn figures(totals: &Option<pb::UsageTotals>) -> Figures {
    let t = totals.as_ref().unwrap();
    let tokens = t.tokens.as_ref().unwrap();
    (
        t.request_count,
        tokens.prompt_tokens,
        tokens.completion_tokens,
        tokens.total_tokens,
        t.cost.as_ref().unwrap().value.clone(),
    )
}

/// `(field, description)` of every `BadRequest` field violation of `status`.
fn field_violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
}

#[tokio::test]
async fn ingest_and_summarize() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let today = midnight(Utc::now().date_naive());
    let yesterday = today - Duration::days(1);
    let events = vec![
        event(
            "a1",
            ada.id,
            "gpt-4o",
            100,
            20,
            "0.0012",
            yesterday + Duration::hours(3),
        ),
        event(
            "a2",
            ada.id,
            "gpt-4o",
            200,
            40,
            "0.0024",
            yesterday + Duration::hours(9),
        ),
        event(
            "a3",
            ada.id,
            "claude-3-haiku",
            1000,
            0,
            "0.00025",
            today + Duration::minutes(1),
        ),
    ];
    let response = record(&mut client, &ada.token, events).await.unwrap();
    assert_eq!(response.recorded_count, 3);
    assert!(response.duplicate_indexes.is_empty());

    let day = summary(
        &mut client,
        &ada.token,
        pb::GetUsageSummaryRequest {
            time_range: range(yesterday + Duration::hours(1), Utc::now()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The range is widened to whole days.
    assert_eq!(day.time_range, range(yesterday, today + Duration::days(1)));
    assert_eq!(day.buckets.len(), 2);
    assert_eq!(day.buckets[0].start_time, Some(ts(yesterday)));
    assert_eq!(
        figures(&day.buckets[0].totals),
        (2, 300, 60, 360, "0.0036".into())
    );
    assert_eq!(
        figures(&day.buckets[1].totals),
        (1, 1000, 0, 1000, "0.00025".into())
    );
    assert_eq!(figures(&day.totals), (3, 1300, 60, 1360, "0.00385".into()));
    assert_eq!(day.watermark, None, "never refreshed: all from raw rows");

    let by_model = summary(
        &mut client,
        &ada.token,
        pb::GetUsageSummaryRequest {
            time_range: range(yesterday, today + Duration::days(1)),
            bucket_width: pb::BucketWidth::Hour.into(),
            group_by: pb::GroupBy::Model.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let keys: Vec<_> = by_model
        .buckets
        .iter()
        .map(|b| (b.start_time.unwrap().seconds, b.model.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ((yesterday + Duration::hours(3)).timestamp(), "gpt-4o"),
            ((yesterday + Duration::hours(9)).timestamp(), "gpt-4o"),
            (today.timestamp(), "claude-3-haiku"),
        ]
    );

    let top = client
        .list_top_models(bearer(
            pb::ListTopModelsRequest {
                time_range: range(yesterday, Utc::now()),
                rank_by: pb::RankBy::Cost.into(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let ranked: Vec<_> = top.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(ranked, ["gpt-4o", "claude-3-haiku"]);
    assert!(top.next_page_token.is_empty());

    // The same ranking a model per page, by tokens and by cost.
    for rank_by in [pb::RankBy::TotalTokens, pb::RankBy::Cost] {
        let whole: Vec<String> = client
            .list_top_models(bearer(
                pb::ListTopModelsRequest {
                    time_range: range(yesterday, Utc::now()),
                    rank_by: rank_by.into(),
                    ..Default::default()
                },
                &ada.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .models
            .into_iter()
            .map(|m| m.model)
            .collect();
        assert_eq!(whole.len(), 2);
        let mut token = String::new();
        let mut paged = Vec::new();
        loop {
            let page = client
                .list_top_models(bearer(
                    pb::ListTopModelsRequest {
                        time_range: range(yesterday, Utc::now()),
                        rank_by: rank_by.into(),
                        page_size: 1,
                        page_token: token.clone(),
                        ..Default::default()
                    },
                    &ada.token,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(page.models.len() <= 1);
            paged.extend(page.models.into_iter().map(|m| m.model));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(paged, whole, "{rank_by:?}");
    }
    // A token is bound to its ranking.
    let first = client
        .list_top_models(bearer(
            pb::ListTopModelsRequest {
                time_range: range(yesterday, Utc::now()),
                page_size: 1,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let status = client
        .list_top_models(bearer(
            pb::ListTopModelsRequest {
                time_range: range(yesterday, Utc::now()),
                rank_by: pb::RankBy::Cost.into(),
                page_size: 1,
                page_token: first.next_page_token,
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_token"), "{status:?}");

    // ListUsage: newest first, two pages of two and one.
    let mut token = String::new();
    let mut keys = Vec::new();
    loop {
        let page = list_usage(
            &mut client,
            &ada.token,
            pb::ListUsageRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for record in &page.records {
            let event = record.event.as_ref().unwrap();
            assert_eq!(record.producer_id, ada.id.to_string());
            assert_eq!(
                record.total_tokens,
                event.prompt_tokens + event.completion_tokens
            );
            keys.push(event.idempotency_key.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(keys, ["a3", "a2", "a1"]);
    let filtered = list_usage(
        &mut client,
        &ada.token,
        pb::ListUsageRequest {
            model: "claude-3-haiku".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(filtered.records.len(), 1);
    assert_eq!(
        filtered.records[0]
            .event
            .as_ref()
            .unwrap()
            .cost
            .as_ref()
            .unwrap()
            .value,
        "0.00025"
    );
}

#[tokio::test]
async fn replayed_batches_count_once_also_after_a_refresh() {
    let h = start().await;
    let mut client = h.client();
    let admin = h.user(Role::Admin).await;
    let ada = h.user(Role::User).await;
    let now = Utc::now();
    let batch: Vec<_> = (0..50)
        .map(|i| {
            event(
                &format!("k{i}"),
                ada.id,
                "gpt-4o",
                10,
                5,
                "0.001",
                now - Duration::minutes(i),
            )
        })
        .collect();
    let whole_day = || pb::GetUsageSummaryRequest {
        time_range: range(now - Duration::days(1), now + Duration::hours(1)),
        ..Default::default()
    };

    let first = record(&mut client, &ada.token, batch.clone())
        .await
        .unwrap();
    assert_eq!(first.recorded_count, 50);
    let before = summary(&mut client, &ada.token, whole_day()).await.unwrap();
    assert_eq!(figures(&before.totals), (50, 500, 250, 750, "0.05".into()));

    let replay = record(&mut client, &ada.token, batch.clone())
        .await
        .unwrap();
    assert_eq!(replay.recorded_count, 0);
    assert_eq!(replay.duplicate_indexes, (0..50).collect::<Vec<_>>());
    assert_eq!(
        summary(&mut client, &ada.token, whole_day())
            .await
            .unwrap()
            .totals,
        before.totals
    );

    let refreshed = h.refresh(&admin).await;
    assert_eq!(refreshed.views.len(), 2);
    assert!(
        refreshed
            .views
            .iter()
            .all(|v| v.watermark.is_some() && v.refresh_count == 1)
    );
    // A view named twice is refreshed once.
    let twice = client
        .refresh_views(bearer(
            pb::RefreshViewsRequest {
                views: vec![
                    pb::View::UserTokenSummary.into(),
                    pb::View::ProjectStats.into(),
                    pb::View::UserTokenSummary.into(),
                ],
            },
            &admin.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<_> = twice.views.iter().map(|v| v.refresh_count).collect();
    assert_eq!(counts, [2, 2]);
    let after = summary(&mut client, &ada.token, whole_day()).await.unwrap();
    assert!(after.watermark.is_some(), "read through the view");
    assert_eq!(after.totals, before.totals);

    // A replay after the refresh, mixed with one new event, still counts once.
    let mut mixed = batch.clone();
    mixed.push(event("new", ada.id, "gpt-4o", 1, 1, "0.5", now));
    let replay = record(&mut client, &ada.token, mixed).await.unwrap();
    assert_eq!(replay.recorded_count, 1);
    assert_eq!(replay.duplicate_indexes.len(), 50);
    let after = summary(&mut client, &ada.token, whole_day()).await.unwrap();
    assert_eq!(figures(&after.totals), (51, 501, 251, 752, "0.55".into()));
    h.refresh(&admin).await;
    let after = summary(&mut client, &ada.token, whole_day()).await.unwrap();
    assert_eq!(figures(&after.totals), (51, 501, 251, 752, "0.55".into()));
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.token_usage")
            .await,
        51
    );

    // Keys are per producer: another producer's "k0" is another event.
    let service = h.user(Role::Admin).await;
    let key = h.api_key(&service, &["usage:write"]).await;
    let other = record(&mut client, &key, batch[..1].to_vec())
        .await
        .unwrap();
    assert_eq!(other.recorded_count, 1);
}

#[tokio::test]
async fn concurrent_producers_lose_nothing_and_count_nothing_twice() {
    let h = start().await;
    let mut producers = Vec::new();
    for _ in 0..4 {
        let service = h.user(Role::Admin).await;
        producers.push(h.api_key(&service, &["usage:write"]).await);
    }
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();
    let mut tasks = Vec::new();
    for (p, key) in producers.iter().enumerate() {
        // Each producer sends 10 batches of 100, and sends every batch twice from two
        // tasks at once (a retry racing the original).
        for copy in 0..2 {
            let mut client = h.client();
            let key = key.clone();
            let users = users.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..10 {
                    let events = (0..100)
                        .map(|i| {
                            event(
                                &format!("p{p}-b{b}-e{i}"),
                                users[i % users.len()],
                                "gpt-4o",
                                3,
                                2,
                                "0.0001",
                                now - Duration::seconds(i as i64),
                            )
                        })
                        .collect();
                    let _ = copy;
                    record(&mut client, &key, events).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.token_usage")
            .await,
        4000
    );
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.usage_keys")
            .await,
        4000
    );
    let admin = h.user(Role::Admin).await;
    let all = summary(
        &mut h.client(),
        &admin.token,
        pb::GetUsageSummaryRequest {
            scope: Some(pb::UsageScope {
                subject: Some(Subject::AllUsers(true)),
            }),
            time_range: range(now - Duration::hours(1), now + Duration::hours(1)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        figures(&all.totals),
        (4000, 12000, 8000, 20000, "0.4".into())
    );
}

#[tokio::test]
async fn batches_are_all_or_nothing_with_field_errors() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let now = Utc::now();
    let good = |key: &str| event(key, ada.id, "gpt-4o", 1, 1, "0.1", now);
    let mut negative = good("neg");
    negative.completion_tokens = -5;
    let mut no_key = good("");
    no_key.model = String::new();
    let mut costly = good("costly");
    costly.cost = Some(Decimal {
        value: "1000000.5".into(),
    });
    let status = record(
        &mut client,
        &ada.token,
        vec![good("ok1"), negative, no_key, costly, good("ok2")],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("events[1].completion_tokens"),
        "{}",
        status.message()
    );
    let violations: Vec<_> = field_violations(&status)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        violations,
        [
            "events[1].completion_tokens",
            "events[2].idempotency_key",
            "events[2].model",
            "events[3].cost.value",
        ]
    );
    // Values no field can hold at all (an enum's unknown number) are refused before the
    // handler runs, every one of them named.
    let mut bad_enum = good("enum");
    bad_enum.status = 42;
    let mut bad_operation = good("op");
    bad_operation.operation = -3;
    let status = record(
        &mut client,
        &ada.token,
        vec![good("ok1"), bad_enum, bad_operation],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations(&status),
        [
            ("events[1].status".to_owned(), "unknown value 42".to_owned()),
            (
                "events[2].operation".to_owned(),
                "unknown value -3".to_owned()
            ),
        ]
    );
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.token_usage")
            .await,
        0
    );
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.usage_keys")
            .await,
        0
    );

    // Too many events, or none.
    let many: Vec<_> = (0..1001).map(|i| good(&format!("m{i}"))).collect();
    let status = record(&mut client, &ada.token, many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("events"));
    let status = record(&mut client, &ada.token, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A user records only their own usage: one foreign event refuses the whole batch.
    let other = Uuid::now_v7();
    let status = record(
        &mut client,
        &ada.token,
        vec![
            good("mine"),
            event("theirs", other, "gpt-4o", 1, 1, "0.1", now),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("events[1].user_id"));
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.token_usage")
            .await,
        0
    );

    // A batch of exactly 1000 is one statement and fine.
    let full: Vec<_> = (0..1000).map(|i| good(&format!("f{i}"))).collect();
    assert_eq!(
        record(&mut client, &ada.token, full)
            .await
            .unwrap()
            .recorded_count,
        1000
    );
}

/// Raw aggregation of one user's usage: `(bucket start, group) -> figures`, plus totals.
async fn raw_aggregate(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    unit: &str,
    group: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Buckets {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Timestamptz)]
        bucket: DateTime<Utc>,
        #[diesel(sql_type = Text)]
        grp: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
        #[diesel(sql_type = BigInt)]
        prompt: i64,
        #[diesel(sql_type = BigInt)]
        completion: i64,
        #[diesel(sql_type = BigInt)]
        total: i64,
        #[diesel(sql_type = Text)]
        cost: String,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT date_trunc('{unit}', occurred_at, 'UTC') AS bucket, {group}::text AS grp, \
           count(*) AS n, sum(prompt_tokens)::bigint AS prompt, \
           sum(completion_tokens)::bigint AS completion, sum(total_tokens)::bigint AS total, \
           trim_scale(sum(cost))::text AS cost \
         FROM analytics.token_usage WHERE user_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY 1, 2"
    ))
    .bind::<diesel::sql_types::Uuid, _>(user)
    .bind::<Timestamptz, _>(start)
    .bind::<Timestamptz, _>(end)
    .load(conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| {
            (
                (r.bucket.timestamp(), r.grp),
                (r.n, r.prompt, r.completion, r.total, r.cost),
            )
        })
        .collect()
}

fn from_summary(response: &pb::GetUsageSummaryResponse, group: pb::GroupBy) -> Buckets {
    response
        .buckets
        .iter()
        .map(|b| {
            let grp = match group {
                pb::GroupBy::Model => b.model.clone(),
                pb::GroupBy::Operation => strata_analytics::model::operation_name(b.operation())
                    .unwrap()
                    .to_owned(),
                pb::GroupBy::Unspecified => String::new(),
            };
            ((b.start_time.unwrap().seconds, grp), figures(&b.totals))
        })
        .collect()
}

#[tokio::test]
async fn real_time_summaries_equal_raw_aggregation() {
    let h = start().await;
    let mut client = h.client();
    let admin = h.user(Role::Admin).await;
    let service_key = h.api_key(&admin, &["usage:write"]).await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();
    let this_month = midnight(now.date_naive().with_day(1).unwrap());
    // From 12 days before this month began until now: across a month boundary.
    let first = this_month - Duration::days(12);
    let span = (now - first).num_seconds();
    let models = [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-3-5-sonnet",
        "llama-3.1-70b",
    ];
    let operations = [
        pb::Operation::Chat,
        pb::Operation::Embedding,
        pb::Operation::Completion,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5747);
    let mut next_key = 0;
    let mut random_batch = |rng: &mut rand::rngs::StdRng, n: usize, late: bool| {
        (0..n)
            .map(|_| {
                next_key += 1;
                // Late events occurred long before they arrive; the others arrive
                // within the hour.
                let at = if late {
                    first + Duration::seconds(rng.random_range(0..span))
                } else {
                    now - Duration::seconds(rng.random_range(0..3000))
                };
                let mut e = event(
                    &format!("r{next_key}"),
                    users[rng.random_range(0..users.len())],
                    models[rng.random_range(0..models.len())],
                    rng.random_range(0..5000),
                    rng.random_range(0..2000),
                    &format!("0.{:010}", rng.random_range(0..10_000_000_000u64)),
                    at,
                );
                e.operation = operations[rng.random_range(0..operations.len())].into();
                e
            })
            .collect::<Vec<_>>()
    };
    // Rows before the watermark, in two folds (the second adds to totals the first
    // created: the same users, days and models) ...
    for late in [true, false] {
        let batch = random_batch(&mut rng, 250, late);
        record(&mut client, &service_key, batch).await.unwrap();
    }
    h.refresh(&admin).await;
    // A read between the folds: the first read after the second fold is given this
    // fold's watermark as the one seen, older than the current one, and must still count
    // every row once.
    let between = summary(
        &mut client,
        &admin.token,
        pb::GetUsageSummaryRequest {
            scope: user_scope(users[0]),
            time_range: range(first, now + Duration::minutes(1)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(between.watermark.is_some());
    for late in [true, true] {
        let batch = random_batch(&mut rng, 250, late);
        record(&mut client, &service_key, batch).await.unwrap();
    }
    h.refresh(&admin).await;
    // ... and after it, including late events for days the view already holds.
    for late in [false, true] {
        let batch = random_batch(&mut rng, 200, late);
        record(&mut client, &service_key, batch).await.unwrap();
    }
    // Both kinds of rows after the watermark exist: on time, and late (for days the
    // summary already holds).
    for late in [
        "occurred_at < received_at - interval '1 hour'",
        "occurred_at >= received_at - interval '1 hour'",
    ] {
        let after_watermark = h
            .count(&format!(
                "SELECT count(*) AS n FROM analytics.token_usage WHERE {late} AND received_at > \
                 (SELECT watermark FROM analytics.view_state WHERE view_name = 'user_token_summary')"
            ))
            .await;
        assert!(after_watermark > 0, "{late}");
    }
    // Two partitions were written, split exactly at the month boundary.
    assert_eq!(
        h.count(&format!(
            "SELECT count(DISTINCT tableoid) AS n FROM analytics.token_usage \
             WHERE occurred_at >= '{}' AND occurred_at < '{}'",
            this_month - Duration::days(1),
            this_month + Duration::days(1)
        ))
        .await,
        2
    );
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) AS n FROM analytics.token_usage WHERE occurred_at < '{this_month}' \
             AND tableoid::regclass::text <> 'analytics.token_usage_{}'",
            (this_month - Duration::days(1)).format("%Y_%m")
        ))
        .await,
        0
    );

    let mut conn = h.conn().await;
    for (bucket, unit) in [
        (pb::BucketWidth::Day, "day"),
        (pb::BucketWidth::Hour, "hour"),
    ] {
        for (group, column) in [
            (pb::GroupBy::Unspecified, "''"),
            (pb::GroupBy::Model, "model"),
            (pb::GroupBy::Operation, "operation"),
        ] {
            for user in &users {
                // Hour buckets are bounded to 1000: take the last 30 days.
                let start = if unit == "hour" {
                    now - Duration::days(30)
                } else {
                    first
                };
                let response = summary(
                    &mut client,
                    &admin.token,
                    pb::GetUsageSummaryRequest {
                        scope: user_scope(*user),
                        time_range: range(start, now + Duration::minutes(1)),
                        bucket_width: bucket.into(),
                        group_by: group.into(),
                    },
                )
                .await
                .unwrap();
                let covered = response.time_range.as_ref().unwrap();
                let (s, e) = (
                    DateTime::from_timestamp(covered.start_time.unwrap().seconds, 0).unwrap(),
                    DateTime::from_timestamp(covered.end_time.unwrap().seconds, 0).unwrap(),
                );
                let expected = raw_aggregate(&mut conn, *user, unit, column, s, e).await;
                assert!(!expected.is_empty());
                assert_eq!(
                    from_summary(&response, group),
                    expected,
                    "{unit} by {column}"
                );
                if unit == "day" {
                    assert!(response.watermark.is_some(), "day summaries read the view");
                }
                let n: i64 = expected.values().map(|v| v.0).sum();
                assert_eq!(figures(&response.totals).0, n);
            }
        }
    }

    // Project statistics combine the view and the raw rows the same way.
    let project = Uuid::now_v7();
    let late = random_batch(&mut rng, 15, true);
    let on_time = random_batch(&mut rng, 15, false);
    let mut in_project: Vec<_> = late
        .into_iter()
        .zip(on_time)
        .flat_map(|(a, b)| [a, b])
        .collect();
    for e in &mut in_project {
        e.project_id = project.to_string();
    }
    let (before, after) = in_project.split_at(20);
    // Two folds before the watermark: the second merges models, counts and activity
    // bounds into the project's row.
    for part in before.chunks(10) {
        record(&mut client, &service_key, part.to_vec())
            .await
            .unwrap();
        h.refresh(&admin).await;
    }
    record(&mut client, &service_key, after.to_vec())
        .await
        .unwrap();
    let stats = project_stats(&mut client, &admin.token, project)
        .await
        .unwrap()
        .stats
        .unwrap();
    assert_eq!(stats.totals.as_ref().unwrap().request_count, 30);
    let prompt: i64 = in_project.iter().map(|e| e.prompt_tokens).sum();
    assert_eq!(
        stats.totals.as_ref().unwrap().tokens.unwrap().prompt_tokens,
        prompt
    );
    let mut models: Vec<_> = in_project.iter().map(|e| e.model.clone()).collect();
    models.sort();
    models.dedup();
    assert_eq!(stats.models, models);
    let first_at = in_project
        .iter()
        .map(|e| e.occur_time.unwrap().seconds)
        .min()
        .unwrap();
    assert_eq!(stats.first_activity_time.unwrap().seconds, first_at);
}

#[tokio::test]
async fn two_refreshers_take_turns() {
    let h = start().await;
    let ada = h.user(Role::User).await;
    let mut used = event("x", ada.id, "gpt-4o", 1, 1, "0.1", Utc::now());
    used.project_id = Uuid::now_v7().to_string();
    record(&mut h.client(), &ada.token, vec![used])
        .await
        .unwrap();
    let db = h.db.server_config("analytics").db;
    let interval = std::time::Duration::from_secs(3600);
    let due = Due {
        interval,
        after_rows: 0,
    };
    let a = Refresher::new(db.clone(), interval, "replica-a");
    let b = Refresher::new(db.clone(), interval, "replica-b");
    // Both replicas find both views due at the same moment: each view refreshes once.
    for view in ViewName::ALL {
        let (x, y) = tokio::join!(
            a.refresh(view, Contention::Skip, Some(due)),
            b.refresh(view, Contention::Skip, Some(due))
        );
        let outcomes = [x.unwrap(), y.unwrap()];
        let refreshed = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Refreshed { .. }))
            .count();
        assert_eq!(refreshed, 1, "{view:?}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Locked | Outcome::NotDue))
        );
    }
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.view_refreshes")
            .await,
        2
    );

    // While another session holds a view's lock, a scheduler skips the view and a manual
    // refresh waits, then fails cleanly.
    let mut holder = h.conn().await;
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({})",
            0x5354_5241_5441_0000_i64 + 1
        ))
        .await
        .unwrap();
    let skipped = a
        .refresh(ViewName::UserTokenSummary, Contention::Skip, None)
        .await
        .unwrap();
    assert_eq!(skipped, Outcome::Locked);
    let busy = a
        .refresh(
            ViewName::UserTokenSummary,
            Contention::Wait(std::time::Duration::from_millis(200)),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        tonic::Status::from(strata_errors::ApiError::from(busy)).code(),
        Code::Aborted
    );
    drop(holder);
    let done = a
        .refresh(
            ViewName::UserTokenSummary,
            Contention::Wait(std::time::Duration::from_secs(5)),
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(done, Outcome::Refreshed { row_count: 1, .. }),
        "{done:?}"
    );

    // Two schedulers ticking together: views refreshed at most once each (both were just
    // refreshed, so with an hour's interval neither is due).
    let config = AnalyticsConfig::default();
    let s1 = Scheduler::new(
        h.db.db().clone(),
        a.clone(),
        Default::default(),
        config.clone(),
    );
    let s2 = Scheduler::new(h.db.db().clone(), b.clone(), Default::default(), config);
    let (r1, r2) = tokio::join!(s1.tick(), s2.tick());
    for (_, outcome) in r1.iter().chain(r2.iter()) {
        assert!(
            matches!(outcome, Ok(Outcome::NotDue | Outcome::Locked)),
            "{outcome:?}"
        );
    }
    // The third fold found nothing new: counted in the state, not in the history.
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.view_refreshes")
            .await,
        2
    );
}

/// A summary folds on volume as well as on time: with an hour's interval, a scheduler
/// folds once enough rows arrived since the last cut, and not before.
/// Page ranges of the BRIN index on `received_at` that rows filled since autovacuum last
/// summarized are read whole by every fold; a fold summarizes them, so the next one reads
/// only its own rows.
#[tokio::test]
async fn a_fold_leaves_no_brin_range_unsummarized() {
    let h = start().await;
    let ada = h.user(Role::User).await;
    let admin = h.user(Role::Admin).await;
    let mut client = h.client();
    // About a hundred heap pages: several ranges of 32.
    for b in 0..3 {
        let events = (0..1000)
            .map(|i| {
                event(
                    &format!("b{b}-{i}"),
                    ada.id,
                    "gpt-4o",
                    1,
                    1,
                    "0.1",
                    Utc::now(),
                )
            })
            .collect();
        record(&mut client, &ada.token, events).await.unwrap();
    }
    let pages = h
        .count(
            "SELECT sum(pg_relation_size(i.inhrelid) / current_setting('block_size')::bigint)::bigint \
               AS n FROM pg_inherits i WHERE i.inhparent = 'analytics.token_usage'::regclass",
        )
        .await;
    assert!(pages > 64, "{pages} pages");
    h.refresh(&admin).await;
    // Summarizing now finds nothing left to summarize.
    let unsummarized = h
        .count(
            "SELECT coalesce(sum(brin_summarize_new_values(i.inhrelid)), 0)::bigint AS n \
             FROM pg_inherits i \
             WHERE i.inhparent = 'analytics.token_usage_received_brin'::regclass",
        )
        .await;
    assert_eq!(unsummarized, 0);
}

#[tokio::test]
async fn summaries_fold_early_once_enough_rows_arrive() {
    let h = start().await;
    let ada = h.user(Role::User).await;
    let mut client = h.client();
    let db = h.db.server_config("analytics").db;
    let hour = std::time::Duration::from_secs(3600);
    let refresher = Refresher::new(db, hour, "volume");
    let config = AnalyticsConfig {
        summary_refresh: hour,
        project_stats_refresh: hour,
        refresh_after_rows: 40,
        ..AnalyticsConfig::default()
    };
    let scheduler = Scheduler::new(h.db.db().clone(), refresher, Default::default(), config);
    let view = ViewName::UserTokenSummary;
    let folded = |outcomes: Vec<(ViewName, Result<Outcome, _>)>| {
        outcomes
            .into_iter()
            .any(|(v, o)| v == view && matches!(o, Ok(Outcome::Refreshed { .. })))
    };
    // Never folded: due.
    assert!(folded(scheduler.tick().await));
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| event(&format!("v{i}"), ada.id, "gpt-4o", 1, 1, "0.1", Utc::now()))
            .collect::<Vec<_>>()
    };
    // Fewer rows than the threshold: not due, however long the statistics take.
    record(&mut client, &ada.token, batch(0, 30)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!folded(scheduler.tick().await));
    // Past it: due as soon as the statistics show the inserts (about a second).
    record(&mut client, &ada.token, batch(30, 30))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if folded(scheduler.tick().await) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "never folded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let response = summary(
        &mut client,
        &ada.token,
        pb::GetUsageSummaryRequest {
            scope: user_scope(ada.id),
            time_range: range(
                Utc::now() - Duration::days(1),
                Utc::now() + Duration::minutes(1),
            ),
            bucket_width: pb::BucketWidth::Day.into(),
            group_by: pb::GroupBy::Unspecified.into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(figures(&response.totals).0, 60);
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) AS n FROM analytics.token_usage WHERE received_at > \
             (SELECT watermark FROM analytics.view_state WHERE view_name = '{}')",
            view.as_str()
        ))
        .await,
        0,
        "the fold took every row"
    );
}

#[tokio::test]
async fn partitions_are_made_ahead_and_on_demand() {
    let h = start().await;
    let partitions = "SELECT count(*) AS n FROM pg_inherits \
                      WHERE inhparent = 'analytics.token_usage'::regclass";
    let before = h.count(partitions).await;
    // A round on a fresh ledger: partitions ahead, and both views (never refreshed) due.
    let outcomes = h.handlers.scheduler().tick().await;
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, Ok(Outcome::Refreshed { .. }))),
        "{outcomes:?}"
    );
    assert_eq!(
        h.count("SELECT sum(refresh_count)::bigint AS n FROM analytics.view_state")
            .await,
        2
    );
    // An empty ledger folds nothing: the operators' history stays empty.
    assert_eq!(
        h.count("SELECT count(*) AS n FROM analytics.view_refreshes")
            .await,
        0
    );
    // The next round finds nothing due.
    let outcomes = h.handlers.scheduler().tick().await;
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, Ok(Outcome::NotDue))),
        "{outcomes:?}"
    );
    let months_ahead = h
        .count(
            "SELECT count(*) AS n FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'analytics.token_usage'::regclass \
               AND c.relname >= 'token_usage_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')",
        )
        .await;
    assert!(months_ahead >= 4, "this month and 3 ahead: {months_ahead}");
    let after_tick = h.count(partitions).await;
    assert!(after_tick >= before);

    // A late event 11 months back gets its month's partition on demand.
    let ada = h.user(Role::User).await;
    let old = Utc::now() - Duration::days(330);
    record(
        &mut h.client(),
        &ada.token,
        vec![event("old", ada.id, "gpt-4o", 1, 1, "0.1", old)],
    )
    .await
    .unwrap();
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) AS n FROM analytics.token_usage_{}",
            old.format("%Y_%m")
        ))
        .await,
        1
    );
    // Too old, or in the future: refused, nothing created.
    let status = record(
        &mut h.client(),
        &ada.token,
        vec![event(
            "older",
            ada.id,
            "gpt-4o",
            1,
            1,
            "0.1",
            Utc::now() - Duration::days(400),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("events[0].occur_time"));
}

/// A project of `owner`'s, made through the content service.
async fn create_project(h: &Harness, owner: &Caller, visibility: cpb::Visibility) -> Uuid {
    let project = ProjectServiceClient::new(h.server.channel())
        .create_project(bearer(
            cpb::CreateProjectRequest {
                project: Some(cpb::Project {
                    name: "usage".into(),
                    visibility: visibility.into(),
                    r#type: "app".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &owner.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    project.id.parse().unwrap()
}

#[tokio::test]
async fn project_owners_read_their_projects_usage_as_content_says() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let bob = h.user(Role::User).await;
    let now = Utc::now();
    let private = create_project(&h, &ada, cpb::Visibility::Private).await;
    let public = create_project(&h, &ada, cpb::Visibility::Public).await;
    let bobs = create_project(&h, &bob, cpb::Visibility::Private).await;
    let mut events = Vec::new();
    for (i, project) in [private, public, private].into_iter().enumerate() {
        let mut e = event(&format!("o{i}"), ada.id, "gpt-4o", 10, 10, "0.01", now);
        e.project_id = project.to_string();
        events.push(e);
    }
    record(&mut client, &ada.token, events).await.unwrap();
    let mut e = event("b0", bob.id, "gpt-4o", 5, 5, "0.01", now);
    e.project_id = bobs.to_string();
    record(&mut client, &bob.token, vec![e]).await.unwrap();
    let day = |project| pb::GetUsageSummaryRequest {
        scope: project_scope(project),
        time_range: range(now - Duration::days(1), now + Duration::hours(1)),
        ..Default::default()
    };

    // The owner reads each of their projects, as summary and as statistics; twice, the
    // second time from the cache of owners.
    for _ in 0..2 {
        let totals = summary(&mut client, &ada.token, day(private))
            .await
            .unwrap()
            .totals
            .unwrap();
        assert_eq!(totals.request_count, 2);
        let stats = project_stats(&mut client, &ada.token, public)
            .await
            .unwrap();
        assert_eq!(stats.stats.unwrap().totals.unwrap().request_count, 1);
    }
    // Anyone else finds nothing: another user's private project, their public one (which
    // content shows them, but whose usage is the owner's), and a project that does not
    // exist all answer alike.
    let missing = |status: tonic::Status| (status.code(), status.message().to_owned());
    let expected = (Code::NotFound, "project not found".to_owned());
    for project in [private, public, Uuid::now_v7()] {
        let status = project_stats(&mut client, &bob.token, project)
            .await
            .unwrap_err();
        assert_eq!(missing(status), expected, "{project}");
        let status = summary(&mut client, &bob.token, day(project))
            .await
            .unwrap_err();
        assert_eq!(missing(status), expected, "{project}");
    }
    // And the other way round.
    let status = project_stats(&mut client, &ada.token, bobs)
        .await
        .unwrap_err();
    assert_eq!(missing(status), expected);
    assert!(project_stats(&mut client, &bob.token, bobs).await.is_ok());

    // An API key asks content with its own scopes: without content's read scope it is
    // refused, even with the owner cached; with it, it reads.
    let usage_only = h.api_key(&ada, &["usage:read"]).await;
    let status = project_stats(&mut client, &usage_only, public)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let both = h.api_key(&ada, &["usage:read", "content:read"]).await;
    assert!(project_stats(&mut client, &both, public).await.is_ok());

    // Deleted: at once no one's, though its owner was cached a moment ago.
    ProjectServiceClient::new(h.server.channel())
        .delete_project(bearer(
            cpb::DeleteProjectRequest {
                project_id: private.to_string(),
            },
            &ada.token,
        ))
        .await
        .unwrap();
    let status = summary(&mut client, &ada.token, day(private))
        .await
        .unwrap_err();
    assert_eq!(missing(status), expected);
}

#[tokio::test]
async fn authorization_matrix() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let bob = h.user(Role::User).await;
    let admin = h.user(Role::Admin).await;
    let now = Utc::now();
    let project = Uuid::now_v7();
    let mut in_project = event("p1", ada.id, "gpt-4o", 10, 10, "0.01", now);
    in_project.project_id = project.to_string();
    record(&mut client, &ada.token, vec![in_project])
        .await
        .unwrap();
    record(
        &mut client,
        &bob.token,
        vec![event("b1", bob.id, "gpt-4o", 7, 7, "0.07", now)],
    )
    .await
    .unwrap();
    let day = || range(now - Duration::days(1), now + Duration::hours(1));
    let ask = |scope: Option<pb::UsageScope>| pb::GetUsageSummaryRequest {
        scope,
        time_range: day(),
        ..Default::default()
    };

    // Own usage: yes (implicitly and by id).
    let own = summary(&mut client, &ada.token, ask(None)).await.unwrap();
    assert_eq!(own.totals.unwrap().request_count, 1);
    let own = summary(&mut client, &ada.token, ask(user_scope(ada.id)))
        .await
        .unwrap();
    assert_eq!(own.totals.unwrap().request_count, 1);
    // Another user's: refused, the same for a user that does not exist.
    for other in [bob.id, Uuid::now_v7()] {
        let status = summary(&mut client, &ada.token, ask(user_scope(other)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    // A project: reported missing to non-admins, whether it exists or not, identically.
    let existing = summary(&mut client, &bob.token, ask(project_scope(project)))
        .await
        .unwrap_err();
    let missing = summary(&mut client, &bob.token, ask(project_scope(Uuid::now_v7())))
        .await
        .unwrap_err();
    assert_eq!(existing.code(), Code::NotFound);
    assert_eq!(
        (existing.code(), existing.message()),
        (missing.code(), missing.message())
    );
    for project_id in [project, Uuid::now_v7()] {
        let status = project_stats(&mut client, &bob.token, project_id)
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "project not found")
        );
    }
    // Everybody's: refused.
    let all = Some(pb::UsageScope {
        subject: Some(Subject::AllUsers(true)),
    });
    let status = summary(&mut client, &ada.token, ask(all.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = list_usage(
        &mut client,
        &ada.token,
        pb::ListUsageRequest {
            scope: user_scope(bob.id),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Admins read everything.
    let bobs = summary(&mut client, &admin.token, ask(user_scope(bob.id)))
        .await
        .unwrap();
    assert_eq!(figures(&bobs.totals).4, "0.07");
    let projects = summary(&mut client, &admin.token, ask(project_scope(project)))
        .await
        .unwrap();
    assert_eq!(projects.totals.unwrap().request_count, 1);
    let everyone = summary(&mut client, &admin.token, ask(all)).await.unwrap();
    assert_eq!(everyone.totals.unwrap().request_count, 2);
    let stats = project_stats(&mut client, &admin.token, project)
        .await
        .unwrap();
    assert_eq!(stats.stats.unwrap().models, ["gpt-4o"]);
    // A project without usage is missing, for admins too.
    let status = project_stats(&mut client, &admin.token, Uuid::now_v7())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // API keys act within their scopes.
    let reader = h.api_key(&ada, &["usage:read"]).await;
    let writer = h.api_key(&ada, &["usage:write"]).await;
    assert!(summary(&mut client, &reader, ask(None)).await.is_ok());
    let status = summary(&mut client, &writer, ask(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = record(
        &mut client,
        &reader,
        vec![event("k", ada.id, "gpt-4o", 1, 1, "0.1", now)],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A non-admin's write key records only its owner's usage.
    assert!(
        record(
            &mut client,
            &writer,
            vec![event("k", ada.id, "gpt-4o", 1, 1, "0.1", now)]
        )
        .await
        .is_ok()
    );
    let status = record(
        &mut client,
        &writer,
        vec![event("k2", bob.id, "gpt-4o", 1, 1, "0.1", now)],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // View administration is for admins (with the usage:admin scope on keys).
    let status = client
        .refresh_views(bearer(pb::RefreshViewsRequest::default(), &ada.token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .get_view_status(bearer(pb::GetViewStatusRequest {}, &ada.token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let admin_key = h.api_key(&admin, &["usage:read"]).await;
    let status = client
        .get_view_status(bearer(pb::GetViewStatusRequest {}, &admin_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let views = client
        .get_view_status(bearer(pb::GetViewStatusRequest {}, &admin.token))
        .await
        .unwrap()
        .into_inner()
        .views;
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].refresh_interval.unwrap().seconds, 60);
    assert_eq!(views[1].refresh_interval.unwrap().seconds, 60);
    assert!(views.iter().all(|v| v.watermark.is_none()));

    // No credentials at all.
    let status = client.get_usage_summary(ask(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_reads_name_the_field() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let now = Utc::now();
    let cases = [
        (pb::GetUsageSummaryRequest::default(), "time_range"),
        (
            pb::GetUsageSummaryRequest {
                time_range: range(now, now - Duration::days(1)),
                ..Default::default()
            },
            "time_range.end_time",
        ),
        (
            pb::GetUsageSummaryRequest {
                time_range: range(now - Duration::days(60), now),
                bucket_width: pb::BucketWidth::Hour.into(),
                ..Default::default()
            },
            "time_range",
        ),
        (
            pb::GetUsageSummaryRequest {
                time_range: range(now - Duration::days(1), now),
                group_by: 9,
                ..Default::default()
            },
            "group_by",
        ),
        (
            pb::GetUsageSummaryRequest {
                scope: Some(pb::UsageScope {
                    subject: Some(Subject::UserId("nope".into())),
                }),
                time_range: range(now - Duration::days(1), now),
                ..Default::default()
            },
            "scope.user_id",
        ),
    ];
    for (request, field) in cases {
        let status = summary(&mut client, &ada.token, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field
        );
    }
    let status = list_usage(
        &mut client,
        &ada.token,
        pb::ListUsageRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_token"));
    let status = project_stats(&mut client, &ada.token, "x")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("project_id"));
}

#[tokio::test]
async fn list_usage_pages_through_equal_timestamps() {
    let h = start().await;
    let mut client = h.client();
    let ada = h.user(Role::User).await;
    let at = Utc::now() - Duration::minutes(5);
    let events: Vec<_> = (0..7)
        .map(|i| event(&format!("tie{i}"), ada.id, "gpt-4o", 1, 1, "0.1", at))
        .chain([event(
            "later",
            ada.id,
            "gpt-4o",
            1,
            1,
            "0.1",
            at + Duration::seconds(1),
        )])
        .collect();
    record(&mut client, &ada.token, events).await.unwrap();
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = list_usage(
            &mut client,
            &ada.token,
            pb::ListUsageRequest {
                page_size: 3,
                page_token: token.clone(),
                operation: pb::Operation::Chat.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        pages += 1;
        seen.extend(page.records.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 8);
    // A token works only with the filters and caller it came from.
    let first = list_usage(
        &mut client,
        &ada.token,
        pb::ListUsageRequest {
            page_size: 3,
            operation: pb::Operation::Chat.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .next_page_token;
    let admin = h.user(Role::Admin).await;
    for (token, request) in [
        (
            &ada.token,
            pb::ListUsageRequest {
                page_size: 3,
                page_token: first.clone(),
                ..Default::default()
            },
        ),
        (
            &ada.token,
            pb::ListUsageRequest {
                page_size: 3,
                page_token: first.clone(),
                operation: pb::Operation::Chat.into(),
                model: "gpt-4o".into(),
                ..Default::default()
            },
        ),
        (
            &admin.token,
            pb::ListUsageRequest {
                page_size: 3,
                page_token: first.clone(),
                operation: pb::Operation::Chat.into(),
                scope: user_scope(ada.id),
                ..Default::default()
            },
        ),
    ] {
        let status = list_usage(&mut client, token, request).await.unwrap_err();
        assert!(
            status.code() == Code::InvalidArgument && status.message().contains("page_token"),
            "{status:?}"
        );
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "no event twice across pages");
    // Newest first, then by id descending among equal times.
    let mut sorted = seen[1..].to_vec();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen[1..], sorted[..]);
}

#[path = "analytics/cross_user.rs"]
mod cross_user;

#[path = "analytics/empty.rs"]
mod empty;

#[path = "analytics/crash.rs"]
mod crash;
