//! Page tokens work only on the list, caller and filters they came from.

use super::*;

fn is_bad_token(status: &tonic::Status) -> bool {
    status.code() == Code::InvalidArgument && status.message().contains("page_token")
}

#[tokio::test]
async fn page_tokens_are_bound_to_their_list_caller_and_filters() {
    let mut h = start().await;
    let (_, ada) = sign_up(&mut h.client, "ada@example.com").await;
    for _ in 0..2 {
        login(&mut h.client, "ada@example.com", PASSWORD)
            .await
            .unwrap();
        create_key(&mut h.client, &ada.access_token, &["profile:read"])
            .await
            .unwrap();
    }
    let (_, bob) = sign_up(&mut h.client, "bob@example.com").await;
    make_admin(&h, "ada@example.com").await;
    let ada = refresh(&mut h.client, &ada.refresh_token).await.unwrap();
    let sessions = |token: &str, page_token: &str| {
        bearer(
            pb::ListSessionsRequest {
                page_size: 1,
                page_token: page_token.into(),
            },
            token,
        )
    };
    let session_token = h
        .client
        .list_sessions(sessions(&ada.access_token, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!session_token.is_empty());
    // Its own list, its own caller: the next page.
    h.client
        .list_sessions(sessions(&ada.access_token, &session_token))
        .await
        .unwrap();
    // Another caller.
    let status = h
        .client
        .list_sessions(sessions(&bob.access_token, &session_token))
        .await
        .unwrap_err();
    assert!(is_bad_token(&status), "{status:?}");
    // Another list.
    let status = h
        .client
        .list_api_keys(bearer(
            pb::ListApiKeysRequest {
                page_size: 1,
                page_token: session_token.clone(),
            },
            &ada.access_token,
        ))
        .await
        .unwrap_err();
    assert!(is_bad_token(&status), "{status:?}");
    // Other filters.
    let users = |status: pb::UserStatus, page_token: &str| {
        bearer(
            pb::ListUsersRequest {
                page_size: 1,
                page_token: page_token.into(),
                status: status.into(),
                ..Default::default()
            },
            &ada.access_token,
        )
    };
    let user_token = h
        .client
        .list_users(users(pb::UserStatus::Active, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    h.client
        .list_users(users(pb::UserStatus::Active, &user_token))
        .await
        .unwrap();
    let status = h
        .client
        .list_users(users(pb::UserStatus::Disabled, &user_token))
        .await
        .unwrap_err();
    assert!(is_bad_token(&status), "{status:?}");
}
