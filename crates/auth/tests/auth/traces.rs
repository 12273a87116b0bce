//! What leaves the process through traces and logs: spans exported to a real OTLP
//! collector (in this process) during sign-up, login, refresh, API-key creation and use,
//! and key rotation, with every filter opened to TRACE, carry no secret and no SQL bind
//! value; only Strata's own spans are exported, one per SQL statement among them.

use std::time::Duration;

use diesel::sql_types::Nullable;
use strata_testkit::otlp::{Collector, attribute};

use super::*;

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Nullable<Text>)]
    text: Option<String>,
    #[diesel(sql_type = Nullable<Bytea>)]
    bytes: Option<Vec<u8>>,
}

/// Every secret the database holds, in the spellings a log line could give it.
async fn stored_secrets(db: &TestDb) -> Vec<String> {
    let rows: Vec<Stored> = diesel::sql_query(
        "SELECT password_hash AS text, NULL::bytea AS bytes FROM auth.users
         UNION ALL SELECT NULL, token_hash FROM auth.refresh_tokens
         UNION ALL SELECT NULL, key_hash FROM auth.api_keys
         UNION ALL SELECT NULL, private_key FROM auth.signing_keys",
    )
    .load(&mut db.connect().await)
    .await
    .unwrap();
    let mut forms = Vec::new();
    for row in rows {
        if let Some(text) = row.text {
            // The hash part of the PHC string.
            forms.push(text.rsplit('$').next().unwrap().to_owned());
        }
        if let Some(bytes) = row.bytes {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            forms.push(hex[..24].to_owned());
            let listed = format!("{:?}", &bytes[..6]);
            forms.push(listed.trim_end_matches(']').to_owned());
        }
    }
    forms
}

/// A database, a Redis and the config of an auth server exporting spans to `collector`
/// every 100 ms.
async fn exporting_to(collector: &Collector) -> (TestDb, TestRedis, ServerConfig) {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    config.otlp_endpoint = Some(collector.endpoint());
    config.trace_export_interval = Duration::from_millis(100);
    (db, redis, config)
}

#[tokio::test(flavor = "current_thread")]
async fn exported_traces_carry_no_secret_and_no_bind_value() {
    // Libraries that log through the `log` crate (the PostgreSQL driver does, with its
    // bind values at DEBUG) reach tracing through the bridge the test kit installs; open
    // its gate fully, as RUST_LOG=trace would in production.
    strata_testkit::init_tracing();
    log::set_max_level(log::LevelFilter::Trace);
    let collector = Collector::start().await;
    let (db, _redis, mut config) = exporting_to(&collector).await;
    // Everything that may be exported or logged at all.
    config.trace_filter = "trace".into();
    config.log_filter = "trace".into();
    let logs = LogCapture::default();
    let sink = logs.clone();
    let (dispatch, _telemetry) =
        strata_runtime::telemetry::subscriber(&config, move || sink.clone(), false).unwrap();
    // Thread-local: the current-thread runtime runs the server on this thread.
    let _default = tracing::dispatcher::set_default(&dispatch);
    let mut h = start_on(db, config, Arc::new(SystemClock)).await;

    let email = "traced.person@example.com";
    let (_, signed_up) = sign_up(&mut h.client, email).await;
    let logged_in = login(&mut h.client, email, PASSWORD).await.unwrap();
    let refreshed = refresh(&mut h.client, &logged_in.refresh_token)
        .await
        .unwrap();
    let key = create_key(&mut h.client, &refreshed.access_token, &["profile:read"])
        .await
        .unwrap();
    h.client
        .get_profile(bearer(pb::GetProfileRequest::default(), &key.secret))
        .await
        .unwrap();
    h.handlers.rotate_keys().await.unwrap();
    let after_rotation = login(&mut h.client, email, PASSWORD).await.unwrap();
    h.client
        .verify_token(pb::VerifyTokenRequest {
            token: after_rotation.access_token.clone(),
        })
        .await
        .unwrap();

    // The batch exporter sends every 100 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spans = collector.spans();
        let has = |name: &str| spans.iter().any(|s| s.name == name);
        if has("strata.auth.v1.AuthService/VerifyToken") && has("INSERT") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = collector.spans();

    // Only Strata's own spans: none of the HTTP/2 stack, none of the exporter.
    for span in &spans {
        let module = attribute(span, "code.module.name")
            .or_else(|| attribute(span, "code.namespace"))
            .unwrap_or_default();
        assert!(
            module.starts_with("strata"),
            "{} from {module:?}: {:?}",
            span.name,
            span.attributes.iter().map(|a| &a.key).collect::<Vec<_>>()
        );
    }
    // One span per SQL statement, by the database conventions: text, never values.
    let queries: Vec<_> = spans
        .iter()
        .filter(|s| attribute(s, "db.system") == Some("postgresql"))
        .collect();
    assert!(queries.len() > 10, "{} query spans", queries.len());
    assert!(queries.iter().all(|q| {
        let statement = attribute(q, "db.statement").unwrap_or_default();
        !statement.is_empty() && attribute(q, "db.operation") == Some(q.name.as_str())
    }));
    assert!(
        queries.iter().any(|q| attribute(q, "db.statement")
            .unwrap_or_default()
            .contains("$1")),
        "statements keep their placeholders"
    );

    let mut secrets = vec![
        PASSWORD.to_owned(),
        email.to_owned(),
        signed_up.access_token.clone(),
        signed_up.refresh_token.clone(),
        logged_in.refresh_token.clone(),
        refreshed.refresh_token.clone(),
        refreshed
            .access_token
            .rsplit('.')
            .next()
            .unwrap()
            .to_owned(),
        after_rotation
            .access_token
            .rsplit('.')
            .next()
            .unwrap()
            .to_owned(),
        key.secret.clone(),
    ];
    secrets.extend(stored_secrets(&h.db).await);
    let exported = collector.text();
    let logged = logs.text();
    assert!(logged.len() > 1000, "logs were captured");
    for secret in &secrets {
        assert!(!exported.contains(secret.as_str()), "exported: {secret}");
        assert!(!logged.contains(secret.as_str()), "logged: {secret}");
    }
}

