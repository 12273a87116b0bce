//! Immutable versions and movable labels, shared by every versioned resource (prompts,
//! agents): the label rules, version selection, the stable weighted pick, and the SQL of
//! labels, their history and version deletion over tables of one shape (see the
//! migration: `<kind>s`, `<kind>_versions`, `<kind>_labels`, `<kind>_label_moves`, each
//! keyed by `item_id`).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::{
    Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use strata_errors::Violations;
use strata_proto::content as pb;
use strata_runtime::time::timestamp;
use uuid::Uuid;

use crate::ContentError;
use crate::validate::is_label_name;

/// The label the service keeps on the newest version.
pub const LATEST: &str = "latest";
/// The label reads select when none is named.
pub const PRODUCTION: &str = "production";
/// Most versions one label may split traffic between.
pub const MAX_SPLIT: usize = 10;
/// Largest weight of one version of a label.
pub const MAX_WEIGHT: i32 = 10_000;

/// The tables of one versioned resource (names from code, never from input).
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// The resource's table, e.g. `content.prompts`.
    pub items: &'static str,
    /// Its versions.
    pub versions: &'static str,
    /// Its labels.
    pub labels: &'static str,
    /// Every move of its labels.
    pub moves: &'static str,
    /// The columns of a version row (`item_id`, `version`, then the body's).
    pub version_columns: &'static str,
    /// What a missing item is called in NOT_FOUND answers.
    pub what: &'static str,
}

/// Where a label points: versions and their weights, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Version numbers, distinct.
    pub versions: Vec<i32>,
    /// Their weights, each ≥ 1.
    pub weights: Vec<i32>,
}

impl Target {
    /// One version.
    pub fn single(version: i32) -> Self {
        Self {
            versions: vec![version],
            weights: vec![1],
        }
    }

    /// As proto.
    pub fn proto(&self) -> Vec<pb::WeightedVersion> {
        self.versions
            .iter()
            .zip(&self.weights)
            .map(|(&version, &weight)| pb::WeightedVersion { version, weight })
            .collect()
    }

    /// From proto (as stored: already checked).
    pub fn of(versions: &[pb::WeightedVersion]) -> Self {
        Self {
            versions: versions.iter().map(|w| w.version).collect(),
            weights: versions.iter().map(|w| w.weight).collect(),
        }
    }

    /// The version for `subject` under label `label` of `item`: a weighted target picks by
    /// a stable hash of the three, so a subject keeps its version while the weights stay;
    /// without a subject, the heaviest version (the first of equals).
    pub fn pick(&self, item: Uuid, label: &str, subject: &str) -> i32 {
        if self.versions.len() <= 1 || subject.is_empty() {
            let mut best = 0;
            for (i, w) in self.weights.iter().enumerate() {
                if *w > self.weights[best] {
                    best = i;
                }
            }
            return self.versions.get(best).copied().unwrap_or_default();
        }
        let total: u64 = self
            .weights
            .iter()
            .map(|w| u64::from(w.unsigned_abs()))
            .sum();
        let mut hash = Sha256::new();
        hash.update(item.as_bytes());
        hash.update((label.len() as u64).to_be_bytes());
        hash.update(label.as_bytes());
        hash.update(subject.as_bytes());
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let mut point = u64::from_be_bytes(first) % total.max(1);
        for (version, weight) in self.versions.iter().zip(&self.weights) {
            let weight = u64::from(weight.unsigned_abs());
            if point < weight {
                return *version;
            }
            point -= weight;
        }
        self.versions[self.versions.len() - 1]
    }
}

/// Checks a label a caller sets and where it points (`SetXLabel`).
pub fn check_label_target(
    v: &mut Violations,
    label: &str,
    versions: &[pb::WeightedVersion],
) -> Target {
    if label == LATEST {
        v.add("label", "latest is kept by the service and cannot be set");
    } else if !is_label_name(label) {
        v.add(
            "label",
            "must start with a lowercase letter and hold at most 63 lowercase letters, digits, \
             '-' or '_'",
        );
    }
    if versions.is_empty() || versions.len() > MAX_SPLIT {
        v.add("versions", format!("must name 1 to {MAX_SPLIT} versions"));
    }
    let single = versions.len() == 1;
    for (i, w) in versions.iter().enumerate() {
        if w.version < 1 {
            v.add(
                format!("versions[{i}].version"),
                "must be a version number (1 or more)",
            );
        }
        if versions[..i].iter().any(|o| o.version == w.version) {
            v.add(
                format!("versions[{i}].version"),
                "names a version already listed",
            );
        }
        if !single && !(1..=MAX_WEIGHT).contains(&w.weight) {
            v.add(
                format!("versions[{i}].weight"),
                format!("must be 1 to {MAX_WEIGHT}"),
            );
        }
    }
    if single {
        Target::single(versions[0].version)
    } else {
        Target::of(versions)
    }
}

