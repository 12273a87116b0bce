//! Migrations: plain SQL folders under the workspace's `migrations/`, embedded at build
//! time, applied under a PostgreSQL advisory lock and recorded with a checksum.
//!
//! A folder is named `<version>_<name>` (`2026-11-23-000000_create_schemas`, the layout
//! diesel's CLI uses) and holds `up.sql` and `down.sql`. Each migration runs in its own
//! transaction together with its bookkeeping row, unless `up.sql` starts with the line
//! `-- strata:no-transaction` (needed for `CREATE INDEX CONCURRENTLY`).
//!
//! Applying takes the session advisory lock [`MIGRATION_LOCK_KEY`] on a dedicated
//! connection, so replicas starting together queue behind each other and each migration
//! runs exactly once; the lock dies with the session if a migrator crashes. Every applied
//! migration's SHA-256 is stored, and [`Migrations::status`] reports drift when the file
//! changed after it was applied.

use std::borrow::Cow;
use std::path::Path;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use sha2::{Digest, Sha256};

use crate::error::Error;

include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));

/// Advisory-lock key of the migrator: "strata.m" in ASCII.
pub const MIGRATION_LOCK_KEY: i64 = 0x7374_7261_7461_2e6d;

/// First line of an `up.sql` that must run outside a transaction.
pub const NO_TRANSACTION_MARKER: &str = "-- strata:no-transaction";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS public.strata_schema_migrations (
    version      text PRIMARY KEY,
    name         text NOT NULL,
    checksum     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    execution_ms bigint NOT NULL
)";

/// One migration folder.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Sortable version, the folder name up to the first `_`.
    pub version: String,
    /// Human name, the folder name after the first `_`.
    pub name: String,
    /// Forward SQL.
    pub up: Cow<'static, str>,
    /// Reverse SQL, if the folder has one.
    pub down: Option<Cow<'static, str>>,
    /// Hex SHA-256 of `up`.
    pub checksum: String,
}

impl Migration {
    fn new(
        folder: &str,
        up: Cow<'static, str>,
        down: Option<Cow<'static, str>>,
    ) -> Result<Self, Error> {
        let (version, name) = folder.split_once('_').ok_or_else(|| Error::Migration {
            version: folder.to_owned(),
            problem: "folder name must be <version>_<name>".into(),
        })?;
        Ok(Self {
            version: version.to_owned(),
            name: name.to_owned(),
            checksum: hex::encode(Sha256::digest(up.as_bytes())),
            up,
            down,
        })
    }

    fn runs_in_transaction(&self) -> bool {
        !self.up.trim_start().starts_with(NO_TRANSACTION_MARKER)
    }
}

/// State of one migration in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Applied, and the file still matches what was applied.
    Applied {
        /// When it was applied.
        applied_at: DateTime<Utc>,
    },
    /// Known here, not applied.
    Pending,
    /// Applied, but the file changed afterwards.
    Drifted {
        /// When it was applied.
        applied_at: DateTime<Utc>,
        /// Checksum recorded at apply time.
        applied_checksum: String,
    },
    /// Applied to the database but unknown to this binary (the database is ahead).
    Unknown {
        /// When it was applied.
        applied_at: DateTime<Utc>,
    },
}

/// One row of [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// Version.
    pub version: String,
    /// Name.
    pub name: String,
    /// State.
    pub state: State,
}

/// Every known and every applied migration, by version.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Entries ordered by version.
    pub entries: Vec<StatusEntry>,
}

