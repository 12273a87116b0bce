//! What the handlers of every versioned resource (prompts, agents) share: creation once
//! per `request_id`, label moves and their history, version deletion, default versions of
//! a page, and read masks. Each takes the resource's [`Tables`]; the caller checks
//! visibility and invalidates its own caches.

use std::collections::HashMap;
use std::future::Future;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use sha2::{Digest, Sha256};
use strata_cache::Tiered;
use strata_errors::{ApiError, Violations};
use strata_proto::content as pb;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{KeyCursor, PageContext, finish_page, page_size};
use uuid::Uuid;

use super::{ContentHandlers, db_now, may_touch};
use crate::ContentError;
use crate::validate;
use crate::versions::{self, LabelRow, Selected, Tables};

/// Longest subject of a resolution.
pub const MAX_SUBJECT: usize = 200;

/// The hash that tells a retry from another request with the same `request_id`.
pub fn request_hash(parts: &[&[u8]]) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().to_vec()
}

/// The answer to a `request_id` reused for another request.
pub fn conflict() -> ContentError {
    ContentError::Api(ApiError::AlreadyExists {
        message: "request_id was already used for a different request".into(),
        resource: None,
    })
}

/// The item (of table `items`) a retried create (`request_id`, with the request's `hash`) made, if any; a
/// `request_id` used for another request is refused.
pub async fn replayed(
    conn: &mut AsyncPgConnection,
    items: &str,
    owner: Uuid,
    request_id: Option<Uuid>,
    hash: &[u8],
) -> Result<Option<Uuid>, ContentError> {
    let Some(request_id) = request_id else {
        return Ok(None);
    };
    match versions::item_by_request(conn, items, owner, request_id).await? {
        Some((id, seen)) if seen == hash => Ok(Some(id)),
        Some(_) => Err(conflict()),
        None => Ok(None),
    }
}

