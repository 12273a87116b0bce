//! [`TestApp`]: a server on a database of its own, handing out users, admins and API keys
//! the way rust-lang/crates.io's `TestApp::init().with_user()` does, through the auth
//! service's public API (SignUp, RefreshToken, CreateApiKey). Tests of other services use
//! it instead of reaching into the auth crate's tables or keys.
//!
//! The one step no API offers is making the first admin (an operator's job:
//! `strata auth grant-admin`); [`promote`] does what that command does, in SQL.

use diesel_async::RunQueryDsl;
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::{self as pb};
use strata_runtime::{ServerBuilder, ServerConfig};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{TestDb, TestServer, bearer};

/// The password of every user a test app makes.
pub const PASSWORD: &str = "correct horse battery staple";

/// A signed-in user of a test app.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// The account's id.
    pub id: Uuid,
    /// Its email.
    pub email: String,
    /// A live access token.
    pub token: String,
    /// The refresh token of the same session.
    pub refresh_token: String,
}

/// A server and its database; see the module docs.
pub struct TestApp {
    /// The database.
    pub db: TestDb,
    /// The server, serving at least the auth service.
    pub server: TestServer,
}

impl TestApp {
    /// A server on a fresh database, configured by `config` (from [`TestDb::server_config`]
    /// when `None`), with the services `add` registers, which must include auth.
    pub async fn start(
        config: impl FnOnce(&TestDb) -> ServerConfig,
        add: impl FnOnce(&mut ServerBuilder),
    ) -> Self {
        let db = TestDb::new().await;
        let server = TestServer::start(config(&db), add).await;
        Self { db, server }
    }

    /// A new user, signed in.
    pub async fn with_user(&self) -> TestUser {
        sign_up(self.server.channel()).await
    }

    /// A new admin, signed in with a token that carries the role.
    pub async fn with_admin(&self) -> TestUser {
        let mut user = sign_up(self.server.channel()).await;
        promote(&self.db, self.server.channel(), &mut user).await;
        user
    }

    /// A new API key of `user` with `scopes`; returns its secret.
    pub async fn api_key(&self, user: &TestUser, scopes: &[&str]) -> String {
        api_key(self.server.channel(), user, scopes).await
    }
}

/// Signs a new user up through `channel`'s auth service.
pub async fn sign_up(channel: Channel) -> TestUser {
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let answer = AuthServiceClient::new(channel)
        .sign_up(pb::SignUpRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            display_name: "Tester".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("sign-up failed: {e:?}"))
        .into_inner();
    let (Some(user), Some(credentials)) = (answer.user, answer.credentials) else {
        panic!("sign-up answered without user or credentials");
    };
    TestUser {
        id: Uuid::parse_str(&user.id).unwrap_or_else(|e| panic!("user id: {e}")),
        email,
        token: credentials.access_token,
        refresh_token: credentials.refresh_token,
    }
}

/// Gives `user` the ADMIN role (what `strata auth grant-admin` does) and refreshes their
/// token so it carries the role.
pub async fn promote(db: &TestDb, channel: Channel, user: &mut TestUser) {
    diesel::sql_query("UPDATE auth.users SET role = 'ADMIN', updated_at = now() WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(user.id)
        .execute(&mut db.connect().await)
        .await
        .unwrap_or_else(|e| panic!("granting admin: {e}"));
    let credentials = AuthServiceClient::new(channel)
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: user.refresh_token.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("refresh failed: {e:?}"))
        .into_inner()
        .credentials
        .unwrap_or_else(|| panic!("refresh answered without credentials"));
    user.token = credentials.access_token;
    user.refresh_token = credentials.refresh_token;
}

/// A new API key of `user` with `scopes`, through `channel`'s auth service; its secret.
pub async fn api_key(channel: Channel, user: &TestUser, scopes: &[&str]) -> String {
    AuthServiceClient::new(channel)
        .create_api_key(bearer(
            pb::CreateApiKeyRequest {
                name: "test".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
            &user.token,
        ))
        .await
        .unwrap_or_else(|e| panic!("creating an API key failed: {e:?}"))
        .into_inner()
        .secret
}