impl Status {
    fn versions(&self, f: impl Fn(&State) -> bool) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| f(&e.state))
            .map(|e| e.version.clone())
            .collect()
    }

    /// Versions applied with a matching checksum.
    pub fn applied(&self) -> Vec<String> {
        self.versions(|s| matches!(s, State::Applied { .. }))
    }

    /// Versions not yet applied.
    pub fn pending(&self) -> Vec<String> {
        self.versions(|s| matches!(s, State::Pending))
    }

    /// Versions whose file changed after being applied.
    pub fn drifted(&self) -> Vec<String> {
        self.versions(|s| matches!(s, State::Drifted { .. }))
    }

    /// Versions applied by a newer binary.
    pub fn unknown(&self) -> Vec<String> {
        self.versions(|s| matches!(s, State::Unknown { .. }))
    }

    /// Newest applied version (drifted and unknown included).
    pub fn latest_applied(&self) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| !matches!(e.state, State::Pending))
            .map(|e| e.version.as_str())
    }
}

#[derive(QueryableByName)]
struct AppliedRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    checksum: String,
    #[diesel(sql_type = Timestamptz)]
    applied_at: DateTime<Utc>,
}

/// An ordered set of migrations.
#[derive(Debug, Clone)]
pub struct Migrations {
    list: Vec<Migration>,
}

impl Migrations {
    /// The migrations compiled into this binary.
    pub fn embedded() -> Result<Self, Error> {
        let list = EMBEDDED
            .iter()
            .map(|(folder, up, down)| {
                Migration::new(folder, Cow::Borrowed(up), down.map(Cow::Borrowed))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { list })
    }

    /// The migrations in a directory of `<version>_<name>/up.sql` folders, read now.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let io = |e: std::io::Error| Error::Migration {
            version: dir.display().to_string(),
            problem: e.to_string(),
        };
        let mut list = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let up = path.join("up.sql");
            if !up.is_file() {
                continue;
            }
            let folder = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let down = path.join("down.sql");
            let down = if down.is_file() {
                Some(Cow::Owned(std::fs::read_to_string(down).map_err(io)?))
            } else {
                None
            };
            list.push(Migration::new(
                &folder,
                Cow::Owned(std::fs::read_to_string(up).map_err(io)?),
                down,
            )?);
        }
        list.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(Self { list })
    }

    /// The migrations, oldest first.
    pub fn list(&self) -> &[Migration] {
        &self.list
    }

    /// One checksum over every migration (versions and `up.sql` checksums); changes
    /// whenever any migration is added or edited. Keys the test kit's template database.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for m in &self.list {
            hasher.update(m.version.as_bytes());
            hasher.update(m.checksum.as_bytes());
            if let Some(down) = &m.down {
                hasher.update(down.as_bytes());
            }
        }
        hex::encode(hasher.finalize())
    }

    /// Applies every pending migration, in order, under the migration advisory lock.
    /// Returns the versions this call applied (empty when another replica got there
    /// first). `conn` should be a dedicated connection: the lock belongs to its session.
    pub async fn run(&self, conn: &mut AsyncPgConnection) -> Result<Vec<String>, Error> {
        with_lock(conn, async |conn| {
            let status = self.status_unlocked(conn).await?;
            let pending = status.pending();
            for version in status.unknown() {
                tracing::warn!(migration.version = %version, "database has a migration this binary does not know");
            }
            let mut applied = Vec::new();
            for migration in self.list.iter().filter(|m| pending.contains(&m.version)) {
                let started = std::time::Instant::now();
                apply(conn, migration).await?;
                tracing::info!(
                    migration.version = %migration.version,
                    migration.name = %migration.name,
                    migration.duration_ms = started.elapsed().as_millis() as u64,
                    "applied migration"
                );
                applied.push(migration.version.clone());
            }
            Ok(applied)
        })
        .await
    }

    /// Reverts the newest applied migration with its `down.sql`, under the lock.
    /// Returns its version, or `None` when nothing is applied.
    pub async fn revert_last(&self, conn: &mut AsyncPgConnection) -> Result<Option<String>, Error> {
        with_lock(conn, async |conn| {
            let status = self.status_unlocked(conn).await?;
            let Some(version) = status.latest_applied().map(str::to_owned) else {
                return Ok(None);
            };
            let migration = self.list.iter().find(|m| m.version == version).ok_or_else(|| Error::Migration {
                version: version.clone(),
                problem: "is applied but unknown to this binary; revert it with the binary that applied it".into(),
            })?;
            let down = migration.down.as_deref().ok_or_else(|| Error::Migration {
                version: version.clone(),
                problem: "has no down.sql".into(),
            })?;
            let forget = format!("DELETE FROM public.strata_schema_migrations WHERE version = '{}'", escape(&version));
            if migration.runs_in_transaction() {
                let sql = format!("{down};\n{forget}");
                conn.transaction(async |c| c.batch_execute(&sql).await)
                    .await
                    .map_err(|e| migration_error(&version, e))?;
            } else {
                // The bookkeeping in a round trip of its own: with the down.sql in one simple
                // query it would form an implicit transaction block, where CONCURRENTLY
                // cannot run. (So a no-transaction down.sql holds one statement, as its
                // up.sql does.)
                conn.batch_execute(down).await.map_err(|e| migration_error(&version, e))?;
                conn.batch_execute(&forget).await.map_err(|e| migration_error(&version, e))?;
            }
            tracing::info!(migration.version = %version, "reverted migration");
            Ok(Some(version))
        })
        .await
    }

    /// Compares the migrations here with those recorded in the database. Takes no lock.
    pub async fn status(&self, conn: &mut AsyncPgConnection) -> Result<Status, Error> {
        self.status_unlocked(conn).await
    }

    async fn status_unlocked(&self, conn: &mut AsyncPgConnection) -> Result<Status, Error> {
        let exists: Vec<Exists> = sql_query(
            "SELECT to_regclass('public.strata_schema_migrations') IS NOT NULL AS present",
        )
        .load(conn)
        .await?;
        let applied: Vec<AppliedRow> = if exists.iter().any(|e| e.present) {
            sql_query("SELECT version, name, checksum, applied_at FROM public.strata_schema_migrations ORDER BY version")
                .load(conn)
                .await?
        } else {
            Vec::new()
        };
        let mut entries: Vec<StatusEntry> = self
            .list
            .iter()
            .map(|m| {
                let state = match applied.iter().find(|a| a.version == m.version) {
                    None => State::Pending,
                    Some(a) if a.checksum == m.checksum => State::Applied {
                        applied_at: a.applied_at,
                    },
                    Some(a) => State::Drifted {
                        applied_at: a.applied_at,
                        applied_checksum: a.checksum.clone(),
                    },
                };
                StatusEntry {
                    version: m.version.clone(),
                    name: m.name.clone(),
                    state,
                }
            })
            .collect();
        entries.extend(
            applied
                .iter()
                .filter(|a| !self.list.iter().any(|m| m.version == a.version))
                .map(|a| StatusEntry {
                    version: a.version.clone(),
                    name: a.name.clone(),
                    state: State::Unknown {
                        applied_at: a.applied_at,
                    },
                }),
        );
        entries.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(Status { entries })
    }
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

