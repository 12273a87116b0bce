//! API keys: scopes, batched use records, expiry, revocation and input checks.

use super::*;

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
    make_admin(&h, "ada@example.com").await;
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
