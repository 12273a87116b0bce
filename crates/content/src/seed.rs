//! Synthetic content for benchmarks, tests and demos (`strata seed content`).
//!
//! Rows are generated inside PostgreSQL (`INSERT … SELECT` over `generate_series`, a chunk
//! of items per statement, one writer per core), so loading 100,000 projects with a million
//! files costs no round trip per row while every index, foreign key and generated column is
//! still written as real traffic writes it. The data has the shape of a real platform:
//!
//! - owners follow a power law (owner 0 holds about a tenth of everything; the callers'
//!   own ids, [`SeedOptions::known_owners`], take the heaviest places);
//! - 70 % of projects are public; likes follow a power law (most projects have none, a few
//!   thousands) and are real rows of `content.project_likes`, so `like_count` agrees with
//!   them; forks and unique viewers are power laws too (viewers folded as one day's count);
//! - names, descriptions and tags draw words from [`VOCABULARY`] with a skew, so some words
//!   are common and most are rare, as in real text: searches for a rare word find a few
//!   projects, for a common one thousands;
//! - a tenth of public projects were active in the last week (and rank in trending, which
//!   is computed at the end as the scheduled task computes it);
//! - files sit in a handful of folders with realistic extensions; a third of them share
//!   their contents with other projects (licences, configs), so content addressing shows;
//! - prompts live in folders, with one to four versions and, for most, a `production`
//!   label (with its history); agents likewise.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use strata_storage::config::DbConfig;
use strata_storage::pool::{dedicated_connection, run_workers};
use uuid::Uuid;

use crate::store::projects;

/// The words of seeded names, descriptions and tags, the most frequent first (they are
/// drawn with a skew towards the start). Benchmarks build their searches from them.
pub const VOCABULARY: &[&str] = &[
    "chat",
    "agent",
    "vector",
    "search",
    "data",
    "model",
    "prompt",
    "api",
    "web",
    "image",
    "assistant",
    "pipeline",
    "embedding",
    "support",
    "code",
    "review",
    "summary",
    "graph",
    "document",
    "analytics",
    "tool",
    "python",
    "rust",
    "workflow",
    "dashboard",
    "bot",
    "retrieval",
    "knowledge",
    "translation",
    "classifier",
    "voice",
    "speech",
    "vision",
    "recommendation",
    "finance",
    "legal",
    "medical",
    "education",
    "music",
    "video",
    "game",
    "weather",
    "travel",
    "shopping",
    "email",
    "calendar",
    "notes",
    "research",
    "paper",
    "dataset",
    "benchmark",
    "evaluation",
    "monitoring",
    "scraper",
    "crawler",
    "parser",
    "compiler",
    "database",
    "cache",
    "queue",
    "stream",
    "scheduler",
    "planner",
    "memory",
    "reasoning",
    "math",
    "tutor",
    "quiz",
    "story",
    "poetry",
    "writer",
    "editor",
    "designer",
    "logo",
    "avatar",
    "photo",
    "diagram",
    "chart",
    "report",
    "invoice",
    "receipt",
    "contract",
    "resume",
    "interview",
    "hiring",
    "sales",
    "marketing",
    "seo",
    "social",
    "twitter",
    "reddit",
    "news",
    "sentiment",
    "moderation",
    "safety",
    "privacy",
    "security",
    "audit",
    "compliance",
    "kubernetes",
    "docker",
    "terraform",
    "cloud",
    "serverless",
    "edge",
    "mobile",
    "android",
    "ios",
    "browser",
    "extension",
    "plugin",
    "slack",
    "discord",
    "telegram",
    "whatsapp",
    "notion",
    "github",
    "jira",
    "crm",
    "erp",
    "inventory",
    "logistics",
    "robotics",
    "drone",
    "iot",
    "sensor",
    "energy",
    "climate",
    "biology",
    "chemistry",
    "physics",
    "astronomy",
    "geography",
    "history",
    "philosophy",
    "language",
    "grammar",
    "spelling",
    "ocr",
    "pdf",
    "spreadsheet",
    "sql",
    "regex",
    "json",
    "yaml",
    "markdown",
    "latex",
    "slides",
    "meeting",
    "transcript",
    "podcast",
    "youtube",
    "recipe",
    "fitness",
    "nutrition",
    "sleep",
    "meditation",
    "therapy",
    "coach",
    "mentor",
    "career",
    "startup",
    "pitch",
    "investor",
    "crypto",
    "trading",
    "portfolio",
    "budget",
    "tax",
    "insurance",
    "real-estate",
    "mortgage",
    "customer",
    "ticket",
    "helpdesk",
    "faq",
    "onboarding",
    "feedback",
    "survey",
    "forms",
    "automation",
    "zapier",
    "webhook",
    "rag",
    "finetune",
    "lora",
    "diffusion",
    "transformer",
    "llama",
    "mistral",
    "claude",
    "gpt",
    "gemini",
    "ollama",
    "langchain",
    "llamaindex",
    "autogen",
    "crewai",
    "semantic",
    "hybrid",
];