/// Runs `f` holding the migration advisory lock, creating the bookkeeping table first;
/// the lock is released whatever `f` returns.
#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

async fn with_lock<T>(
    conn: &mut AsyncPgConnection,
    f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    // Waiting for another replica's migration, or building a large index, may take longer
    // than the pool's statement timeout; this session is the migrator's alone.
    conn.batch_execute("SET statement_timeout = 0").await?;
    // Polled, not waited for: a session blocked in `pg_advisory_lock` holds a snapshot,
    // and `CREATE INDEX CONCURRENTLY` in the lock holder's migration waits for every
    // snapshot older than its own, so the two would deadlock.
    let mut backoff = std::time::Duration::from_millis(20);
    loop {
        let locked: Vec<Locked> = sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
            .load(conn)
            .await?;
        if locked.iter().any(|l| l.locked) {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
    }
    // Created under the lock: concurrent `CREATE TABLE IF NOT EXISTS` can still collide
    // on the catalog's unique indexes.
    let result = match conn.batch_execute(CREATE_TABLE).await {
        Ok(()) => f(conn).await,
        Err(e) => Err(e.into()),
    };
    let unlocked = sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(conn)
        .await;
    let value = result?;
    unlocked?;
    Ok(value)
}

async fn apply(conn: &mut AsyncPgConnection, migration: &Migration) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let record = |elapsed_ms: u128| {
        format!(
            "INSERT INTO public.strata_schema_migrations (version, name, checksum, execution_ms) VALUES ('{}', '{}', '{}', {elapsed_ms})",
            escape(&migration.version),
            escape(&migration.name),
            migration.checksum
        )
    };
    let version = &migration.version;
    if migration.runs_in_transaction() {
        let up = migration.up.as_ref();
        conn.transaction(async |c| {
            c.batch_execute(up).await?;
            c.batch_execute(&record(started.elapsed().as_millis()))
                .await
        })
        .await
        .map_err(|e| migration_error(version, e))
    } else {
        // An interrupted `CREATE INDEX CONCURRENTLY` leaves an INVALID index that
        // `IF NOT EXISTS` would then take for done: drop such leftovers first, and refuse to
        // record a migration that leaves one.
        for name in invalid_indexes(conn).await? {
            tracing::warn!(index = %name, "dropping an invalid index left by an interrupted migration");
            conn.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await
                .map_err(|e| migration_error(version, e))?;
        }
        conn.batch_execute(&migration.up)
            .await
            .map_err(|e| migration_error(version, e))?;
        let invalid = invalid_indexes(conn).await?;
        if !invalid.is_empty() {
            return Err(Error::Migration {
                version: version.clone(),
                problem: format!("left invalid indexes {}; run it again", invalid.join(", ")),
            });
        }
        conn.batch_execute(&record(started.elapsed().as_millis()))
            .await
            .map_err(|e| migration_error(version, e))
    }
}

