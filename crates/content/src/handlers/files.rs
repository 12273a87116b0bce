//! Project files: batch upserts (one statement, all or nothing, contents stored once per
//! SHA-256), lists by path, reads, batch deletes. Reads need a project the caller may see;
//! writes the caller's own.

use sha2::{Digest, Sha256};
use strata_errors::{ApiError, QuotaViolation, Violations};
use strata_proto::content as pb;
use strata_runtime::pagination::{KeyCursor, PageContext, finish_page, page_size_within};
use strata_runtime::time::timestamp;
use tonic::Request;

use super::projects::write_owner;
use super::{ContentHandlers, SCOPE_READ, SCOPE_WRITE, caller, db_now};
use crate::ContentError;
use crate::store::files::{self as store, NewFile, Upserted};
use crate::validate;

/// Longest path, in bytes.
const MAX_PATH_BYTES: usize = 1024;
/// Most segments of a path.
const MAX_DEPTH: usize = 32;
/// Most content bytes one ListFiles page returns (past its first file).
const PAGE_CONTENT_BYTES: usize = 2 << 20;
/// Longest language name.
const MAX_LANGUAGE: usize = 50;
/// Fields a read_mask may name.
const FIELDS: &[&str] = &[
    "path",
    "language",
    "content",
    "size",
    "sha256",
    "create_time",
    "update_time",
];
const LIST_FILES: &str = "strata.content.v1.FileService/ListFiles";

/// `path` normalized (`./a//b` → `a/b`), or what is wrong with it.
pub fn normalize_path(path: &str) -> Result<String, &'static str> {
    if path.is_empty() {
        return Err("must not be empty");
    }
    if path.starts_with('/') {
        return Err("must be relative (no leading '/')");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '\u{10FFFF}')
    {
        return Err("must not hold control characters, '\\' or U+10FFFF");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("must not hold a '..' segment"),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err("must name a file");
    }
    if parts.len() > MAX_DEPTH {
        return Err("must have at most 32 segments");
    }
    let normalized = parts.join("/");
    if normalized.len() > MAX_PATH_BYTES {
        return Err("must be at most 1024 bytes");
    }
    Ok(normalized)
}

