//! Prompts: created with version 1, read by version or label, listed with filters,
//! updated (never their body: a new body is a new version), deleted; versions saved,
//! listed and deleted; labels moved (weighted for experiments) with their history; a
//! version resolved for a subject and rendered with variables.

use std::collections::HashMap;
use std::sync::Arc;

use strata_errors::Violations;
use strata_proto::content as pb;
use strata_runtime::identity::Principal;
use strata_runtime::pagination::{Cursor, PageContext, finish_page, page_size};
use strata_runtime::time::timestamp;
use tonic::Request;
use uuid::Uuid;

use super::versioned::{
    self, check_subject, conflict, mask, number_token, pick, request_hash, version_after,
};
use super::{ContentHandlers, SCOPE_READ, SCOPE_WRITE, caller, db_now, may_touch, shared};
use crate::ContentError;
use crate::store::prompts::{self as store, Body, PROMPTS};
use crate::template::{self, RenderError};
use crate::validate;
use crate::versions;

/// Longest template, in characters.
const MAX_TEMPLATE: usize = 100_000;
/// Longest prompt name.
const MAX_NAME: usize = 200;
/// Longest name_query.
const MAX_QUERY: usize = 100;
/// Fields a read_mask may name.
const FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "name",
    "tags",
    "is_favorite",
    "labels",
    "version",
    "latest_version",
    "version_labels",
    "create_time",
    "update_time",
];
/// List RPCs whose page tokens are bound to them.
const LIST_PROMPTS: &str = "strata.content.v1.PromptService/ListPrompts";
const LIST_VERSIONS: &str = "strata.content.v1.PromptService/ListPromptVersions";
const LIST_HISTORY: &str = "strata.content.v1.PromptService/ListPromptLabelHistory";

/// Checks a prompt name: 1 to 200 characters, '/'-separated folders, none empty.
fn check_name(v: &mut Violations, field: &str, name: &str) {
    validate::text(v, field, name, 1, MAX_NAME);
    if name.split('/').any(|part| part.trim().is_empty()) {
        v.add(
            field,
            "folders are separated by single '/', with no empty folder and no leading or \
             trailing '/'",
        );
    }
}

/// Checks a version's body.
fn check_body(v: &mut Violations, field: &str, version: Option<&pb::PromptVersion>) -> Body {
    let default = pb::PromptVersion::default();
    let version = version.unwrap_or(&default);
    validate::long_text(
        v,
        &format!("{field}.template"),
        &version.template,
        MAX_TEMPLATE,
    );
    Body {
        template: version.template.clone(),
        variables: template::variables(&version.template),
        model_parameters: validate::json(
            v,
            &format!("{field}.model_parameters"),
            version.model_parameters.as_ref(),
        ),
    }
}

fn body_hash_parts(body: &Body) -> [Vec<u8>; 2] {
    [
        body.template.as_bytes().to_vec(),
        body.model_parameters.to_string().into_bytes(),
    ]
}

/// A stored version as proto.
fn version_proto(row: &store::VersionRow) -> pb::PromptVersion {
    pb::PromptVersion {
        version: row.version,
        template: row.template.clone(),
        variables: row.variables.clone(),
        model_parameters: Some(validate::json_to_struct(&row.model_parameters)),
        created_by: row.created_by.to_string(),
        create_time: Some(timestamp(row.created_at)),
    }
}

