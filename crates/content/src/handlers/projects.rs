//! Projects: the owner's (created, read, listed by last update, updated, deleted), public
//! discovery in five orders with featured ones first when asked, ranked search with
//! snippets and a typo-tolerant fallback, likes (once per user), forks (one transaction,
//! no bytes copied) and views (counted in Redis, folded in batches: [`crate::views`]).

use std::sync::Arc;

use strata_errors::{ApiError, Violations};
use strata_proto::content as pb;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{
    Cursor, KeyCursor, PageContext, finish_page, page_size, page_size_within,
};
use strata_runtime::time::timestamp;
use tonic::Request;
use uuid::Uuid;

use super::versioned::{self, mask, request_hash};
use super::{ContentHandlers, SCOPE_READ, SCOPE_WRITE, caller, db_now, shared};
use crate::ContentError;
use crate::store::projects::{self as store, Key, Order, PROJECTS, PUBLIC};
use crate::validate;

/// Longest project name.
const MAX_NAME: usize = 200;
/// Longest description.
const MAX_DESCRIPTION: usize = 10_000;
/// Longest search query.
const MAX_QUERY: usize = 200;
/// Fields a read_mask may name.
const FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "name",
    "description",
    "visibility",
    "type",
    "tags",
    "labels",
    "like_count",
    "fork_count",
    "view_count",
    "featured",
    "forked_from",
    "trending_score",
    "create_time",
    "update_time",
];
const LIST_MINE: &str = "strata.content.v1.ProjectService/ListProjects";
const LIST_PUBLIC: &str = "strata.content.v1.ProjectService/ListPublicProjects";
const SEARCH: &str = "strata.content.v1.ProjectService/SearchProjects";
/// Most batches of marked view counts one fold round takes.
const MAX_FOLD_BATCHES: usize = 20;
/// With fewer full-text hits than this on the first page, similar names fill it.
const FUZZY_BELOW: usize = 5;
/// Words of a query corrected when it finds little (the rest are dropped from the
/// corrected query).
const MAX_CORRECTED_WORDS: usize = 8;

/// Whether `principal` may see a project of `owner` with `visibility`.
pub(super) fn may_see(principal: &Principal, owner: Uuid, visibility: i32) -> bool {
    visibility == pb::Visibility::Public as i32
        || owner == principal.user_id
        || principal.is_admin()
}

/// The owner a write must match: the caller's id, or none for an admin.
pub(super) fn write_owner(principal: &Principal) -> Option<Uuid> {
    (!principal.is_admin()).then_some(principal.user_id)
}

/// Checks a visibility a caller sets.
fn check_visibility(v: &mut Violations, field: &str, visibility: i32) -> i16 {
    match pb::Visibility::try_from(visibility) {
        Ok(pb::Visibility::Public) => PUBLIC,
        Ok(pb::Visibility::Private) => 1,
        Ok(pb::Visibility::Unspecified) | Err(_) => {
            v.add(field, "must be PRIVATE or PUBLIC");
            1
        }
    }
}

/// Checks a type (a label-like name).
fn check_type(v: &mut Violations, field: &str, kind: &str) {
    if !validate::is_label_name(kind) {
        v.add(
            field,
            "must start with a lowercase letter and hold at most 63 lowercase letters, digits, \
             '-' or '_'",
        );
    }
}

