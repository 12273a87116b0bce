//! `make run`'s first ten minutes: `strata serve all --demo` on an empty database creates
//! the demo accounts and data and prints commands; every printed command is run here, as
//! printed, against the running suite: grpcurl's, and the Python and TypeScript examples'.

use std::path::{Path, PathBuf};

use diesel_async::RunQueryDsl as _;
use strata_proto::auth::{ListUsersRequest, LoginRequest};
use strata_proto::content::ListPromptsRequest;
use strata_proto::content::prompt_service_client::PromptServiceClient;

use super::*;

/// The workspace's root, where `make run` starts the suite (the printed paths are
/// relative to it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Where `make grpcurl` (a step of `make test`) installs grpcurl.
fn grpcurl_dir() -> PathBuf {
    let dir = root().join(".strata/tools/grpcurl-rs-0.2.1/bin");
    assert!(
        dir.join("grpcurl").is_file(),
        "no grpcurl in {}: `make grpcurl` installs it (make test does)",
        dir.display()
    );
    dir
}

/// This process's PATH without any folder holding a grpcurl: as on a machine where only
/// `make grpcurl` installed it, so the suite prints how to reach it.
fn path_without_grpcurl() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("grpcurl").exists())
        .collect();
    std::env::join_paths(kept).unwrap().into_string().unwrap()
}