/// A stored prompt and its labels as proto (no version).
fn prompt_proto(row: &store::PromptRow, labels: &[versions::LabelRow]) -> pb::Prompt {
    pb::Prompt {
        id: row.id.to_string(),
        owner_id: row.owner_id.to_string(),
        name: row.name.clone(),
        tags: row.tags.clone(),
        is_favorite: row.is_favorite,
        labels: validate::labels_map(&row.labels),
        version: None,
        latest_version: row.latest.unwrap_or_default(),
        version_labels: versioned::version_labels(labels, row.latest, row.updated_at),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

/// Keeps only the fields a read mask names.
fn masked(prompt: pb::Prompt, fields: &[&str]) -> pb::Prompt {
    mask!(
        prompt,
        fields,
        [
            id,
            owner_id,
            name,
            tags,
            is_favorite,
            labels,
            version,
            latest_version,
            version_labels,
            create_time,
            update_time,
        ]
    )
}

impl ContentHandlers {
    /// Prompt `id` without its body, from the cache, if `principal` may see it; another
    /// user's prompt is NOT_FOUND like a missing one.
    async fn visible_prompt(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<Arc<pb::Prompt>, ContentError> {
        let db = self.ctx.db.clone();
        let prompt = self
            .prompts
            .get_or_load(&id.to_string(), || async move {
                let mut conn = db.get().await?;
                let Some(row) = store::prompt(&mut conn, id).await? else {
                    return Ok(None);
                };
                let labels = versions::labels_of(&mut conn, PROMPTS, id).await?;
                Ok::<_, strata_storage::Error>(Some(prompt_proto(&row, &labels)))
            })
            .await
            .map_err(shared)?;
        match prompt {
            Some(p) if Uuid::parse_str(&p.owner_id).is_ok_and(|o| may_touch(principal, o)) => Ok(p),
            _ => Err(ContentError::not_found("prompt")),
        }
    }

    /// Version `number` of prompt `id` (whose visibility was checked), from the cache.
    async fn prompt_version(
        &self,
        id: Uuid,
        number: i32,
    ) -> Result<Arc<pb::PromptVersion>, ContentError> {
        let db = self.ctx.db.clone();
        self.prompt_versions
            .get_or_load(&format!("{id}/{number}"), || async move {
                let mut conn = db.get().await?;
                let row =
                    versions::version_row::<store::VersionRow>(&mut conn, PROMPTS, id, number)
                        .await?;
                Ok::<_, strata_storage::Error>(row.as_ref().map(version_proto))
            })
            .await
            .map_err(shared)?
            .ok_or(ContentError::not_found("version"))
    }

    /// Forgets prompt `id` in every replica's caches (after the write committed).
    async fn prompt_changed(&self, id: Uuid) {
        self.prompts.invalidate(&[id.to_string()]).await;
    }
}

/// `CreatePrompt`.
pub async fn create_prompt(
    h: &ContentHandlers,
    request: Request<pb::CreatePromptRequest>,
) -> Result<pb::CreatePromptResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let prompt = req.prompt.unwrap_or_default();
    let mut v = Violations::new();
    check_name(&mut v, "prompt.name", &prompt.name);
    let tags = validate::tags(&mut v, "prompt.tags", &prompt.tags);
    validate::labels(&mut v, "prompt.labels", &prompt.labels);
    let body = check_body(&mut v, "version", req.version.as_ref());
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let labels = validate::labels_json(&prompt.labels);
    let [template_bytes, params_bytes] = body_hash_parts(&body);
    let hash = request_hash(&[
        prompt.name.as_bytes(),
        tags.join("\u{1f}").as_bytes(),
        &[u8::from(prompt.is_favorite)],
        labels.to_string().as_bytes(),
        &template_bytes,
        &params_bytes,
    ]);
    let new = store::NewPrompt {
        owner_id: principal.user_id,
        name: prompt.name,
        tags,
        is_favorite: prompt.is_favorite,
        labels,
        body,
        request_id,
        request_hash: hash.clone(),
    };
    let mut conn = h.ctx.db.get().await?;
    let owner = principal.user_id;
    let request = (request_id, hash.as_slice());
    let table = (PROMPTS.items, PROMPTS.what);
    let name_key = Some("prompts_owner_name_key");
    let id = versioned::create_once(&mut conn, table, owner, request, name_key, async |c| {
        store::insert_prompt(c, &new, db_now()).await
    })
    .await?;
    drop(conn);
    let mut prompt = (*h.visible_prompt(&principal, id).await?).clone();
    prompt.version = Some((*h.prompt_version(id, 1).await?).clone());
    Ok(pb::CreatePromptResponse {
        prompt: Some(prompt),
    })
}

/// `GetPrompt`.
pub async fn get_prompt(
    h: &ContentHandlers,
    request: Request<pb::GetPromptRequest>,
) -> Result<pb::GetPromptResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let selector = req.selector.and_then(|s| s.selector);
    let head = h.visible_prompt(&principal, id).await?;
    let mut prompt = (*head).clone();
    if fields.contains(&"version") {
        let selected = versions::select(selector.as_ref(), &head.version_labels)?;
        let (_, number) = pick(id, &selected, "");
        prompt.version = Some((*h.prompt_version(id, number).await?).clone());
    }
    Ok(pb::GetPromptResponse {
        prompt: Some(masked(prompt, &fields)),
    })
}

/// `ListPrompts`: the caller's prompts, newest first, with the default version of each
/// (production, else latest) when the mask asks for it, read in one more statement.
pub async fn list_prompts(
    h: &ContentHandlers,
    request: Request<pb::ListPromptsRequest>,
) -> Result<pb::ListPromptsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let limit = page_size(req.page_size)?;
    let fields = validate::read_mask(req.read_mask.as_ref(), FIELDS)?;
    let mut v = Violations::new();
    if !req.tag.is_empty() {
        validate::text(&mut v, "tag", &req.tag, 1, validate::MAX_TAG);
    }
    let folder = req.folder.trim_end_matches('/');
    if !req.folder.is_empty() {
        check_name(&mut v, "folder", folder);
    }
    if !req.name_query.is_empty() {
        validate::text(&mut v, "name_query", &req.name_query, 1, MAX_QUERY);
    }
    v.finish()?;
    let filter = store::PromptFilter {
        favorites_only: req.favorites_only,
        tag: (!req.tag.is_empty()).then(|| req.tag.clone()),
        folder: (!folder.is_empty()).then(|| folder.to_owned()),
        name_query: (!req.name_query.is_empty()).then(|| req.name_query.to_lowercase()),
    };
    let favorites = if req.favorites_only { "1" } else { "0" };
    let context = PageContext::new(
        LIST_PROMPTS,
        &principal.user_id,
        &[favorites, &req.tag, folder, &req.name_query],
    );
    let after = Cursor::decode(&req.page_token, &context)?.map(|c| (c.time, c.id));
    let mut conn = h.ctx.db.get().await?;
    let rows = store::list_prompts(&mut conn, principal.user_id, &filter, after, limit + 1).await?;
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        Cursor {
            time: last.created_at,
            id: last.id,
        }
        .encode(&context)
    });
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let labels = if fields.contains(&"version") || fields.contains(&"version_labels") {
        versioned::labels_by_item(&mut conn, PROMPTS, &ids).await?
    } else {
        HashMap::new()
    };
    let mut prompts: Vec<pb::Prompt> = rows
        .iter()
        .map(|row| prompt_proto(row, labels.get(&row.id).map_or(&[][..], Vec::as_slice)))
        .collect();
    if fields.contains(&"version") {
        let wanted = versioned::default_versions(
            prompts
                .iter()
                .zip(&ids)
                .map(|(p, id)| (*id, p.version_labels.as_slice())),
        );
        let found = versions::versions_of::<store::VersionRow>(&mut conn, PROMPTS, &wanted).await?;
        for (prompt, id) in prompts.iter_mut().zip(&ids) {
            prompt.version = wanted
                .iter()
                .find(|(w, _)| w == id)
                .and_then(|(_, n)| found.iter().find(|f| f.item_id == *id && f.version == *n))
                .map(version_proto);
        }
    }
    Ok(pb::ListPromptsResponse {
        prompts: prompts.into_iter().map(|p| masked(p, &fields)).collect(),
        next_page_token,
    })
}

