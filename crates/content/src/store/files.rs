//! The SQL of project files: contents stored once per SHA-256 (`content.blobs`), file rows
//! pointing at them. Every write is one statement: one round trip, one transaction.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bytea, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// A file to write, checked.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// Normalized path.
    pub path: String,
    /// Language.
    pub language: String,
    /// SHA-256 of the content.
    pub hash: Vec<u8>,
    /// The bytes.
    pub content: Vec<u8>,
}

/// What a batch wrote.
#[derive(Debug)]
pub enum Upserted {
    /// The project is missing or not the caller's.
    NotFound,
    /// The project would hold more than its limit of files (it holds `existing`).
    TooMany {
        /// Files it holds.
        existing: i64,
    },
    /// Written: each path with its creation time, in no particular order.
    Written(Vec<(String, DateTime<Utc>)>),
}

/// Creates or replaces `files` of project `project` (of `owner`; any owner when `None`)
/// in one statement, if the project then holds at most `max_files` files. The project's
/// `file_count` is read from its locked row (the latest, whatever ran at the same time)
/// and moved by the files this batch adds; a path is new unless the project held it when
/// the statement began (a path another batch adds meanwhile counts as new: the check
/// errs towards refusing). Contents already stored (same SHA-256) are not stored again.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    project: Uuid,
    owner: Option<Uuid>,
    files: &[NewFile],
    max_files: i64,
    now: DateTime<Utc>,
) -> Result<Upserted, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        existing: i64,
        #[diesel(sql_type = Nullable<Text>)]
        path: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        created_at: Option<DateTime<Utc>>,
    }
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let languages: Vec<&str> = files.iter().map(|f| f.language.as_str()).collect();
    let hashes: Vec<&[u8]> = files.iter().map(|f| f.hash.as_slice()).collect();
    let contents: Vec<&[u8]> = files.iter().map(|f| f.content.as_slice()).collect();
    let sizes: Vec<i64> = files
        .iter()
        .map(|f| i64::try_from(f.content.len()).unwrap_or(i64::MAX))
        .collect();
    let rows: Vec<Row> = diesel::sql_query(
        "WITH p AS ( \
           SELECT id, file_count FROM content.projects \
           WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) \
           FOR NO KEY UPDATE \
         ), given AS ( \
           SELECT u.* FROM unnest($3::text[], $4::text[], $5::bytea[], $6::bytea[], \
             $7::bigint[]) AS u(path, language, hash, content, size) \
         ), fresh AS ( \
           SELECT count(*) AS n FROM given g WHERE NOT EXISTS ( \
             SELECT 1 FROM content.project_files f WHERE f.project_id = $1 AND f.path = g.path) \
         ), input AS ( \
           SELECT given.* FROM given \
           WHERE EXISTS (SELECT 1 FROM p, fresh WHERE p.file_count + fresh.n <= $8) \
         ), blobs AS ( \
           INSERT INTO content.blobs (hash, size, content) \
           SELECT DISTINCT ON (hash) hash, size, content FROM input \
           ON CONFLICT (hash) DO NOTHING \
         ), written AS ( \
           INSERT INTO content.project_files (project_id, path, language, hash, size, \
             created_at, updated_at) \
           SELECT $1, path, language, hash, size, $9, $9 FROM input \
           ON CONFLICT (project_id, path) DO UPDATE SET language = EXCLUDED.language, \
             hash = EXCLUDED.hash, size = EXCLUDED.size, updated_at = EXCLUDED.updated_at \
           RETURNING path, created_at, xmax = 0 AS inserted \
         ), touched AS ( \
           UPDATE content.projects SET updated_at = $9, active_at = $9, \
             file_count = file_count + (SELECT count(*) FROM written WHERE inserted) \
           WHERE id IN (SELECT id FROM p) AND EXISTS (SELECT 1 FROM input) \
         ) \
         SELECT p.file_count AS existing, w.path, w.created_at FROM p LEFT JOIN written w ON true",
    )
    .bind::<SqlUuid, _>(project)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Array<Text>, _>(&paths)
    .bind::<Array<Text>, _>(&languages)
    .bind::<Array<Bytea>, _>(&hashes)
    .bind::<Array<Bytea>, _>(&contents)
    .bind::<Array<BigInt>, _>(&sizes)
    .bind::<BigInt, _>(max_files)
    .bind::<Timestamptz, _>(now)
    .load(conn)
    .await?;
    let Some(first) = <[Row]>::first(&rows) else {
        return Ok(Upserted::NotFound);
    };
    if first.path.is_none() {
        return Ok(Upserted::TooMany {
            existing: first.existing,
        });
    }
    Ok(Upserted::Written(
        rows.into_iter()
            .filter_map(|r| Some((r.path?, r.created_at?)))
            .collect(),
    ))
}

