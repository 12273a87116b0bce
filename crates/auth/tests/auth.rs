//! AuthService through its generated client against a real server and PostgreSQL.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::{Arc, Mutex};

use chrono::Utc;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bytea, Text};
use diesel_async::RunQueryDsl;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use strata_auth::AuthHandlers;
use strata_auth::config::AuthConfig;
use strata_auth::keys::signer_from_seed;
use strata_auth::throttle::ThrottlePolicy;
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{self as pb, Credentials};
use strata_runtime::ServerConfig;
use strata_runtime::clock::{Clock, ManualClock, SystemClock};
use strata_runtime::identity::{AccessClaims, Role};
use strata_testkit::{LogCapture, TestDb, TestRedis, TestServer, bearer};
use tonic::Code;
use tonic::transport::Channel;

struct Harness {
    db: TestDb,
    _server: TestServer,
    handlers: Arc<AuthHandlers>,
    client: AuthServiceClient<Channel>,
}

async fn start() -> Harness {
    let db = TestDb::new().await;
    let config = db.server_config("auth");
    start_on(db, config, Arc::new(SystemClock)).await
}

/// A server for `db` with `config`, its auth handlers reading `clock`.
async fn start_on(db: TestDb, config: ServerConfig, clock: Arc<dyn Clock>) -> Harness {
    start_with(db, config, AuthConfig::default(), clock).await
}

/// A server for `db` with `config`, its auth handlers configured by `auth` and reading
/// `clock`.
async fn start_with(
    db: TestDb,
    config: ServerConfig,
    auth: AuthConfig,
    clock: Arc<dyn Clock>,
) -> Harness {
    let handlers_slot = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&handlers_slot);
    let server = TestServer::start(config, move |builder| {
        let handlers = Arc::new(
            AuthHandlers::with_clock(builder.context(), auth, clock, ThrottlePolicy::default())
                .unwrap(),
        );
        *slot.lock().unwrap() = Some(Arc::clone(&handlers));
        strata_auth::register_handlers(builder, handlers);
    })
    .await;
    let handlers = handlers_slot.lock().unwrap().take().unwrap();
    let client = AuthServiceClient::new(server.channel());
    Harness {
        db,
        _server: server,
        handlers,
        client,
    }
}

const PASSWORD: &str = "correct horse battery staple";

async fn sign_up(client: &mut AuthServiceClient<Channel>, email: &str) -> (pb::User, Credentials) {
    let response = client
        .sign_up(pb::SignUpRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (response.user.unwrap(), response.credentials.unwrap())
}

async fn refresh(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<Credentials, tonic::Status> {
    client
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner().credentials.unwrap())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let rows: Vec<Count> = diesel::sql_query(sql)
        .load(&mut db.connect().await)
        .await
        .unwrap();
    rows[0].n
}

fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
}

async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<Credentials, tonic::Status> {
    client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner().credentials.unwrap())
}

/// Grants ADMIN the way `strata auth grant-admin` does: in the database, then forgotten
/// in the caches of every replica.
async fn make_admin(h: &Harness, email: &str) {
    let mut conn = h.db.connect().await;
    let user = strata_auth::store::grant_admin(&mut conn, email, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    let context = h.handlers.context();
    let _delivered =
        strata_auth::cached::forget_user(&context.caches, context.db.clone(), user).await;
}

async fn create_key(
    client: &mut AuthServiceClient<Channel>,
    access_token: &str,
    scopes: &[&str],
) -> Result<pb::CreateApiKeyResponse, tonic::Status> {
    client
        .create_api_key(bearer(
            pb::CreateApiKeyRequest {
                name: "ci".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expire_time: None,
                ..Default::default()
            },
            access_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// A second process of the suite: only the admin service, verifying through `auth_url`.
async fn other_service(
    db: &TestDb,
    auth_url: &str,
    redis_url: &str,
    redis_prefix: &str,
) -> TestServer {
    let mut config = db.server_config("other");
    config.admin_token = None;
    config.auth_url = Some(auth_url.to_owned());
    config.redis_url = Some(strata_runtime::config::Secret::new(redis_url.to_owned()));
    config.redis_prefix = redis_prefix.to_owned();
    // Every answer fresh: tests see a revocation at once instead of sleeping out a cache.
    config.tokens.cache_ttl = std::time::Duration::ZERO;
    config.db =
        strata_storage::DbConfig::new(db.url(), "other", strata_storage::Environment::Development);
    TestServer::start(config, |_| {}).await
}

async fn health_as(server: &TestServer, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut client =
        strata_proto::admin::admin_service_client::AdminServiceClient::new(server.channel());
    let request = match token {
        Some(token) => bearer(strata_proto::admin::GetHealthRequest {}, token),
        None => tonic::Request::new(strata_proto::admin::GetHealthRequest {}),
    };
    client.get_health(request).await.map(|_| ())
}

async fn start_with_redis(redis: &TestRedis) -> Harness {
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    start_on(db, config, Arc::new(SystemClock)).await
}

async fn admin_credentials(h: &mut Harness, email: &str) -> Credentials {
    let (_, credentials) = sign_up(&mut h.client, email).await;
    make_admin(h, email).await;
    // The role is a claim: a refresh carries the promotion.
    refresh(&mut h.client, &credentials.refresh_token)
        .await
        .unwrap()
}

#[path = "auth/accounting.rs"]
mod accounting;

#[path = "auth/accounts.rs"]
mod accounts;

#[path = "auth/admin.rs"]
mod admin;

#[path = "auth/api_keys.rs"]
mod api_keys;

#[path = "auth/cross_user.rs"]
mod cross_user;

#[path = "auth/empty.rs"]
mod empty;

#[path = "auth/indexes.rs"]
mod indexes;

#[path = "auth/page_tokens.rs"]
mod page_tokens;

#[path = "auth/profile.rs"]
mod profile;

#[path = "auth/ratelimits.rs"]
mod ratelimits;

#[path = "auth/replicas.rs"]
mod replicas;

#[path = "auth/request_ids.rs"]
mod request_ids;

#[path = "auth/revocation.rs"]
mod revocation;

#[path = "auth/sealing.rs"]
mod sealing;

#[path = "auth/sessions.rs"]
mod sessions;

#[path = "auth/tasks.rs"]
mod tasks;

#[path = "auth/throttle.rs"]
mod throttle;

#[path = "auth/tokens.rs"]
mod tokens;

#[path = "auth/traces.rs"]
mod traces;

#[path = "auth/verifiers.rs"]
mod verifiers;
