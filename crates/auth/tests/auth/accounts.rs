//! Sign-up, sign-in and the answers that must not tell accounts apart.

use super::*;

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