/// Project types, the most frequent first.
pub const PROJECT_TYPES: &[&str] = &["app", "notebook", "library", "agent", "dataset", "template"];

/// Agent types, the most frequent first.
pub const AGENT_TYPES: &[&str] = &["assistant", "coder", "researcher", "critic", "router"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOptions {
    /// Projects to insert.
    pub projects: u64,
    /// Files of each project.
    pub files_per_project: u32,
    /// Agents to insert.
    pub agents: u64,
    /// Prompts to insert.
    pub prompts: u64,
    /// Distinct owners (power law: owner 0 holds the most).
    pub owners: u32,
    /// Ids that take the heaviest owners' places (owner 0 first), so that callers who
    /// can sign in own seeded objects; the other owners get synthetic ids.
    pub known_owners: Vec<Uuid>,
    /// Items per statement.
    pub chunk: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            projects: 10_000,
            files_per_project: 10,
            agents: 10_000,
            prompts: 10_000,
            owners: 1_000,
            known_owners: Vec::new(),
            chunk: 1_000,
        }
    }
}

/// What was inserted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Projects.
    pub projects: u64,
    /// Files (rows of `content.project_files`).
    pub files: u64,
    /// Likes (rows of `content.project_likes`).
    pub likes: u64,
    /// Agents.
    pub agents: u64,
    /// Prompts.
    pub prompts: u64,
}

/// The synthetic id of seeded owner `n` (when no known owner takes its place).
pub fn seed_owner(n: u32) -> Uuid {
    Uuid::from_u128(0x0000_0002_0000_4000_8000_0000_0000_0000 | u128::from(n))
}

/// What a chunk inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Projects,
    Prompts,
    Agents,
}

/// Inserts what `options` asks over `workers` connections made with `db`, calling
/// `progress(done, total)` (items: projects, prompts and agents) about twice a second and
/// at the end; then ranks trending and analyzes the tables.
pub async fn seed(
    db: &DbConfig,
    options: &SeedOptions,
    workers: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<Seeded, strata_storage::Error> {
    let now = Utc::now();
    let mut config = db.clone();
    // A chunk writes every index for thousands of rows: no pool-sized timeout.
    config.statement_timeout = std::time::Duration::ZERO;
    // Ids are unique across runs: each run hashes its own tag into them.
    let run = Uuid::new_v4().simple().to_string();
    let chunk = options.chunk.max(1);
    let work: Vec<(Kind, u64, u64)> = [
        (Kind::Projects, options.projects),
        (Kind::Prompts, options.prompts),
        (Kind::Agents, options.agents),
    ]
    .into_iter()
    .flat_map(|(kind, total)| {
        (0..total.div_ceil(chunk)).map(move |c| (kind, c * chunk, (c * chunk + chunk).min(total)))
    })
    .collect();
    let total = options.projects + options.prompts + options.agents;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let counts = std::sync::Mutex::new(Seeded::default());
    let worker = async || -> Result<(), strata_storage::Error> {
        let mut conn = dedicated_connection(&config).await?;
        // A bulk load: a crash may lose the last chunks written (run it again), and no
        // chunk waits for its WAL flush meanwhile.
        conn.batch_execute("SET synchronous_commit = off").await?;
        loop {
            let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
            let Some(&(kind, first, end)) = work.get(i) else {
                return Ok(());
            };
            let chunk = Chunk {
                options,
                run: &run,
                now,
                first: i64::try_from(first).unwrap_or(i64::MAX),
                last: i64::try_from(end).unwrap_or(i64::MAX) - 1,
            };
            let made = match kind {
                Kind::Projects => chunk.projects(&mut conn).await?,
                Kind::Prompts => chunk.prompts(&mut conn).await?,
                Kind::Agents => chunk.agents(&mut conn).await?,
            };
            if let Ok(mut counts) = counts.lock() {
                counts.projects += made.projects;
                counts.files += made.files;
                counts.likes += made.likes;
                counts.prompts += made.prompts;
                counts.agents += made.agents;
            }
            done.fetch_add(end - first, Ordering::Relaxed);
        }
    };
    run_workers(workers, worker, &done, total, &mut progress).await?;
    let mut conn = dedicated_connection(&config).await?;
    // Trending as the scheduled task ranks it, then statistics now rather than whenever
    // autovacuum gets to them (the planner needs them for the plans the indexes serve).
    projects::recompute_trending(&mut conn, now - chrono::Duration::days(7), now).await?;
    conn.batch_execute(
        "ANALYZE content.projects, content.project_likes, content.project_views, \
         content.project_terms, content.search_words, \
         content.blobs, content.project_files, content.prompts, content.prompt_versions, \
         content.prompt_labels, content.agents, content.agent_versions, content.agent_labels",
    )
    .await?;
    Ok(counts.lock().map(|c| *c).unwrap_or_default())
}

/// One statement's worth of items: numbers `first..=last` of their kind.
struct Chunk<'a> {
    options: &'a SeedOptions,
    run: &'a str,
    now: DateTime<Utc>,
    first: i64,
    last: i64,
}

