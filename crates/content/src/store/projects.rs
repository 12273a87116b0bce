//! The SQL of projects: the owner's list, public discovery in five orders, search, likes,
//! forks, folded views and the trending rank.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Date, Double, Integer, Jsonb, Nullable, SmallInt, Text,
    Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The projects table.
pub const PROJECTS: &str = "content.projects";

/// The columns of a project.
const COLUMNS: &str = "p.id, p.owner_id, p.name, p.description, p.visibility, p.type, p.tags, \
     p.labels, p.like_count, p.fork_count, p.view_count, p.featured, p.forked_from, p.trending, \
     p.created_at, p.updated_at";

/// `visibility` of a public project.
pub const PUBLIC: i16 = 2;

/// A project as stored.
#[derive(Debug, Clone, QueryableByName)]
pub struct ProjectRow {
    /// Id (UUIDv7).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Owner.
    #[diesel(sql_type = SqlUuid)]
    pub owner_id: Uuid,
    /// Name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Description.
    #[diesel(sql_type = Text)]
    pub description: String,
    /// `Visibility` number.
    #[diesel(sql_type = SmallInt)]
    pub visibility: i16,
    /// Kind.
    #[diesel(sql_type = Text, column_name = "type")]
    pub kind: String,
    /// Tags.
    #[diesel(sql_type = Array<Text>)]
    pub tags: Vec<String>,
    /// The owner's metadata map.
    #[diesel(sql_type = Jsonb)]
    pub labels: serde_json::Value,
    /// Likes.
    #[diesel(sql_type = BigInt)]
    pub like_count: i64,
    /// Forks.
    #[diesel(sql_type = BigInt)]
    pub fork_count: i64,
    /// Unique viewers per day, summed.
    #[diesel(sql_type = BigInt)]
    pub view_count: i64,
    /// Chosen by an admin.
    #[diesel(sql_type = Bool)]
    pub featured: bool,
    /// The original of a fork.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub forked_from: Option<Uuid>,
    /// Stored trending rank.
    #[diesel(sql_type = Double)]
    pub trending: f64,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// A new project, checked.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// Owner.
    pub owner_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `Visibility` number.
    pub visibility: i16,
    /// Kind.
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The owner's metadata map.
    pub labels: serde_json::Value,
    /// AIP-155 idempotency key.
    pub request_id: Option<Uuid>,
    /// SHA-256 of the request.
    pub request_hash: Vec<u8>,
}

