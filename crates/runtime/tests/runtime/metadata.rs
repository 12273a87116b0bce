//! HTTP/2 and metadata limits: an oversized header fails its own call, clearly, and
//! nothing else on the connection.

use std::sync::Arc;

use tonic_types::StatusExt as _;

use super::*;

#[tokio::test]
async fn an_oversized_header_fails_its_call_and_no_other_on_the_connection() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let channel = server.channel();
    let health = move || {
        let channel = channel.clone();
        async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
        }
    };
    health().await.unwrap();

    // Calls in flight on the same connection while the oversized one goes by.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for _ in 0..4 {
        let stop = Arc::clone(&stop);
        let health = health.clone();
        background.push(tokio::spawn(async move {
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                health().await.expect("a neighbour call failed");
                calls += 1;
            }
            calls
        }));
    }

    for size in [20 * 1024, 100 * 1024, 200 * 1024] {
        let mut request = tonic::Request::new(pb::GetHealthRequest {});
        let huge = format!("Bearer {}", "x".repeat(size));
        request
            .metadata_mut()
            .insert("authorization", huge.parse().unwrap());
        let status = admin(&server).get_health(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{size}: {status:?}");
        assert!(status.message().contains("authorization"), "{status:?}");
        let violations = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert_eq!(violations[0].field, "authorization");
        // The connection is still there for the next call.
        health().await.unwrap();
    }
    // Many headers, each small, add up too.
    let mut request = tonic::Request::new(pb::GetHealthRequest {});
    for i in 0..200 {
        request.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
            "y".repeat(400).parse().unwrap(),
        );
    }
    let status = admin(&server).get_health(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("metadata"), "{status:?}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in background {
        assert!(task.await.unwrap() > 0);
    }
    // Ordinary metadata is untouched by the limit.
    admin(&server)
        .get_health(admin_request(pb::GetHealthRequest {}))
        .await
        .unwrap();
}