#[derive(diesel::QueryableByName)]
struct Made {
    #[diesel(sql_type = BigInt)]
    items: i64,
    #[diesel(sql_type = BigInt)]
    files: i64,
    #[diesel(sql_type = BigInt)]
    likes: i64,
}

/// The SQL of a word of [`VOCABULARY`] (bound as `$words`) drawn with a skew to the start.
macro_rules! word {
    () => {
        "($7::text[])[1 + floor(pow(random(), 2) * cardinality($7::text[]))::int]"
    };
}

/// The SQL of the owner of a generated row: the power-law rank `rank`, a known owner's id
/// when one takes that place.
const OWNER: &str = "COALESCE(($1::uuid[])[rank + 1], \
     ('00000002-0000-4000-8000-' || lpad(to_hex(rank), 12, '0'))::uuid)";

/// The SQL of a UUIDv7 made at `created_at`, unique per run (`$3`) and number `n`.
const ID: &str = "(lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0') \
     || '7' || substr(md5($3 || 'a' || n), 1, 3) || '8' || substr(md5($3 || 'b' || n), 1, 15))::uuid";

impl Chunk<'_> {
    /// Runs `sql` with the parameters every chunk's statement shares: `$1` known owners,
    /// `$2` owners, `$3` run, `$4` first, `$5` last, `$6` now, `$7` vocabulary, `$8` total
    /// of the kind, `$9` files per project.
    async fn run(
        &self,
        conn: &mut AsyncPgConnection,
        sql: String,
        total: u64,
    ) -> Result<Made, diesel::result::Error> {
        diesel::sql_query(sql)
            .bind::<Array<SqlUuid>, _>(&self.options.known_owners)
            .bind::<Integer, _>(i32::try_from(self.options.owners.max(1)).unwrap_or(i32::MAX))
            .bind::<Text, _>(self.run)
            .bind::<BigInt, _>(self.first)
            .bind::<BigInt, _>(self.last)
            .bind::<Timestamptz, _>(self.now)
            .bind::<Array<Text>, _>(VOCABULARY)
            .bind::<BigInt, _>(i64::try_from(total.max(1)).unwrap_or(i64::MAX))
            .bind::<Integer, _>(i32::try_from(self.options.files_per_project).unwrap_or(i32::MAX))
            .get_result(conn)
            .await
    }

    /// The generated rows' common columns: number, creation time (spread over two years
    /// in order, so time-led indexes grow at their right edge) and owner rank.
    fn generated(columns: &str) -> String {
        format!(
            "gen AS ( \
               SELECT g.n, \
                 $6::timestamptz - (63072000.0 * ($8 - g.n) / $8 + random() * 60) * interval '1 second' AS created_at, \
                 floor(pow(random(), 3) * $2)::int AS rank, {columns} \
               FROM generate_series($4::bigint, $5::bigint) AS g(n)), \
             rows AS (SELECT gen.*, {ID} AS id, {OWNER} AS owner_id FROM gen)"
        )
    }

    async fn projects(
        &self,
        conn: &mut AsyncPgConnection,
    ) -> Result<Seeded, diesel::result::Error> {
        let types = sql_array(PROJECT_TYPES);
        let sql = format!(
            "WITH {generated}, \
             p AS ( \
               SELECT rows.*, \
                 CASE WHEN is_public THEN least(floor(pow(1 - r_like, -0.7))::bigint - 1, 20000) ELSE 0 END AS like_count, \
                 CASE WHEN is_public THEN least(floor(pow(1 - r_fork, -0.5))::bigint - 1, 2000) ELSE 0 END AS fork_count, \
                 created_at + r_upd * ($6 - created_at) AS updated_at \
               FROM rows), \
             q AS ( \
               SELECT p.*, \
                 CASE WHEN is_public THEN floor((like_count + 1) * (2 + 40 * r_view))::bigint ELSE 0 END AS view_count, \
                 CASE WHEN r_act < 0.1 THEN $6 - r_act * 10 * interval '7 days' ELSE updated_at END AS active_at \
               FROM p), \
             projects_in AS ( \
               INSERT INTO content.projects (id, owner_id, name, description, visibility, type, \
                 tags, like_count, fork_count, view_count, featured, trending, active_at, \
                 created_at, updated_at, file_count) \
               SELECT id, owner_id, w1 || ' ' || w2 || ' ' || w3, \
                 'A ' || w4 || ' ' || w5 || ' for ' || w6 || ' and ' || w7 || ', built on ' || w8 || '.', \
                 CASE WHEN is_public THEN 2 ELSE 1 END, \
                 {types}[1 + floor(pow(random(), 1.5) * {n_types})::int], \
                 CASE WHEN r_tags < 0.3 OR t2 = t1 THEN ARRAY[t1] \
                      WHEN r_tags < 0.8 OR t3 IN (t1, t2) THEN ARRAY[t1, t2] \
                      ELSE ARRAY[t1, t2, t3] END, \
                 like_count, fork_count, view_count, is_public AND r_feat < 0.002, 0, \
                 greatest(active_at, created_at), created_at, updated_at, $9 \
               FROM q RETURNING id), \
             views_in AS ( \
               INSERT INTO content.project_views (project_id, day, viewers) \
               SELECT id, (greatest(active_at, created_at) AT TIME ZONE 'UTC')::date, view_count \
               FROM q WHERE view_count > 0), \
             likes_in AS ( \
               INSERT INTO content.project_likes (project_id, user_id, created_at) \
               SELECT id, md5(id::text || k)::uuid, created_at + random() * ($6 - created_at) \
               FROM q, generate_series(1, like_count) AS k RETURNING 1), \
             files AS ( \
               SELECT q.id AS project_id, q.created_at, q.updated_at, f.k, \
                 (ARRAY['src', 'src/lib', 'src/components', 'tests', 'docs', 'scripts', 'config', \
                        'assets'])[1 + floor(pow(random(), 1.5) * 8)::int] AS dir, \
                 floor(pow(random(), 1.5) * 12)::int AS e, \
                 {word} AS w, random() AS r_shared, floor(pow(random(), 2) * 40)::int AS lines \
               FROM q, generate_series(1, $9::int) AS f(k)), \
             contents AS ( \
               SELECT files.*, \
                 dir || '/' || w || '_' || k || '.' || \
                   (ARRAY['rs', 'py', 'ts', 'js', 'go', 'md', 'json', 'yaml', 'toml', 'sql', \
                          'sh', 'css'])[1 + e] AS path, \
                 (ARRAY['rust', 'python', 'typescript', 'javascript', 'go', 'markdown', 'json', \
                        'yaml', 'toml', 'sql', 'shell', 'css'])[1 + e] AS language, \
                 convert_to(CASE WHEN r_shared < 0.33 \
                   THEN 'shared file ' || floor(r_shared * 600)::int || E'\\n' \
                        || repeat('Permission is hereby granted, free of charge.' || E'\\n', 20) \
                   ELSE '// ' || w || ' ' || k || ' of ' || project_id || E'\\n' \
                        || repeat('let ' || w || ' = compute(' || k || ');' || E'\\n', 1 + lines) \
                 END, 'UTF8') AS content \
               FROM files), \
             hashed AS (SELECT contents.*, sha256(content) AS hash FROM contents), \
             blobs_in AS ( \
               INSERT INTO content.blobs (hash, size, content) \
               SELECT DISTINCT ON (hash) hash, length(content), content FROM hashed \
               ON CONFLICT (hash) DO NOTHING), \
             files_in AS ( \
               INSERT INTO content.project_files (project_id, path, language, hash, size, \
                 created_at, updated_at) \
               SELECT project_id, path, language, hash, length(content), created_at, \
                 created_at + random() * (updated_at - created_at) \
               FROM hashed RETURNING 1) \
             SELECT (SELECT count(*) FROM projects_in) AS items, \
               (SELECT count(*) FROM files_in) AS files, \
               (SELECT count(*) FROM likes_in) AS likes",
            generated = Self::generated(&format!(
                "random() < 0.7 AS is_public, random() AS r_like, random() AS r_fork, \
                 random() AS r_view, random() AS r_upd, random() AS r_act, random() AS r_feat, \
                 random() AS r_tags, {w} AS w1, {w} AS w2, {w} AS w3, {w} AS w4, {w} AS w5, \
                 {w} AS w6, {w} AS w7, {w} AS w8, {w} AS t1, {w} AS t2, {w} AS t3",
                w = word!()
            )),
            word = word!(),
            n_types = PROJECT_TYPES.len(),
        );
        let made = self.run(conn, sql, self.options.projects).await?;
        Ok(Seeded {
            projects: count(made.items),
            files: count(made.files),
            likes: count(made.likes),
            ..Seeded::default()
        })
    }

    async fn prompts(&self, conn: &mut AsyncPgConnection) -> Result<Seeded, diesel::result::Error> {
        let sql = format!(
            "WITH {generated}, \
             items AS ( \
               INSERT INTO content.prompts (id, owner_id, name, tags, is_favorite, last_number, \
                 created_at, updated_at) \
               SELECT id, owner_id, 'folder' || (n % 37) || '/' || w1 || '-' || w2 || '-' || substr($3, 1, 6) || n, \
                 ARRAY[t1], r_fav < 0.05, versions, created_at, \
                 created_at + versions * interval '1 hour' \
               FROM rows RETURNING 1), \
             versions_in AS ( \
               INSERT INTO content.prompt_versions (item_id, version, template, variables, \
                 model_parameters, created_by, created_at) \
               SELECT id, v, 'You are a ' || w1 || ' assistant (v' || v || '). Answer {{{{question}}}} \
                 about {{{{topic}}}} for a ' || w2 || ' team.', ARRAY['question', 'topic'], \
                 jsonb_build_object('temperature', round((v * 0.1)::numeric, 1), 'max_tokens', 1024), \
                 owner_id, created_at + v * interval '1 hour' \
               FROM rows, generate_series(1, versions) AS v), \
             {labels} \
             SELECT (SELECT count(*) FROM items) AS items, 0::bigint AS files, 0::bigint AS likes",
            generated = Self::generated(&Self::versioned_columns()),
            labels = Self::labels("prompt"),
        );
        let made = self.run(conn, sql, self.options.prompts).await?;
        Ok(Seeded {
            prompts: count(made.items),
            ..Seeded::default()
        })
    }

    async fn agents(&self, conn: &mut AsyncPgConnection) -> Result<Seeded, diesel::result::Error> {
        let types = sql_array(AGENT_TYPES);
        let sql = format!(
            "WITH {generated}, \
             items AS ( \
               INSERT INTO content.agents (id, owner_id, name, type, status, last_number, \
                 created_at, updated_at) \
               SELECT id, owner_id, w1 || ' ' || w2 || ' agent', \
                 {types}[1 + floor(pow(random(), 1.5) * {n_types})::int], \
                 CASE WHEN r_fav < 0.8 THEN 1 WHEN r_fav < 0.9 THEN 2 ELSE 3 END, versions, \
                 created_at, created_at + versions * interval '1 hour' \
               FROM rows RETURNING 1), \
             versions_in AS ( \
               INSERT INTO content.agent_versions (item_id, version, model, system_prompt, config, \
                 tools, created_by, created_at) \
               SELECT id, v, (ARRAY['gpt-4o', 'claude-3-5-sonnet', 'gemini-1.5-pro', \
                   'llama-3.1-70b'])[1 + (v + n) % 4], \
                 'You are a ' || w1 || ' agent for ' || w2 || ' tasks (v' || v || ').', \
                 jsonb_build_object('temperature', 0.2, 'max_steps', 10 + v), \
                 jsonb_build_array(jsonb_build_object('name', 'search_' || t1, \
                   'description', 'Searches ' || t1 || '.', 'parameters', \
                   jsonb_build_object('type', 'object', 'properties', \
                     jsonb_build_object('query', jsonb_build_object('type', 'string'))))), \
                 owner_id, created_at + v * interval '1 hour' \
               FROM rows, generate_series(1, versions) AS v), \
             {labels} \
             SELECT (SELECT count(*) FROM items) AS items, 0::bigint AS files, 0::bigint AS likes",
            generated = Self::generated(&Self::versioned_columns()),
            labels = Self::labels("agent"),
            n_types = AGENT_TYPES.len(),
        );
        let made = self.run(conn, sql, self.options.agents).await?;
        Ok(Seeded {
            agents: count(made.items),
            ..Seeded::default()
        })
    }

    /// The generated columns of prompts and agents: words, a coin, one to four versions
    /// (most have one) and whether `production` is set.
    fn versioned_columns() -> String {
        format!(
            "{w} AS w1, {w} AS w2, {w} AS t1, random() AS r_fav, \
             1 + floor(pow(random(), 3) * 4)::int AS versions, random() < 0.6 AS production",
            w = word!()
        )
    }

    /// The `production` label of most items (on the newest version) and its one move.
    fn labels(kind: &str) -> String {
        format!(
            "labels_in AS ( \
               INSERT INTO content.{kind}_labels (item_id, label, versions, weights, updated_by, \
                 updated_at) \
               SELECT id, 'production', ARRAY[versions], ARRAY[100], owner_id, \
                 created_at + versions * interval '1 hour' \
               FROM rows WHERE production), \
             moves_in AS ( \
               INSERT INTO content.{kind}_label_moves (item_id, label, from_versions, \
                 from_weights, to_versions, to_weights, actor_id, moved_at) \
               SELECT id, 'production', '{{}}', '{{}}', ARRAY[versions], ARRAY[100], owner_id, \
                 created_at + versions * interval '1 hour' \
               FROM rows WHERE production)"
        )
    }
}