/// A file as stored (content only when read).
#[derive(Debug, Clone, QueryableByName)]
pub struct FileRow {
    /// Path.
    #[diesel(sql_type = Text)]
    pub path: String,
    /// Language.
    #[diesel(sql_type = Text)]
    pub language: String,
    /// SHA-256.
    #[diesel(sql_type = Bytea)]
    pub hash: Vec<u8>,
    /// Size in bytes.
    #[diesel(sql_type = BigInt)]
    pub size: i64,
    /// The bytes, when asked for.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub content: Option<Vec<u8>>,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// Filters of ListFiles.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    /// Paths starting with this.
    pub prefix: Option<String>,
    /// Only this language.
    pub language: Option<String>,
}

/// `limit` files of `project` matching `filter`, by path after `after`; with their content
/// when `content`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    project: Uuid,
    filter: &FileFilter,
    after: Option<&str>,
    content: bool,
    limit: i64,
) -> Result<Vec<FileRow>, diesel::result::Error> {
    let content_column = if content {
        "(SELECT b.content FROM content.blobs b WHERE b.hash = f.hash)"
    } else {
        "NULL::bytea"
    };
    // A prefix is a range of the primary key: [prefix, prefix + U+10FFFF), then checked
    // exactly.
    let prefix = filter.prefix.as_deref().unwrap_or("");
    let upper = format!("{prefix}\u{10FFFF}");
    diesel::sql_query(format!(
        "SELECT f.path, f.language, f.hash, f.size, {content_column} AS content, f.created_at, \
           f.updated_at \
         FROM content.project_files f WHERE f.project_id = $1 \
           AND f.path >= $2 AND f.path < $3 AND starts_with(f.path, $2) \
           AND f.path > $4 AND ($5::text IS NULL OR f.language = $5) \
         ORDER BY f.path LIMIT $6"
    ))
    .bind::<SqlUuid, _>(project)
    .bind::<Text, _>(prefix)
    .bind::<Text, _>(&upper)
    .bind::<Text, _>(after.unwrap_or(""))
    .bind::<Nullable<Text>, _>(filter.language.as_deref())
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// One file of `project` with its content.
pub async fn get(
    conn: &mut AsyncPgConnection,
    project: Uuid,
    path: &str,
) -> Result<Option<FileRow>, diesel::result::Error> {
    let rows: Vec<FileRow> = diesel::sql_query(
        "SELECT f.path, f.language, f.hash, f.size, b.content, f.created_at, f.updated_at \
         FROM content.project_files f JOIN content.blobs b ON b.hash = f.hash \
         WHERE f.project_id = $1 AND f.path = $2",
    )
    .bind::<SqlUuid, _>(project)
    .bind::<Text, _>(path)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Deletes `paths` of `project` (of `owner`; any when `None`) in one statement; the
/// number deleted, or `None` if the project is missing or not the caller's.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    project: Uuid,
    owner: Option<Uuid>,
    paths: &[String],
    now: DateTime<Utc>,
) -> Result<Option<i64>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        deleted: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "WITH p AS ( \
           SELECT id FROM content.projects WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) \
           FOR NO KEY UPDATE \
         ), gone AS ( \
           DELETE FROM content.project_files WHERE project_id IN (SELECT id FROM p) \
             AND path = ANY($3) RETURNING 1 \
         ), touched AS ( \
           UPDATE content.projects SET updated_at = $4, active_at = $4, \
             file_count = file_count - (SELECT count(*) FROM gone) \
           WHERE id IN (SELECT id FROM p) AND EXISTS (SELECT 1 FROM gone) \
         ) \
         SELECT (SELECT count(*) FROM gone) AS deleted FROM p",
    )
    .bind::<SqlUuid, _>(project)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Array<Text>, _>(paths)
    .bind::<Timestamptz, _>(now)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.deleted))
}

/// The number of files of `project` (as kept on its row).
pub async fn count(
    conn: &mut AsyncPgConnection,
    project: Uuid,
) -> Result<i64, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Row = diesel::sql_query("SELECT file_count AS n FROM content.projects WHERE id = $1")
        .bind::<SqlUuid, _>(project)
        .get_result(conn)
        .await?;
    Ok(row.n)
}
