//! Profile updates under a field mask and password changes.

use super::*;

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