/// The columns of a [`LabelRow`].
const LABEL_COLUMNS: &str = "label, versions, weights, updated_by, updated_at";

/// A label read from a row or the cache.
#[derive(Debug, Clone, QueryableByName)]
pub struct LabelRow {
    /// Name.
    #[diesel(sql_type = Text)]
    pub label: String,
    /// Versions.
    #[diesel(sql_type = Array<Integer>)]
    pub versions: Vec<i32>,
    /// Weights.
    #[diesel(sql_type = Array<Integer>)]
    pub weights: Vec<i32>,
    /// Who moved it last.
    #[diesel(sql_type = SqlUuid)]
    pub updated_by: Uuid,
    /// When.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

impl LabelRow {
    /// As proto.
    pub fn proto(&self) -> pb::Label {
        pb::Label {
            name: self.label.clone(),
            versions: Target {
                versions: self.versions.clone(),
                weights: self.weights.clone(),
            }
            .proto(),
            update_time: Some(timestamp(self.updated_at)),
            updated_by: self.updated_by.to_string(),
        }
    }
}

/// The `latest` label of an item whose newest version is `latest`, made at `at`.
pub fn latest_label(latest: i32, at: DateTime<Utc>) -> pb::Label {
    pb::Label {
        name: LATEST.into(),
        versions: Target::single(latest).proto(),
        update_time: Some(timestamp(at)),
        updated_by: String::new(),
    }
}

/// What a read selects: a version number, or a label's target and the label's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selected {
    /// This version.
    Version(i32),
    /// A label's target.
    Label(String, Target),
}

/// The version `selector` selects among `labels` (which include `latest`): a number as
/// is; a label's target; unset, `production` if set, else `latest`. An unknown label is
/// NOT_FOUND, like a missing version.
pub fn select(
    selector: Option<&pb::version_selector::Selector>,
    labels: &[pb::Label],
) -> Result<Selected, ContentError> {
    use pb::version_selector::Selector;
    let by_name = |name: &str| {
        labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| Selected::Label(l.name.clone(), Target::of(&l.versions)))
    };
    match selector {
        Some(Selector::Version(n)) if *n < 1 => Err(ContentError::invalid(
            "selector.version",
            "must be a version number (1 or more)",
        )),
        Some(Selector::Version(n)) => Ok(Selected::Version(*n)),
        Some(Selector::Label(name)) if !is_label_name(name) => Err(ContentError::invalid(
            "selector.label",
            "must be a label name",
        )),
        Some(Selector::Label(name)) => by_name(name).ok_or(ContentError::not_found("label")),
        None => by_name(PRODUCTION)
            .or_else(|| by_name(LATEST))
            .ok_or(ContentError::not_found("version")),
    }
}

/// The labels of `item`, by name.
pub async fn labels_of(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
) -> Result<Vec<LabelRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT {LABEL_COLUMNS} FROM {} WHERE item_id = $1 ORDER BY label",
        tables.labels
    ))
    .bind::<SqlUuid, _>(item)
    .load(conn)
    .await
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = Integer)]
    version: i32,
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = SqlUuid)]
    owner_id: Uuid,
}

/// Locks `item`'s row (writes to one item's versions and labels serialize on it); whether
/// it exists and `may_write` allows its owner.
pub async fn lock_writable(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    may_write: impl FnOnce(Uuid) -> bool,
) -> Result<bool, diesel::result::Error> {
    let rows: Vec<Owner> = diesel::sql_query(format!(
        "SELECT owner_id FROM {} WHERE id = $1 FOR UPDATE",
        tables.items
    ))
    .bind::<SqlUuid, _>(item)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .next()
        .is_some_and(|r| may_write(r.owner_id)))
}

/// The item of table `items` (a name from code) `owner` created with `request_id`, and
/// that request's hash.
pub async fn item_by_request(
    conn: &mut AsyncPgConnection,
    items: &str,
    owner: Uuid,
    request_id: Uuid,
) -> Result<Option<(Uuid, Vec<u8>)>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Replay {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Nullable<Bytea>)]
        request_hash: Option<Vec<u8>>,
    }
    let rows: Vec<Replay> = diesel::sql_query(format!(
        "SELECT id, request_hash FROM {items} WHERE owner_id = $1 AND request_id = $2"
    ))
    .bind::<SqlUuid, _>(owner)
    .bind::<SqlUuid, _>(request_id)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .next()
        .map(|r| (r.id, r.request_hash.unwrap_or_default())))
}