/// A stored project as proto.
fn project_proto(row: &store::ProjectRow) -> pb::Project {
    pb::Project {
        id: row.id.to_string(),
        owner_id: row.owner_id.to_string(),
        name: row.name.clone(),
        description: row.description.clone(),
        visibility: i32::from(row.visibility),
        r#type: row.kind.clone(),
        tags: row.tags.clone(),
        labels: validate::labels_map(&row.labels),
        like_count: row.like_count,
        fork_count: row.fork_count,
        view_count: row.view_count,
        featured: row.featured,
        forked_from: row.forked_from.map(|f| f.to_string()).unwrap_or_default(),
        trending_score: row.trending,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

/// Keeps only the fields a read mask names; `labels` (the owner's metadata) only for the
/// owner or an admin.
fn masked(project: pb::Project, fields: &[&str], principal: &Principal) -> pb::Project {
    let owner = project.owner_id == principal.user_id.to_string() || principal.is_admin();
    let mut project = mask!(
        project,
        fields,
        [
            id,
            owner_id,
            name,
            description,
            visibility,
            r#type,
            tags,
            labels,
            like_count,
            fork_count,
            view_count,
            featured,
            forked_from,
            trending_score,
            create_time,
            update_time,
        ]
    );
    if !owner {
        project.labels.clear();
    }
    project
}

impl ContentHandlers {
    /// Project `id` from the cache, if `principal` may see it (public, or theirs, or an
    /// admin); another user's private project is NOT_FOUND like a missing one.
    pub(super) async fn visible_project(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<Arc<pb::Project>, ContentError> {
        let db = self.ctx.db.clone();
        let project = self
            .projects
            .get_or_load(&id.to_string(), || async move {
                let mut conn = db.get().await?;
                let row = store::project(&mut conn, id).await?;
                Ok::<_, strata_storage::Error>(row.as_ref().map(project_proto))
            })
            .await
            .map_err(shared)?;
        match project {
            Some(p)
                if Uuid::parse_str(&p.owner_id)
                    .is_ok_and(|o| may_see(principal, o, p.visibility)) =>
            {
                Ok(p)
            }
            _ => Err(ContentError::not_found("project")),
        }
    }

    /// Forgets projects in every replica's caches (after the write committed).
    pub(super) async fn projects_changed(&self, ids: &[Uuid]) {
        let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        for chunk in keys.chunks(1000) {
            self.projects.invalidate(chunk).await;
        }
    }

    /// Folds the views counted since the last fold; the projects changed (their cache
    /// entries are forgotten).
    pub async fn fold_views(&self) -> Result<usize, ContentError> {
        let mut folded = 0;
        // Bounded per round: a steady stream of views cannot keep one round going.
        for _ in 0..MAX_FOLD_BATCHES {
            let (changed, more) = self.views.fold_batch(db_now()).await?;
            self.projects_changed(&changed).await;
            folded += changed.len();
            if !more {
                break;
            }
        }
        Ok(folded)
    }

    /// Recomputes the trending rank of the projects active in the last 7 days; the
    /// number whose rank changed.
    pub async fn recompute_trending(&self) -> Result<usize, ContentError> {
        let now = db_now();
        let mut conn = self.ctx.db.get().await?;
        let changed =
            store::recompute_trending(&mut conn, now - chrono::Duration::days(7), now).await?;
        drop(conn);
        self.projects_changed(&changed).await;
        Ok(changed.len())
    }
}

/// `CreateProject`.
pub async fn create_project(
    h: &ContentHandlers,
    request: Request<pb::CreateProjectRequest>,
) -> Result<pb::CreateProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let project = req.project.unwrap_or_default();
    let mut v = Violations::new();
    validate::text(&mut v, "project.name", &project.name, 1, MAX_NAME);
    validate::long_text(
        &mut v,
        "project.description",
        &project.description,
        MAX_DESCRIPTION,
    );
    let visibility = if project.visibility == 0 {
        1
    } else {
        check_visibility(&mut v, "project.visibility", project.visibility)
    };
    check_type(&mut v, "project.type", &project.r#type);
    let tags = validate::tags(&mut v, "project.tags", &project.tags);
    validate::labels(&mut v, "project.labels", &project.labels);
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let labels = validate::labels_json(&project.labels);
    let hash = request_hash(&[
        b"create",
        project.name.as_bytes(),
        project.description.as_bytes(),
        &visibility.to_be_bytes(),
        project.r#type.as_bytes(),
        tags.join("\u{1f}").as_bytes(),
        labels.to_string().as_bytes(),
    ]);
    let new = store::NewProject {
        owner_id: principal.user_id,
        name: project.name,
        description: project.description,
        visibility,
        kind: project.r#type,
        tags,
        labels,
        request_id,
        request_hash: hash.clone(),
    };
    let mut conn = h.ctx.db.get().await?;
    let owner = principal.user_id;
    let request = (request_id, hash.as_slice());
    let id = versioned::create_once(
        &mut conn,
        (PROJECTS, "project"),
        owner,
        request,
        None,
        async |c| store::insert_project(c, &new, db_now()).await,
    )
    .await?;
    drop(conn);
    let project = (*h.visible_project(&principal, id).await?).clone();
    Ok(pb::CreateProjectResponse {
        project: Some(project),
    })
}

/// `GetProject`.
pub async fn get_project(
    h: &ContentHandlers,
    request: Request<pb::GetProjectRequest>,
) -> Result<pb::GetProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let id = validate::id("project_id", &request.get_ref().project_id)?;
    let project = (*h.visible_project(&principal, id).await?).clone();
    Ok(pb::GetProjectResponse {
        project: Some(masked(project, FIELDS, &principal)),
    })
}

/// `ListProjects`: the caller's, most recently updated first.
pub async fn list_projects(
    h: &ContentHandlers,
    request: Request<pb::ListProjectsRequest>,
) -> Result<pb::ListProjectsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let context = PageContext::new(LIST_MINE, &principal.user_id, &[]);
    let after = Cursor::decode(&req.page_token, &context)?.map(|c| (c.time, c.id));
    let mut conn = h.ctx.db.get().await?;
    let rows = store::list_mine(&mut conn, principal.user_id, after, limit + 1).await?;
    drop(conn);
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.updated_at,
            id: last.id,
        }
        .encode(&context)
    });
    Ok(pb::ListProjectsResponse {
        projects: rows
            .iter()
            .map(|r| masked(project_proto(r), &fields, &principal))
            .collect(),
        next_page_token,
    })
}