/// The commands `strata serve` printed: lines indented by two spaces, not comments.
fn commands(printed: &str) -> Vec<String> {
    printed
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs `commands` in one bash (`set -euo pipefail`), in the workspace's root, with the
/// PATH the suite had; its output, or a failure with everything it printed.
async fn bash(commands: &[&String]) -> String {
    let script = commands
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let output = tokio::process::Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .current_dir(root())
        .env("PATH", path_without_grpcurl())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let all = text(&output);
    assert!(output.status.success(), "{script}\nfailed:\n{all}");
    all
}

/// Waits until the suite printed its whole banner.
async fn banner(served: &Served) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let printed = served.printed();
        if printed.contains("\nready; Ctrl-C stops the suite\n") {
            return printed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no banner: {printed}\n{}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The environment of a suite as `make run` starts it: content ships usage with a service
/// key, the rate limits are the defaults (the examples meet them), and grpcurl is not on
/// the PATH.
fn make_run_env(db: &TestDb) -> Vec<(&'static str, String)> {
    let key = strata(
        Some(db.url()),
        &[
            "auth",
            "service-key",
            "--email",
            "usage-shipper@strata.internal",
            "--name",
            "usage-shipper",
            "--scope",
            "usage:write",
        ],
    );
    assert!(key.status.success(), "{}", text(&key));
    let mut env = vec![
        (
            "STRATA_CONTENT_USAGE_KEY",
            String::from_utf8(key.stdout).unwrap().trim().to_owned(),
        ),
        ("PATH", path_without_grpcurl()),
    ];
    env.extend(
        generous_rate_limits()
            .into_iter()
            .map(|(name, _)| (name, String::new())),
    );
    env
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn login(channel: &tonic::transport::Channel, email: &str, password: &str) -> String {
    AuthServiceClient::new(channel.clone())
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .access_token
}

async fn count(db: &TestDb, query: &str) -> i64 {
    let mut conn = db.connect().await;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "({query})"
    )))
    .get_result(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn make_run_prints_a_login_and_commands_that_work_as_printed() {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let env = make_run_env(&db);
    let served = serve("all --demo", &db, &redis, &borrowed(&env)).await;
    let printed = banner(&served).await;
    assert!(printed.contains("demo data created"), "{printed}");
    assert!(
        printed.contains("demo@example.com with the password strata-demo-password"),
        "{printed}"
    );
    // grpcurl is not on the suite's PATH: it prints the command that puts the one
    // `make grpcurl` installed there, and how to install it if it is not.
    let export = format!("  export PATH=\"{}:$PATH\"\n", grpcurl_dir().display());
    assert!(printed.contains(&export), "{printed}");
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    assert!(
        makefile.contains("GRPCURL_VERSION := 0.2.1")
            && makefile.contains("GRPCURL_ROOT := .strata/tools/grpcurl-rs-$(GRPCURL_VERSION)"),
        "the Makefile installs grpcurl elsewhere than the suite says"
    );
    let all = commands(&printed);
    let (examples, grpcurl): (Vec<_>, Vec<_>) =
        all.iter().partition(|c| c.starts_with("examples/"));
    assert!(grpcurl.len() >= 9, "{printed}");
    assert_eq!(examples.len(), 2, "{printed}");
    // The grpcurl commands, in order, in one shell (the token carries over).
    let answers = bash(&grpcurl).await;
    for expected in [
        "strata.content.v1.WorkflowService",
        "\"email\": \"demo@example.com\"",
        "\"label\": \"production\"",
        "\"version\": 2",
        "The email never arrived, and I no longer use that address.",
        "\"promptTokens\": \"503\"",
        "\"name\": \"triage-inbox\"",
        "\"succeededCount\": 1",
        "\"name\": \"hello-agent\"",
        "\"model\": \"claude-3-5-sonnet\"",
        "\"requestCount\"",
    ] {
        assert!(answers.contains(expected), "{expected} not in:\n{answers}");
    }
    // The demo admin is an admin; the demo user's prompts have a production version 2.
    let admin = login(
        &served.channel,
        "admin@example.com",
        "strata-demo-admin-password",
    )
    .await;
    let users = AuthServiceClient::new(served.channel.clone())
        .list_users(bearer(ListUsersRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(users.iter().any(|u| u.email == "demo@example.com"));
    let user = login(&served.channel, "demo@example.com", "strata-demo-password").await;
    let prompts = PromptServiceClient::new(served.channel.clone())
        .list_prompts(bearer(ListPromptsRequest::default(), &user))
        .await
        .unwrap()
        .into_inner()
        .prompts;
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    for prompt in &prompts {
        assert_eq!(prompt.latest_version, 2);
        assert!(
            prompt
                .version_labels
                .iter()
                .any(|l| l.name == "production" && l.versions[0].version == 2),
            "{prompt:?}"
        );
    }
    // The examples, as printed.
    for example in examples {
        let out = bash(&[example]).await;
        assert!(out.contains("all steps passed"), "{example}:\n{out}");
    }

    // The next start finds the demo again: the same login and objects, nothing made twice.
    let agent_line = grpcurl
        .iter()
        .find(|c| c.contains("ResolveAgent"))
        .unwrap()
        .replace(&served.addr, "ADDR");
    drop(served);
    let served = serve("all --demo", &db, &redis, &borrowed(&env)).await;
    let again = banner(&served).await;
    assert!(!again.contains("demo data created"), "{again}");
    assert!(again.contains("strata-demo-password"), "{again}");
    let again_commands = commands(&again);
    assert!(
        again_commands.contains(&agent_line.replace("ADDR", &served.addr)),
        "{again}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM content.agents a JOIN auth.users u ON u.id = a.owner_id \
             WHERE u.email = 'demo@example.com'"
        )
        .await,
        2
    );
    // The examples spent this address's sign-in budget (10 a minute, one more every 6 s):
    // the printed Login gets its call once one is back, as it would for whoever pastes it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let grpcurl: Vec<&String> = again_commands
        .iter()
        .filter(|c| !c.starts_with("examples/"))
        .collect();
    let answers = bash(&grpcurl).await;
    assert!(answers.contains("\"name\": \"triage-inbox\""), "{answers}");
}

#[tokio::test]
async fn without_the_demo_it_prints_a_sign_up_and_a_database_with_accounts_gets_no_demo() {
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let env = make_run_env(&db);
    let served = serve("all", &db, &redis, &borrowed(&env)).await;
    let printed = banner(&served).await;
    assert!(!printed.contains("the demo user"), "{printed}");
    let all = commands(&printed);
    let grpcurl: Vec<&String> = all.iter().filter(|c| !c.starts_with("examples/")).collect();
    assert!(grpcurl.iter().any(|c| c.contains("/SignUp")), "{printed}");
    let answers = bash(&grpcurl).await;
    assert!(
        answers.contains("\"email\": \"me@example.com\""),
        "{answers}"
    );
    drop(served);

    // A database that holds someone's account gets no demo accounts.
    let served = serve("all --demo", &db, &redis, &borrowed(&env)).await;
    let printed = banner(&served).await;
    assert!(!printed.contains("the demo user"), "{printed}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM auth.users WHERE email LIKE '%@example.com'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_demo_is_refused_in_production_and_without_every_service() {
    let db = TestDb::new().await;
    for (environment, service) in [("production", "all"), ("development", "auth")] {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(STRATA)
                .args(["serve", service, "--demo"])
                .env("DATABASE_URL", db.url())
                .env("STRATA_LISTEN_ADDR", "127.0.0.1:0")
                .env("STRATA_ENV", environment)
                .env_remove("STRATA_CONFIG_FILE")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("refused at once, not served")
        .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(text(&output).contains("--demo"), "{}", text(&output));
        assert!(!text(&output).contains("listening"), "{}", text(&output));
    }
    assert_eq!(count(&db, "SELECT count(*) FROM auth.users").await, 0);
}
