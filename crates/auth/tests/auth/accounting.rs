//! Query accounting of calls that follow cancelled ones.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;

use super::*;

/// Calls cancelled by their deadline while their query waits leave starts without
/// finishes on the one pooled connection; the calls after them must still report their
/// own query time, never more than their whole time in the server.
#[tokio::test]
async fn calls_after_cancelled_ones_report_their_own_query_time() {
    let db = TestDb::new().await;
    let mut config = db.server_config("auth");
    config.db.max_connections = 1;
    // No validation query on checkout: the cancelled calls' connection is reused as is.
    config.db.test_on_checkout = false;
    let mut h = start_on(db, config, Arc::new(SystemClock)).await;
    let (_, credentials) = sign_up(&mut h.client, "cancelled@example.com").await;
    let list = || {
        bearer(
            pb::ListSessionsRequest::default(),
            &credentials.access_token,
        )
    };

    // The session check waits on this lock until the calls' deadlines cancel them.
    let mut locker = h.db.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE auth.sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for _ in 0..3 {
        let mut request = list();
        request.set_timeout(Duration::from_millis(300));
        assert!(h.client.list_sessions(request).await.is_err());
    }
    locker.batch_execute("ROLLBACK").await.unwrap();

    for call in 0..5 {
        let response = h.client.list_sessions(list()).await.unwrap();
        let metadata = response.metadata();
        let query_ms = strata_testkit::metadata_f64(metadata, "x-query-time-ms");
        let process_ms = strata_testkit::metadata_f64(metadata, "x-process-time-ms");
        assert!(
            query_ms <= process_ms && query_ms < 250.0,
            "query {query_ms} ms, process {process_ms} ms"
        );
        // The first call loads the session and the account into the caches (the
        // cancelled ones never finished theirs); later calls only list.
        let expected = if call == 0 { 3.0 } else { 1.0 };
        assert_eq!(
            strata_testkit::metadata_f64(metadata, "x-query-count"),
            expected
        );
    }
}
