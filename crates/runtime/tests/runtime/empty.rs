//! The admin reads over nothing: empty, valid answers.

use super::*;

#[tokio::test]
async fn admin_reads_of_nothing_answer_empty_results() {
    let db = TestDb::new().await;
    let server = TestServer::start(db.server_config("test"), |_| {}).await;
    let mut client = admin(&server);
    let slow = client
        .list_slow_queries(admin_request(pb::ListSlowQueriesRequest {
            min_calls: i64::MAX,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(slow.queries.is_empty());
    let indexes = client
        .get_index_usage(admin_request(pb::GetIndexUsageRequest {
            schema: "auth".into(),
            table: "no_such_table".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(indexes.indexes.is_empty());
    let tables = client
        .get_table_stats(admin_request(pb::GetTableStatsRequest {
            schema: "no_such_schema".into(),
            table: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(tables.tables.is_empty());
    // The content schema's tables are empty: every secondary index is unused, none is
    // listed twice, and none is a primary key or a unique one.
    let unused = client
        .list_unused_indexes(admin_request(pb::ListUnusedIndexesRequest {
            schema: "content".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<&str> = unused.indexes.iter().map(|i| i.index.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), unused.indexes.len());
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with("_pkey") && !n.ends_with("_key")),
        "{names:?}"
    );
}