/// The item a create makes, once per `request_id`: the one an earlier attempt made (a
/// retry), else the one `insert` makes; a failed insert answers as [`create_failed`] says
/// (`table`: the items table and what they are; `name_key`: their unique index of names).
pub async fn create_once(
    conn: &mut AsyncPgConnection,
    table: (&str, &'static str),
    owner: Uuid,
    request: (Option<Uuid>, &[u8]),
    name_key: Option<&str>,
    insert: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<Uuid, DieselError>,
) -> Result<Uuid, ContentError> {
    if let Some(id) = replayed(conn, table.0, owner, request.0, request.1).await? {
        return Ok(id);
    }
    match insert(conn).await {
        Ok(id) => Ok(id),
        Err(e) => create_failed(conn, table, owner, request, e, name_key).await,
    }
}

/// What a failed create answers: a concurrent retry of the same request, the item it made;
/// a taken name (the unique index `name_key`), ALREADY_EXISTS; anything else as is.
pub async fn create_failed(
    conn: &mut AsyncPgConnection,
    (items, what): (&str, &'static str),
    owner: Uuid,
    request: (Option<Uuid>, &[u8]),
    error: DieselError,
    name_key: Option<&str>,
) -> Result<Uuid, ContentError> {
    let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = &error else {
        return Err(error.into());
    };
    if let Some(id) = replayed(conn, items, owner, request.0, request.1).await? {
        return Ok(id);
    }
    if name_key.is_some() && info.constraint_name() == name_key {
        return Err(name_taken(what));
    }
    Err(error.into())
}

/// The answer to a name the caller already uses.
pub fn name_taken(what: &str) -> ContentError {
    ContentError::Api(ApiError::AlreadyExists {
        message: format!("you already have a {what} with this name").into(),
        resource: None,
    })
}

/// The number a page of a list ordered by one number (versions, moves) ends at.
pub fn number_after(token: &str, context: &PageContext) -> Result<Option<i64>, ApiError> {
    let Some(cursor) = KeyCursor::decode(token, context)? else {
        return Ok(None);
    };
    let mut reader = cursor.reader();
    let n = reader.i64()?;
    reader.end()?;
    Ok(Some(n))
}

/// The version number a ListXVersions page token ends at.
pub fn version_after(token: &str, context: &PageContext) -> Result<Option<i32>, ApiError> {
    number_after(token, context)?
        .map(|n| i32::try_from(n).map_err(|_| ApiError::invalid("page_token", "is not a token")))
        .transpose()
}

/// The token of the page after one ending at version (or move) `n`.
pub fn number_token(n: i64, context: &PageContext) -> String {
    KeyCursor::default().push_i64(n).encode(context)
}

/// The `(rank, id)` a ranked search's page token ends at.
pub fn rank_after(token: &str, context: &PageContext) -> Result<Option<(f64, Uuid)>, ApiError> {
    let Some(cursor) = KeyCursor::decode(token, context)? else {
        return Ok(None);
    };
    let mut reader = cursor.reader();
    let rank = reader.f64()?;
    let id = reader.uuid()?;
    reader.end()?;
    Ok(Some((rank, id)))
}

/// The token of the ranked page after one ending at `(rank, id)`.
pub fn rank_token(rank: f64, id: &Uuid, context: &PageContext) -> String {
    KeyCursor::default()
        .push_f64(rank)
        .push_uuid(id)
        .encode(context)
}

/// The version `selected` gives `subject`, and the label that selected it (empty for a
/// version number).
pub fn pick(id: Uuid, selected: &Selected, subject: &str) -> (String, i32) {
    match selected {
        Selected::Version(n) => (String::new(), *n),
        Selected::Label(name, target) => (name.clone(), target.pick(id, name, subject)),
    }
}

/// Checks a resolution's subject.
pub fn check_subject(subject: &str) -> Result<(), ContentError> {
    if subject.chars().count() > MAX_SUBJECT {
        return Err(ContentError::invalid(
            "subject",
            format!("must be at most {MAX_SUBJECT} characters"),
        ));
    }
    Ok(())
}

/// The default version (production, else latest) of each item of a page, from the labels
/// of each: `(item, number)`.
pub fn default_versions<'a>(
    items: impl IntoIterator<Item = (Uuid, &'a [pb::Label])>,
) -> Vec<(Uuid, i32)> {
    items
        .into_iter()
        .filter_map(|(id, labels)| {
            let selected = versions::select(None, labels).ok()?;
            Some((id, pick(id, &selected, "").1))
        })
        .collect()
}

/// The labels of the items of a page, by item.
pub async fn labels_by_item(
    conn: &mut AsyncPgConnection,
    tables: Tables,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<LabelRow>>, DieselError> {
    let mut labels: HashMap<Uuid, Vec<LabelRow>> = HashMap::new();
    for (item, label) in versions::labels_of_many(conn, tables, ids).await? {
        labels.entry(item).or_default().push(label);
    }
    Ok(labels)
}

/// The labels of an item as proto, `latest` (on version `latest`, moved at `at`) included,
/// by name.
pub fn version_labels(
    labels: &[LabelRow],
    latest: Option<i32>,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<pb::Label> {
    let mut out: Vec<pb::Label> = labels.iter().map(LabelRow::proto).collect();
    if let Some(latest) = latest {
        out.push(versions::latest_label(latest, at));
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// Checks a version number field.
pub fn check_version_number(field: &str, n: i32) -> Result<(), ContentError> {
    if n < 1 {
        return Err(ContentError::invalid(
            field,
            "must be a version number (1 or more)",
        ));
    }
    Ok(())
}

/// Forgets the cached versions 1 to `last` of a deleted item (keys `id/number`): versions
/// are immutable and their numbers never reused, so no other key can be cached.
pub async fn forget_versions<T>(cache: &Tiered<T>, id: Uuid, last: i32)
where
    T: prost::Message + Default + Clone + Send + Sync + 'static,
{
    let keys: Vec<String> = (1..=last).map(|n| format!("{id}/{n}")).collect();
    for chunk in keys.chunks(1000) {
        cache.invalidate(chunk).await;
    }
}

impl ContentHandlers {
    /// `SetXLabel`: points `label` of item `id` at `versions` and records the move.
    pub(super) async fn move_label(
        &self,
        principal: &Principal,
        tables: Tables,
        id: Uuid,
        label: &str,
        versions: &[pb::WeightedVersion],
    ) -> Result<pb::Label, ContentError> {
        let mut v = Violations::new();
        let target = versions::check_label_target(&mut v, label, versions);
        v.finish()?;
        let mut conn = self.ctx.db.get().await?;
        let row = versions::set_label(
            &mut conn,
            tables,
            id,
            |owner| may_touch(principal, owner),
            label,
            &target,
            principal.user_id,
            db_now(),
        )
        .await?;
        Ok(row.proto())
    }

    /// `ListXLabelHistory` of item `id` once `visible` confirmed the caller sees it.
    #[expect(clippy::too_many_arguments, reason = "the request's parts")]
    pub(super) async fn label_history(
        &self,
        principal: &Principal,
        tables: Tables,
        list: &str,
        id: Uuid,
        label: &str,
        requested_size: i32,
        token: &str,
        visible: impl Future<Output = Result<(), ContentError>> + Send,
    ) -> Result<(Vec<pb::LabelMove>, String), ContentError> {
        if !label.is_empty() && !validate::is_label_name(label) {
            return Err(ContentError::invalid("label", "must be a label name"));
        }
        let limit = page_size(requested_size)?;
        let id_text = id.to_string();
        let context = PageContext::new(list, &principal.user_id, &[&id_text, label]);
        let before = number_after(token, &context)?;
        visible.await?;
        let mut conn = self.ctx.db.get().await?;
        let label = (!label.is_empty()).then_some(label);
        let rows = versions::history(&mut conn, tables, id, label, before, limit + 1).await?;
        let (rows, next) = finish_page(rows, limit, |last| number_token(last.id, &context));
        Ok((rows.iter().map(versions::MoveRow::proto).collect(), next))
    }

    /// `DeleteXVersion`: deletes `version` of item `id`.
    pub(super) async fn remove_version(
        &self,
        principal: &Principal,
        tables: Tables,
        id: Uuid,
        version: i32,
    ) -> Result<(), ContentError> {
        check_version_number("version", version)?;
        let mut conn = self.ctx.db.get().await?;
        versions::delete_version(
            &mut conn,
            tables,
            id,
            |owner| may_touch(principal, owner),
            version,
            db_now(),
        )
        .await
    }
}

/// Clears every field of `$message` that `$fields` (a read mask) does not name.
macro_rules! mask {
    ($message:expr, $fields:expr, [$($field:ident),* $(,)?]) => {{
        let mut message = $message;
        $(
            if !$fields.contains(&stringify!($field).trim_start_matches("r#")) {
                message.$field = Default::default();
            }
        )*
        message
    }};
}
pub(crate) use mask;
