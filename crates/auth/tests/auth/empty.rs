//! The auth list RPCs over nothing: empty, valid answers.

use super::*;

#[tokio::test]
async fn auth_lists_of_nothing_answer_empty_results() {
    let mut h = start().await;
    let (_, credentials) = sign_up(&mut h.client, "lonely@example.com").await;
    make_admin(&h, "lonely@example.com").await;
    let admin = refresh(&mut h.client, &credentials.refresh_token)
        .await
        .unwrap();
    let keys = h
        .client
        .list_api_keys(bearer(
            pb::ListApiKeysRequest::default(),
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(keys.api_keys.is_empty() && keys.next_page_token.is_empty());
    let users = h
        .client
        .list_users(bearer(
            pb::ListUsersRequest {
                email_prefix: "nobody-".into(),
                ..Default::default()
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(users.users.is_empty() && users.next_page_token.is_empty());
    let disabled = h
        .client
        .list_users(bearer(
            pb::ListUsersRequest {
                status: pb::UserStatus::Disabled.into(),
                ..Default::default()
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.users.is_empty());
}
