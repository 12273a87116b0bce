//! `strata bench` at smoke scale, so the harness cannot rot: every scenario runs against the
//! real binary, none fails, and the report holds every figure. Targets are read in the
//! report, never asserted here.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::*;

/// Runs `strata bench` at smoke scale on 2×2 with `args`, on databases of its own named
/// after `tag`; returns the report folder and `report.json`.
async fn bench(tag: &str, args: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let admin_url = strata_testkit::env_or_infra("DATABASE_URL").unwrap();
    let redis_url = strata_testkit::env_or_infra("REDIS_URL").unwrap();
    let name = format!("strata_bench_{tag}_{}", std::process::id());
    let out = std::env::temp_dir().join(&name);
    let output = tokio::process::Command::new(STRATA)
        .args([
            "bench",
            "--scale",
            "smoke",
            "--connections",
            "2",
            "--in-flight",
            "2",
        ])
        .arg("--out")
        .arg(&out)
        .args(["--database", &name])
        .args(args)
        .env("DATABASE_URL", &admin_url)
        .env("REDIS_URL", &redis_url)
        .env_remove("STRATA_CONFIG_FILE")
        .output()
        .await
        .unwrap();
    // The databases are the run's own: dropped whatever happened.
    let mut conn = AsyncPgConnection::establish(&admin_url).await.unwrap();
    for db in [name.clone(), format!("{name}_pgbench")] {
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .unwrap();
    }
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    (out, report)
}

