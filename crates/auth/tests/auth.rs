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

#[tokio::test]
async fn sign_up_login_and_profile() {
    let mut h = start().await;
    let (user, credentials) = sign_up(&mut h.client, "Ada@Example.com").await;
    assert_eq!(user.email, "Ada@Example.com");
    assert_eq!(user.role, i32::from(pb::Role::User));
    assert_eq!(user.status, i32::from(pb::UserStatus::Active));
    assert_eq!(credentials.token_type, "Bearer");
    assert!(credentials.refresh_token.starts_with("rt_"));
    let access_ttl = credentials.access_token_expire_time.unwrap().seconds - Utc::now().timestamp();
    assert!(
        (895..=900).contains(&access_ttl),
        "15-minute access tokens: {access_ttl}"
    );

    let stored_hash: Vec<Count> = diesel::sql_query(
        "SELECT count(*) AS n FROM auth.users WHERE password_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%'",
    )
    .load(&mut h.db.connect().await)
    .await
    .unwrap();
    assert_eq!(
        stored_hash[0].n, 1,
        "argon2id at OWASP parameters, never the password"
    );

    let profile = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &credentials.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(profile.id, user.id);
    assert_eq!(profile.display_name, "Ada");

    let masked = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest {
                read_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
            },
            &credentials.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (
            masked.email.as_str(),
            masked.id.as_str(),
            masked.create_time
        ),
        ("Ada@Example.com", "", None)
    );
    let status = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest {
                read_mask: Some(prost_types::FieldMask {
                    paths: vec!["password_hash".into()],
                }),
            },
            &credentials.access_token,
        ))
        .await
        .unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().contains("read_mask"));

    // Login is case-insensitive on the email and opens a second session.
    let login = h
        .client
        .login(pb::LoginRequest {
            email: "ada@EXAMPLE.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().id, user.id);
    assert_ne!(
        login.credentials.unwrap().session_id,
        credentials.session_id
    );

    // The same email in another case is a generic conflict.
    let status = h
        .client
        .sign_up(pb::SignUpRequest {
            email: "ADA@example.COM".into(),
            password: "another good passphrase".into(),
            display_name: "Imposter".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(!status.message().contains("ADA"), "no echo of the email");
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.users").await,
        1
    );

    let status = h
        .client
        .get_profile(pb::GetProfileRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_sign_ups_name_the_field_and_write_nothing() {
    let mut h = start().await;
    let cases = [
        ("not-an-email", PASSWORD, "Ada", "email"),
        ("a@b", PASSWORD, "Ada", "email"),
        ("spaces in@example.com", PASSWORD, "Ada", "email"),
        ("ada@example.com", PASSWORD, "", "display_name"),
        (
            "ada@example.com",
            PASSWORD,
            &"n".repeat(101),
            "display_name",
        ),
        ("ada@example.com", "short", "Ada", "password"),
        ("ada@example.com", "password", "Ada", "password"),
        ("ada@example.com", "Password1", "Ada", "password"),
        ("ada@example.com", &"x".repeat(129), "Ada", "password"),
    ];
    for (email, password, name, field) in cases {
        let status = h
            .client
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: password.into(),
                display_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.users").await,
        0
    );
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.sessions").await,
        0
    );

    for (email, password, field) in [("", "x", "email"), ("a@example.com", "", "password")] {
        let status = h
            .client
            .login(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .unwrap_err();
        assert!(status.code() == Code::InvalidArgument && status.message().contains(field));
    }
}

#[tokio::test]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    let mut h = start().await;
    sign_up(&mut h.client, "ada@example.com").await;
    let unknown = h
        .client
        .login(pb::LoginRequest {
            email: "nobody@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    let wrong = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "wrong horse battery staple".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        (unknown.code(), unknown.message()),
        (wrong.code(), wrong.message())
    );
    assert_eq!(unknown.details(), wrong.details());
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let mut h = start().await;
    let (_, first) = sign_up(&mut h.client, "ada@example.com").await;
    let second = refresh(&mut h.client, &first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(
        second.session_expire_time, first.session_expire_time,
        "refreshing never extends the session"
    );
    let third = refresh(&mut h.client, &second.refresh_token).await.unwrap();

    // Presenting a used token: refused, and the whole family with it.
    let status = refresh(&mut h.client, &first.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = refresh(&mut h.client, &third.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "the newest token of the family is revoked too"
    );
    let status = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &third.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "the session is over");
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.refresh_tokens WHERE revoked_at IS NULL"
        )
        .await,
        0
    );

    for bad in ["", "rt_unknown", "not-a-refresh-token", &third.access_token] {
        let status = refresh(&mut h.client, bad).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument),
            "{bad}: {status:?}"
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_refreshes_of_one_token_have_exactly_one_winner() {
    let mut h = start().await;
    let (_, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut client = h.client.clone();
        let token = credentials.refresh_token.clone();
        tasks.push(tokio::spawn(
            async move { refresh(&mut client, &token).await },
        ));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        }
    }
    assert_eq!(wins, 1);
    // Consistent family: the presented token was used once, it has exactly one successor,
    // and the reuse by the losers revoked the family and the session.
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.refresh_tokens WHERE used_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.refresh_tokens").await,
        2
    );
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.refresh_tokens WHERE revoked_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.sessions WHERE revoked_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn logout_ends_one_session_and_logout_all_ends_every_one() {
    let mut h = start().await;
    let (_, a) = sign_up(&mut h.client, "ada@example.com").await;
    let b = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    let c = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();

    h.client
        .logout(bearer(pb::LogoutRequest {}, &a.access_token))
        .await
        .unwrap();
    let status = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &a.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        refresh(&mut h.client, &a.refresh_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    h.client
        .get_profile(bearer(pb::GetProfileRequest::default(), &b.access_token))
        .await
        .unwrap();

    let revoked = h
        .client
        .logout_all(bearer(pb::LogoutAllRequest {}, &b.access_token))
        .await
        .unwrap()
        .into_inner()
        .revoked_sessions;
    assert_eq!(revoked, 2);
    for credentials in [&b, &c] {
        assert_eq!(
            refresh(&mut h.client, &credentials.refresh_token)
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
        let status = h
            .client
            .verify_token(pb::VerifyTokenRequest {
                token: credentials.access_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.refresh_tokens WHERE revoked_at IS NULL AND used_at IS NULL").await,
        0
    );
    let status = h.client.logout(pb::LogoutRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    kid: String,
    #[diesel(sql_type = Bytea)]
    private_key: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    kek_id: Option<String>,
}

fn claims_for(user: &str, session: &str) -> AccessClaims {
    let now = Utc::now().timestamp();
    AccessClaims {
        iss: "strata-auth".into(),
        aud: "strata".into(),
        sub: user.into(),
        sid: session.into(),
        role: Role::Admin,
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "test".into(),
    }
}

#[tokio::test]
async fn verify_token_refuses_every_forgery() {
    let mut h = start().await;
    let (user, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let verified = h
        .client
        .verify_token(pb::VerifyTokenRequest {
            token: credentials.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(
        (verified.user_id.as_str(), verified.session_id.as_str()),
        (user.id.as_str(), credentials.session_id.as_str())
    );
    assert_eq!(verified.role, i32::from(pb::Role::User));
    assert_eq!(verified.kind, i32::from(pb::CredentialKind::AccessToken));

    let jwks = h
        .client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(jwks.len(), 1);
    assert_eq!(
        (
            jwks[0].kty.as_str(),
            jwks[0].crv.as_str(),
            jwks[0].alg.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA")
    );
    let header = jsonwebtoken::decode_header(&credentials.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(jwks[0].kid.as_str()));
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));

    let keys: Vec<KeyRow> =
        diesel::sql_query("SELECT kid, private_key, kek_id FROM auth.signing_keys")
            .load(&mut h.db.connect().await)
            .await
            .unwrap();
    // The seed as only the auth service (holding the key-encryption key) can open it.
    let seed = AuthConfig::default()
        .key_encryption
        .open(
            &keys[0].kid,
            keys[0].kek_id.as_deref(),
            &keys[0].private_key,
        )
        .unwrap();
    let signer = signer_from_seed(&keys[0].kid, &seed);
    let sign = |header: &Header, claims: &AccessClaims, key: &EncodingKey| {
        jsonwebtoken::encode(header, claims, key).unwrap()
    };
    let eddsa = |typ: Option<&str>, kid: Option<&str>| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = typ.map(str::to_owned);
        header.kid = kid.map(str::to_owned);
        header
    };
    let good = claims_for(&user.id, &credentials.session_id);
    // Sanity: a token forged with the real key and good claims is accepted, so each
    // refusal below is due to the one thing it changes.
    let control = sign(
        &eddsa(Some("at+jwt"), Some(&signer.kid)),
        &good,
        &signer.key,
    );
    h.client
        .verify_token(pb::VerifyTokenRequest { token: control })
        .await
        .unwrap();

    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let claims_json = serde_json_like(&good);
    let mut forgeries: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"at+jwt"}"#),
                b64(&claims_json)
            ),
        ),
        (
            "HS256 with the public key as secret",
            sign(
                &{
                    let mut header = Header::new(Algorithm::HS256);
                    header.typ = Some("at+jwt".into());
                    header.kid = Some(signer.kid.clone());
                    header
                },
                &good,
                &EncodingKey::from_secret(jwks[0].x.as_bytes()),
            ),
        ),
        (
            "unknown kid",
            sign(&eddsa(Some("at+jwt"), Some("nope")), &good, &signer.key),
        ),
        (
            "no kid",
            sign(&eddsa(Some("at+jwt"), None), &good, &signer.key),
        ),
        (
            "wrong typ",
            sign(&eddsa(Some("JWT"), Some(&signer.kid)), &good, &signer.key),
        ),
        (
            "jku header",
            sign(
                &{
                    let mut header = eddsa(Some("at+jwt"), Some(&signer.kid));
                    header.jku = Some("https://attacker.invalid/jwks".into());
                    header
                },
                &good,
                &signer.key,
            ),
        ),
        (
            "x5u header",
            sign(
                &{
                    let mut header = eddsa(Some("at+jwt"), Some(&signer.kid));
                    header.x5u = Some("https://attacker.invalid/cert".into());
                    header
                },
                &good,
                &signer.key,
            ),
        ),
        (
            "refresh token as access token",
            credentials.refresh_token.clone(),
        ),
        ("api key shape", "sk_live_abcdef".into()),
        ("garbage", "not.a.jwt".into()),
    ];
    let with = |f: &dyn Fn(&mut AccessClaims)| {
        let mut claims = good.clone();
        f(&mut claims);
        sign(
            &eddsa(Some("at+jwt"), Some(&signer.kid)),
            &claims,
            &signer.key,
        )
    };
    forgeries.push(("expired", with(&|c| c.exp = Utc::now().timestamp() - 60)));
    forgeries.push((
        "not yet valid",
        with(&|c| c.nbf = Utc::now().timestamp() + 600),
    ));
    forgeries.push(("wrong issuer", with(&|c| c.iss = "someone-else".into())));
    forgeries.push(("wrong audience", with(&|c| c.aud = "other-app".into())));
    let other_key = signer_from_seed(&signer.kid, &[7u8; 32]);
    forgeries.push((
        "signed by another key",
        sign(
            &eddsa(Some("at+jwt"), Some(&signer.kid)),
            &good,
            &other_key.key,
        ),
    ));
    let mut tampered = credentials.access_token.clone();
    tampered.pop();
    tampered.push(if credentials.access_token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    forgeries.push(("tampered signature", tampered));

    for (name, token) in forgeries {
        let status = h
            .client
            .verify_token(pb::VerifyTokenRequest { token })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
    }
}

/// The claims as JSON, without pulling serde_json into the test's dependencies.
fn serde_json_like(c: &AccessClaims) -> String {
    format!(
        r#"{{"iss":"{}","aud":"{}","sub":"{}","sid":"{}","role":"ADMIN","iat":{},"nbf":{},"exp":{},"jti":"{}"}}"#,
        c.iss, c.aud, c.sub, c.sid, c.iat, c.nbf, c.exp, c.jti
    )
}

#[tokio::test]
async fn rotated_keys_keep_old_tokens_valid_and_sign_new_ones() {
    let mut h = start().await;
    let (_, before) = sign_up(&mut h.client, "ada@example.com").await;
    let old_kid = jsonwebtoken::decode_header(&before.access_token)
        .unwrap()
        .kid
        .unwrap();
    h.handlers.rotate_keys().await.unwrap();
    let jwks = h
        .client
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(jwks.len(), 2, "the retired key stays published");
    assert_ne!(jwks[0].kid, old_kid, "current key first");
    h.client
        .verify_token(pb::VerifyTokenRequest {
            token: before.access_token.clone(),
        })
        .await
        .unwrap();
    let after = refresh(&mut h.client, &before.refresh_token).await.unwrap();
    let new_kid = jsonwebtoken::decode_header(&after.access_token)
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(new_kid, jwks[0].kid);
}

#[tokio::test(flavor = "current_thread")]
async fn no_password_token_or_hash_reaches_the_logs() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber(tracing::Level::TRACE));

    let mut h = start().await;
    let (_, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let _ = h
        .client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "wrong horse battery staple".into(),
        })
        .await;
    let second = refresh(&mut h.client, &credentials.refresh_token)
        .await
        .unwrap();
    let _ = refresh(&mut h.client, &credentials.refresh_token).await;
    let _ = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &second.access_token,
        ))
        .await;

    let log = capture.text();
    assert!(log.contains("signed up"), "the capture works: {log}");
    for secret in [
        PASSWORD,
        "wrong horse battery staple",
        credentials.access_token.as_str(),
        credentials.refresh_token.as_str(),
        second.refresh_token.as_str(),
        "$argon2id$",
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the logs");
    }
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

#[tokio::test]
async fn sessions_are_listed_by_page_and_revoked_one_by_one() {
    let mut h = start().await;
    let (_, first) = sign_up(&mut h.client, "ada@example.com").await;
    let mut all = vec![first.session_id.clone()];
    for _ in 0..2 {
        all.push(
            login(&mut h.client, "ada@example.com", PASSWORD)
                .await
                .unwrap()
                .session_id,
        );
    }
    let page = |token: &str, size: i32| {
        bearer(
            pb::ListSessionsRequest {
                page_size: size,
                page_token: token.into(),
            },
            &first.access_token,
        )
    };
    let one = h
        .client
        .list_sessions(page("", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.sessions.len(), 2);
    assert!(!one.next_page_token.is_empty());
    let two = h
        .client
        .list_sessions(page(&one.next_page_token, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(two.sessions.len(), 1);
    assert!(two.next_page_token.is_empty(), "last page");
    let listed: Vec<String> = one
        .sessions
        .iter()
        .chain(&two.sessions)
        .map(|s| s.id.clone())
        .collect();
    let mut newest_first = all.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    let current: Vec<&pb::Session> = one
        .sessions
        .iter()
        .chain(&two.sessions)
        .filter(|s| s.current)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].id, first.session_id);
    assert!(current[0].user_agent.contains("tonic"));
    assert_eq!(current[0].ip_address, "127.0.0.1");

    for (token, size, field) in [("garbage!", 0, "page_token"), ("", -1, "page_size")] {
        let status = h.client.list_sessions(page(token, size)).await.unwrap_err();
        assert!(
            status.code() == Code::InvalidArgument && status.message().contains(field),
            "{status:?}"
        );
    }

    h.client
        .revoke_session(bearer(
            pb::RevokeSessionRequest {
                session_id: all[1].clone(),
            },
            &first.access_token,
        ))
        .await
        .unwrap();
    let left = h
        .client
        .list_sessions(page("", 0))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|s| s.id != all[1]));

    // Another user's session, an ended session and an unknown id are all NOT_FOUND, alike.
    let (_, mallory) = sign_up(&mut h.client, "mallory@example.com").await;
    let mut answers = Vec::new();
    for id in [
        first.session_id.clone(),
        all[1].clone(),
        uuid::Uuid::now_v7().to_string(),
    ] {
        let status = h
            .client
            .revoke_session(bearer(
                pb::RevokeSessionRequest { session_id: id },
                &mallory.access_token,
            ))
            .await
            .unwrap_err();
        answers.push((status.code(), status.message().to_owned()));
    }
    assert!(
        answers
            .iter()
            .all(|a| *a == (Code::NotFound, "session not found".to_owned())),
        "{answers:?}"
    );
    h.client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &first.access_token,
        ))
        .await
        .expect("ada's session survived mallory's attempt");
    let status = h
        .client
        .revoke_session(bearer(
            pb::RevokeSessionRequest {
                session_id: "x".into(),
            },
            &first.access_token,
        ))
        .await
        .unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().contains("session_id"));
}