/// The order asked.
fn order_of(order: i32) -> Result<Order, ContentError> {
    Ok(match pb::ProjectOrder::try_from(order) {
        Ok(pb::ProjectOrder::Likes) => Order::Likes,
        Ok(pb::ProjectOrder::Forks) => Order::Forks,
        Ok(pb::ProjectOrder::Views) => Order::Views,
        Ok(pb::ProjectOrder::Newest) => Order::Newest,
        Ok(pb::ProjectOrder::Trending | pb::ProjectOrder::Unspecified) => Order::Trending,
        Err(_) => return Err(ContentError::invalid("order", "is not a ProjectOrder")),
    })
}

/// A discovery page token: phase (0 featured, 1 the others, 2 all), key, id.
fn public_token(
    phase: i64,
    order: Order,
    row: &store::ProjectRow,
    context: &PageContext,
) -> String {
    let cursor = KeyCursor::default().push_i64(phase);
    let cursor = match order.key(row) {
        Key::Count(n) => cursor.push_i64(n),
        Key::Time(t) => cursor.push_i64(t.timestamp_micros()),
        Key::Rank(r) => cursor.push_f64(r),
    };
    cursor.push_uuid(&row.id).encode(context)
}

fn read_public_token(
    token: &str,
    order: Order,
    context: &PageContext,
) -> Result<Option<(i64, Key, Uuid)>, ApiError> {
    let Some(cursor) = KeyCursor::decode(token, context)? else {
        return Ok(None);
    };
    let bad = || ApiError::invalid("page_token", "is not a token of this list");
    let mut reader = cursor.reader();
    let phase = reader.i64()?;
    let key = match order {
        Order::Likes | Order::Forks | Order::Views => Key::Count(reader.i64()?),
        Order::Newest => {
            Key::Time(chrono::DateTime::from_timestamp_micros(reader.i64()?).ok_or_else(bad)?)
        }
        Order::Trending => Key::Rank(reader.f64()?),
    };
    let id = reader.uuid()?;
    reader.end()?;
    Ok(Some((phase, key, id)))
}

/// `ListPublicProjects`: one index per order; featured first is two phases (the featured
/// few, then the others), each a keyset scan, carried in the page token.
pub async fn list_public_projects(
    h: &ContentHandlers,
    request: Request<pb::ListPublicProjectsRequest>,
) -> Result<pb::ListPublicProjectsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let order = order_of(req.order)?;
    let mut v = Violations::new();
    if !req.r#type.is_empty() {
        check_type(&mut v, "type", &req.r#type);
    }
    if !req.tag.is_empty() {
        validate::text(&mut v, "tag", &req.tag, 1, validate::MAX_TAG);
    }
    v.finish()?;
    let context = PageContext::new(
        LIST_PUBLIC,
        &principal.user_id,
        &[
            &req.order.to_string(),
            &req.r#type,
            &req.tag,
            if req.featured_first { "1" } else { "0" },
        ],
    );
    let start = read_public_token(&req.page_token, order, &context)?;
    let phases: &[i64] = if req.featured_first { &[0, 1] } else { &[2] };
    let mut rows: Vec<(i64, store::ProjectRow)> = Vec::new();
    let mut conn = h.ctx.db.get().await?;
    for &phase in phases {
        let after = match start {
            Some((p, _, _)) if p > phase => continue,
            Some((p, key, id)) if p == phase => Some((key, id)),
            _ => None,
        };
        let filter = store::PublicFilter {
            kind: (!req.r#type.is_empty()).then(|| req.r#type.clone()),
            tag: (!req.tag.is_empty()).then(|| req.tag.clone()),
            featured: match phase {
                0 => Some(true),
                1 => Some(false),
                _ => None,
            },
        };
        let wanted = limit + 1 - rows.len() as i64;
        let page = store::list_public(&mut conn, order, &filter, after, wanted).await?;
        rows.extend(page.into_iter().map(|r| (phase, r)));
        if rows.len() as i64 > limit {
            break;
        }
    }
    drop(conn);
    let (rows, next_page_token) = finish_page(rows, limit, |(phase, last)| {
        public_token(*phase, order, last, &context)
    });
    Ok(pb::ListPublicProjectsResponse {
        projects: rows
            .iter()
            .map(|(_, r)| masked(project_proto(r), &fields, &principal))
            .collect(),
        next_page_token,
    })
}