#[derive(QueryableByName)]
struct IndexName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The INVALID indexes of the application's schemas, schema-qualified and quoted.
async fn invalid_indexes(conn: &mut AsyncPgConnection) -> Result<Vec<String>, Error> {
    let rows: Vec<IndexName> = sql_query(
        "SELECT format('%I.%I', n.nspname, c.relname) AS name
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT i.indisvalid AND n.nspname = ANY($1)",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(crate::stats::APP_SCHEMAS)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

fn migration_error(version: &str, err: diesel::result::Error) -> Error {
    Error::Migration {
        version: version.to_owned(),
        problem: err.to_string(),
    }
}

/// Doubles single quotes for a SQL literal; versions and names come from folder names.
fn escape(s: &str) -> String {
    s.replace('\'', "''")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_ordered_named_and_reversible() {
        let migrations = Migrations::embedded().unwrap();
        assert!(!migrations.list().is_empty());
        let versions: Vec<_> = migrations
            .list()
            .iter()
            .map(|m| m.version.clone())
            .collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions must be unique and ordered");
        for m in migrations.list() {
            assert!(!m.name.is_empty());
            assert!(m.down.is_some(), "{} has no down.sql", m.version);
            assert_eq!(m.checksum.len(), 64);
        }
    }

    #[test]
    fn folder_names_split_at_first_underscore() {
        let m = Migration::new(
            "2026-01-01-000000_add_users_table",
            Cow::Borrowed("x"),
            None,
        )
        .unwrap();
        assert_eq!(
            (m.version.as_str(), m.name.as_str()),
            ("2026-01-01-000000", "add_users_table")
        );
        assert!(Migration::new("nounderscore", Cow::Borrowed("x"), None).is_err());
        let m = Migration::new(
            "1_x",
            Cow::Borrowed("-- strata:no-transaction\nCREATE INDEX CONCURRENTLY"),
            None,
        )
        .unwrap();
        assert!(!m.runs_in_transaction());
    }
}
