//! Refresh-token rotation and reuse, sign-out, listing and revoking sessions, and cleanup of expired credentials.

use super::*;

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
    let report = strata_auth::cleanup::run_once(&mut h.db.connect().await, cutoff)
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
    let again = strata_auth::cleanup::run_once(&mut h.db.connect().await, cutoff)
        .await
        .unwrap();
    assert_eq!(again, strata_auth::cleanup::Report::default());
}
