//! AIP-155 request ids on the two creating RPCs: a retried SignUp gets the same account
//! signed in again, a retried CreateApiKey is refused with the key it created named;
//! every violation of a request is listed at once.

use tonic_types::StatusExt as _;
use uuid::Uuid;

use super::*;

fn sign_up_request(email: &str, password: &str, request_id: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        email: email.into(),
        password: password.into(),
        display_name: "Ada".into(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn a_retried_sign_up_returns_the_same_account_signed_in_again() {
    let mut h = start().await;
    let id = Uuid::now_v7().to_string();
    let first = h
        .client
        .sign_up(sign_up_request("ada@example.com", PASSWORD, &id))
        .await
        .unwrap()
        .into_inner();
    let retry = h
        .client
        .sign_up(sign_up_request("ADA@example.com", PASSWORD, &id))
        .await
        .unwrap()
        .into_inner();
    let (first_user, retry_user) = (first.user.unwrap(), retry.user.unwrap());
    assert_eq!(first_user.id, retry_user.id, "the same account");
    let (a, b) = (first.credentials.unwrap(), retry.credentials.unwrap());
    assert_ne!(
        a.session_id, b.session_id,
        "signed in again: a session of its own"
    );
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.users").await,
        1
    );
    for token in [&a.access_token, &b.access_token] {
        h.client
            .get_profile(bearer(pb::GetProfileRequest::default(), token))
            .await
            .unwrap();
    }

    // The id with another password or another email names another request.
    for (email, password) in [
        ("ada@example.com", "another long passphrase"),
        ("bob@example.com", PASSWORD),
    ] {
        let status = h
            .client
            .sign_up(sign_up_request(email, password, &id))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert!(status.message().contains("request_id"), "{status:?}");
    }
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.users").await,
        1
    );
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.sessions").await,
        2
    );

    // Without an id, a retry is a second sign-up of a taken email.
    let status = h
        .client
        .sign_up(sign_up_request("ada@example.com", PASSWORD, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_retried_api_key_creation_names_the_key_and_stores_nothing() {
    let mut h = start().await;
    let (_, ada) = sign_up(&mut h.client, "ada@example.com").await;
    let (_, bob) = sign_up(&mut h.client, "bob@example.com").await;
    let id = Uuid::now_v7().to_string();
    let request = |token: &str| {
        bearer(
            pb::CreateApiKeyRequest {
                name: "ci".into(),
                scopes: vec!["usage:write".into()],
                request_id: id.clone(),
                ..Default::default()
            },
            token,
        )
    };
    let created = h
        .client
        .create_api_key(request(&ada.access_token))
        .await
        .unwrap()
        .into_inner();
    let key = created.api_key.unwrap();
    assert!(created.secret.starts_with("sk_"));

    let status = h
        .client
        .create_api_key(request(&ada.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        !status.message().contains("sk_"),
        "the secret is never shown again"
    );
    let resource = status.get_error_details().resource_info().cloned().unwrap();
    assert_eq!(resource.resource_type, "strata.auth.v1.ApiKey");
    assert_eq!(resource.resource_name, key.id);
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.api_keys").await,
        1
    );

    // Another user's request with the same id is theirs alone.
    h.client
        .create_api_key(request(&bob.access_token))
        .await
        .unwrap();
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.api_keys").await,
        2
    );
}

#[tokio::test]
async fn every_violation_of_a_request_is_listed_and_nothing_is_written() {
    let mut h = start().await;
    let status = h
        .client
        .sign_up(pb::SignUpRequest {
            email: "not an email".into(),
            password: "short".into(),
            display_name: String::new(),
            request_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["email", "display_name", "password", "request_id"]);
    assert!(status.message().contains("(and 3 more)"), "{status:?}");
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.users").await,
        0
    );

    let (_, ada) = sign_up(&mut h.client, "ada@example.com").await;
    let status = h
        .client
        .create_api_key(bearer(
            pb::CreateApiKeyRequest {
                name: String::new(),
                scopes: vec!["Bad Scope".into()],
                expire_time: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                request_id: "x".into(),
            },
            &ada.access_token,
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["name", "scopes", "expire_time", "request_id"]);
    assert_eq!(
        count(&h.db, "SELECT count(*) AS n FROM auth.api_keys").await,
        0
    );
}