/// The number a new version of `item` (locked by [`lock_writable`]) takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A new number: the next after every number given (never reused).
    New(i32),
    /// A retry of the request that made this version.
    Replayed(i32),
    /// The request_id was used for another request.
    Conflict,
}

/// Claims the number of `item`'s next version, or finds the version a retried `request`
/// (id, hash) made. Call inside the transaction that locked the item.
pub async fn claim_number(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    request: Option<(Uuid, &[u8])>,
    now: DateTime<Utc>,
) -> Result<Slot, diesel::result::Error> {
    if let Some((request_id, hash)) = request {
        #[derive(QueryableByName)]
        struct Seen {
            #[diesel(sql_type = Integer)]
            version: i32,
            #[diesel(sql_type = Nullable<Bytea>)]
            request_hash: Option<Vec<u8>>,
        }
        let seen: Vec<Seen> = diesel::sql_query(format!(
            "SELECT version, request_hash FROM {} WHERE item_id = $1 AND request_id = $2",
            tables.versions
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<SqlUuid, _>(request_id)
        .load(conn)
        .await?;
        if let Some(seen) = seen.into_iter().next() {
            return Ok(if seen.request_hash.as_deref() == Some(hash) {
                Slot::Replayed(seen.version)
            } else {
                Slot::Conflict
            });
        }
    }
    #[derive(QueryableByName)]
    struct Last {
        #[diesel(sql_type = Integer)]
        last_number: i32,
    }
    let last: Last = diesel::sql_query(format!(
        "UPDATE {} SET last_number = last_number + 1, updated_at = $2 \
         WHERE id = $1 RETURNING last_number",
        tables.items
    ))
    .bind::<SqlUuid, _>(item)
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
    .await?;
    Ok(Slot::New(last.last_number))
}

/// Deletes `item` (versions, labels and history cascade) if `may_write` allows its owner;
/// the highest version number it had given, if it did (to forget cached versions).
pub async fn delete_item(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
) -> Result<Option<i32>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Deleted {
        #[diesel(sql_type = SqlUuid)]
        owner_id: Uuid,
        #[diesel(sql_type = Integer)]
        last_number: i32,
    }
    conn.transaction(async |conn| {
        let rows: Vec<Deleted> = diesel::sql_query(format!(
            "SELECT owner_id, last_number FROM {} WHERE id = $1 FOR UPDATE",
            tables.items
        ))
        .bind::<SqlUuid, _>(item)
        .load(conn)
        .await?;
        let Some(row) = rows.into_iter().next().filter(|r| may_write(r.owner_id)) else {
            return Ok(None);
        };
        diesel::sql_query(format!("DELETE FROM {} WHERE id = $1", tables.items))
            .bind::<SqlUuid, _>(item)
            .execute(conn)
            .await?;
        Ok(Some(row.last_number))
    })
    .await
}

/// The labels of several items.
pub async fn labels_of_many(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    items: &[Uuid],
) -> Result<Vec<(Uuid, LabelRow)>, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        item_id: Uuid,
        #[diesel(embed)]
        label: LabelRow,
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT item_id, {LABEL_COLUMNS} FROM {} WHERE item_id = ANY($1) ORDER BY item_id, label",
        tables.labels
    ))
    .bind::<Array<SqlUuid>, _>(items)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.item_id, r.label)).collect())
}

/// What saving a version did.
#[derive(Debug)]
pub enum NewVersion<R> {
    /// Made this version.
    Made(R),
    /// A retry: the version its first attempt made.
    Replayed(R),
    /// The request_id was used for another request.
    Conflict,
}