#[tokio::test]
async fn the_bench_harness_runs_every_scenario_at_smoke_scale() {
    let (out, report) = bench("e2e", &[]).await;
    let rows = report["rows"].as_array().unwrap();
    let operations: Vec<&str> = rows
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    for expected in [
        "hello-world (limit)",
        "SignUp, one at a time",
        "SignUp",
        "Login, one at a time",
        "Login (",
        "5 concurrent logins (all five answered)",
        "VerifyToken, one at a time",
        "VerifyToken",
        "local token verification, afresh (in-process)",
        "local token verification, remembered (in-process)",
        "RefreshToken, one at a time",
        "RefreshToken",
        "GetProfile, one at a time",
        "GetProfile (16 users, Zipf s=1 (the most read ",
        "GetProfile, open loop at half its closed-loop rate",
        "GetProfile, one call in flight per connection",
        "GetProfile with every rate limit off (second suite)",
        "GetProfile, rate limits on, between the two",
        "RecordUsage (1,000 per call: ",
        "GetUsageSummary (from the view)",
        "GetUsageSummary (raw rows after the watermark, during ingest of ",
        "ListUsage (50 per page)",
        "mixed: ",
        "ListProjects (mine, 50 per page; the owners of the most), one at a time",
        "ListProjects (mine, 50 per page)",
        "ListPublicProjects by likes",
        "ListPublicProjects by forks",
        "ListPublicProjects by views",
        "ListPublicProjects by newest",
        "ListPublicProjects by trending",
        "SearchProjects (260 rotating queries",
        "SearchProjects (rotating queries)",
        "BatchUpsertFiles (100 new files",
        "ForkProject (a public project of 1,000 files",
        "ResolvePrompt (cached",
        "ListMessages (newest 50 of the active branch;",
        "ListMessages (newest 50)",
        "ListMessages (a page of 50 up to",
        "SearchMessages (",
        "AppendMessages (a question and an answer with usage;",
        "AppendMessages with usage over 256 conversations",
        "WatchConversation delivery",
        "workflows of 50 tasks",
        "ClaimTasks long-poll",
    ] {
        assert!(
            operations.iter().any(|o| o.starts_with(expected)),
            "{expected}: {operations:?}"
        );
    }
    // The targets of the auth and analytics issues are set on their rows.
    // The last row of an operation: the rate-limit overhead's runs in turns, and its last
    // row carries the figure and the target.
    let target = |operation: &str| {
        rows.iter()
            .rev()
            .find(|r| r["operation"].as_str().unwrap().starts_with(operation))
            .map(|r| r["target"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(target("Login, one at a time"), "p50 ≤ one hash + 10 ms");
    assert!(target("5 concurrent logins").starts_with("p50 ≤ 3× one login ("));
    // Beside it, what the hashing alone takes on this machine.
    assert!(target("5 concurrent logins").contains("hashing alone takes"));
    assert_eq!(target("VerifyToken, one at a time"), "p50 ≤ 0.5 ms");
    assert_eq!(
        target("RefreshToken, one at a time"),
        "p50 ≤ 3 ms, p99 ≤ 10 ms"
    );
    assert_eq!(target("RecordUsage"), "≥ 50000 events/s");
    assert_eq!(target("GetProfile ("), "≥ 0.5 of limit");
    assert_eq!(target("GetProfile, one call in flight"), "p99 ≤ 3 ms");
    // And those of the content issue.
    assert_eq!(target("ListProjects (mine, 50 per page; "), "p50 ≤ 2 ms");
    assert_eq!(target("ListPublicProjects by trending"), "p50 ≤ 5 ms");
    assert_eq!(target("SearchProjects (260"), "p95 ≤ 20 ms");
    assert_eq!(target("BatchUpsertFiles"), "p50 ≤ 15 ms");
    assert_eq!(target("ForkProject"), "p50 ≤ 50 ms");
    assert_eq!(target("ResolvePrompt"), "≥ 0.5 of limit");
    // And those of the conversations issue.
    assert_eq!(target("ListMessages (newest 50 of"), "p99 ≤ 5 ms");
    assert_eq!(target("ListMessages (a page of 50 up to"), "p99 ≤ 5 ms");
    assert_eq!(target("SearchMessages"), "p95 ≤ 30 ms");
    assert_eq!(target("AppendMessages (a question"), "p50 ≤ 3 ms");
    assert_eq!(target("WatchConversation delivery"), "p99 ≤ 50 ms");
    // And those of the workflows issue.
    assert_eq!(target("workflows of 50 tasks"), "≥ 5000 events/s");
    assert_eq!(target("ClaimTasks long-poll"), "p99 ≤ 25 ms");
    assert_eq!(
        target("GetProfile, rate limits on"),
        "≥ 0.95 of limit (overhead ≤ 5 %)"
    );
    // The caches' hit rates are reported beside the distribution of keys.
    assert!(
        operations
            .iter()
            .any(|o| o.starts_with("GetProfile (") && o.contains("memory hit rate")),
        "{operations:?}"
    );
    for row in rows {
        assert!(row["ok"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["errors"], serde_json::json!({}), "{row}");
    }
    // Every scenario of the suite says where its resources went.
    for row in rows.iter().skip(1) {
        let resources = &row["resources"];
        assert!(resources["rss_mib"].as_f64().unwrap() > 0.0, "{row}");
        for cpu in [
            "cpu_suite_s",
            "cpu_postgres_s",
            "cpu_redis_s",
            "cpu_bench_s",
        ] {
            assert!(resources[cpu].as_f64().unwrap() >= 0.0, "{cpu}: {row}");
        }
    }
    for limit in [
        "hello_rps",
        "pgbench_select_tps",
        "pgbench_tpcb_tps",
        "redis_get_rps",
        "argon2_hash_ms",
        "argon2_round_ms",
    ] {
        assert!(report["limits"][limit].as_f64().unwrap() > 0.0, "{limit}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| VerifyToken |"), "{md}");
    assert!(md.contains("PostgreSQL 1"), "machine facts: {md}");
    // The chart: a line per scenario.
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("GetProfile"), "{svg}");
    assert!(
        svg.matches("text-anchor=\"end\"").count() >= rows.len(),
        "{svg}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// `--flamegraphs`, where `perf` can sample (machines without perf, as CI's may be, say so
/// and skip): the report links one flame graph per scenario, of the suite's own code.
#[tokio::test]
async fn the_bench_draws_a_flame_graph_of_each_scenario() {
    let perf = std::process::Command::new("perf")
        .args(["record", "-q", "-o", "/dev/null", "--", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !perf {
        eprintln!("no usable perf here: flame graphs not checked");
        return;
    }
    let (out, report) = bench(
        "flame",
        &["--flamegraphs", "--only", "GetProfile, one at a time"],
    )
    .await;
    let rows = report["rows"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["operation"] == "GetProfile, one at a time")
        .unwrap();
    let svg = row["flamegraph"].as_str().unwrap();
    assert_eq!(svg, "flamegraphs/getprofile-one-at-a-time.svg");
    let graph = std::fs::read_to_string(out.join(svg)).unwrap();
    // Titled, with frames (each frame's title counts its samples).
    assert!(graph.contains("GetProfile, one at a time"), "{svg}");
    assert!(graph.contains(" samples, "), "{svg}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("[`{svg}`]({svg})")), "{md}");
    // The samples are gone; the graph holds what they said.
    let left: Vec<_> = std::fs::read_dir(out.join("flamegraphs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let _ = std::fs::remove_dir_all(&out);
}