/// `UpdatePrompt`.
pub async fn update_prompt(
    h: &ContentHandlers,
    request: Request<pb::UpdatePromptRequest>,
) -> Result<pb::UpdatePromptResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let prompt = req.prompt.unwrap_or_default();
    let id = validate::id("prompt.id", &prompt.id)?;
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field");
    }
    let mut changes = store::PromptChanges::default();
    for path in &paths {
        match path.as_str() {
            "name" => {
                check_name(&mut v, "prompt.name", &prompt.name);
                changes.name = Some(prompt.name.clone());
            }
            "tags" => changes.tags = Some(validate::tags(&mut v, "prompt.tags", &prompt.tags)),
            "is_favorite" => changes.is_favorite = Some(prompt.is_favorite),
            "labels" => {
                validate::labels(&mut v, "prompt.labels", &prompt.labels);
                changes.labels = Some(validate::labels_json(&prompt.labels));
            }
            other => v.add(
                "update_mask",
                format!("{other:?} cannot be updated (updatable: name, tags, is_favorite, labels)"),
            ),
        }
    }
    v.finish()?;
    let mut conn = h.ctx.db.get().await?;
    let updated = store::update_prompt(
        &mut conn,
        id,
        |owner| may_touch(&principal, owner),
        &changes,
        db_now(),
    )
    .await;
    match updated {
        Ok(true) => {}
        Ok(false) => return Err(ContentError::not_found("prompt")),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => return Err(versioned::name_taken(PROMPTS.what)),
        Err(e) => return Err(e.into()),
    }
    drop(conn);
    h.prompt_changed(id).await;
    Ok(pb::UpdatePromptResponse {
        prompt: Some((*h.visible_prompt(&principal, id).await?).clone()),
    })
}