/// `SearchProjects`: ranked full text (name, tags, description), keyset on (rank, id);
/// when the first page finds little, projects with similar names or tags (a typo) fill it.
pub async fn search_projects(
    h: &ContentHandlers,
    request: Request<pb::SearchProjectsRequest>,
) -> Result<pb::SearchProjectsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let mut v = Violations::new();
    validate::text(&mut v, "query", req.query.trim(), 1, MAX_QUERY);
    v.finish()?;
    let query = req.query.trim();
    let limit = page_size_within(req.page_size, 20, 100)?;
    let context = PageContext::new(SEARCH, &principal.user_id, &[query]);
    let after = versioned::rank_after(&req.page_token, &context)?;
    let mut conn = h.ctx.db.get().await?;
    let found = store::search(&mut conn, principal.user_id, query, after, limit + 1).await?;
    let (found, next_page_token) = finish_page(found, limit, |last| {
        versioned::rank_token(last.rank, &last.project.id, &context)
    });
    let mut results: Vec<pb::SearchResult> = found
        .iter()
        .map(|f| search_result(f, false, &principal))
        .collect();
    if after.is_none() && results.len() < FUZZY_BELOW {
        // Little found: perhaps a typo. Each word is corrected to the most similar word of
        // some project, and the corrected query searched (its results marked fuzzy).
        // Only plain words are corrected: operators (`or`, `-word`, quotes) and short
        // words pass through as written.
        let tokens: Vec<String> = query
            .to_lowercase()
            .split_whitespace()
            .take(MAX_CORRECTED_WORDS)
            .map(str::to_owned)
            .collect();
        let correctable =
            |t: &str| t.chars().count() >= 3 && t != "or" && t.chars().all(char::is_alphanumeric);
        let words: Vec<String> = tokens.iter().filter(|t| correctable(t)).cloned().collect();
        let mut corrected = store::corrections(&mut conn, &words).await?.into_iter();
        let rewritten: Vec<String> = tokens
            .iter()
            .map(|t| match correctable(t) {
                true => corrected.next().unwrap_or_else(|| t.clone()),
                false => t.clone(),
            })
            .collect();
        if rewritten != tokens {
            let room = limit - results.len() as i64;
            let similar = store::search(
                &mut conn,
                principal.user_id,
                &rewritten.join(" "),
                None,
                room + results.len() as i64,
            )
            .await?;
            results.extend(
                similar
                    .iter()
                    .filter(|f| !found.iter().any(|g| g.project.id == f.project.id))
                    .take(usize::try_from(room).unwrap_or(0))
                    .map(|f| search_result(f, true, &principal)),
            );
        }
    }
    Ok(pb::SearchProjectsResponse {
        results,
        next_page_token,
    })
}

fn search_result(found: &store::Found, fuzzy: bool, principal: &Principal) -> pb::SearchResult {
    pb::SearchResult {
        project: Some(masked(project_proto(&found.project), FIELDS, principal)),
        rank: found.rank,
        name_snippet: found.name_snippet.clone(),
        description_snippet: found.description_snippet.clone(),
        fuzzy,
    }
}