/// A call from one service to another has a client span on the caller's side: child of
/// the caller's server span, parent of the callee's, with the RPC's attributes and status.
#[tokio::test(flavor = "current_thread")]
async fn a_call_to_another_service_has_its_own_client_span() {
    let collector = Collector::start().await;
    let (db, redis, config) = exporting_to(&collector).await;
    let (dispatch, _telemetry) =
        strata_runtime::telemetry::subscriber(&config, std::io::sink, false).unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let mut h = start_on(db, config, Arc::new(SystemClock)).await;
    let auth_url = format!("http://{}", h._server.addr());
    let other = other_service(&h.db, &auth_url, redis.url(), redis.handle().prefix()).await;
    let admin = admin_credentials(&mut h, "root@example.com").await;
    // API keys are verified by the auth service: one call from the other service.
    let key = create_key(&mut h.client, &admin.access_token, &["ops:admin"])
        .await
        .unwrap();
    health_as(&other, Some(&key.secret)).await.unwrap();

    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (caller, client, callee) = loop {
        let spans = collector.spans();
        let find = |name: &str, kind: SpanKind| {
            spans
                .iter()
                .find(|s| s.name == name && s.kind == kind as i32)
                .cloned()
        };
        if let (Some(caller), Some(client), Some(callee)) = (
            find("strata.admin.v1.AdminService/GetHealth", SpanKind::Server),
            find("strata.auth.v1.AuthService/VerifyToken", SpanKind::Client),
            find("strata.auth.v1.AuthService/VerifyToken", SpanKind::Server),
        ) {
            break (caller, client, callee);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(client.trace_id, caller.trace_id);
    assert_eq!(callee.trace_id, caller.trace_id);
    assert_eq!(
        client.parent_span_id, caller.span_id,
        "inside the caller's call"
    );
    assert_eq!(
        callee.parent_span_id, client.span_id,
        "the callee hangs off the client span"
    );
    assert_eq!(attribute(&client, "rpc.system"), Some("grpc"));
    assert_eq!(
        attribute(&client, "rpc.service"),
        Some("strata.auth.v1.AuthService")
    );
    assert_eq!(attribute(&client, "rpc.method"), Some("VerifyToken"));
    assert_eq!(
        strata_testkit::otlp::int_attribute(&client, "rpc.grpc.status_code"),
        Some(0)
    );
    assert!(client.end_time_unix_nano >= callee.end_time_unix_nano);
}