/// Inserts a project.
pub async fn insert_project(
    conn: &mut AsyncPgConnection,
    new: &NewProject,
    now: DateTime<Utc>,
) -> Result<Uuid, diesel::result::Error> {
    let id = Uuid::now_v7();
    diesel::sql_query(
        "INSERT INTO content.projects (id, owner_id, name, description, visibility, type, tags, \
         labels, active_at, created_at, updated_at, request_id, request_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $10, $11)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(new.owner_id)
    .bind::<Text, _>(&new.name)
    .bind::<Text, _>(&new.description)
    .bind::<SmallInt, _>(new.visibility)
    .bind::<Text, _>(&new.kind)
    .bind::<Array<Text>, _>(&new.tags)
    .bind::<Jsonb, _>(&new.labels)
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<SqlUuid>, _>(new.request_id)
    .bind::<Bytea, _>(&new.request_hash)
    .execute(conn)
    .await?;
    Ok(id)
}

/// A project by id.
pub async fn project(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<ProjectRow>, diesel::result::Error> {
    let rows: Vec<ProjectRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM content.projects p WHERE p.id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// `limit` of `owner`'s projects, most recently updated first, after `after`.
pub async fn list_mine(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ProjectRow>, diesel::result::Error> {
    let (time, id) = after.unzip();
    // The keyset bound only when there is one: a generic plan cannot use `$2 IS NULL OR
    // (…) < (…)` as an index condition.
    let bound = if after.is_some() {
        "(p.updated_at, p.id) < ($2, $3)"
    } else {
        "$2::timestamptz IS NULL AND $3::uuid IS NULL"
    };
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM content.projects p WHERE p.owner_id = $1 AND {bound} \
         ORDER BY p.updated_at DESC, p.id DESC LIMIT $4"
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<Timestamptz>, _>(time)
    .bind::<Nullable<SqlUuid>, _>(id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// An order of public discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// like_count.
    Likes,
    /// fork_count.
    Forks,
    /// view_count.
    Views,
    /// created_at.
    Newest,
    /// trending.
    Trending,
}

/// Where a page of public discovery starts: the order's key and id of the last row seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Key {
    /// A count (likes, forks, views).
    Count(i64),
    /// A time (newest).
    Time(DateTime<Utc>),
    /// A rank (trending).
    Rank(f64),
}

impl Order {
    /// The column, from code.
    fn column(self) -> &'static str {
        match self {
            Self::Likes => "like_count",
            Self::Forks => "fork_count",
            Self::Views => "view_count",
            Self::Newest => "created_at",
            Self::Trending => "trending",
        }
    }

    /// The key of `row` in this order.
    pub fn key(self, row: &ProjectRow) -> Key {
        match self {
            Self::Likes => Key::Count(row.like_count),
            Self::Forks => Key::Count(row.fork_count),
            Self::Views => Key::Count(row.view_count),
            Self::Newest => Key::Time(row.created_at),
            Self::Trending => Key::Rank(row.trending),
        }
    }
}

/// Filters of public discovery.
#[derive(Debug, Clone, Default)]
pub struct PublicFilter {
    /// Only this type.
    pub kind: Option<String>,
    /// Only with this tag.
    pub tag: Option<String>,
    /// Only featured (`Some(true)`) or only not featured (`Some(false)`).
    pub featured: Option<bool>,
}

/// `limit` public projects in `order` (highest first, then newest id) after `after`.
pub async fn list_public(
    conn: &mut AsyncPgConnection,
    order: Order,
    filter: &PublicFilter,
    after: Option<(Key, Uuid)>,
    limit: i64,
) -> Result<Vec<ProjectRow>, diesel::result::Error> {
    let column = order.column();
    let cast = match order {
        Order::Likes | Order::Forks | Order::Views => "bigint",
        Order::Newest => "timestamptz",
        Order::Trending => "double precision",
    };
    let bound = if after.is_some() {
        format!("(p.{column}, p.id) < ($4, $5)")
    } else {
        format!("$4::{cast} IS NULL AND $5::uuid IS NULL")
    };
    // Spelled out (not `$3 IS NULL OR …`) so the planner can use the featured index.
    let featured = match filter.featured {
        Some(true) => "p.featured AND $3::boolean",
        Some(false) => "NOT p.featured AND NOT $3::boolean",
        None => "$3::boolean IS NULL",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM content.projects p WHERE p.visibility = 2 \
         AND ($1::text IS NULL OR p.type = $1) \
         AND ($2::text IS NULL OR p.tags @> ARRAY[$2::text]) \
         AND {featured} AND {bound} \
         ORDER BY p.{column} DESC, p.id DESC LIMIT $6"
    );
    let query = diesel::sql_query(sql)
        .bind::<Nullable<Text>, _>(filter.kind.as_deref())
        .bind::<Nullable<Text>, _>(filter.tag.as_deref())
        .bind::<Nullable<Bool>, _>(filter.featured);
    let id = after.map(|(_, id)| id);
    match (order, after.map(|(key, _)| key)) {
        (Order::Newest, key) => {
            let time = key.and_then(|k| match k {
                Key::Time(t) => Some(t),
                _ => None,
            });
            query
                .bind::<Nullable<Timestamptz>, _>(time)
                .bind::<Nullable<SqlUuid>, _>(id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await
        }
        (Order::Trending, key) => {
            let rank = key.and_then(|k| match k {
                Key::Rank(r) => Some(r),
                _ => None,
            });
            query
                .bind::<Nullable<Double>, _>(rank)
                .bind::<Nullable<SqlUuid>, _>(id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await
        }
        (_, key) => {
            let count = key.and_then(|k| match k {
                Key::Count(c) => Some(c),
                _ => None,
            });
            query
                .bind::<Nullable<BigInt>, _>(count)
                .bind::<Nullable<SqlUuid>, _>(id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await
        }
    }
}

/// A project found by search.
#[derive(Debug, Clone, QueryableByName)]
pub struct Found {
    /// The project.
    #[diesel(embed)]
    pub project: ProjectRow,
    /// Relevance.
    #[diesel(sql_type = Double)]
    pub rank: f64,
    /// Name with the words found marked.
    #[diesel(sql_type = Text)]
    pub name_snippet: String,
    /// Fragments of the description with the words found marked.
    #[diesel(sql_type = Text)]
    pub description_snippet: String,
}

/// The snippets of a page of found projects (`page`: their columns and rank), marked
/// where the words of `q.query` are.
const SNIPPETS: &str = "ts_headline('english', page.name, q.query, \
       'StartSel=<b>, StopSel=</b>, HighlightAll=true') AS name_snippet, \
     ts_headline('english', page.description, q.query, \
       'StartSel=<b>, StopSel=</b>, MaxFragments=2, MaxWords=20, MinWords=5') \
       AS description_snippet";

/// `limit` projects `viewer` may see whose words match the web-search `query`, best first
/// (rank, then id) after `after`, with snippets of the page only.
///
/// A query of one lexeme (most searches) reads its best projects in order from
/// `content.project_terms`, where each project's rank for each of its lexemes is stored:
/// a few index entries, however common the word. Other queries rank what the GIN index
/// finds. Both rank alike (`ts_rank_cd`, normalization 1), so pages continue either way.
pub async fn search(
    conn: &mut AsyncPgConnection,
    viewer: Uuid,
    query: &str,
    after: Option<(f64, Uuid)>,
    limit: i64,
) -> Result<Vec<Found>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Parsed {
        #[diesel(sql_type = Integer)]
        nodes: i32,
        #[diesel(sql_type = Text)]
        text: String,
    }
    let parsed: Parsed = diesel::sql_query(
        "SELECT numnode(q) AS nodes, q::text AS text FROM websearch_to_tsquery('english', $1) q",
    )
    .bind::<Text, _>(query)
    .get_result(conn)
    .await?;
    let (rank, id) = after.unzip();
    match (parsed.nodes, single_lexeme(&parsed.text)) {
        // Only stop words: nothing to find.
        (0, _) => Ok(Vec::new()),
        (1, Some(lexeme)) => {
            diesel::sql_query(format!(
                "WITH q AS (SELECT websearch_to_tsquery('english', $1) AS query), \
                 page AS ( \
                   SELECT {COLUMNS}, t.rank \
                   FROM content.project_terms t JOIN content.projects p ON p.id = t.project_id \
                   WHERE t.lexeme = $6 AND (p.visibility = 2 OR p.owner_id = $2) \
                     AND ($3::float8 IS NULL OR (t.rank, t.project_id) < ($3, $4)) \
                   ORDER BY t.rank DESC, t.project_id DESC LIMIT $5 \
                 ) \
                 SELECT page.*, {SNIPPETS} FROM page, q ORDER BY page.rank DESC, page.id DESC"
            ))
            .bind::<Text, _>(query)
            .bind::<SqlUuid, _>(viewer)
            .bind::<Nullable<Double>, _>(rank)
            .bind::<Nullable<SqlUuid>, _>(id)
            .bind::<BigInt, _>(limit)
            .bind::<Text, _>(lexeme)
            .load(conn)
            .await
        }
        _ => {
            diesel::sql_query(format!(
                "WITH q AS NOT MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS query), \
                 hits AS ( \
                   SELECT {COLUMNS}, ts_rank_cd(p.document, q.query, 1)::float8 AS rank \
                   FROM content.projects p, q \
                   WHERE p.document @@ q.query AND (p.visibility = 2 OR p.owner_id = $2) \
                 ), page AS ( \
                   SELECT * FROM hits WHERE ($3::float8 IS NULL OR (rank, id) < ($3, $4)) \
                   ORDER BY rank DESC, id DESC LIMIT $5 \
                 ) \
                 SELECT page.*, {SNIPPETS} FROM page, q ORDER BY page.rank DESC, page.id DESC"
            ))
            .bind::<Text, _>(query)
            .bind::<SqlUuid, _>(viewer)
            .bind::<Nullable<Double>, _>(rank)
            .bind::<Nullable<SqlUuid>, _>(id)
            .bind::<BigInt, _>(limit)
            .load(conn)
            .await
        }
    }
}

/// The lexeme of a tsquery of one operand, as PostgreSQL prints it (`'chat'`, quotes
/// inside doubled); `None` for anything else (a weight, a prefix, a backslash).
fn single_lexeme(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    let plain =
        !inner.is_empty() && !inner.contains('\\') && !inner.replace("''", "").contains('\'');
    plain.then(|| inner.replace("''", "'"))
}

/// For each of `words` (lowercase), the most similar word of a public project (a typo's
/// correction; the word itself when some public project has it), or the word unchanged
/// when none is similar enough. Private projects' words are never offered.
pub async fn corrections(
    conn: &mut AsyncPgConnection,
    words: &[String],
) -> Result<Vec<String>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Corrected {
        #[diesel(sql_type = Text)]
        word: String,
    }
    if words.is_empty() {
        return Ok(Vec::new());
    }
    conn.transaction(async |conn| {
        // Short words share few trigrams: a transposed pair in a five-letter word
        // ("imgae") keeps a fifth of them. Words are compared with a small table, so a
        // low threshold costs little.
        diesel::sql_query("SET LOCAL pg_trgm.similarity_threshold = 0.2")
            .execute(conn)
            .await?;
        let rows: Vec<Corrected> = diesel::sql_query(
            "SELECT coalesce(c.word, q.w) AS word \
             FROM unnest($1::text[]) WITH ORDINALITY AS q(w, i) \
             LEFT JOIN LATERAL ( \
               SELECT s.word FROM content.search_words s \
               WHERE s.word % q.w \
               ORDER BY s.word = q.w DESC, similarity(s.word, q.w) DESC, s.word LIMIT 1 \
             ) c ON true \
             ORDER BY q.i",
        )
        .bind::<Array<Text>, _>(words)
        .load(conn)
        .await?;
        Ok(rows.into_iter().map(|r| r.word).collect())
    })
    .await
}

/// New values of UpdateProject (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ProjectChanges {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Visibility.
    pub visibility: Option<i16>,
    /// Kind.
    pub kind: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Metadata map.
    pub labels: Option<serde_json::Value>,
    /// Featured (admins).
    pub featured: Option<bool>,
}

/// Applies `changes` to project `id` if `may_write` allows its owner; whether it did.
pub async fn update_project(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
    changes: &ProjectChanges,
    now: DateTime<Utc>,
) -> Result<bool, diesel::result::Error> {
    let updated = diesel::sql_query(
        "UPDATE content.projects SET name = coalesce($3, name), \
         description = coalesce($4, description), visibility = coalesce($5, visibility), \
         type = coalesce($6, type), tags = coalesce($7, tags), labels = coalesce($8, labels), \
         featured = coalesce($9, featured), updated_at = $10, active_at = $10 \
         WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Nullable<Text>, _>(changes.name.as_deref())
    .bind::<Nullable<Text>, _>(changes.description.as_deref())
    .bind::<Nullable<SmallInt>, _>(changes.visibility)
    .bind::<Nullable<Text>, _>(changes.kind.as_deref())
    .bind::<Nullable<Array<Text>>, _>(changes.tags.as_ref())
    .bind::<Nullable<Jsonb>, _>(changes.labels.as_ref())
    .bind::<Nullable<Bool>, _>(changes.featured)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// Deletes project `id` (of `owner`, any when `None`); `None` if it did not, else the
/// forks that pointed at it (their `forked_from` is cleared: forget them in caches).
pub async fn delete_project(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<Option<Vec<Uuid>>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Array<SqlUuid>)]
        forks: Vec<Uuid>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "WITH gone AS ( \
           DELETE FROM content.projects WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2) \
           RETURNING id \
         ) \
         SELECT array(SELECT f.id FROM content.projects f WHERE f.forked_from = $1) AS forks \
         FROM gone",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.forks))
}

/// What a like or an unlike did.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct LikeOutcome {
    /// Whether the project exists and the caller may see it.
    #[diesel(sql_type = Bool)]
    pub found: bool,
    /// Whether this call changed the like.
    #[diesel(sql_type = Bool)]
    pub changed: bool,
    /// The count after.
    #[diesel(sql_type = BigInt)]
    pub like_count: i64,
}

