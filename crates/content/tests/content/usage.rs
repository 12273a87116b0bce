//! Messages' token usage reaches analytics exactly once, through the outbox, whichever
//! replica appended it and however long analytics was away.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use strata_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use strata_proto::analytics::{self as apb};
use strata_proto::common::{Decimal, TimeRange};
use strata_proto::content::conversation_service_client::ConversationServiceClient;
use strata_proto::content::{self as pb};
use strata_runtime::ServerConfig;
use strata_testkit::app::{self, TestUser};
use strata_testkit::{TestDb, TestServer, bearer};

use super::conversations::create;
use tonic::Code;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn outbox_rows(db: &TestDb) -> i64 {
    let mut conn = db.connect().await;
    let count: Count = sql_query("SELECT count(*) AS n FROM content.usage_outbox")
        .get_result(&mut conn)
        .await
        .unwrap();
    count.n
}

/// A content replica (with auth, as every replica verifies tokens) shipping usage to
/// `analytics` with `key`.
async fn content_replica(db: &TestDb, analytics: &str, key: &str) -> TestServer {
    let mut config = db.server_config("content");
    config.analytics_url = Some(analytics.to_owned());
    let key = key.to_owned();
    TestServer::start(config, move |builder| {
        strata_auth::register(builder, strata_auth::AuthConfig::default()).unwrap();
        strata_content::register(
            builder,
            strata_content::ContentConfig {
                usage_key: Some(strata_runtime::config::Secret::new(key)),
                usage_ship: Duration::from_millis(100),
                usage_max_backoff: Duration::from_millis(400),
                ..Default::default()
            },
        );
    })
    .await
}

/// Analytics (with auth, to verify the shipper's key) listening on `config`'s address.
async fn analytics_server(config: ServerConfig) -> TestServer {
    TestServer::start(config, |builder| {
        strata_auth::register(builder, strata_auth::AuthConfig::default()).unwrap();
        strata_analytics::register(
            builder,
            strata_analytics::AnalyticsConfig {
                scheduler: false,
                ..Default::default()
            },
        );
    })
    .await
}

fn answer(text: &str, prompt: i64, completion: i64, cost: &str) -> pb::NewMessage {
    pb::NewMessage {
        role: pb::Role::Assistant.into(),
        parts: vec![pb::Part {
            kind: Some(pb::part::Kind::Text(text.into())),
        }],
        usage: Some(pb::TokenUsage {
            model: "gpt-4o".into(),
            provider: "openai".into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost: Some(Decimal { value: cost.into() }),
        }),
    }
}

fn question(text: &str) -> pb::NewMessage {
    pb::NewMessage {
        role: pb::Role::User.into(),
        parts: vec![pb::Part {
            kind: Some(pb::part::Kind::Text(text.into())),
        }],
        usage: None,
    }
}

