//! `make run`'s first ten minutes: `strata serve all --demo` on an empty database creates
//! the demo accounts and data and prints commands; every printed command is run here, as
//! printed, against the running suite: grpcurl's, and the Python and TypeScript examples'.

use std::path::{Path, PathBuf};

use diesel_async::RunQueryDsl as _;

use strata_proto::content::ListAgentsRequest;
use strata_proto::content::agent_service_client::AgentServiceClient;

use super::*;

/// The workspace's root, where `make run` starts the suite (the printed paths are
/// relative to it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The folder holding `grpcurl`: `$GRPCURL_DIR`, else where `make grpcurl` (a step of
/// `make test`) installs it.
fn grpcurl_dir() -> PathBuf {
    let dir = std::env::var_os("GRPCURL_DIR").map_or_else(
        || root().join(".strata/tools/grpcurl-rs-0.2.1/bin"),
        PathBuf::from,
    );
    assert!(
        dir.join("grpcurl").is_file(),
        "no grpcurl in {}: `make grpcurl` installs it (make test does)",
        dir.display()
    );
    dir
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

/// Runs `script` with bash in the workspace's root, grpcurl on the PATH; its output, or
/// a failure with everything it printed.
fn bash(script: &str) -> String {
    let path = format!(
        "{}:{}",
        grpcurl_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .current_dir(root())
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
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
/// key, and the rate limits are the defaults (the examples meet them).
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
    let mut env = vec![(
        "STRATA_CONTENT_USAGE_KEY",
        String::from_utf8(key.stdout).unwrap().trim().to_owned(),
    )];
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
    // grpcurl is not on the suite's PATH here: it says how to install it, with the command
    // `make grpcurl` (run by `make test`) runs.
    assert!(
        printed.contains("  # not installed: `cargo install --locked grpcurl-rs@0.2.1`"),
        "{printed}"
    );
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    assert!(
        makefile.contains("GRPCURL_VERSION := 0.2.1")
            && makefile.contains("install -j$(JOBS) --locked grpcurl-rs@$(GRPCURL_VERSION)"),
        "the Makefile installs another grpcurl than the one printed"
    );
    let all = commands(&printed);
    let (examples, grpcurl): (Vec<_>, Vec<_>) =
        all.iter().partition(|c| c.starts_with("examples/"));
    assert!(grpcurl.len() >= 8, "{printed}");
    assert_eq!(examples.len(), 2, "{printed}");
    // The grpcurl commands, in order, in one shell (the token carries over).
    let answers = bash(
        &grpcurl
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    for expected in [
        "strata.content.v1.WorkflowService",
        "\"email\": \"demo@example.com\"",
        "\"label\": \"production\"",
        "\"version\": 2",
        "The email never arrived, and I no longer use that address.",
        "\"name\": \"triage-inbox\"",
        "\"succeededCount\": 1",
        "\"name\": \"hello-agent\"",
        "\"model\": \"claude-3-5-sonnet\"",
        "\"requestCount\"",
    ] {
        assert!(answers.contains(expected), "{expected} not in:\n{answers}");
    }
    // The examples, as printed.
    for example in examples {
        let out = bash(example);
        assert!(out.contains("all steps passed"), "{example}:\n{out}");
    }

    // The next start finds the demo again: the same login and objects, nothing made twice.
    let agent_line = grpcurl
        .iter()
        .find(|c| c.contains("ResolveAgent"))
        .unwrap()
        .replace(&served.addr, "ADDR");
    drop(served);
    // The examples spent this address's sign-in budget: the next start gets a Redis of its
    // own (as after a restart of the local one, which keeps nothing).
    let redis = TestRedis::new();
    let served = serve("all --demo", &db, &redis, &borrowed(&env)).await;
    let again = banner(&served).await;
    assert!(!again.contains("demo data created"), "{again}");
    assert!(again.contains("strata-demo-password"), "{again}");
    let again_commands = commands(&again);
    assert!(
        again_commands
            .iter()
            .any(|c| *c == agent_line.replace("ADDR", &served.addr)),
        "{again}"
    );
    let token = AuthServiceClient::new(served.channel.clone())
        .login(strata_proto::auth::LoginRequest {
            email: "demo@example.com".into(),
            password: "strata-demo-password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .access_token;
    let agents = AgentServiceClient::new(served.channel.clone())
        .list_agents(bearer(ListAgentsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 2, "{agents:?}");
    bash(
        &again_commands
            .iter()
            .filter(|c| !c.starts_with("examples/"))
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

#[tokio::test]
async fn the_demo_is_refused_in_production_and_without_every_service() {
    let db = TestDb::new().await;
    for (environment, service) in [("production", "all"), ("development", "auth")] {
        let output = Command::new(STRATA)
            .args(["serve", service, "--demo"])
            .env("DATABASE_URL", db.url())
            .env("STRATA_LISTEN_ADDR", "127.0.0.1:0")
            .env("STRATA_ENV", environment)
            .env_remove("STRATA_CONFIG_FILE")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(text(&output).contains("--demo"), "{}", text(&output));
        assert!(!text(&output).contains("listening"), "{}", text(&output));
    }
    let mut conn = db.connect().await;
    let users: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM auth.users)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(users, 0);
}
