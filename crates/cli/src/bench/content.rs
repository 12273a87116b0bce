//! The content scenarios, on content seeded at the content issue's scale (100,000 projects
//! with a million files at `quick` and `full`): a user's projects, public discovery in each
//! order, search over a rotating set of queries, batch file writes, forks of a 1,000-file
//! project and cached prompt resolution.
//!
//! Latency targets are for one call at a time, as in the reports they answer (project list
//! 25 ms, file operations 150 ms, public discovery 120 ms); the rows under load beside them
//! show what concurrency adds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_bench::load::Load;
use strata_content::seed::{SeedOptions, VOCABULARY};
use strata_proto::content::file_service_client::FileServiceClient;
use strata_proto::content::project_service_client::ProjectServiceClient;
use strata_proto::content::prompt_service_client::PromptServiceClient;
use strata_proto::content::{self as cpb};
use tonic::transport::Channel;

use super::{Limit, Recorder, Scale, Target, User, bearer, nth, sign_up};

/// Files of the project `ForkProject` copies.
const FORKED_FILES: usize = 1_000;
/// Files of each `BatchUpsertFiles` call.
const BATCH_FILES: usize = 100;
/// Projects the batches write to in turn.
const BATCH_PROJECTS: usize = 8;

impl Scale {
    /// What `strata seed content` loads before the content scenarios.
    fn content(self) -> SeedOptions {
        match self {
            Scale::Smoke => SeedOptions {
                projects: 2_000,
                files_per_project: 5,
                agents: 500,
                prompts: 500,
                ..SeedOptions::default()
            },
            Scale::Quick | Scale::Full => SeedOptions {
                projects: 100_000,
                files_per_project: 10,
                agents: 20_000,
                prompts: 20_000,
                ..SeedOptions::default()
            },
        }
    }
}

/// What the content scenarios need: owners who can sign in, the projects batches write
/// to, the project forks copy, a prompt with a weighted label.
struct Fixtures {
    owners: Arc<Vec<User>>,
    batch_projects: Arc<Vec<String>>,
    forked: String,
    prompt: String,
}

/// Seeds content (the first owners are users who can sign in), prepares the fixtures and
/// measures the scenarios.
pub(super) async fn run(
    bench: &mut Recorder<'_>,
    channel: &Channel,
    database_url: &str,
    scale: Scale,
    wide: &Load,
    run_id: u32,
    cores: usize,
) -> anyhow::Result<()> {
    let progress = |what: &str| eprintln!("strata bench: {what}");
    let one = Load::closed(1, 1, wide.measure);
    let mut owners = Vec::new();
    for i in 0..8 {
        let email = format!("c{i}.{run_id}@bench.example");
        owners.push(sign_up(channel.clone(), email).await?);
    }
    let options = SeedOptions {
        known_owners: owners
            .iter()
            .map(|o| o.id.parse())
            .collect::<Result<_, _>>()
            .context("a user id")?,
        ..scale.content()
    };
    progress(&format!(
        "seeding {} projects ({} files each), {} prompts, {} agents",
        options.projects, options.files_per_project, options.prompts, options.agents
    ));
    let config = strata_storage::DbConfig::new(
        database_url.to_owned(),
        "strata-bench-seed",
        strata_storage::Environment::Development,
    );
    let started = Instant::now();
    strata_content::seed::seed(&config, &options, cores, |done, total| {
        eprint!(
            "\r{}",
            super::super::progress_bar(done, total, "items", started.elapsed())
        );
    })
    .await
    .context("seeding content")?;
    eprintln!();
    let fixtures = fixtures(channel, owners).await?;

    progress("ListProjects, ListPublicProjects, SearchProjects");
    let mine = {
        let owners = Arc::clone(&fixtures.owners);
        move |c, seq| list_projects(c, nth(&owners, seq).token.clone())
    };
    bench
        .measure(
            "ListProjects (mine, 50 per page; the owners of the most), one at a time",
            &one,
            Limit::PgbenchSelect,
            "25 ms",
            Target::p(0.5, Duration::from_millis(2)),
            mine.clone(),
        )
        .await;
    bench
        .measure(
            "ListProjects (mine, 50 per page)",
            wide,
            Limit::PgbenchSelect,
            "25 ms",
            Target::None,
            mine,
        )
        .await;
    let orders = [
        ("likes", cpb::ProjectOrder::Likes),
        ("forks", cpb::ProjectOrder::Forks),
        ("views", cpb::ProjectOrder::Views),
        ("newest", cpb::ProjectOrder::Newest),
        ("trending", cpb::ProjectOrder::Trending),
    ];
    for (name, order) in orders {
        let owners = Arc::clone(&fixtures.owners);
        let discover = move |c, seq| list_public(c, nth(&owners, seq).token.clone(), order, seq);
        bench
            .measure(
                &format!(
                    "ListPublicProjects by {name} (50 per page; in turn plain, by type, by tag, \
                     featured first), one at a time"
                ),
                &one,
                Limit::PgbenchSelect,
                "120 ms",
                Target::p(0.5, Duration::from_millis(5)),
                discover,
            )
            .await;
    }
    let queries = Arc::new(queries());
    let search = {
        let (owners, queries) = (Arc::clone(&fixtures.owners), Arc::clone(&queries));
        move |c, seq| {
            let query = queries[(seq as usize) % queries.len()].clone();
            search_projects(c, nth(&owners, seq).token.clone(), query)
        }
    };
    bench
        .measure(
            &format!(
                "SearchProjects ({} rotating queries: words, pairs, typos), one at a time",
                queries.len()
            ),
            &one,
            Limit::PgbenchSelect,
            "",
            Target::p(0.95, Duration::from_millis(20)),
            search.clone(),
        )
        .await;
    bench
        .measure(
            "SearchProjects (rotating queries)",
            wide,
            Limit::PgbenchSelect,
            "",
            Target::None,
            search,
        )
        .await;

    progress("BatchUpsertFiles, ForkProject");
    let writer = fixtures.owners[0].token.clone();
    let projects = Arc::clone(&fixtures.batch_projects);
    bench
        .measure(
            "BatchUpsertFiles (100 new files of about 1 KiB), one at a time",
            &one,
            Limit::PgbenchTpcb,
            "150 ms",
            Target::p(0.5, Duration::from_millis(15)),
            move |c, seq| {
                let project = projects[(seq as usize) % projects.len()].clone();
                upsert_files(c, writer.clone(), project, seq)
            },
        )
        .await;
    let forker = fixtures.owners[1].token.clone();
    let forked = fixtures.forked.clone();
    bench
        .measure(
            "ForkProject (a public project of 1,000 files, by another user), one at a time",
            &one,
            Limit::PgbenchTpcb,
            "150 ms",
            Target::p(0.5, Duration::from_millis(50)),
            move |c, seq| fork(c, forker.clone(), forked.clone(), seq, run_id),
        )
        .await;

    progress("ResolvePrompt");
    let resolver = fixtures.owners[0].token.clone();
    let prompt = fixtures.prompt.clone();
    bench
        .measure(
            "ResolvePrompt (cached; production weighted 90/10, a subject per call)",
            wide,
            Limit::Hello,
            "",
            Target::Ratio(0.5),
            move |c, seq| resolve(c, resolver.clone(), prompt.clone(), seq),
        )
        .await;
    Ok(())
}