/// Every usage record of `user`, following the pages.
async fn records(analytics: &TestServer, user: &TestUser) -> Vec<apb::UsageRecord> {
    let mut client = AnalyticsServiceClient::new(analytics.channel());
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_usage(bearer(
                apb::ListUsageRequest {
                    page_size: 100,
                    page_token: token,
                    ..Default::default()
                },
                &user.token,
            ))
            .await
            .unwrap()
            .into_inner();
        all.extend(page.records);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn usage_reaches_analytics_exactly_once_from_two_replicas_after_an_outage() {
    let db = TestDb::new().await;
    // The service account the shippers use, made as `strata auth service-key` makes it.
    let key = {
        let mut conn = db.connect().await;
        strata_auth::service_accounts::ensure_key(
            &mut conn,
            "usage-shipper@strata.internal",
            "usage-shipper",
            &["usage:write".to_owned()],
            None,
            Utc::now(),
        )
        .await
        .unwrap()
        .secret
    };
    // Making it again keeps the account; an account someone signed up with never becomes
    // one (nor an admin).
    {
        let mut conn = db.connect().await;
        let again = strata_auth::service_accounts::ensure_key(
            &mut conn,
            "usage-shipper@strata.internal",
            "usage-shipper",
            &["usage:write".to_owned()],
            Some(&key),
            Utc::now(),
        )
        .await
        .unwrap();
        assert!(!again.created);
    }
    // Analytics' address, where nothing listens yet.
    let analytics_addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{analytics_addr}");
    let one = content_replica(&db, &url, &key).await;
    let two = content_replica(&db, &url, &key).await;
    let ada = app::sign_up(one.channel()).await;
    {
        let mut conn = db.connect().await;
        let refused = strata_auth::service_accounts::ensure_key(
            &mut conn,
            &ada.email,
            "usage-shipper",
            &["usage:write".to_owned()],
            None,
            Utc::now(),
        )
        .await
        .unwrap_err();
        assert!(
            refused.to_string().contains("not a service account"),
            "{refused}"
        );
    }

    let mut c1 = ConversationServiceClient::new(one.channel());
    let c2 = ConversationServiceClient::new(two.channel());
    let conversation = create(
        &mut c1,
        &ada,
        pb::Conversation {
            title: "billing".into(),
            ..Default::default()
        },
    )
    .await;

    // 40 appends over both replicas at once, each a question and a billed answer; every
    // fourth is retried with its request_id (the retry must bill nothing more).
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let mut client = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        let token = ada.token.clone();
        let id = conversation.id.clone();
        tasks.push(tokio::spawn(async move {
            let request = pb::AppendMessagesRequest {
                conversation_id: id,
                messages: vec![
                    question(&format!("question {i}")),
                    answer(&format!("answer {i}"), 100 + i, 10 + i, "0.0012345"),
                ],
                parent_id: String::new(),
                request_id: uuid::Uuid::now_v7().to_string(),
            };
            let first = client
                .append_messages(bearer(request.clone(), &token))
                .await
                .unwrap()
                .into_inner()
                .messages;
            if i % 4 == 0 {
                let again = client
                    .append_messages(bearer(request, &token))
                    .await
                    .unwrap()
                    .into_inner()
                    .messages;
                assert_eq!(again, first);
            }
            first
        }));
    }
    let mut billed = Vec::new();
    for task in tasks {
        billed.extend(
            task.await
                .unwrap()
                .into_iter()
                .filter(|m| m.usage.is_some()),
        );
    }
    assert_eq!(billed.len(), 40);
    let usage = billed[0].usage.clone().unwrap();
    assert_eq!(
        (usage.model.as_str(), usage.cost.unwrap().value.as_str()),
        ("gpt-4o", "0.0012345")
    );

    // Analytics is away: the usage waits, whole.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(outbox_rows(&db).await, 40);

    let mut config = db.server_config("analytics");
    config.listen_addr = analytics_addr;
    let analytics = analytics_server(config).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbox_rows(&db).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox was not drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every event once, keyed by its message, naming the conversation.
    let records = records(&analytics, &ada).await;
    assert_eq!(records.len(), 40);
    let keys: HashSet<String> = records
        .iter()
        .map(|r| r.event.as_ref().unwrap().idempotency_key.clone())
        .collect();
    let ids: HashSet<String> = billed.iter().map(|m| m.id.clone()).collect();
    assert_eq!(keys, ids);
    assert!(
        records
            .iter()
            .all(|r| r.event.as_ref().unwrap().conversation_id == conversation.id)
    );

    // The summary equals the sum of the messages' usage.
    let summary = AnalyticsServiceClient::new(analytics.channel())
        .get_usage_summary(bearer(
            apb::GetUsageSummaryRequest {
                time_range: Some(TimeRange {
                    start_time: Some(prost_types::Timestamp {
                        seconds: Utc::now().timestamp() - 86_400,
                        nanos: 0,
                    }),
                    end_time: Some(prost_types::Timestamp {
                        seconds: Utc::now().timestamp() + 86_400,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .totals
        .unwrap();
    let tokens = summary.tokens.unwrap();
    let prompt: i64 = (0..40).map(|i| 100 + i).sum();
    let completion: i64 = (0..40).map(|i| 10 + i).sum();
    assert_eq!(summary.request_count, 40);
    assert_eq!(
        (tokens.prompt_tokens, tokens.completion_tokens),
        (prompt, completion)
    );
    let cost: f64 = summary.cost.unwrap().value.parse().unwrap();
    assert!((cost - 40.0 * 0.001_234_5).abs() < 1e-9, "{cost}");
    drop((one, two, analytics));
}

#[tokio::test]
async fn usage_is_checked_like_analytics_checks_it_and_forks_bill_nothing() {
    let db = TestDb::new().await;
    let server = content_replica(&db, "http://127.0.0.1:9", "sk_unused").await;
    let ada = app::sign_up(server.channel()).await;
    let mut c = ConversationServiceClient::new(server.channel());
    let conversation = create(&mut c, &ada, pb::Conversation::default()).await;
    let mut bad = answer("x", -1, 100_000_001, "0.12345678901");
    if let Some(u) = bad.usage.as_mut() {
        u.model = " ".into();
        u.provider = "Open AI".into();
    }
    let mut no_cost = answer("y", 1, 1, "1");
    if let Some(u) = no_cost.usage.as_mut() {
        u.cost = None;
    }
    let status = c
        .append_messages(bearer(
            pb::AppendMessagesRequest {
                conversation_id: conversation.id.clone(),
                messages: vec![bad, no_cost],
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: HashSet<String> = super::violations(&status).into_iter().collect();
    for field in [
        "messages[0].usage.model",
        "messages[0].usage.provider",
        "messages[0].usage.prompt_tokens",
        "messages[0].usage.completion_tokens",
        "messages[0].usage.cost.value",
        "messages[1].usage.cost",
    ] {
        assert!(fields.contains(field), "{field} in {fields:?}");
    }
    assert_eq!(outbox_rows(&db).await, 0);

    let appended = c
        .append_messages(bearer(
            pb::AppendMessagesRequest {
                conversation_id: conversation.id.clone(),
                messages: vec![question("hi"), answer("hello", 5, 7, "0.5")],
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(outbox_rows(&db).await, 1);
    // A fork copies the usage onto its messages for display but bills nothing again.
    c.fork_conversation(bearer(
        pb::ForkConversationRequest {
            message_id: appended[1].id.clone(),
            conversation_id: conversation.id.clone(),
            ..Default::default()
        },
        &ada.token,
    ))
    .await
    .unwrap();
    assert_eq!(outbox_rows(&db).await, 1);
}