/// `words` as an SQL array literal (they are constants of this file: no quoting needed
/// beyond the quotes).
fn sql_array(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    format!("(ARRAY[{}])", quoted.join(", "))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The first of `owner`'s agents, conversations and workflows with these names (how the
/// demo of `strata serve --demo` finds its objects again at the next start).
#[derive(Debug, diesel::QueryableByName)]
pub struct Named {
    /// The agent named so.
    #[diesel(sql_type = diesel::sql_types::Nullable<SqlUuid>)]
    pub agent_id: Option<Uuid>,
    /// The conversation titled so.
    #[diesel(sql_type = diesel::sql_types::Nullable<SqlUuid>)]
    pub conversation_id: Option<Uuid>,
    /// The workflow named so.
    #[diesel(sql_type = diesel::sql_types::Nullable<SqlUuid>)]
    pub workflow_id: Option<Uuid>,
}

/// See [`Named`].
pub async fn named(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    agent: &str,
    conversation: &str,
    workflow: &str,
) -> diesel::QueryResult<Named> {
    diesel::sql_query(
        "SELECT \
           (SELECT id FROM content.agents \
            WHERE owner_id = $1 AND name = $2 ORDER BY created_at LIMIT 1) AS agent_id, \
           (SELECT id FROM content.conversations \
            WHERE owner_id = $1 AND title = $3 ORDER BY created_at LIMIT 1) AS conversation_id, \
           (SELECT id FROM content.workflows \
            WHERE owner_id = $1 AND name = $4 ORDER BY created_at LIMIT 1) AS workflow_id",
    )
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(agent)
    .bind::<Text, _>(conversation)
    .bind::<Text, _>(workflow)
    .get_result(conn)
    .await
}