/// The language of a file by its name's extension (lowercase), `text` when unknown.
pub fn detect_language(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "dockerfile" => return "dockerfile",
        "makefile" | "gnumakefile" => return "makefile",
        _ => {}
    }
    let Some((_, ext)) = lower.rsplit_once('.') else {
        return "text";
    };
    match ext {
        "rs" => "rust",
        "py" | "pyi" => "python",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "mts" | "cts" | "tsx" => "typescript",
        "go" => "go",
        "java" => "java",
        "kt" | "kts" => "kotlin",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" => "cpp",
        "cs" => "csharp",
        "rb" => "ruby",
        "php" => "php",
        "swift" => "swift",
        "scala" => "scala",
        "sh" | "bash" | "zsh" => "shell",
        "sql" => "sql",
        "html" | "htm" => "html",
        "css" => "css",
        "scss" | "sass" => "scss",
        "json" => "json",
        "yaml" | "yml" => "yaml",
        "toml" => "toml",
        "xml" => "xml",
        "md" | "markdown" => "markdown",
        "proto" => "protobuf",
        "ipynb" => "jupyter",
        "txt" => "text",
        _ => "text",
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn file_proto(row: &store::FileRow) -> pb::File {
    pb::File {
        path: row.path.clone(),
        language: row.language.clone(),
        content: row.content.clone().unwrap_or_default(),
        size: row.size,
        sha256: hex(&row.hash),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

fn too_many(message: String, subject: &str) -> ContentError {
    ContentError::Api(ApiError::ResourceExhausted {
        message: message.clone().into(),
        retry_after: std::time::Duration::ZERO,
        quota: vec![QuotaViolation::new(subject, message)],
    })
}

/// `BatchUpsertFiles`.
pub async fn batch_upsert_files(
    h: &ContentHandlers,
    request: Request<pb::BatchUpsertFilesRequest>,
) -> Result<pb::BatchUpsertFilesResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let project = validate::id("project_id", &req.project_id)?;
    let limits = &h.config;
    if req.files.is_empty() {
        return Err(ContentError::invalid(
            "files",
            "must hold at least one file",
        ));
    }
    if req.files.len() > limits.max_batch_files {
        return Err(too_many(
            format!(
                "a batch holds at most {} files (STRATA_CONTENT_MAX_BATCH_FILES); split it",
                limits.max_batch_files
            ),
            "files",
        ));
    }
    let mut v = Violations::new();
    let mut files = Vec::with_capacity(req.files.len());
    let mut seen = std::collections::HashMap::with_capacity(req.files.len());
    for (i, file) in req.files.iter().enumerate() {
        let path = match normalize_path(&file.path) {
            Ok(path) => path,
            Err(problem) => {
                v.add(format!("files[{i}].path"), problem);
                continue;
            }
        };
        if let Some(first) = seen.insert(path.clone(), i) {
            v.add(
                format!("files[{i}].path"),
                format!("names the same file as files[{first}]"),
            );
        }
        if file.content.len() > limits.max_file_bytes {
            v.add(
                format!("files[{i}].content"),
                format!(
                    "must be at most {} bytes (STRATA_CONTENT_MAX_FILE_BYTES)",
                    limits.max_file_bytes
                ),
            );
        }
        let language = if file.language.is_empty() {
            detect_language(&path).to_owned()
        } else {
            validate::text(
                &mut v,
                &format!("files[{i}].language"),
                &file.language,
                1,
                MAX_LANGUAGE,
            );
            file.language.to_lowercase()
        };
        files.push(NewFile {
            hash: Sha256::digest(&file.content).to_vec(),
            path,
            language,
            content: file.content.clone(),
        });
    }
    v.finish()?;
    let max = i64::try_from(limits.max_project_files).unwrap_or(i64::MAX);
    let mut conn = h.ctx.db.get().await?;
    let now = db_now();
    let written = store::upsert(
        &mut conn,
        project,
        write_owner(&principal),
        &files,
        max,
        now,
    )
    .await?;
    drop(conn);
    let created = match written {
        Upserted::NotFound => return Err(ContentError::not_found("project")),
        Upserted::TooMany { existing } => {
            return Err(too_many(
                format!(
                    "a project holds at most {max} files (STRATA_CONTENT_MAX_PROJECT_FILES); it \
                     holds {existing}"
                ),
                "project_files",
            ));
        }
        Upserted::Written(created) => created
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    };
    h.projects_changed(&[project]).await;
    Ok(pb::BatchUpsertFilesResponse {
        files: files
            .iter()
            .map(|f| pb::File {
                path: f.path.clone(),
                language: f.language.clone(),
                content: Vec::new(),
                size: f.content.len() as i64,
                sha256: hex(&f.hash),
                create_time: Some(timestamp(created.get(&f.path).copied().unwrap_or(now))),
                update_time: Some(timestamp(now)),
            })
            .collect(),
    })
}

/// `ListFiles`.
pub async fn list_files(
    h: &ContentHandlers,
    request: Request<pb::ListFilesRequest>,
) -> Result<pb::ListFilesResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let project = validate::id("project_id", &req.project_id)?;
    let limit = page_size_within(req.page_size, 100, 1000)?;
    let fields = match req.read_mask.as_ref() {
        None => FIELDS.iter().copied().filter(|f| *f != "content").collect(),
        Some(_) => validate::read_mask(req.read_mask.as_ref(), FIELDS)?,
    };
    let mut v = Violations::new();
    if req.path_prefix.len() > MAX_PATH_BYTES || req.path_prefix.chars().any(char::is_control) {
        v.add(
            "path_prefix",
            "must be at most 1024 bytes without control characters",
        );
    }
    if !req.language.is_empty() {
        validate::text(&mut v, "language", &req.language, 1, MAX_LANGUAGE);
    }
    v.finish()?;
    let context = PageContext::new(
        LIST_FILES,
        &principal.user_id,
        &[&req.project_id, &req.path_prefix, &req.language],
    );
    let after = match KeyCursor::decode(&req.page_token, &context)? {
        None => None,
        Some(cursor) => {
            let mut reader = cursor.reader();
            let path = reader.str()?;
            reader.end()?;
            Some(path)
        }
    };
    h.visible_project(&principal, project).await?;
    let filter = store::FileFilter {
        prefix: (!req.path_prefix.is_empty()).then(|| req.path_prefix.clone()),
        language: (!req.language.is_empty()).then(|| req.language.to_lowercase()),
    };
    let content = fields.contains(&"content");
    // With contents, a page is bounded in bytes too: at most 20 files read, and the page
    // ends before the content passes 2 MiB (at least one file per page).
    let limit = if content { limit.min(20) } else { limit };
    let mut conn = h.ctx.db.get().await?;
    let rows = store::list(
        &mut conn,
        project,
        &filter,
        after.as_deref(),
        content,
        limit + 1,
    )
    .await?;
    drop(conn);
    let mut rows = rows;
    let mut bytes = 0;
    let fits = rows
        .iter()
        .position(|r| {
            bytes += r.content.as_ref().map_or(0, Vec::len);
            bytes > PAGE_CONTENT_BYTES
        })
        .map_or(rows.len(), |i| i.max(1));
    let limit = if fits < rows.len() {
        rows.truncate(fits + 1);
        fits as i64
    } else {
        limit
    };
    let (rows, next_page_token) = finish_page(rows, limit, |last| {
        KeyCursor::default().push_str(&last.path).encode(&context)
    });
    Ok(pb::ListFilesResponse {
        files: rows
            .iter()
            .map(|r| {
                super::versioned::mask!(
                    file_proto(r),
                    fields,
                    [
                        path,
                        language,
                        content,
                        size,
                        sha256,
                        create_time,
                        update_time
                    ]
                )
            })
            .collect(),
        next_page_token,
    })
}

/// `GetFile`.
pub async fn get_file(
    h: &ContentHandlers,
    request: Request<pb::GetFileRequest>,
) -> Result<pb::GetFileResponse, ContentError> {
    let principal = caller(&request, SCOPE_READ)?;
    let req = request.into_inner();
    let project = validate::id("project_id", &req.project_id)?;
    let path =
        normalize_path(&req.path).map_err(|problem| ContentError::invalid("path", problem))?;
    h.visible_project(&principal, project).await?;
    let mut conn = h.ctx.db.get().await?;
    let row = store::get(&mut conn, project, &path).await?;
    Ok(pb::GetFileResponse {
        file: Some(file_proto(&row.ok_or(ContentError::not_found("file"))?)),
    })
}

/// `DeleteFiles`.
pub async fn delete_files(
    h: &ContentHandlers,
    request: Request<pb::DeleteFilesRequest>,
) -> Result<pb::DeleteFilesResponse, ContentError> {
    let principal = caller(&request, SCOPE_WRITE)?;
    let req = request.into_inner();
    let project = validate::id("project_id", &req.project_id)?;
    if req.paths.is_empty() {
        return Err(ContentError::invalid(
            "paths",
            "must name at least one path",
        ));
    }
    if req.paths.len() > h.config.max_batch_files {
        return Err(too_many(
            format!(
                "a batch names at most {} files (STRATA_CONTENT_MAX_BATCH_FILES); split it",
                h.config.max_batch_files
            ),
            "paths",
        ));
    }
    let mut v = Violations::new();
    let mut paths = Vec::with_capacity(req.paths.len());
    for (i, path) in req.paths.iter().enumerate() {
        match normalize_path(path) {
            Ok(path) => paths.push(path),
            Err(problem) => v.add(format!("paths[{i}]"), problem),
        }
    }
    v.finish()?;
    let mut conn = h.ctx.db.get().await?;
    let deleted = store::delete(
        &mut conn,
        project,
        write_owner(&principal),
        &paths,
        db_now(),
    )
    .await?
    .ok_or(ContentError::not_found("project"))?;
    drop(conn);
    if deleted > 0 {
        h.projects_changed(&[project]).await;
    }
    Ok(pb::DeleteFilesResponse {
        deleted_count: deleted,
    })
}

#[tonic::async_trait]
impl pb::file_service_server::FileService for ContentHandlers {
    async fn batch_upsert_files(
        &self,
        request: Request<pb::BatchUpsertFilesRequest>,
    ) -> Result<tonic::Response<pb::BatchUpsertFilesResponse>, tonic::Status> {
        strata_errors::respond(batch_upsert_files(self, request).await)
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<tonic::Response<pb::ListFilesResponse>, tonic::Status> {
        strata_errors::respond(list_files(self, request).await)
    }

    async fn get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> Result<tonic::Response<pb::GetFileResponse>, tonic::Status> {
        strata_errors::respond(get_file(self, request).await)
    }

    async fn delete_files(
        &self,
        request: Request<pb::DeleteFilesRequest>,
    ) -> Result<tonic::Response<pb::DeleteFilesResponse>, tonic::Status> {
        strata_errors::respond(delete_files(self, request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_escapes_refused() {
        assert_eq!(
            normalize_path("./src//main.rs").as_deref(),
            Ok("src/main.rs")
        );
        assert_eq!(normalize_path("a/./b/").as_deref(), Ok("a/b"));
        assert!(normalize_path("../etc/passwd").is_err());
        assert!(normalize_path("a/../../b").is_err());
        assert!(normalize_path("/abs").is_err());
        assert!(normalize_path("a\\b").is_err());
        assert!(normalize_path("./").is_err());
        assert!(normalize_path(&"a/".repeat(33)).is_err());
        assert!(normalize_path(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn languages_follow_the_extension() {
        assert_eq!(detect_language("src/main.rs"), "rust");
        assert_eq!(detect_language("app/Component.TSX"), "typescript");
        assert_eq!(detect_language("Dockerfile"), "dockerfile");
        assert_eq!(detect_language("README"), "text");
        assert_eq!(detect_language("notes.weird"), "text");
    }
}
