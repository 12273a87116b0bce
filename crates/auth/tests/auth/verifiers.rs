//! Other services verifying credentials: locally with Redis, through the auth service without it.

use super::*;

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
    // The keys could not be fetched: neither this call nor those that follow before the
    // next fetch may run (a few at once among them) can be verified, and none of them is
    // told its valid token is not.
    assert_eq!(
        health_as(&nothing, Some(&fresh.access_token))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    let again = futures_util::future::join_all(
        (0..4).map(|_| health_as(&nothing, Some(&fresh.access_token))),
    )
    .await;
    for answer in again {
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }
}
