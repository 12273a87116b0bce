//! The load generator against the hello-world server: it measures, paces an open loop, and
//! never reports failed calls as throughput.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use strata_bench::hello::{self, Hello};
use strata_bench::load::{self, Load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_measures_the_hello_world_limit() {
    let server = Hello::start().await.unwrap();
    let channels = load::connect(&server.url(), 2).await.unwrap();
    let report = load::run(
        &Load::closed(2, 4, Duration::from_millis(400)),
        &channels,
        |channel, _| hello::call(channel),
    )
    .await;
    assert!(report.succeeded(), "{report:?}");
    assert!(report.ok > 50, "{}", report.ok);
    assert!(report.quantile(0.5) > Duration::ZERO);
    assert!(report.quantile(0.99) <= report.max());
    assert!((report.ratio_to(&report) - 1.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_keeps_its_rate_and_counts_delays_as_latency() {
    let server = Hello::start().await.unwrap();
    let channels = load::connect(&server.url(), 1).await.unwrap();
    let paced = Load::closed(1, 4, Duration::from_millis(1000)).at_rate(200.0);
    let report = load::run(&paced, &channels, |channel, _| hello::call(channel)).await;
    assert!(report.succeeded(), "{report:?}");
    // 200 per second for one second, give or take the edges of the window.
    assert!((150..=250).contains(&report.ok), "{}", report.ok);

    // A call that stalls 50 ms holds up the schedule of its worker (one call per 10 ms):
    // the four behind it were due 40, 30, 20 and 10 ms before they could start, and that
    // wait is counted, so more than a quarter of the calls take 10 ms or more. Timing from
    // the start of each call instead would show one in ten.
    let stalled = Load::closed(1, 1, Duration::from_millis(500)).at_rate(100.0);
    let report = load::run(&stalled, &channels, |channel, seq| async move {
        if seq % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hello::call(channel).await
    })
    .await;
    assert!(
        report.quantile(0.75) >= Duration::from_millis(10),
        "coordinated omission would report the hello-world latency here: {:?}",
        report.quantile(0.75)
    );
}

#[tokio::test]
async fn failed_calls_are_counted_by_code_and_never_as_throughput() {
    let server = Hello::start().await.unwrap();
    let channels = load::connect(&server.url(), 1).await.unwrap();
    let report = load::run(
        &Load::closed(1, 2, Duration::from_millis(200)),
        &channels,
        |channel, seq| async move {
            if seq % 2 == 0 {
                Err(tonic::Status::unavailable("down"))
            } else {
                hello::call(channel).await
            }
        },
    )
    .await;
    assert!(!report.succeeded());
    assert!(report.errors["Unavailable"] > 0, "{:?}", report.errors);
    assert_eq!(report.latency.len(), report.ok, "only successes are timed");
}