/// `UpdateProject`.
pub async fn update_project(
    h: &ContentHandlers,
    request: Request<pb::UpdateProjectRequest>,
) -> Result<pb::UpdateProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let project = req.project.unwrap_or_default();
    let id = validate::id("project.id", &project.id)?;
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field");
    }
    let mut changes = store::ProjectChanges::default();
    for path in &paths {
        match path.as_str() {
            "name" => {
                validate::text(&mut v, "project.name", &project.name, 1, MAX_NAME);
                changes.name = Some(project.name.clone());
            }
            "description" => {
                validate::long_text(
                    &mut v,
                    "project.description",
                    &project.description,
                    MAX_DESCRIPTION,
                );
                changes.description = Some(project.description.clone());
            }
            "visibility" => {
                changes.visibility = Some(check_visibility(
                    &mut v,
                    "project.visibility",
                    project.visibility,
                ));
            }
            "type" => {
                check_type(&mut v, "project.type", &project.r#type);
                changes.kind = Some(project.r#type.clone());
            }
            "tags" => changes.tags = Some(validate::tags(&mut v, "project.tags", &project.tags)),
            "labels" => {
                validate::labels(&mut v, "project.labels", &project.labels);
                changes.labels = Some(validate::labels_json(&project.labels));
            }
            "featured" => changes.featured = Some(project.featured),
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} cannot be updated (updatable: name, description, visibility, \
                     type, tags, labels, featured)"
                ),
            ),
        }
    }
    v.finish()?;
    if changes.featured.is_some() && !principal.is_admin() {
        // Only for a project the caller sees: otherwise it must look missing.
        h.visible_project(&principal, id).await?;
        return Err(ContentError::Api(ApiError::permission_denied(
            "only admins choose featured projects",
        )));
    }
    let mut conn = h.ctx.db.get().await?;
    let owner = write_owner(&principal);
    if !store::update_project(&mut conn, id, owner, &changes, db_now()).await? {
        return Err(ContentError::not_found("project"));
    }
    drop(conn);
    h.projects_changed(&[id]).await;
    let project = (*h.visible_project(&principal, id).await?).clone();
    Ok(pb::UpdateProjectResponse {
        project: Some(project),
    })
}

/// `DeleteProject`.
pub async fn delete_project(
    h: &ContentHandlers,
    request: Request<pb::DeleteProjectRequest>,
) -> Result<pb::DeleteProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let id = validate::id("project_id", &request.get_ref().project_id)?;
    let mut conn = h.ctx.db.get().await?;
    let Some(mut forks) = store::delete_project(&mut conn, id, write_owner(&principal)).await?
    else {
        return Err(ContentError::not_found("project"));
    };
    drop(conn);
    // Its owner's usage is no longer shown as the project's (analytics asks who owns it).
    h.project_owners.invalidate(&[id.to_string()]).await;
    forks.push(id);
    h.projects_changed(&forks).await;
    Ok(pb::DeleteProjectResponse {})
}

/// `LikeProject` and `UnlikeProject`.
async fn like(
    h: &ContentHandlers,
    principal: &Principal,
    project_id: &str,
    like: bool,
) -> Result<(i64, bool), ContentError> {
    let id = validate::id("project_id", project_id)?;
    let mut conn = h.ctx.db.get().await?;
    let outcome = store::like(
        &mut conn,
        id,
        principal.user_id,
        principal.is_admin(),
        like,
        db_now(),
    )
    .await?;
    drop(conn);
    if !outcome.found {
        return Err(ContentError::not_found("project"));
    }
    if outcome.changed {
        h.projects_changed(&[id]).await;
    }
    Ok((outcome.like_count, outcome.changed))
}

/// `LikeProject`.
pub async fn like_project(
    h: &ContentHandlers,
    request: Request<pb::LikeProjectRequest>,
) -> Result<pb::LikeProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let (like_count, changed) = like(h, &principal, &request.get_ref().project_id, true).await?;
    Ok(pb::LikeProjectResponse {
        like_count,
        changed,
    })
}

/// `UnlikeProject`.
pub async fn unlike_project(
    h: &ContentHandlers,
    request: Request<pb::UnlikeProjectRequest>,
) -> Result<pb::UnlikeProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let (like_count, changed) = like(h, &principal, &request.get_ref().project_id, false).await?;
    Ok(pb::UnlikeProjectResponse {
        like_count,
        changed,
    })
}

