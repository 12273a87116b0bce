//! User administration: roles, statuses, and who may call it.

use super::*;

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

    make_admin(&h, "ada@example.com").await;
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
