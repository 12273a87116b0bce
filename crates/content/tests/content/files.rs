//! FileService and ForkProject: batch upserts all or nothing, content stored once, lists by
//! path, limits, forks that copy rows (not bytes) and stay independent.

use diesel_async::RunQueryDsl;
use strata_proto::content::{self as pb};
use strata_testkit::bearer;
use tonic::Code;

use super::projects::{Site, create};
use super::violations;

fn file(path: &str, content: &str) -> pb::File {
    pb::File {
        path: path.into(),
        content: content.as_bytes().to_vec(),
        ..Default::default()
    }
}

async fn count(site: &Site, sql: &str) -> i64 {
    let mut conn = site.db.connect().await;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "({sql})"
    )))
    .get_result(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_contents_are_stored_once() {
    let site = Site::start().await;
    let mut c = site.projects();
    let mut f = site.files();
    let ada = site.user().await;
    let p = create(&mut c, &ada, "code", "", false, &[]).await;
    let upsert = |files: Vec<pb::File>| {
        bearer(
            pb::BatchUpsertFilesRequest {
                project_id: p.id.clone(),
                files,
            },
            &ada.token,
        )
    };
    // 300 files, one batch: paths normalized, languages detected, one blob per content.
    let mut files: Vec<pb::File> = (0..300)
        .map(|i| file(&format!("./src//m{i:03}.rs"), &format!("mod m{};", i % 10)))
        .collect();
    files.push(pb::File {
        language: "Markdown".into(),
        ..file("README", "# hi")
    });
    let written = f
        .batch_upsert_files(upsert(files))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.files.len(), 301);
    assert_eq!(
        (
            written.files[0].path.as_str(),
            written.files[0].language.as_str()
        ),
        ("src/m000.rs", "rust")
    );
    assert_eq!(written.files[300].language, "markdown");
    assert_eq!(written.files[0].sha256.len(), 64);
    assert_eq!(count(&site, "SELECT count(*) FROM content.blobs").await, 11);

    // One bad file anywhere: nothing written, every fault named by index.
    let bad = vec![
        file("ok.rs", "new"),
        file("../escape", "x"),
        file("ok.rs", "twice"),
        file("big.bin", &"x".repeat((1 << 20) + 1)),
    ];
    let refused = f.batch_upsert_files(upsert(bad)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&refused),
        ["files[1].path", "files[2].path", "files[3].content"]
    );
    assert_eq!(
        count(&site, "SELECT count(*) FROM content.project_files").await,
        301
    );
    // Over the batch limit: RESOURCE_EXHAUSTED naming the limit.
    let many: Vec<pb::File> = (0..1001).map(|i| file(&format!("f{i}"), "")).collect();
    let exhausted = f.batch_upsert_files(upsert(many)).await.unwrap_err();
    assert_eq!(exhausted.code(), Code::ResourceExhausted);
    assert!(
        exhausted
            .message()
            .contains("STRATA_CONTENT_MAX_BATCH_FILES"),
        "{exhausted:?}"
    );

    // Replacing a file changes its content, keeps its creation time.
    let before = f
        .get_file(bearer(
            pb::GetFileRequest {
                project_id: p.id.clone(),
                path: "src/m001.rs".into(),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap();
    assert_eq!(before.content, b"mod m1;");
    f.batch_upsert_files(upsert(vec![file("src/m001.rs", "changed")]))
        .await
        .unwrap();
    let after = f
        .get_file(bearer(
            pb::GetFileRequest {
                project_id: p.id.clone(),
                path: "./src/m001.rs".into(),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap();
    assert_eq!((after.content.as_slice(), after.size), (&b"changed"[..], 7));
    assert_eq!(after.create_time, before.create_time);

    // Lists: by path, prefix and language filters, keyset pages, content only when asked.
    let list =
        |prefix: &str, language: &str, page_size: i32, token: String, mask: Option<Vec<&str>>| {
            bearer(
                pb::ListFilesRequest {
                    project_id: p.id.clone(),
                    path_prefix: prefix.into(),
                    language: language.into(),
                    page_size,
                    page_token: token,
                    read_mask: mask.map(|paths| prost_types::FieldMask {
                        paths: paths.into_iter().map(str::to_owned).collect(),
                    }),
                },
                &ada.token,
            )
        };
    let mut token = String::new();
    let mut paths = Vec::new();
    loop {
        let page = f
            .list_files(list("src/m1", "", 40, token, None))
            .await
            .unwrap()
            .into_inner();
        assert!(page.files.iter().all(|f| f.content.is_empty()));
        paths.extend(page.files.into_iter().map(|f| f.path));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (100..200).map(|i| format!("src/m{i}.rs")).collect();
    assert_eq!(paths, expected);
    let docs = f
        .list_files(list(
            "",
            "markdown",
            10,
            String::new(),
            Some(vec!["path", "content"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(docs.files.len(), 1);
    assert_eq!(
        (docs.files[0].content.as_slice(), docs.files[0].size),
        (&b"# hi"[..], 0)
    );

    // Delete: missing paths ignored.
    let deleted = f
        .delete_files(bearer(
            pb::DeleteFilesRequest {
                project_id: p.id.clone(),
                paths: vec!["README".into(), "src/m000.rs".into(), "nope".into()],
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_count, 2);
    let gone = f
        .get_file(bearer(
            pb::GetFileRequest {
                project_id: p.id.clone(),
                path: "README".into(),
            },
            &ada.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (gone.code(), gone.message()),
        (Code::NotFound, "file not found")
    );
}

#[tokio::test]
async fn a_fork_copies_every_file_row_in_one_transaction_and_stays_independent() {
    let site = Site::start().await;
    let mut c = site.projects();
    let mut f = site.files();
    let (ada, eve) = (site.user().await, site.user().await);
    let original = create(&mut c, &ada, "origin", "the original", true, &["demo"]).await;
    let files: Vec<pb::File> = (0..1000)
        .map(|i| file(&format!("lib/f{i:04}.py"), &format!("x = {i}")))
        .collect();
    f.batch_upsert_files(bearer(
        pb::BatchUpsertFilesRequest {
            project_id: original.id.clone(),
            files,
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let blobs = count(&site, "SELECT count(*) FROM content.blobs").await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let fork = |name: &str| {
        bearer(
            pb::ForkProjectRequest {
                project_id: original.id.clone(),
                name: name.into(),
                request_id: request_id.clone(),
            },
            &eve.token,
        )
    };
    let forked = c.fork_project(fork("mine")).await.unwrap().into_inner();
    assert_eq!(forked.file_count, 1000);
    let copy = forked.project.unwrap();
    assert_eq!(
        (
            copy.name.as_str(),
            copy.owner_id.clone(),
            copy.visibility,
            copy.forked_from.as_str()
        ),
        (
            "mine",
            eve.id.to_string(),
            pb::Visibility::Private as i32,
            original.id.as_str()
        )
    );
    assert_eq!(copy.description, "the original");
    // No bytes copied.
    assert_eq!(
        count(&site, "SELECT count(*) FROM content.blobs").await,
        blobs
    );
    // A retry returns the same fork; another request with the same id is refused.
    let again = c.fork_project(fork("mine")).await.unwrap().into_inner();
    assert_eq!(
        (again.project.unwrap().id, again.file_count),
        (copy.id.clone(), 1000)
    );
    let other = c.fork_project(fork("other")).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    let counted = c
        .get_project(bearer(
            pb::GetProjectRequest {
                project_id: original.id.clone(),
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(counted.fork_count, 1);
    // Later changes to the original do not reach the fork.
    f.batch_upsert_files(bearer(
        pb::BatchUpsertFilesRequest {
            project_id: original.id.clone(),
            files: vec![file("lib/f0000.py", "changed"), file("new.py", "")],
        },
        &ada.token,
    ))
    .await
    .unwrap();
    c.delete_project(bearer(
        pb::DeleteProjectRequest {
            project_id: original.id.clone(),
        },
        &ada.token,
    ))
    .await
    .unwrap();
    let kept = f
        .get_file(bearer(
            pb::GetFileRequest {
                project_id: copy.id.clone(),
                path: "lib/f0000.py".into(),
            },
            &eve.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap();
    assert_eq!(kept.content, b"x = 0");
    assert_eq!(
        count(
            &site,
            &format!(
                "SELECT count(*) FROM content.project_files WHERE project_id = '{}'",
                copy.id
            )
        )
        .await,
        1000
    );
    let orphan = c
        .get_project(bearer(
            pb::GetProjectRequest {
                project_id: copy.id.clone(),
            },
            &eve.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(orphan.forked_from, "");
}

#[tokio::test]
async fn concurrent_batches_never_pass_the_project_file_limit() {
    use sha2::Digest as _;
    use strata_content::store::files::{self, NewFile, Upserted};
    let site = Site::start().await;
    let ada = site.user().await;
    let project = create(&mut site.projects(), &ada, "limited", "", false, &[]).await;
    let id: uuid::Uuid = project.id.parse().unwrap();
    let new_file = |path: String, content: &str| NewFile {
        path,
        language: "text".into(),
        hash: sha2::Sha256::digest(content.as_bytes()).to_vec(),
        content: content.as_bytes().to_vec(),
    };
    let upsert = async |files: Vec<NewFile>| {
        let mut conn = site.db.connect().await;
        files::upsert(&mut conn, id, Some(ada.id), &files, 25, chrono::Utc::now())
            .await
            .unwrap()
    };
    let stored = async || {
        (
            count(
                &site,
                &format!("SELECT file_count FROM content.projects WHERE id = '{id}'"),
            )
            .await,
            count(
                &site,
                &format!("SELECT count(*) FROM content.project_files WHERE project_id = '{id}'"),
            )
            .await,
        )
    };
    // Ten batches of ten new files at once (connections opened first, so the statements
    // overlap and queue on the project's lock) against a limit of 25: exactly two fit,
    // each seeing the files of those before it on the locked project row.
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(site.db.connect().await);
    }
    let batches = conns.iter_mut().enumerate().map(|(b, conn)| {
        let files: Vec<NewFile> = (0..10)
            .map(|i| new_file(format!("b{b}/f{i}"), &format!("{b}-{i}")))
            .collect();
        async move {
            files::upsert(conn, id, Some(ada.id), &files, 25, chrono::Utc::now())
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(batches).await;
    let written = outcomes
        .iter()
        .filter(|o| matches!(o, Upserted::Written(_)))
        .count();
    assert_eq!(written, 2, "{outcomes:?}");
    assert_eq!(stored().await, (20, 20));
    // Up to the limit, then replacing files already there adds nothing and passes; one
    // new file more does not.
    let last: Vec<NewFile> = (0..5).map(|i| new_file(format!("last/{i}"), "a")).collect();
    assert!(matches!(upsert(last).await, Upserted::Written(_)));
    let replaced: Vec<NewFile> = (0..5).map(|i| new_file(format!("last/{i}"), "b")).collect();
    assert!(matches!(upsert(replaced).await, Upserted::Written(_)));
    assert!(matches!(
        upsert(vec![new_file("one/more".into(), "c")]).await,
        Upserted::TooMany { existing: 25 }
    ));
    assert_eq!(stored().await, (25, 25));
    // Deletes and forks keep the count.
    let mut conn = site.db.connect().await;
    let gone = files::delete(
        &mut conn,
        id,
        Some(ada.id),
        &["last/0".into(), "last/1".into(), "nothing".into()],
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(gone, Some(2));
    assert_eq!(stored().await, (23, 23));
    let fork = site
        .projects()
        .fork_project(bearer(
            pb::ForkProjectRequest {
                project_id: id.to_string(),
                ..Default::default()
            },
            &ada.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fork.file_count, 23);
    let fork_id = fork.project.unwrap().id;
    assert_eq!(
        count(
            &site,
            &format!("SELECT file_count FROM content.projects WHERE id = '{fork_id}'")
        )
        .await,
        23
    );
}