/// `DeletePrompt`.
pub async fn delete_prompt(
    h: &ContentHandlers,
    request: Request<pb::DeletePromptRequest>,
) -> Result<pb::DeletePromptResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let id = validate::id("prompt_id", &request.get_ref().prompt_id)?;
    let mut conn = h.ctx.db.get().await?;
    let may_write = |owner| may_touch(&principal, owner);
    let Some(last) = versions::delete_item(&mut conn, PROMPTS, id, may_write).await? else {
        return Err(ContentError::not_found("prompt"));
    };
    drop(conn);
    h.prompt_changed(id).await;
    versioned::forget_versions(&h.prompt_versions, id, last).await;
    Ok(pb::DeletePromptResponse {})
}

/// `CreatePromptVersion`.
pub async fn create_prompt_version(
    h: &ContentHandlers,
    request: Request<pb::CreatePromptVersionRequest>,
) -> Result<pb::CreatePromptVersionResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let mut v = Violations::new();
    let body = check_body(&mut v, "version", req.version.as_ref());
    let request_id = validate::request_id(&mut v, &req.request_id);
    v.finish()?;
    let [template_bytes, params_bytes] = body_hash_parts(&body);
    let hash = request_hash(&[&template_bytes, &params_bytes]);
    let mut conn = h.ctx.db.get().await?;
    let made = store::insert_version(
        &mut conn,
        id,
        |owner| may_touch(&principal, owner),
        &body,
        principal.user_id,
        request_id.map(|r| (r, hash.as_slice())),
        db_now(),
    )
    .await?;
    drop(conn);
    let row = match made {
        None => return Err(ContentError::not_found("prompt")),
        Some(versions::NewVersion::Conflict) => return Err(conflict()),
        Some(versions::NewVersion::Replayed(row)) => row,
        Some(versions::NewVersion::Made(row)) => {
            h.prompt_changed(id).await;
            row
        }
    };
    Ok(pb::CreatePromptVersionResponse {
        version: Some(version_proto(&row)),
    })
}