/// `ForkProject`.
pub async fn fork_project(
    h: &ContentHandlers,
    request: Request<pb::ForkProjectRequest>,
) -> Result<pb::ForkProjectResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let source = validate::id("project_id", &req.project_id)?;
    let mut v = Violations::new();
    if !req.name.is_empty() {
        validate::text(&mut v, "name", &req.name, 1, MAX_NAME);
    }
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let hash = request_hash(&[b"fork", source.as_bytes(), req.name.as_bytes()]);
    let owner = principal.user_id;
    let mut conn = h.ctx.db.get().await?;
    let (id, file_count) = match versioned::replayed(&mut conn, PROJECTS, owner, request_id, &hash)
        .await?
    {
        Some(id) => (id, -1),
        None => {
            let name = (!req.name.is_empty()).then_some(req.name.as_str());
            let admin = principal.is_admin();
            let request = (request_id, hash.as_slice());
            let forked =
                store::fork(&mut conn, source, owner, admin, name, request, db_now()).await;
            match forked {
                Ok(Some(forked)) => (forked.id, forked.files),
                Ok(None) => return Err(ContentError::not_found("project")),
                Err(e) => {
                    let table = (PROJECTS, "project");
                    let id =
                        versioned::create_failed(&mut conn, table, owner, request, e, None).await?;
                    (id, -1)
                }
            }
        }
    };
    let file_count = if file_count >= 0 {
        h.projects_changed(&[source]).await;
        file_count
    } else {
        crate::store::files::count(&mut conn, id).await?
    };
    drop(conn);
    let project = (*h.visible_project(&principal, id).await?).clone();
    Ok(pb::ForkProjectResponse {
        project: Some(project),
        file_count,
    })
}

/// `RecordProjectView`.
pub async fn record_project_view(
    h: &ContentHandlers,
    request: Request<pb::RecordProjectViewRequest>,
) -> Result<pb::RecordProjectViewResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let id = validate::id("project_id", &request.get_ref().project_id)?;
    h.visible_project(&principal, id).await?;
    h.views.record(id, principal.user_id, db_now()).await?;
    Ok(pb::RecordProjectViewResponse {})
}

#[tonic::async_trait]
impl pb::project_service_server::ProjectService for ContentHandlers {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<tonic::Response<pb::CreateProjectResponse>, tonic::Status> {
        strata_errors::respond(create_project(self, request).await)
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<tonic::Response<pb::GetProjectResponse>, tonic::Status> {
        strata_errors::respond(get_project(self, request).await)
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<tonic::Response<pb::ListProjectsResponse>, tonic::Status> {
        strata_errors::respond(list_projects(self, request).await)
    }

    async fn list_public_projects(
        &self,
        request: Request<pb::ListPublicProjectsRequest>,
    ) -> Result<tonic::Response<pb::ListPublicProjectsResponse>, tonic::Status> {
        strata_errors::respond(list_public_projects(self, request).await)
    }

    async fn search_projects(
        &self,
        request: Request<pb::SearchProjectsRequest>,
    ) -> Result<tonic::Response<pb::SearchProjectsResponse>, tonic::Status> {
        strata_errors::respond(search_projects(self, request).await)
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Result<tonic::Response<pb::UpdateProjectResponse>, tonic::Status> {
        strata_errors::respond(update_project(self, request).await)
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Result<tonic::Response<pb::DeleteProjectResponse>, tonic::Status> {
        strata_errors::respond(delete_project(self, request).await)
    }

    async fn like_project(
        &self,
        request: Request<pb::LikeProjectRequest>,
    ) -> Result<tonic::Response<pb::LikeProjectResponse>, tonic::Status> {
        strata_errors::respond(like_project(self, request).await)
    }

    async fn unlike_project(
        &self,
        request: Request<pb::UnlikeProjectRequest>,
    ) -> Result<tonic::Response<pb::UnlikeProjectResponse>, tonic::Status> {
        strata_errors::respond(unlike_project(self, request).await)
    }

    async fn fork_project(
        &self,
        request: Request<pb::ForkProjectRequest>,
    ) -> Result<tonic::Response<pb::ForkProjectResponse>, tonic::Status> {
        strata_errors::respond(fork_project(self, request).await)
    }

    async fn record_project_view(
        &self,
        request: Request<pb::RecordProjectViewRequest>,
    ) -> Result<tonic::Response<pb::RecordProjectViewResponse>, tonic::Status> {
        strata_errors::respond(record_project_view(self, request).await)
    }
}