/// Version `version` of `item`, as the resource's row type.
pub async fn version_row<R>(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    version: i32,
) -> Result<Option<R>, diesel::result::Error>
where
    R: QueryableByName<Pg> + Send + 'static,
{
    let rows: Vec<R> = diesel::sql_query(format!(
        "SELECT {} FROM {} WHERE item_id = $1 AND version = $2",
        tables.version_columns, tables.versions
    ))
    .bind::<SqlUuid, _>(item)
    .bind::<Integer, _>(version)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// `limit` versions of `item` below `before`, newest first.
pub async fn version_page<R>(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    before: Option<i32>,
    limit: i64,
) -> Result<Vec<R>, diesel::result::Error>
where
    R: QueryableByName<Pg> + Send + 'static,
{
    diesel::sql_query(format!(
        "SELECT {} FROM {} WHERE item_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3",
        tables.version_columns, tables.versions
    ))
    .bind::<SqlUuid, _>(item)
    .bind::<Integer, _>(before.unwrap_or(i32::MAX))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// The versions `wanted` (`(item, number)`) of several items, in one statement (the
/// default version of each item of a page).
pub async fn versions_of<R>(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    wanted: &[(Uuid, i32)],
) -> Result<Vec<R>, diesel::result::Error>
where
    R: QueryableByName<Pg> + Send + 'static,
{
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (items, numbers): (Vec<Uuid>, Vec<i32>) = wanted.iter().copied().unzip();
    diesel::sql_query(format!(
        "SELECT {} FROM {} \
         WHERE (item_id, version) IN (SELECT * FROM unnest($1::uuid[], $2::int[]))",
        tables.version_columns, tables.versions
    ))
    .bind::<Array<SqlUuid>, _>(items)
    .bind::<Array<Integer>, _>(numbers)
    .load(conn)
    .await
}

/// Marks `item` changed at `now` (a version or label of it changed).
async fn touch(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(format!(
        "UPDATE {} SET updated_at = $2 WHERE id = $1",
        tables.items
    ))
    .bind::<SqlUuid, _>(item)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Points `label` of `item` at `target` and records the move, in one transaction, if the
/// item is visible to the caller (`may_write` on its owner) and has every version named.
#[expect(clippy::too_many_arguments, reason = "the move's parts")]
pub async fn set_label(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
    label: &str,
    target: &Target,
    actor: Uuid,
    now: DateTime<Utc>,
) -> Result<LabelRow, ContentError> {
    conn.transaction(async |conn| {
        if !lock_writable(conn, tables, item, may_write).await? {
            return Err(ContentError::not_found(tables.what));
        }
        let existing: Vec<Number> = diesel::sql_query(format!(
            "SELECT version FROM {} WHERE item_id = $1 AND version = ANY($2)",
            tables.versions
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<Array<Integer>, _>(&target.versions)
        .load(conn)
        .await?;
        if let Some((i, missing)) = target
            .versions
            .iter()
            .enumerate()
            .find(|(_, n)| !existing.iter().any(|e| e.version == **n))
        {
            return Err(ContentError::invalid(
                format!("versions[{i}].version"),
                format!("version {missing} does not exist"),
            ));
        }
        let before: Vec<LabelRow> = diesel::sql_query(format!(
            "SELECT {LABEL_COLUMNS} FROM {} \
             WHERE item_id = $1 AND label = $2",
            tables.labels
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<Text, _>(label)
        .load(conn)
        .await?;
        let row: LabelRow = diesel::sql_query(format!(
            "INSERT INTO {} (item_id, label, versions, weights, updated_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (item_id, label) DO UPDATE SET versions = EXCLUDED.versions, \
             weights = EXCLUDED.weights, updated_by = EXCLUDED.updated_by, \
             updated_at = EXCLUDED.updated_at \
             RETURNING {LABEL_COLUMNS}",
            tables.labels
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<Text, _>(label)
        .bind::<Array<Integer>, _>(&target.versions)
        .bind::<Array<Integer>, _>(&target.weights)
        .bind::<SqlUuid, _>(actor)
        .bind::<Timestamptz, _>(now)
        .get_result(conn)
        .await?;
        let (from_versions, from_weights) = before
            .into_iter()
            .next()
            .map(|b| (b.versions, b.weights))
            .unwrap_or_default();
        diesel::sql_query(format!(
            "INSERT INTO {} (item_id, label, from_versions, from_weights, to_versions, \
             to_weights, actor_id, moved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            tables.moves
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<Text, _>(label)
        .bind::<Array<Integer>, _>(&from_versions)
        .bind::<Array<Integer>, _>(&from_weights)
        .bind::<Array<Integer>, _>(&target.versions)
        .bind::<Array<Integer>, _>(&target.weights)
        .bind::<SqlUuid, _>(actor)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        touch(conn, tables, item, now).await?;
        Ok(row)
    })
    .await
}

/// A move read from the history.
#[derive(Debug, QueryableByName)]
pub struct MoveRow {
    /// Position in the history (keyset).
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    label: String,
    #[diesel(sql_type = Array<Integer>)]
    from_versions: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    from_weights: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    to_versions: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    to_weights: Vec<i32>,
    #[diesel(sql_type = SqlUuid)]
    actor_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    moved_at: DateTime<Utc>,
}

impl MoveRow {
    /// As proto.
    pub fn proto(&self) -> pb::LabelMove {
        pb::LabelMove {
            label: self.label.clone(),
            from_versions: Target {
                versions: self.from_versions.clone(),
                weights: self.from_weights.clone(),
            }
            .proto(),
            to_versions: Target {
                versions: self.to_versions.clone(),
                weights: self.to_weights.clone(),
            }
            .proto(),
            actor_id: self.actor_id.to_string(),
            move_time: Some(timestamp(self.moved_at)),
        }
    }
}

/// `limit` moves of `item`'s labels (of `label` only, when given) before `before` (a move
/// id), newest first.
pub async fn history(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    label: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<MoveRow>, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT id, label, from_versions, from_weights, to_versions, to_weights, actor_id, \
         moved_at FROM {} WHERE item_id = $1 AND ($2::text IS NULL OR label = $2) \
         AND id < $3 ORDER BY id DESC LIMIT $4",
        tables.moves
    ))
    .bind::<SqlUuid, _>(item)
    .bind::<Nullable<Text>, _>(label)
    .bind::<BigInt, _>(before.unwrap_or(i64::MAX))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Deletes `version` of `item` in one transaction, if the item is the caller's
/// (`may_write`), the version exists, no label points at it, and it is not the last.
pub async fn delete_version(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    item: Uuid,
    may_write: impl FnOnce(Uuid) -> bool + Send,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), ContentError> {
    conn.transaction(async |conn| {
        if !lock_writable(conn, tables, item, may_write).await? {
            return Err(ContentError::not_found(tables.what));
        }
        let versions: Vec<Number> = diesel::sql_query(format!(
            "SELECT version FROM {} WHERE item_id = $1 ORDER BY version DESC LIMIT 2",
            tables.versions
        ))
        .bind::<SqlUuid, _>(item)
        .load(conn)
        .await?;
        let pointing: Vec<LabelRow> = diesel::sql_query(format!(
            "SELECT {LABEL_COLUMNS} FROM {} \
             WHERE item_id = $1 AND $2 = ANY(versions) ORDER BY label",
            tables.labels
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<Integer, _>(version)
        .load(conn)
        .await?;
        if !pointing.is_empty() {
            let names: Vec<&str> = pointing.iter().map(|l| l.label.as_str()).collect();
            return Err(ContentError::failed_precondition(format!(
                "version {version} is pointed at by the label(s) {}: move them first",
                names.join(", ")
            )));
        }
        let deleted = diesel::sql_query(format!(
            "DELETE FROM {} WHERE item_id = $1 AND version = $2",
            tables.versions
        ))
        .bind::<SqlUuid, _>(item)
        .bind::<Integer, _>(version)
        .execute(conn)
        .await?;
        if deleted == 0 {
            return Err(ContentError::not_found("version"));
        }
        if versions.len() < 2 {
            return Err(ContentError::failed_precondition(format!(
                "version {version} is the only version: delete the whole resource instead"
            )));
        }
        touch(conn, tables, item, now).await?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weighted_pick_is_stable_per_subject_and_follows_the_weights() {
        let target = Target {
            versions: vec![3, 4],
            weights: vec![90, 10],
        };
        let item = Uuid::now_v7();
        let mut fours = 0;
        for i in 0..10_000 {
            let subject = format!("user-{i}");
            let picked = target.pick(item, "production", &subject);
            assert_eq!(picked, target.pick(item, "production", &subject));
            if picked == 4 {
                fours += 1;
            }
        }
        assert!((800..=1200).contains(&fours), "{fours}");
        assert_eq!(target.pick(item, "production", ""), 3);
        assert_eq!(Target::single(7).pick(item, "x", "anyone"), 7);
    }

    #[test]
    fn label_targets_are_checked() {
        let w = |version, weight| pb::WeightedVersion { version, weight };
        let mut v = Violations::new();
        assert_eq!(
            check_label_target(&mut v, "production", &[w(2, 0)]),
            Target::single(2)
        );
        assert!(v.is_empty());
        check_label_target(&mut v, "latest", &[w(1, 1)]);
        check_label_target(&mut v, "Prod", &[]);
        check_label_target(&mut v, "p", &[w(1, 5), w(1, 5), w(0, 0)]);
        assert_eq!(v.len(), 6, "{:?}", v.into_vec());
    }
}