/// `ListPromptVersions`.
pub async fn list_prompt_versions(
    h: &ContentHandlers,
    request: Request<pb::ListPromptVersionsRequest>,
) -> Result<pb::ListPromptVersionsResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let limit = page_size(req.page_size)?;
    let context = PageContext::new(LIST_VERSIONS, &principal.user_id, &[&req.prompt_id]);
    let before = version_after(&req.page_token, &context)?;
    h.visible_prompt(&principal, id).await?;
    let mut conn = h.ctx.db.get().await?;
    let rows =
        versions::version_page::<store::VersionRow>(&mut conn, PROMPTS, id, before, limit + 1)
            .await?;
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        number_token(i64::from(last.version), &context)
    });
    Ok(pb::ListPromptVersionsResponse {
        versions: rows.iter().map(version_proto).collect(),
        next_page_token,
    })
}

/// `DeletePromptVersion`.
pub async fn delete_prompt_version(
    h: &ContentHandlers,
    request: Request<pb::DeletePromptVersionRequest>,
) -> Result<pb::DeletePromptVersionResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    h.remove_version(&principal, PROMPTS, id, req.version)
        .await?;
    h.prompt_changed(id).await;
    h.prompt_versions
        .invalidate(&[format!("{id}/{}", req.version)])
        .await;
    Ok(pb::DeletePromptVersionResponse {})
}

/// `SetPromptLabel`.
pub async fn set_prompt_label(
    h: &ContentHandlers,
    request: Request<pb::SetPromptLabelRequest>,
) -> Result<pb::SetPromptLabelResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let label = h
        .move_label(&principal, PROMPTS, id, &req.label, &req.versions)
        .await?;
    h.prompt_changed(id).await;
    Ok(pb::SetPromptLabelResponse { label: Some(label) })
}

/// `ListPromptLabelHistory`.
pub async fn list_prompt_label_history(
    h: &ContentHandlers,
    request: Request<pb::ListPromptLabelHistoryRequest>,
) -> Result<pb::ListPromptLabelHistoryResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let visible = async { h.visible_prompt(&principal, id).await.map(|_| ()) };
    let (moves, next_page_token) = h
        .label_history(
            &principal,
            PROMPTS,
            LIST_HISTORY,
            id,
            &req.label,
            req.page_size,
            &req.page_token,
            visible,
        )
        .await?;
    Ok(pb::ListPromptLabelHistoryResponse {
        moves,
        next_page_token,
    })
}

/// The label a Resolve or Render selects and the version it gives `subject`.
async fn resolve(
    h: &ContentHandlers,
    principal: &Principal,
    id: Uuid,
    selector: Option<&pb::version_selector::Selector>,
    subject: &str,
) -> Result<(String, Arc<pb::PromptVersion>), ContentError> {
    check_subject(subject)?;
    let head = h.visible_prompt(principal, id).await?;
    let selected = versions::select(selector, &head.version_labels)?;
    let (label, number) = pick(id, &selected, subject);
    Ok((label, h.prompt_version(id, number).await?))
}

/// `ResolvePrompt`.
pub async fn resolve_prompt(
    h: &ContentHandlers,
    request: Request<pb::ResolvePromptRequest>,
) -> Result<pb::ResolvePromptResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let selector =
        (!req.label.is_empty()).then_some(pb::version_selector::Selector::Label(req.label));
    let (label, version) = resolve(h, &principal, id, selector.as_ref(), &req.subject).await?;
    Ok(pb::ResolvePromptResponse {
        label,
        version: Some((*version).clone()),
    })
}

