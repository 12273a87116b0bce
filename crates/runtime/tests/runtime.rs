//! The shared server against real PostgreSQL and Redis, through generated clients: health
//! that follows the database, every admin RPC, admin authentication, bad inputs, the
//! profiling metadata, reflection, panics, graceful shutdown and limits.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use strata_proto::admin::admin_service_client::AdminServiceClient;
use strata_proto::admin::{self as pb, ComponentStatus};
use strata_runtime::config::Secret;
use strata_runtime::layers::{
    PROCESS_TIME_HEADER, QUERY_COUNT_HEADER, QUERY_TIME_HEADER, RequestLayer,
};
use strata_testkit::{TcpProxy, TestDb, TestRedis, TestServer, admin_request, metadata_f64};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn admin(server: &TestServer) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(server.channel())
}

async fn health_status(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    ServingStatus::try_from(response.into_inner().status).unwrap()
}

async fn wait_for_health(channel: &Channel, service: &str, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = health_status(channel.clone(), service).await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health stayed {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_follows_database_reachability() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.url()).await;
    let mut config = db.server_config("test");
    config.db = strata_storage::DbConfig {
        url: Secret::new(proxy.url(db.url())),
        checkout_timeout: Duration::from_millis(300),
        ..config.db
    };
    let server = TestServer::start(config, |_| {}).await;
    let channel = server.channel();
    let admin_service = "strata.admin.v1.AdminService";

    wait_for_health(&channel, "", ServingStatus::Serving).await;
    wait_for_health(&channel, admin_service, ServingStatus::Serving).await;

    proxy.cut();
    wait_for_health(&channel, "", ServingStatus::NotServing).await;
    wait_for_health(&channel, admin_service, ServingStatus::NotServing).await;
    let health = admin(&server)
        .get_health(admin_request(pb::GetHealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.database.unwrap().status,
        i32::from(ComponentStatus::Down)
    );
    assert!(health.migrations.is_none());

    proxy.restore();
    wait_for_health(&channel, "", ServingStatus::Serving).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn get_health_reports_database_pool_redis_and_migrations() {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let mut config = db.server_config("test");
    config.redis_url = Some(Secret::new(redis.url().to_owned()));
    let server = TestServer::start(config, |_| {}).await;
    let health = admin(&server)
        .get_health(admin_request(pb::GetHealthRequest {}))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(health.service, "test");
    assert!(!health.version.is_empty());
    assert!(health.uptime.is_some());
    let database = health.database.unwrap();
    assert_eq!(database.status, i32::from(ComponentStatus::Up));
    assert!(database.round_trip.is_some());
    let pool = database.pool.unwrap();
    assert_eq!(pool.max_size, 10);
    assert_eq!(pool.in_use, 0);
    assert_eq!(health.redis.unwrap().status, i32::from(ComponentStatus::Up));
    let migrations = health.migrations.unwrap();
    let total = strata_storage::migrate::Migrations::embedded()
        .unwrap()
        .list()
        .len() as u32;
    assert_eq!(
        (migrations.applied, migrations.pending),
        (i32::try_from(total).unwrap(), 0)
    );
    assert!(migrations.drifted.is_empty() && migrations.unknown.is_empty());
    assert!(!migrations.latest_applied.is_empty());

    // Redis configured but unreachable is reported, and does not fail the call.
    let mut config = db.server_config("test");
    config.redis_url = Some(Secret::new("redis://127.0.0.1:1".into()));
    let server = TestServer::start(config, |_| {}).await;
    let health = admin(&server)
        .get_health(admin_request(pb::GetHealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.redis.unwrap().status,
        i32::from(ComponentStatus::Down)
    );
}

async fn seed_table(db: &TestDb) {
    let mut conn = db.connect().await;
    conn.batch_execute(
        "CREATE TABLE content.notes (id bigint PRIMARY KEY, owner bigint NOT NULL, body text NOT NULL);
         CREATE INDEX notes_owner_idx ON content.notes (owner);
         CREATE INDEX notes_body_idx ON content.notes (body);
         INSERT INTO content.notes SELECT g, g % 10, 'note ' || g FROM generate_series(1, 1000) g;
         ANALYZE content.notes;
         SET enable_seqscan = off;
         SELECT count(*) FROM content.notes WHERE owner = 3;",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn index_table_and_slow_query_statistics() {
    let db = TestDb::new().await;
    seed_table(&db).await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);

    // PostgreSQL publishes statistics asynchronously; allow it a moment.
    let mut usage = Vec::new();
    for _ in 0..50 {
        usage = client
            .get_index_usage(admin_request(pb::GetIndexUsageRequest {
                schema: "content".into(),
                table: "notes".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .indexes;
        if usage
            .iter()
            .any(|i| i.index == "notes_owner_idx" && i.scans > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<&str> = usage.iter().map(|i| i.index.as_str()).collect();
    assert_eq!(names, ["notes_body_idx", "notes_owner_idx", "notes_pkey"]);
    let owner = usage.iter().find(|i| i.index == "notes_owner_idx").unwrap();
    assert!(owner.scans > 0 && owner.size_bytes > 0 && !owner.unique);
    assert!(owner.definition.contains("(owner)"));
    assert!(
        usage
            .iter()
            .find(|i| i.index == "notes_pkey")
            .unwrap()
            .primary
    );

    let unused = client
        .list_unused_indexes(admin_request(pb::ListUnusedIndexesRequest {
            schema: "content".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .indexes;
    // The schema's own tables (prompts) have indexes no query used yet either.
    let unused: Vec<&str> = unused
        .iter()
        .map(|i| i.index.as_str())
        .filter(|i| i.starts_with("notes_"))
        .collect();
    assert_eq!(
        unused,
        ["notes_body_idx"],
        "scanned, unique and primary indexes are not unused"
    );

    let tables = client
        .get_table_stats(admin_request(pb::GetTableStatsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tables;
    let notes = tables.iter().find(|t| t.table == "notes").unwrap();
    assert_eq!(notes.schema, "content");
    assert_eq!(notes.live_rows, 1000);
    assert!(notes.table_size_bytes > 0 && notes.index_size_bytes > 0);
    assert_eq!(
        notes.total_size_bytes,
        notes.table_size_bytes + notes.index_size_bytes
    );
    assert!(notes.last_analyze_time.is_some());

    let request = pb::ListSlowQueriesRequest {
        page_size: 5,
        order_by: pb::SlowQueryOrder::TotalTime.into(),
        min_calls: 1,
        ..Default::default()
    };
    // `make test`'s private cluster preloads pg_stat_statements; a server that does not
    // must get a clear FAILED_PRECONDITION instead.
    let preloaded = strata_storage::stats::has_pg_stat_statements(&mut db.connect().await)
        .await
        .unwrap();
    if !preloaded {
        let status = client
            .list_slow_queries(admin_request(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("pg_stat_statements"));
        return;
    }
    let slow = client
        .list_slow_queries(admin_request(request))
        .await
        .unwrap()
        .into_inner()
        .queries;
    assert!(!slow.is_empty() && slow.len() <= 5);
    assert!(
        slow.windows(2)
            .all(|w| ms(&w[0].total_time) >= ms(&w[1].total_time))
    );
    assert!(
        slow.iter()
            .all(|q| q.calls >= 1 && (0.0..=1.0).contains(&q.cache_hit_ratio))
    );
    // Pages follow each other without repeating a statement.
    let first = client
        .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.queries.len(), 2);
    let second = client
        .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!second.queries.is_empty());
    assert!(
        second
            .queries
            .iter()
            .all(|q| first.queries.iter().all(|f| f.query_id != q.query_id))
    );
    let status = client
        .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
            page_size: 2,
            order_by: pb::SlowQueryOrder::TotalTime.into(),
            page_token: first.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "bound to its ordering"
    );

    let by_mean = client
        .list_slow_queries(admin_request(pb::ListSlowQueriesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .queries;
    assert!(
        by_mean
            .windows(2)
            .all(|w| ms(&w[0].mean_time) >= ms(&w[1].mean_time))
    );
}

#[tokio::test]
async fn unused_indexes_are_listed_by_page() {
    let db = TestDb::new().await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE content.wide (a int, b int, c int, d int);
             CREATE INDEX wide_a_idx ON content.wide (a);
             CREATE INDEX wide_b_idx ON content.wide (b);
             CREATE INDEX wide_c_idx ON content.wide (c);
             CREATE INDEX wide_d_idx ON content.wide (d);",
        )
        .await
        .unwrap();
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let mut token = String::new();
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_unused_indexes(admin_request(pb::ListUnusedIndexesRequest {
                schema: "content".into(),
                page_size: 3,
                page_token: token.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        names.extend(page.indexes.into_iter().map(|i| i.index));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    names.sort();
    // Every unused index, the schema's own (prompts) among them, once over the pages.
    let total = names.len();
    names.retain(|n| n.starts_with("wide_"));
    assert_eq!(
        names,
        ["wide_a_idx", "wide_b_idx", "wide_c_idx", "wide_d_idx"]
    );
    assert_eq!(pages, total.div_ceil(3));
}

#[tokio::test]
async fn explain_query_plans_selects_and_refuses_everything_else() {
    let db = TestDb::new().await;
    seed_table(&db).await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let explain =
        |sql: &str, analyze: bool, format: pb::ExplainFormat, timeout: Option<Duration>| {
            admin_request(pb::ExplainQueryRequest {
                sql: sql.into(),
                analyze,
                format: format.into(),
                timeout: timeout.map(|t| t.try_into().unwrap()),
            })
        };

    let plan = client
        .explain_query(explain(
            "SELECT * FROM content.notes WHERE owner = 3;",
            false,
            pb::ExplainFormat::Unspecified,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(plan.plan.contains("notes"), "{}", plan.plan);
    assert!(plan.total_cost > 0.0);
    assert_eq!(plan.execution_time, None, "not executed without analyze");

    let plan = client
        .explain_query(explain(
            "SELECT count(*) FROM content.notes",
            true,
            pb::ExplainFormat::Json,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(plan.plan.trim_start().starts_with('['), "{}", plan.plan);
    assert!(plan.plan.contains("Actual Rows"));
    assert!(ms(&plan.execution_time) > 0.0);

    for (sql, why) in [
        ("DELETE FROM content.notes", "must be a SELECT"),
        ("SELECT 1; DELETE FROM content.notes", "single statement"),
        ("UPDATE content.notes SET body = ''", "must be a SELECT"),
        ("", "is empty"),
        (
            "WITH d AS (DELETE FROM content.notes RETURNING *) SELECT * FROM d",
            "must not modify data",
        ),
        ("SELECT * FROM content.missing", "unknown relation"),
    ] {
        let status = client
            .explain_query(explain(sql, true, pb::ExplainFormat::Text, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
        assert!(
            status.message().contains("sql") && status.message().contains(why),
            "{sql}: {}",
            status.message()
        );
    }
    let mut conn = db.connect().await;
    let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
        diesel::sql_query("SELECT count(*) AS n FROM content.notes"),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(rows[0].n, 1000, "nothing was deleted");

    // ANALYZE runs the statement, but nothing it does to the session survives the call.
    client
        .explain_query(explain(
            "SELECT set_config('application_name', 'hijacked', false), set_config('statement_timeout', '0', false)",
            true,
            pb::ExplainFormat::Text,
            None,
        ))
        .await
        .unwrap();
    let mut admin_conn = db.admin_connection().await;
    let hijacked: Vec<Count> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'hijacked'",
        ),
        &mut admin_conn,
    )
    .await
    .unwrap();
    assert_eq!(
        hijacked[0].n, 0,
        "session settings changed by an explained query were rolled back"
    );

    let status = client
        .explain_query(explain(
            "SELECT pg_sleep(5)",
            true,
            pb::ExplainFormat::Text,
            Some(Duration::from_millis(100)),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);

    for timeout in [Duration::ZERO, Duration::from_secs(31)] {
        let status = client
            .explain_query(explain(
                "SELECT 1",
                false,
                pb::ExplainFormat::Text,
                Some(timeout),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("timeout"));
    }
    let mut bad_format = explain("SELECT 1", false, pb::ExplainFormat::Text, None);
    bad_format.get_mut().format = 42;
    let status = client.explain_query(bad_format).await.unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().contains("format"));
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test]
async fn admin_rpcs_validate_their_inputs() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            client
                .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
                    page_size: -1,
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            "page_size",
        ),
        (
            client
                .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
                    min_calls: -5,
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            "min_calls",
        ),
        (
            client
                .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
                    order_by: 99,
                    ..Default::default()
                }))
                .await
                .unwrap_err(),
            "order_by",
        ),
        (
            client
                .get_index_usage(admin_request(pb::GetIndexUsageRequest {
                    schema: "x'; DROP".into(),
                    table: String::new(),
                }))
                .await
                .unwrap_err(),
            "schema",
        ),
        (
            client
                .get_table_stats(admin_request(pb::GetTableStatsRequest {
                    schema: String::new(),
                    table: "a b".into(),
                }))
                .await
                .unwrap_err(),
            "table",
        ),
    ];
    for (status, field) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
        use tonic_types::StatusExt;
        let violations = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert_eq!(violations[0].field, field);
    }
    // A huge page size is clamped, not refused.
    client
        .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
            page_size: 1_000_000,
            ..Default::default()
        }))
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_rpcs_require_the_admin_token() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let status = client
        .get_health(pb::GetHealthRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::GetHealthRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer test-admin-tokeN".parse().unwrap());
    assert_eq!(
        client.get_health(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Health and reflection stay open.
    health_status(server.channel(), "").await;

    let mut config = db.server_config("test");
    config.admin_token = None;
    let server = TestServer::start(config, |_| {}).await;
    let status = admin(&server)
        .get_health(admin_request(pb::GetHealthRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn responses_carry_process_and_query_metadata() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);

    // GetTableStats runs exactly one statement (the checkout validation does not count).
    let response = client
        .get_table_stats(admin_request(pb::GetTableStatsRequest::default()))
        .await
        .unwrap();
    let metadata = response.metadata();
    assert_eq!(metadata_f64(metadata, QUERY_COUNT_HEADER), 1.0);
    let query_ms = metadata_f64(metadata, QUERY_TIME_HEADER);
    let process_ms = metadata_f64(metadata, PROCESS_TIME_HEADER);
    assert!(
        query_ms > 0.0 && process_ms >= query_ms,
        "{query_ms} {process_ms}"
    );

    // ExplainQuery with ANALYZE of a 50 ms sleep, on a connection of its own: the
    // transaction setup, the one EXPLAIN, the rollback — and the sleep's time, once.
    let response = client
        .explain_query(admin_request(pb::ExplainQueryRequest {
            sql: "SELECT pg_sleep(0.05)".into(),
            analyze: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(metadata_f64(response.metadata(), QUERY_COUNT_HEADER), 3.0);
    assert!(metadata_f64(response.metadata(), QUERY_TIME_HEADER) >= 50.0);

    // Errors carry the metadata too, with no queries run.
    let status = client
        .get_health(pb::GetHealthRequest {})
        .await
        .unwrap_err();
    assert_eq!(metadata_f64(status.metadata(), QUERY_COUNT_HEADER), 0.0);
    assert!(status.metadata().get(PROCESS_TIME_HEADER).is_some());
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tokio_stream::StreamExt;
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(server.channel());
    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "strata.admin.v1.AdminService".into(),
            )),
        },
    ]);
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "strata.admin.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    let mut alpha = AlphaClient::new(server.channel());
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([AlphaReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let Some(AlphaResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list from v1alpha");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "strata.admin.v1.AdminService")
    );
}

#[tokio::test]
async fn a_panicking_handler_becomes_internal_and_the_layer_adds_metadata() {
    use tower::{Layer, Service, ServiceExt};
    let mut service = RequestLayer.layer(tower::service_fn(
        |_req: http::Request<tonic::body::Body>| async {
            if true {
                panic!("handler bug with secret detail");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        },
    ));
    let request = http::Request::builder()
        .uri("/strata.test.v1.TestService/Boom")
        .body(tonic::body::Body::empty())
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        "internal error",
        "panic text never reaches the client"
    );
    assert!(response.headers().get(PROCESS_TIME_HEADER).is_some());
    assert_eq!(response.headers().get(QUERY_COUNT_HEADER).unwrap(), "0");
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_then_refuses_new_ones() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let addr = server.addr();
    let mut client = admin(&server);
    let slow = tokio::spawn(async move {
        client
            .explain_query(admin_request(pb::ExplainQueryRequest {
                sql: "SELECT pg_sleep(0.5)".into(),
                analyze: true,
                ..Default::default()
            }))
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.stop().await.unwrap();
    let finished = slow
        .await
        .unwrap()
        .expect("the in-flight call completed during the drain");
    assert!(ms(&finished.into_inner().execution_time) >= 500.0);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn request_timeout_and_message_size_are_enforced() {
    let db = TestDb::new().await;
    let mut config = db.server_config("test");
    config.request_timeout = Duration::from_millis(200);
    config.max_message_bytes = 1024;
    let server = TestServer::start(config, |_| {}).await;
    let mut client = admin(&server);

    let started = std::time::Instant::now();
    let status = client
        .explain_query(admin_request(pb::ExplainQueryRequest {
            sql: "SELECT pg_sleep(3)".into(),
            analyze: true,
            timeout: Some(Duration::from_secs(10).try_into().unwrap()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let status = client
        .explain_query(admin_request(pb::ExplainQueryRequest {
            sql: format!("SELECT '{}'", "x".repeat(4096)),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn trace_context_crosses_the_hop_from_client_span_to_server_span() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Thread-local: the current-thread runtime runs client and server on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = AdminServiceClient::with_interceptor(
        server.channel(),
        strata_runtime::telemetry::TraceContextInterceptor,
    );
    let span = tracing::info_span!("client.call");
    let client_context = span.context().span().span_context().clone();
    async {
        client
            .get_table_stats(admin_request(pb::GetTableStatsRequest::default()))
            .await
            .unwrap();
    }
    .instrument(span)
    .await;
    server.stop().await.unwrap();
    let _ = provider.force_flush();

    let spans = exporter.get_finished_spans().unwrap();
    let server_span = spans
        .iter()
        .find(|s| s.name == "strata.admin.v1.AdminService/GetTableStats")
        .unwrap_or_else(|| {
            panic!(
                "no server span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert!(client_context.is_valid());
    assert_eq!(
        server_span.span_context.trace_id(),
        client_context.trace_id(),
        "same trace"
    );
    assert_eq!(
        server_span.parent_span_id,
        client_context.span_id(),
        "parented on the caller's span"
    );
}

#[path = "runtime/empty.rs"]
mod empty;

#[path = "runtime/metadata.rs"]
mod metadata;

#[path = "runtime/explain.rs"]
mod explain;

#[path = "runtime/telemetry.rs"]
mod telemetry;

/// Milliseconds of a duration the server sent.
fn ms(d: &Option<prost_types::Duration>) -> f64 {
    d.map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
        .unwrap_or(0.0)
}