#[tokio::test]
async fn profile_updates_follow_the_mask() {
    let mut h = start().await;
    let (_, credentials) = sign_up(&mut h.client, "ada@example.com").await;
    let update = |user: pb::User, paths: &[&str]| {
        bearer(
            pb::UpdateProfileRequest {
                user: Some(user),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            },
            &credentials.access_token,
        )
    };
    let changed = h
        .client
        .update_profile(update(
            pb::User {
                display_name: "Ada Lovelace".into(),
                bio: "Analyst".into(),
                time_zone: "Europe/London".into(),
                locale: "en-GB".into(),
                email: "ignored@example.com".into(),
                ..Default::default()
            },
            &["display_name", "bio", "time_zone", "locale"],
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (
            changed.display_name.as_str(),
            changed.bio.as_str(),
            changed.time_zone.as_str(),
            changed.locale.as_str()
        ),
        ("Ada Lovelace", "Analyst", "Europe/London", "en-GB")
    );
    assert_eq!(
        changed.email, "ada@example.com",
        "fields outside the mask are untouched"
    );
    assert!(changed.update_time.unwrap().seconds >= changed.create_time.unwrap().seconds);

    for (user, paths, field) in [
        (pb::User::default(), vec![], "update_mask"),
        (pb::User::default(), vec!["email"], "update_mask"),
        (pb::User::default(), vec!["role"], "update_mask"),
        (pb::User::default(), vec!["nonsense"], "update_mask"),
        (pb::User::default(), vec!["display_name"], "display_name"),
        (
            pb::User {
                avatar_url: "javascript:alert(1)".into(),
                ..Default::default()
            },
            vec!["avatar_url"],
            "avatar_url",
        ),
        (
            pb::User {
                bio: "b".repeat(1001),
                ..Default::default()
            },
            vec!["bio"],
            "bio",
        ),
        (
            pb::User {
                time_zone: "Europe/Paris; DROP".into(),
                ..Default::default()
            },
            vec!["time_zone"],
            "time_zone",
        ),
        // Well-formed, but in no time-zone database.
        (
            pb::User {
                time_zone: "Mars/Olympus_Mons".into(),
                ..Default::default()
            },
            vec!["time_zone"],
            "time_zone",
        ),
        (
            pb::User {
                time_zone: "europe/paris".into(),
                ..Default::default()
            },
            vec!["time_zone"],
            "time_zone",
        ),
    ] {
        let status = h
            .client
            .update_profile(update(user, &paths))
            .await
            .unwrap_err();
        assert!(
            status.code() == Code::InvalidArgument && status.message().contains(field),
            "{paths:?}: {status:?}"
        );
    }
    let profile = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &credentials.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        profile.display_name, "Ada Lovelace",
        "refused updates wrote nothing"
    );
    assert_eq!(profile.bio, "Analyst");
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let mut h = start().await;
    let (_, current) = sign_up(&mut h.client, "ada@example.com").await;
    let other = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap();
    let change = |current_password: &str, new_password: &str| {
        bearer(
            pb::ChangePasswordRequest {
                current_password: current_password.into(),
                new_password: new_password.into(),
            },
            &current.access_token,
        )
    };
    let status = h
        .client
        .change_password(change(
            "wrong horse battery staple",
            "a brand new passphrase",
        ))
        .await
        .unwrap_err();
    assert!(
        status.code() == Code::InvalidArgument && status.message().contains("current_password")
    );
    let status = h
        .client
        .change_password(change(PASSWORD, "password1"))
        .await
        .unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().contains("new_password"));

    let revoked = h
        .client
        .change_password(change(PASSWORD, "a brand new passphrase"))
        .await
        .unwrap()
        .into_inner()
        .revoked_sessions;
    assert_eq!(revoked, 1);
    assert_eq!(
        refresh(&mut h.client, &other.refresh_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let status = h
        .client
        .get_profile(bearer(
            pb::GetProfileRequest::default(),
            &other.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The session that changed the password goes on.
    refresh(&mut h.client, &current.refresh_token)
        .await
        .unwrap();
    assert_eq!(
        login(&mut h.client, "ada@example.com", PASSWORD)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    login(&mut h.client, "ada@example.com", "a brand new passphrase")
        .await
        .unwrap();

    // Guessing the current password from a session is throttled like sign-in.
    for _ in 0..5 {
        let status = h
            .client
            .change_password(bearer(
                pb::ChangePasswordRequest {
                    current_password: "a wrong guess here".into(),
                    new_password: "yet another passphrase".into(),
                },
                &current.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let status = h
        .client
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "a brand new passphrase".into(),
                new_password: "yet another passphrase".into(),
            },
            &current.access_token,
        ))
        .await
        .unwrap_err();
    assert!(retry_after(&status).is_some(), "{status:?}");
}

fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
}

async fn fail_logins(client: &mut AuthServiceClient<Channel>, email: &str, times: usize) {
    for _ in 0..times {
        let status = login(client, email, "wrong horse battery staple")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn five_failures_lock_the_account_until_the_lock_expires() {
    let clock = Arc::new(ManualClock::new());
    let db = TestDb::new().await;
    let config = db.server_config("auth");
    let mut h = start_on(db, config, clock.clone()).await;
    sign_up(&mut h.client, "ada@example.com").await;

    fail_logins(&mut h.client, "ada@example.com", 4).await;
    login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .expect("4 failures do not lock");
    fail_logins(&mut h.client, "ada@example.com", 5).await;

    // Locked: even the right password is refused, exactly like a wrong one, plus RetryInfo.
    let locked = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    let wrong = login(
        &mut h.client,
        "nobody@example.com",
        "wrong horse battery staple",
    )
    .await
    .unwrap_err();
    assert_eq!(
        (locked.code(), locked.message()),
        (wrong.code(), wrong.message())
    );
    assert_eq!(
        retry_after(&locked),
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(retry_after(&wrong), None);

    clock.advance(std::time::Duration::from_secs(29));
    assert!(
        login(&mut h.client, "ada@example.com", PASSWORD)
            .await
            .is_err()
    );
    clock.advance(std::time::Duration::from_secs(2));
    login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .expect("the lock expired");

    // Unknown emails lock the same way: a lockout says nothing about existence.
    fail_logins(&mut h.client, "ghost@example.com", 5).await;
    let status = login(&mut h.client, "ghost@example.com", "anything at all")
        .await
        .unwrap_err();
    assert!(retry_after(&status).is_some());
}

#[tokio::test]
async fn lockouts_are_shared_by_replicas_through_redis() {
    let redis = TestRedis::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(redis.url().to_owned()));
    config.redis_prefix = redis.handle().prefix().to_owned();
    let url = db.url().to_owned();
    let mut a = start_on(db, config.clone(), clock.clone()).await;
    sign_up(&mut a.client, "ada@example.com").await;
    // A second replica on the same database and Redis.
    let mut replica_config = config;
    replica_config.db =
        strata_storage::DbConfig::new(url, "auth-b", strata_storage::Environment::Development);
    let server_b = TestServer::start(replica_config, |builder| {
        strata_auth::register_handlers(
            builder,
            Arc::new(
                AuthHandlers::with_clock(
                    builder.context(),
                    AuthConfig::default(),
                    Arc::new(SystemClock),
                    ThrottlePolicy::default(),
                )
                .unwrap(),
            ),
        );
    })
    .await;
    let mut b = AuthServiceClient::new(server_b.channel());

    fail_logins(&mut a.client, "ada@example.com", 5).await;
    let status = login(&mut b, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        retry_after(&status).is_some(),
        "replica B sees A's lockout: {status:?}"
    );
}

#[tokio::test]
async fn throttling_falls_back_to_the_process_when_redis_is_down() {
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.redis_url = Some(strata_runtime::config::Secret::new(
        "redis://127.0.0.1:1".into(),
    ));
    let mut h = start_on(db, config, Arc::new(SystemClock)).await;
    sign_up(&mut h.client, "ada@example.com").await;
    fail_logins(&mut h.client, "ada@example.com", 5).await;
    let status = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(retry_after(&status).is_some(), "{status:?}");
}

async fn make_admin(db: &TestDb, email: &str) {
    use diesel_async::SimpleAsyncConnection;
    db.connect()
        .await
        .batch_execute(&format!(
            "UPDATE auth.users SET role = 'ADMIN' WHERE email = '{email}'"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_rpcs_are_refused_to_users_and_work_for_admins() {
    let mut h = start().await;
    let (ada, admin) = sign_up(&mut h.client, "ada@example.com").await;
    let (bob, user) = sign_up(&mut h.client, "bob@example.com").await;
    sign_up(&mut h.client, "bea@example.com").await;
    sign_up(&mut h.client, "b_x@example.com").await;

    // Refused to a plain user, whatever the target.
    let status = h
        .client
        .list_users(bearer(pb::ListUsersRequest::default(), &user.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = h
        .client
        .set_user_role(bearer(
            pb::SetUserRoleRequest {
                user_id: bob.id.clone(),
                role: pb::Role::Admin.into(),
            },
            &user.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = h
        .client
        .set_user_status(bearer(
            pb::SetUserStatusRequest {
                user_id: ada.id.clone(),
                status: pb::UserStatus::Disabled.into(),
            },
            &user.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        h.client
            .list_users(pb::ListUsersRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    make_admin(&h.db, "ada@example.com").await;
    let list = |token: &str, prefix: &str, page_token: &str, size: i32, role: pb::Role| {
        bearer(
            pb::ListUsersRequest {
                page_size: size,
                page_token: page_token.into(),
                role: role.into(),
                status: 0,
                email_prefix: prefix.into(),
            },
            token,
        )
    };
    let page = h
        .client
        .list_users(list(&admin.access_token, "", "", 3, pb::Role::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.users.len(), 3);
    let rest = h
        .client
        .list_users(list(
            &admin.access_token,
            "",
            &page.next_page_token,
            3,
            pb::Role::Unspecified,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.users.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let emails: Vec<String> = page
        .users
        .iter()
        .chain(&rest.users)
        .map(|u| u.email.clone())
        .collect();
    assert_eq!(
        emails,
        [
            "ada@example.com",
            "bob@example.com",
            "bea@example.com",
            "b_x@example.com"
        ],
        "creation order"
    );

    let b_prefix = h
        .client
        .list_users(list(&admin.access_token, "B", "", 0, pb::Role::Unspecified))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(b_prefix.len(), 3);
    let literal = h
        .client
        .list_users(list(
            &admin.access_token,
            "b_",
            "",
            0,
            pb::Role::Unspecified,
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(literal.len(), 1, "'_' is literal, not a wildcard");
    let admins = h
        .client
        .list_users(list(&admin.access_token, "", "", 0, pb::Role::Admin))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(admins.len(), 1);

    let promoted = h
        .client
        .set_user_role(bearer(
            pb::SetUserRoleRequest {
                user_id: bob.id.clone(),
                role: pb::Role::Admin.into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(promoted.role, i32::from(pb::Role::Admin));

    // Disabling ends every session and refuses sign-in like a wrong password.
    let disabled = h
        .client
        .set_user_status(bearer(
            pb::SetUserStatusRequest {
                user_id: bob.id.clone(),
                status: pb::UserStatus::Disabled.into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(disabled.status, i32::from(pb::UserStatus::Disabled));
    assert_eq!(
        refresh(&mut h.client, &user.refresh_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let status = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &user.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let refused = login(&mut h.client, "bob@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unauthenticated, "invalid email or password")
    );
    h.client
        .set_user_status(bearer(
            pb::SetUserStatusRequest {
                user_id: bob.id.clone(),
                status: pb::UserStatus::Active.into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap();
    login(&mut h.client, "bob@example.com", PASSWORD)
        .await
        .expect("re-enabled");

    // Bad ids and values name their field; unknown users are NOT_FOUND.
    for (user_id, role, code, field) in [
        ("nope", pb::Role::Admin, Code::InvalidArgument, "user_id"),
        (
            bob.id.as_str(),
            pb::Role::Unspecified,
            Code::InvalidArgument,
            "role",
        ),
    ] {
        let status = h
            .client
            .set_user_role(bearer(
                pb::SetUserRoleRequest {
                    user_id: user_id.into(),
                    role: role.into(),
                },
                &admin.access_token,
            ))
            .await
            .unwrap_err();
        assert!(
            status.code() == code && status.message().contains(field),
            "{status:?}"
        );
    }
    let status = h
        .client
        .set_user_status(bearer(
            pb::SetUserStatusRequest {
                user_id: uuid::Uuid::now_v7().to_string(),
                status: pb::UserStatus::Disabled.into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = h
        .client
        .list_users(list(
            &admin.access_token,
            "",
            "bogus",
            0,
            pb::Role::Unspecified,
        ))
        .await
        .unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().contains("page_token"));
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

#[tokio::test]
async fn api_keys_act_within_their_scopes_and_record_use_in_batches() {
    let mut h = start().await;
    let (user, session) = sign_up(&mut h.client, "ada@example.com").await;
    let created = create_key(
        &mut h.client,
        &session.access_token,
        &["profile:read", "usage:write"],
    )
    .await
    .unwrap();
    let secret = created.secret.clone();
    let key = created.api_key.unwrap();
    assert!(
        secret.starts_with("sk_")
            && secret.starts_with(&key.prefix)
            && key.prefix.len() < secret.len()
    );
    assert_eq!(key.scopes, ["profile:read", "usage:write"]);
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.api_keys WHERE length(key_hash) = 32"
        )
        .await,
        1,
        "only the hash is stored"
    );

    // The key authenticates within its scopes.
    let profile = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &secret))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(profile.id, user.id);
    let status = h
        .client
        .update_profile(bearer(
            pb::UpdateProfileRequest {
                user: Some(pb::User {
                    display_name: "x".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "no profile:write scope"
    );
    for status in [
        h.client
            .logout(bearer(pb::LogoutRequest {}, &secret))
            .await
            .unwrap_err(),
        create_key(&mut h.client, &secret, &["profile:read"])
            .await
            .unwrap_err(),
        h.client
            .list_api_keys(bearer(pb::ListApiKeysRequest::default(), &secret))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "keys cannot manage sessions or keys"
        );
    }
    let principal = h
        .client
        .verify_token(pb::VerifyTokenRequest {
            token: secret.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(principal.kind, i32::from(pb::CredentialKind::ApiKey));
    assert_eq!(
        (principal.api_key_id.as_str(), principal.session_id.as_str()),
        (key.id.as_str(), "")
    );
    assert_eq!(principal.scopes, ["profile:read", "usage:write"]);

    // Uses are written in one batch, not one write per call.
    for _ in 0..5 {
        h.client
            .get_profile(bearer(pb::GetProfileRequest::default(), &secret))
            .await
            .unwrap();
    }
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.api_keys WHERE last_used_at IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        h.handlers.flush_key_usage().await.unwrap(),
        1,
        "one row updated for every use so far"
    );
    let listed = h
        .client
        .list_api_keys(bearer(
            pb::ListApiKeysRequest::default(),
            &session.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_time.is_some());

    // Another user cannot revoke it: NOT_FOUND, like an unknown id.
    let (_, mallory) = sign_up(&mut h.client, "mallory@example.com").await;
    for id in [key.id.clone(), uuid::Uuid::now_v7().to_string()] {
        let status = h
            .client
            .revoke_api_key(bearer(
                pb::RevokeApiKeyRequest { api_key_id: id },
                &mallory.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "API key not found")
        );
    }
    h.client
        .revoke_api_key(bearer(
            pb::RevokeApiKeyRequest {
                api_key_id: key.id.clone(),
            },
            &session.access_token,
        ))
        .await
        .unwrap();
    let status = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &secret))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn api_keys_expire_die_with_their_owner_and_validate_input() {
    let mut h = start().await;
    let (bob, session) = sign_up(&mut h.client, "bob@example.com").await;
    for (name, scopes, expire, field) in [
        ("", vec!["a:b"], None, "name"),
        ("k", vec![], None, "scopes"),
        ("k", vec!["profile:read", "Profile:Read"], None, "scopes[1]"),
        ("k", vec!["nocolon"], None, "scopes[0]"),
        (
            "k",
            vec!["a:b"],
            Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            "expire_time",
        ),
    ] {
        let status = h
            .client
            .create_api_key(bearer(
                pb::CreateApiKeyRequest {
                    name: name.into(),
                    scopes: scopes.into_iter().map(str::to_owned).collect(),
                    expire_time: expire,
                    ..Default::default()
                },
                &session.access_token,
            ))
            .await
            .unwrap_err();
        assert!(
            status.code() == Code::InvalidArgument && status.message().contains(field),
            "{field}: {status:?}"
        );
    }
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.api_keys").await,
        0
    );

    let expiring = create_key(&mut h.client, &session.access_token, &["profile:read"])
        .await
        .unwrap();
    {
        use diesel_async::SimpleAsyncConnection;
        h.db.connect()
            .await
            .batch_execute("UPDATE auth.api_keys SET expires_at = now() - interval '1 second'")
            .await
            .unwrap();
    }
    let status = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &expiring.secret))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "expired");

    let live = create_key(&mut h.client, &session.access_token, &["profile:read"])
        .await
        .unwrap();
    let (_, admin) = sign_up(&mut h.client, "ada@example.com").await;
    make_admin(&h.db, "ada@example.com").await;
    h.client
        .set_user_status(bearer(
            pb::SetUserStatusRequest {
                user_id: bob.id.clone(),
                status: pb::UserStatus::Disabled.into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap();
    let status = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &live.secret))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "disabling the owner revoked the key"
    );
    assert_eq!(
        count(
            &h.db,
            "SELECT count(*) AS n FROM auth.api_keys WHERE revoked_at IS NULL"
        )
        .await,
        0
    );
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
    make_admin(&h.db, email).await;
    // The role is a claim: a refresh carries the promotion.
    refresh(&mut h.client, &credentials.refresh_token)
        .await
        .unwrap()
}

#[tokio::test]
async fn another_service_verifies_locally_and_refuses_revoked_sessions() {
    let redis = TestRedis::new();
    let mut h = start_with_redis(&redis).await;
    let auth_url = format!("http://{}", h._server.addr());
    let other = other_service(&h.db, &auth_url, redis.url(), redis.handle().prefix()).await;

    let admin = admin_credentials(&mut h, "ada@example.com").await;
    let (_, user) = sign_up(&mut h.client, "bob@example.com").await;
    health_as(&other, Some(&admin.access_token))
        .await
        .expect("admin passes another service's verifier");
    assert_eq!(
        health_as(&other, Some(&user.access_token))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        health_as(&other, None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        health_as(&other, Some("garbage")).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // API keys are verified by the auth service, within their scopes.
    let ops_key = create_key(&mut h.client, &admin.access_token, &["ops:admin"])
        .await
        .unwrap()
        .secret;
    let read_key = create_key(&mut h.client, &admin.access_token, &["profile:read"])
        .await
        .unwrap()
        .secret;
    health_as(&other, Some(&ops_key))
        .await
        .expect("an admin's ops:admin key");
    assert_eq!(
        health_as(&other, Some(&read_key)).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // VerifyToken answers from Redis too, and knows of a logout at once.
    let verify = |token: &str| pb::VerifyTokenRequest {
        token: token.to_owned(),
    };
    h.client
        .verify_token(verify(&admin.access_token))
        .await
        .unwrap();
    // Logout reaches the other service through Redis (after its one-second cache).
    h.client
        .logout(bearer(pb::LogoutRequest {}, &admin.access_token))
        .await
        .unwrap();
    let status = h
        .client
        .verify_token(verify(&admin.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        health_as(&other, Some(&admin.access_token))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn without_redis_verifiers_ask_the_auth_service_and_without_either_they_refuse() {
    let redis = TestRedis::new();
    let mut h = start_with_redis(&redis).await;
    let auth_url = format!("http://{}", h._server.addr());
    let admin = admin_credentials(&mut h, "ada@example.com").await;

    // Redis unreachable: the auth service decides, so a logout is still honoured.
    let no_redis = other_service(&h.db, &auth_url, "redis://127.0.0.1:1", "x:").await;
    health_as(&no_redis, Some(&admin.access_token))
        .await
        .expect("verified by the auth service");
    h.client
        .logout(bearer(pb::LogoutRequest {}, &admin.access_token))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        health_as(&no_redis, Some(&admin.access_token))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // Neither Redis nor the auth service: refuse.
    let fresh = login(&mut h.client, "ada@example.com", PASSWORD)
        .await
        .unwrap();
    let nothing = other_service(&h.db, "http://127.0.0.1:1", "redis://127.0.0.1:1", "x:").await;
    assert_eq!(
        health_as(&nothing, Some(&fresh.access_token))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
}

#[tokio::test]
async fn demoting_an_admin_ends_their_sessions_everywhere() {
    let redis = TestRedis::new();
    let mut h = start_with_redis(&redis).await;
    let auth_url = format!("http://{}", h._server.addr());
    let other = other_service(&h.db, &auth_url, redis.url(), redis.handle().prefix()).await;
    let root = admin_credentials(&mut h, "root@example.com").await;
    let ada = admin_credentials(&mut h, "ada@example.com").await;
    health_as(&other, Some(&ada.access_token)).await.unwrap();
    let ada_id = h
        .client
        .get_profile(bearer(pb::GetProfileRequest::default(), &ada.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    h.client
        .set_user_role(bearer(
            pb::SetUserRoleRequest {
                user_id: ada_id,
                role: pb::Role::User.into(),
            },
            &root.access_token,
        ))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        health_as(&other, Some(&ada.access_token))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        refresh(&mut h.client, &ada.refresh_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn cleanup_deletes_expired_and_revoked_credentials_in_batches() {
    use diesel_async::SimpleAsyncConnection;
    let mut h = start().await;
    let (_, live) = sign_up(&mut h.client, "ada@example.com").await;
    let (_, gone) = sign_up(&mut h.client, "bob@example.com").await;
    h.client
        .logout(bearer(pb::LogoutRequest {}, &gone.access_token))
        .await
        .unwrap();
    // 2,500 long-expired sessions with a token each: more than two batches.
    h.db.connect()
        .await
        .batch_execute(
            "INSERT INTO auth.sessions (id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at)
             SELECT gen_random_uuid(), (SELECT id FROM auth.users WHERE email = 'bob@example.com'),
                    now() - interval '60 days', now() - interval '60 days', now() - interval '40 days', now() - interval '30 days'
               FROM generate_series(1, 2500);
             INSERT INTO auth.refresh_tokens (id, session_id, family_id, token_hash, expires_at)
             SELECT gen_random_uuid(), id, id, sha256(id::text::bytea), idle_expires_at FROM auth.sessions
              WHERE idle_expires_at < now() - interval '1 day';
             UPDATE auth.sessions SET revoked_at = now() - interval '2 days' WHERE revoked_at IS NOT NULL;",
        )
        .await
        .unwrap();
    let cutoff = Utc::now() - chrono::Duration::days(1);
    let report = strata_auth::cleanup::run_once(&h.db.db().clone(), cutoff)
        .await
        .unwrap();
    assert_eq!(report.refresh_tokens, 2500);
    assert_eq!(
        report.sessions, 2501,
        "the expired ones and the one revoked two days ago"
    );
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.sessions").await,
        1
    );
    refresh(&mut h.client, &live.refresh_token)
        .await
        .expect("live credentials untouched");
    let again = strata_auth::cleanup::run_once(&h.db.db().clone(), cutoff)
        .await
        .unwrap();
    assert_eq!(again, strata_auth::cleanup::Report::default());
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[tokio::test]
async fn hot_queries_use_their_indexes() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    conn.batch_execute(
        "INSERT INTO auth.users (id, email, password_hash, display_name, role)
         SELECT gen_random_uuid(), 'user' || g || '@example.com', 'x', 'U', CASE WHEN g % 100 = 0 THEN 'ADMIN' ELSE 'USER' END
           FROM generate_series(1, 5000) g;
         INSERT INTO auth.sessions (id, user_id, idle_expires_at, absolute_expires_at, revoked_at)
         SELECT gen_random_uuid(), id, now() + interval '7 days', now() + interval '30 days',
                CASE WHEN random() < 0.5 THEN now() END
           FROM auth.users, generate_series(1, 4);
         INSERT INTO auth.refresh_tokens (id, session_id, family_id, token_hash, expires_at)
         SELECT gen_random_uuid(), id, id, sha256(id::text::bytea), idle_expires_at FROM auth.sessions;
         INSERT INTO auth.api_keys (id, user_id, name, prefix, key_hash, scopes)
         SELECT gen_random_uuid(), id, 'k', 'sk_x', sha256(id::text::bytea), '{a:b}' FROM auth.users;
         ANALYZE auth.users, auth.sessions, auth.refresh_tokens, auth.api_keys;",
    )
    .await
    .unwrap();
    let cases = [
        ("login by email", "SELECT * FROM auth.users WHERE lower(email) = 'user42@example.com'", "users_email_key"),
        (
            "admin email-prefix search",
            "SELECT * FROM auth.users WHERE lower(email) LIKE 'user42%' ORDER BY id LIMIT 51",
            "users_email_key",
        ),
        ("admin role filter", "SELECT * FROM auth.users WHERE role = 'ADMIN' ORDER BY id LIMIT 51", "users_role_id_idx"),
        (
            "refresh token lookup",
            "SELECT * FROM auth.refresh_tokens WHERE token_hash = sha256('x'::bytea)",
            "refresh_tokens_hash_key",
        ),
        ("API key lookup", "SELECT * FROM auth.api_keys WHERE key_hash = sha256('x'::bytea)", "api_keys_hash_key"),
        (
            "list a user's live sessions",
            "SELECT * FROM auth.sessions WHERE user_id = '01900000-0000-7000-8000-000000000000' AND revoked_at IS NULL
              ORDER BY created_at DESC, id DESC LIMIT 51",
            "sessions_active_user_idx",
        ),
        (
            "revoke a family",
            "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = '01900000-0000-7000-8000-000000000000' AND revoked_at IS NULL",
            "refresh_tokens_family_idx",
        ),
        (
            "cleanup of expired sessions",
            "SELECT id FROM auth.sessions WHERE idle_expires_at < now() - interval '1 day' LIMIT 1000",
            "sessions_expiry_idx",
        ),
        (
            "cleanup of revoked sessions",
            "SELECT id FROM auth.sessions WHERE revoked_at < now() - interval '1 day' LIMIT 1000",
            "sessions_revoked_idx",
        ),
        (
            "a user's API keys",
            "SELECT * FROM auth.api_keys WHERE user_id = '01900000-0000-7000-8000-000000000000' ORDER BY created_at DESC, id DESC LIMIT 51",
            "api_keys_user_idx",
        ),
    ];
    for (what, sql, index) in cases {
        let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {sql}"))
            .load(&mut conn)
            .await
            .unwrap();
        let plan = plan
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(plan.contains(index), "{what} should use {index}:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{what}:\n{plan}");
    }
}

#[path = "auth/accounting.rs"]
mod accounting;

#[path = "auth/cross_user.rs"]
mod cross_user;

#[path = "auth/empty.rs"]
mod empty;

#[path = "auth/page_tokens.rs"]
mod page_tokens;

#[path = "auth/sealing.rs"]
mod sealing;

#[path = "auth/revocation.rs"]
mod revocation;

#[path = "auth/traces.rs"]
mod traces;