/// `RenderPrompt`.
pub async fn render_prompt(
    h: &ContentHandlers,
    request: Request<pb::RenderPromptRequest>,
) -> Result<pb::RenderPromptResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let id = validate::id("prompt_id", &req.prompt_id)?;
    let selector = req.selector.and_then(|s| s.selector);
    let (_, version) = resolve(h, &principal, id, selector.as_ref(), &req.subject).await?;
    let text = template::render(&version.template, &req.variables).map_err(|e| match e {
        RenderError::Missing(name) => ContentError::invalid(
            format!("variables[{name:?}]"),
            "the template declares this variable: give it a value",
        ),
        RenderError::Undeclared(name) => ContentError::invalid(
            format!("variables[{name:?}]"),
            format!("version {} declares no such variable", version.version),
        ),
    })?;
    Ok(pb::RenderPromptResponse {
        text,
        version: version.version,
    })
}

#[tonic::async_trait]
impl pb::prompt_service_server::PromptService for ContentHandlers {
    async fn create_prompt(
        &self,
        request: Request<pb::CreatePromptRequest>,
    ) -> Result<tonic::Response<pb::CreatePromptResponse>, tonic::Status> {
        strata_errors::respond(create_prompt(self, request).await)
    }

    async fn get_prompt(
        &self,
        request: Request<pb::GetPromptRequest>,
    ) -> Result<tonic::Response<pb::GetPromptResponse>, tonic::Status> {
        strata_errors::respond(get_prompt(self, request).await)
    }

    async fn list_prompts(
        &self,
        request: Request<pb::ListPromptsRequest>,
    ) -> Result<tonic::Response<pb::ListPromptsResponse>, tonic::Status> {
        strata_errors::respond(list_prompts(self, request).await)
    }

    async fn update_prompt(
        &self,
        request: Request<pb::UpdatePromptRequest>,
    ) -> Result<tonic::Response<pb::UpdatePromptResponse>, tonic::Status> {
        strata_errors::respond(update_prompt(self, request).await)
    }

    async fn delete_prompt(
        &self,
        request: Request<pb::DeletePromptRequest>,
    ) -> Result<tonic::Response<pb::DeletePromptResponse>, tonic::Status> {
        strata_errors::respond(delete_prompt(self, request).await)
    }

    async fn create_prompt_version(
        &self,
        request: Request<pb::CreatePromptVersionRequest>,
    ) -> Result<tonic::Response<pb::CreatePromptVersionResponse>, tonic::Status> {
        strata_errors::respond(create_prompt_version(self, request).await)
    }

    async fn list_prompt_versions(
        &self,
        request: Request<pb::ListPromptVersionsRequest>,
    ) -> Result<tonic::Response<pb::ListPromptVersionsResponse>, tonic::Status> {
        strata_errors::respond(list_prompt_versions(self, request).await)
    }

    async fn delete_prompt_version(
        &self,
        request: Request<pb::DeletePromptVersionRequest>,
    ) -> Result<tonic::Response<pb::DeletePromptVersionResponse>, tonic::Status> {
        strata_errors::respond(delete_prompt_version(self, request).await)
    }

    async fn set_prompt_label(
        &self,
        request: Request<pb::SetPromptLabelRequest>,
    ) -> Result<tonic::Response<pb::SetPromptLabelResponse>, tonic::Status> {
        strata_errors::respond(set_prompt_label(self, request).await)
    }

    async fn list_prompt_label_history(
        &self,
        request: Request<pb::ListPromptLabelHistoryRequest>,
    ) -> Result<tonic::Response<pb::ListPromptLabelHistoryResponse>, tonic::Status> {
        strata_errors::respond(list_prompt_label_history(self, request).await)
    }

    async fn resolve_prompt(
        &self,
        request: Request<pb::ResolvePromptRequest>,
    ) -> Result<tonic::Response<pb::ResolvePromptResponse>, tonic::Status> {
        strata_errors::respond(resolve_prompt(self, request).await)
    }

    async fn render_prompt(
        &self,
        request: Request<pb::RenderPromptRequest>,
    ) -> Result<tonic::Response<pb::RenderPromptResponse>, tonic::Status> {
        strata_errors::respond(render_prompt(self, request).await)
    }
}