/// Makes the fixtures: the batch projects and a prompt (`owners[0]`'s), and a public
/// project of [`FORKED_FILES`] files (`owners[2]`'s).
async fn fixtures(channel: &Channel, owners: Vec<User>) -> anyhow::Result<Fixtures> {
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut create = async |owner: &User, name: String, visibility: cpb::Visibility| {
        let request = cpb::CreateProjectRequest {
            project: Some(cpb::Project {
                name,
                visibility: visibility.into(),
                r#type: "app".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let project = projects
            .create_project(bearer(request, &owner.token))
            .await?
            .into_inner()
            .project
            .unwrap_or_default();
        anyhow::Ok(project.id)
    };
    let mut batch_projects = Vec::new();
    for i in 0..BATCH_PROJECTS {
        let name = format!("bench batches {i}");
        batch_projects.push(create(&owners[0], name, cpb::Visibility::Private).await?);
    }
    let forked = create(
        &owners[2],
        "bench fork source".into(),
        cpb::Visibility::Public,
    )
    .await?;
    let files = (0..FORKED_FILES)
        .map(|i| file(format!("src/module_{}/file_{i}.rs", i % 20), i as u64, 0))
        .collect();
    FileServiceClient::new(channel.clone())
        .batch_upsert_files(bearer(
            cpb::BatchUpsertFilesRequest {
                project_id: forked.clone(),
                files,
            },
            &owners[2].token,
        ))
        .await
        .context("BatchUpsertFiles of the project to fork")?;
    let mut prompts = PromptServiceClient::new(channel.clone());
    let version = |template: &str| cpb::PromptVersion {
        template: template.into(),
        ..Default::default()
    };
    let prompt = prompts
        .create_prompt(bearer(
            cpb::CreatePromptRequest {
                prompt: Some(cpb::Prompt {
                    name: "bench/greeting".into(),
                    ..Default::default()
                }),
                version: Some(version("Hello {{name}}, how can I help?")),
                request_id: String::new(),
            },
            &owners[0].token,
        ))
        .await
        .context("CreatePrompt")?
        .into_inner()
        .prompt
        .unwrap_or_default()
        .id;
    prompts
        .create_prompt_version(bearer(
            cpb::CreatePromptVersionRequest {
                prompt_id: prompt.clone(),
                version: Some(version("Hi {{name}}! What can I do for you?")),
                request_id: String::new(),
            },
            &owners[0].token,
        ))
        .await
        .context("CreatePromptVersion")?;
    prompts
        .set_prompt_label(bearer(
            cpb::SetPromptLabelRequest {
                prompt_id: prompt.clone(),
                label: "production".into(),
                versions: vec![
                    cpb::WeightedVersion {
                        version: 1,
                        weight: 90,
                    },
                    cpb::WeightedVersion {
                        version: 2,
                        weight: 10,
                    },
                ],
            },
            &owners[0].token,
        ))
        .await
        .context("SetPromptLabel")?;
    Ok(Fixtures {
        owners: Arc::new(owners),
        batch_projects: Arc::new(batch_projects),
        forked,
        prompt,
    })
}

/// Every word of the vocabulary and 40 pairs of a common and a rare word, sorted.
pub(super) fn word_queries() -> Vec<String> {
    let mut queries: Vec<String> = VOCABULARY.iter().map(|w| (*w).to_owned()).collect();
    for i in 0..40 {
        let (a, b) = (VOCABULARY[i], VOCABULARY[VOCABULARY.len() - 1 - i * 3]);
        queries.push(format!("{a} {b}"));
    }
    queries.sort_unstable();
    queries.dedup();
    queries
}

/// At least 200 different searches: [`word_queries`] and misspelt words (which the text
/// search misses and trigrams find).
fn queries() -> Vec<String> {
    let mut queries = word_queries();
    let long = VOCABULARY.iter().filter(|w| w.len() > 5);
    for word in long.skip(3).step_by(7).take(20) {
        // Drop a letter from the middle: "embeding", "retreval".
        let mut typo = (*word).to_owned();
        typo.remove(typo.len() / 2);
        queries.push(typo);
    }
    queries.sort_unstable();
    queries.dedup();
    queries
}

/// A file of about 1 KiB, different for each `(n, seq)`.
fn file(path: String, n: u64, seq: u64) -> cpb::File {
    let mut content = format!("// file {n} of call {seq}\n");
    while content.len() < 1000 {
        content.push_str(&format!(
            "fn step_{n}_{}() -> u64 {{ {seq} }}\n",
            content.len()
        ));
    }
    cpb::File {
        path,
        content: content.into_bytes(),
        ..Default::default()
    }
}

async fn list_projects(c: Channel, token: String) -> Result<(), tonic::Status> {
    let request = cpb::ListProjectsRequest {
        page_size: 50,
        ..Default::default()
    };
    ProjectServiceClient::new(c)
        .list_projects(bearer(request, &token))
        .await
        .map(|_| ())
}

async fn list_public(
    c: Channel,
    token: String,
    order: cpb::ProjectOrder,
    seq: u64,
) -> Result<(), tonic::Status> {
    let mut request = cpb::ListPublicProjectsRequest {
        page_size: 50,
        order: order.into(),
        ..Default::default()
    };
    match seq % 4 {
        1 => request.r#type = "notebook".into(),
        2 => request.tag = VOCABULARY[(seq / 4 % 5) as usize].into(),
        3 => request.featured_first = true,
        _ => {}
    }
    ProjectServiceClient::new(c)
        .list_public_projects(bearer(request, &token))
        .await
        .map(|_| ())
}

async fn search_projects(c: Channel, token: String, query: String) -> Result<(), tonic::Status> {
    let request = cpb::SearchProjectsRequest {
        query,
        page_size: 20,
        page_token: String::new(),
    };
    ProjectServiceClient::new(c)
        .search_projects(bearer(request, &token))
        .await
        .map(|_| ())
}

async fn upsert_files(
    c: Channel,
    token: String,
    project_id: String,
    seq: u64,
) -> Result<(), tonic::Status> {
    let files = (0..BATCH_FILES as u64)
        .map(|i| file(format!("batch/{seq}/file_{i}.rs"), i, seq))
        .collect();
    let request = cpb::BatchUpsertFilesRequest { project_id, files };
    FileServiceClient::new(c)
        .batch_upsert_files(bearer(request, &token))
        .await
        .map(|_| ())
}

async fn fork(
    c: Channel,
    token: String,
    project_id: String,
    seq: u64,
    run_id: u32,
) -> Result<(), tonic::Status> {
    let request = cpb::ForkProjectRequest {
        project_id,
        name: format!("fork {run_id}-{seq}"),
        request_id: String::new(),
    };
    let forked = ProjectServiceClient::new(c)
        .fork_project(bearer(request, &token))
        .await?
        .into_inner();
    if forked.file_count != FORKED_FILES as i64 {
        return Err(tonic::Status::internal(format!(
            "the fork copied {} files, not {FORKED_FILES}",
            forked.file_count
        )));
    }
    Ok(())
}

async fn resolve(
    c: Channel,
    token: String,
    prompt_id: String,
    seq: u64,
) -> Result<(), tonic::Status> {
    let request = cpb::ResolvePromptRequest {
        prompt_id,
        label: String::new(),
        subject: format!("conversation-{seq}"),
    };
    PromptServiceClient::new(c)
        .resolve_prompt(bearer(request, &token))
        .await
        .map(|_| ())
}
