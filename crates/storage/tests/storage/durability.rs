//! The local cluster `make run` keeps data in holds on to acknowledged commits.

use super::*;

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    setting: String,
}

#[tokio::test]
async fn the_local_cluster_keeps_postgres_durability_defaults() {
    // What deploy/local/infra.sh writes into the cluster's configuration.
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/infra.sh"),
    )
    .unwrap();
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        assert!(
            !script
                .lines()
                .any(|l| l.trim_start().starts_with(setting) && l.contains("off")),
            "infra.sh turns {setting} off"
        );
    }
    // And the server itself, when it is the private cluster (a DATABASE_URL of the
    // developer's own is theirs to configure).
    let db = TestDb::new().await;
    if !db.url().contains(":54329/") {
        return;
    }
    // Asked of the maintenance database: test databases turn synchronous_commit off for
    // themselves.
    let rows: Vec<Setting> = sql_query(
        "SELECT name::text, setting::text FROM pg_settings
          WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit')",
    )
    .load(&mut db.admin_connection().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row.setting, "on", "{}", row.name);
    }
}