/// Adds (`like`) or removes the like of `user` on project `id`, if `user` may see it
/// (public, or theirs, or `admin`), and moves the counter with it: one statement, so one
/// transaction. Once per user whatever the concurrency (the row's primary key decides).
pub async fn like(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    user: Uuid,
    admin: bool,
    like: bool,
    now: DateTime<Utc>,
) -> Result<LikeOutcome, diesel::result::Error> {
    let (change, step) = if like {
        (
            "INSERT INTO content.project_likes (project_id, user_id, created_at) \
             SELECT id, $2, $4 FROM p ON CONFLICT DO NOTHING RETURNING project_id",
            "+ 1",
        )
    } else {
        (
            "DELETE FROM content.project_likes WHERE project_id IN (SELECT id FROM p) \
             AND user_id = $2 RETURNING project_id",
            "- 1",
        )
    };
    diesel::sql_query(format!(
        "WITH p AS (SELECT id, like_count FROM content.projects \
           WHERE id = $1 AND (visibility = 2 OR owner_id = $2 OR $3)), \
         changed AS ({change}), \
         counted AS (UPDATE content.projects SET like_count = like_count {step}, \
           active_at = $4 WHERE id IN (SELECT project_id FROM changed) RETURNING like_count) \
         SELECT EXISTS (SELECT 1 FROM p) AS found, EXISTS (SELECT 1 FROM changed) AS changed, \
           coalesce((SELECT like_count FROM counted), (SELECT like_count FROM p), 0) \
             AS like_count"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(user)
    .bind::<Bool, _>(admin)
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
    .await
}

/// What a fork made.
#[derive(Debug, Clone, Copy)]
pub struct Forked {
    /// The new project.
    pub id: Uuid,
    /// Files copied.
    pub files: i64,
}

/// Copies project `source` (if `viewer` may see it) with its file rows into a new private
/// project of `viewer`'s named `name` (the original's when `None`), and counts the fork,
/// in one transaction. The bytes are shared (content-addressed), never copied.
pub async fn fork(
    conn: &mut AsyncPgConnection,
    source: Uuid,
    viewer: Uuid,
    admin: bool,
    name: Option<&str>,
    request: (Option<Uuid>, &[u8]),
    now: DateTime<Utc>,
) -> Result<Option<Forked>, diesel::result::Error> {
    let id = Uuid::now_v7();
    conn.transaction(async |conn| {
        // FOR KEY SHARE: the original cannot be deleted under the copy; likes and views
        // (plain updates) go on.
        let made = diesel::sql_query(
            "INSERT INTO content.projects (id, owner_id, name, description, visibility, type, \
               tags, labels, forked_from, active_at, created_at, updated_at, request_id, \
               request_hash) \
             SELECT $1, $2, coalesce($4, name), description, 1, type, tags, '{}', id, $5, $5, \
               $5, $6, $7 \
             FROM content.projects WHERE id = $3 AND (visibility = 2 OR owner_id = $2 OR $8) \
             FOR KEY SHARE",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(viewer)
        .bind::<SqlUuid, _>(source)
        .bind::<Nullable<Text>, _>(name)
        .bind::<Timestamptz, _>(now)
        .bind::<Nullable<SqlUuid>, _>(request.0)
        .bind::<Bytea, _>(request.1)
        .bind::<Bool, _>(admin)
        .execute(conn)
        .await?;
        if made == 0 {
            return Ok(None);
        }
        let files = diesel::sql_query(
            "INSERT INTO content.project_files (project_id, path, language, hash, size, \
               created_at, updated_at) \
             SELECT $1, path, language, hash, size, $3, $3 FROM content.project_files \
             WHERE project_id = $2",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(source)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        let files = i64::try_from(files).unwrap_or(i64::MAX);
        // The original counts the fork; the fork, its files.
        diesel::sql_query(
            "UPDATE content.projects SET active_at = $2, \
               fork_count = fork_count + (id = $1)::int, \
               file_count = CASE WHEN id = $3 THEN $4 ELSE file_count END \
             WHERE id IN ($1, $3)",
        )
        .bind::<SqlUuid, _>(source)
        .bind::<Timestamptz, _>(now)
        .bind::<SqlUuid, _>(id)
        .bind::<BigInt, _>(files)
        .execute(conn)
        .await?;
        Ok(Some(Forked { id, files }))
    })
    .await
}

/// The unique viewers of projects on days, as counted: `(project, day, viewers)`.
pub type DayCount = (Uuid, NaiveDate, i64);

/// Folds daily unique-viewer counts into `project_views` and the projects' `view_count`,
/// in one transaction serialized across replicas. Counts are absolute (the day's count so
/// far), so folding the same count twice changes nothing. Returns the projects changed.
pub async fn fold_views(
    conn: &mut AsyncPgConnection,
    counts: &[DayCount],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Changed {
        #[diesel(sql_type = SqlUuid)]
        project_id: Uuid,
    }
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = counts.iter().map(|c| c.0).collect();
    let days: Vec<NaiveDate> = counts.iter().map(|c| c.1).collect();
    let viewers: Vec<i64> = counts.iter().map(|c| c.2).collect();
    conn.transaction(async |conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('content.fold_views'))")
            .execute(conn)
            .await?;
        // Under the lock the stored counts are stable: the delta of each day is the new
        // count over the old, added once to the project.
        let changed: Vec<Changed> = diesel::sql_query(
            "WITH input AS ( \
               SELECT u.project_id, u.day, max(u.viewers) AS viewers \
               FROM unnest($1::uuid[], $2::date[], $3::bigint[]) AS u(project_id, day, viewers) \
               JOIN content.projects p ON p.id = u.project_id \
               GROUP BY u.project_id, u.day \
             ), delta AS ( \
               SELECT i.project_id, i.day, i.viewers, \
                 i.viewers - coalesce(v.viewers, 0) AS added \
               FROM input i LEFT JOIN content.project_views v \
                 ON v.project_id = i.project_id AND v.day = i.day \
               WHERE i.viewers > coalesce(v.viewers, 0) \
             ), stored AS ( \
               INSERT INTO content.project_views (project_id, day, viewers) \
               SELECT project_id, day, viewers FROM delta \
               ON CONFLICT (project_id, day) DO UPDATE SET viewers = EXCLUDED.viewers \
             ) \
             UPDATE content.projects p SET view_count = p.view_count + d.added, \
               active_at = greatest(p.active_at, $4) \
             FROM (SELECT project_id, sum(added)::bigint AS added FROM delta \
                   GROUP BY project_id) d \
             WHERE p.id = d.project_id RETURNING p.id AS project_id",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Date>, _>(&days)
        .bind::<Array<BigInt>, _>(&viewers)
        .bind::<Timestamptz, _>(now)
        .load(conn)
        .await?;
        Ok(changed.into_iter().map(|c| c.project_id).collect())
    })
    .await
}

/// Recomputes the trending rank of the public projects active since `since` (and zeroes
/// it for those that went quiet), with the formula in `TRENDING_FORMULA`. Returns the
/// projects whose rank changed.
pub async fn recompute_trending(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Changed {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let score = format!("CASE WHEN active_at >= $1 THEN {TRENDING_FORMULA} ELSE 0 END");
    // Under the fold's lock: one replica ranks at a time, and never while views (which
    // update the same rows in another order) are folded.
    let rows: Vec<Changed> = conn
        .transaction(async |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('content.fold_views'))")
                .execute(conn)
                .await?;
            diesel::sql_query(format!(
                "UPDATE content.projects SET trending = {score} \
         WHERE visibility = 2 AND (active_at >= $1 OR trending > 0) \
           AND trending IS DISTINCT FROM {score} \
         RETURNING id"
            ))
            .bind::<Timestamptz, _>(since)
            .bind::<Timestamptz, _>(now)
            .load(conn)
            .await
        })
        .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The trending rank (Hacker News gravity, with Lemmy's logarithm of the points):
///
/// ```text
/// points = likes + 3 × forks + 0.1 × views        (views: unique viewers per day, summed)
/// rank   = 10000 × ln(3 + points) / (age_hours + 2) ^ 1.8
/// ```
///
/// The logarithm keeps a viral project from ranking forever (ten times the points is not
/// ten times the rank); the age in hours with gravity 1.8 (Hacker News' constant) lets new
/// projects with a few likes pass old ones with many; the +2 hours keeps brand-new projects
/// from dividing by nearly zero. Forks weigh three likes (a fork costs the user more);
/// views a tenth (cheap, and easiest to inflate). Only projects active (liked, forked,
/// viewed or changed) in the last 7 days are ranked; the others rank 0.
pub const TRENDING_FORMULA: &str = "10000 * ln(3 + like_count + 3 * fork_count + 0.1 * view_count) \
     / power(greatest(extract(epoch FROM $2 - created_at) / 3600, 0) + 2, 1.8)";

#[cfg(test)]
mod tests {
    #[test]
    fn one_operand_queries_give_their_lexeme() {
        assert_eq!(super::single_lexeme("'chat'").as_deref(), Some("chat"));
        assert_eq!(super::single_lexeme("'o''neil'").as_deref(), Some("o'neil"));
        assert_eq!(super::single_lexeme("'chat':*"), None);
        assert_eq!(super::single_lexeme("'a' & 'b'"), None);
        assert_eq!(
            super::single_lexeme("'a'' & ''b'").as_deref(),
            Some("a' & 'b")
        );
        assert_eq!(super::single_lexeme("'a\\\\b'"), None);
        assert_eq!(super::single_lexeme("''"), None);
    }
}
