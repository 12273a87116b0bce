//! Trace export while the collector is down: one warning for the outage, not an error
//! line per batch, and export resumes by itself when the collector is back.

use std::net::SocketAddr;

use strata_testkit::LogCapture;
use strata_testkit::otlp::Collector;

use super::*;

#[tokio::test(flavor = "current_thread")]
async fn a_collector_outage_is_one_warning_and_export_resumes_after_it() {
    // A port nobody listens on yet; the collector comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let db = TestDb::new().await;
    let mut config = db.server_config("test");
    config.otlp_endpoint = Some(format!("http://{addr}"));
    config.trace_export_interval = Duration::from_millis(50);
    let logs = LogCapture::default();
    let sink = logs.clone();
    let (dispatch, _telemetry) =
        strata_runtime::telemetry::subscriber(&config, move || sink.clone(), false).unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let server = TestServer::start(config, |_| {}).await;
    let mut client = admin(&server);
    let calls_for = async |client: &mut AdminServiceClient<Channel>, period: Duration| {
        let until = tokio::time::Instant::now() + period;
        while tokio::time::Instant::now() < until {
            client
                .get_table_stats(admin_request(pb::GetTableStatsRequest::default()))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // Many batches fail meanwhile.
    calls_for(&mut client, Duration::from_millis(1500)).await;
    let text = logs.text();
    assert_eq!(
        text.matches("trace collector unreachable").count(),
        1,
        "one warning per outage: {text}"
    );
    assert!(!text.contains("ERROR"), "no error line per batch: {text}");

    let collector = Collector::start_on(addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    // Spans arrive, then the exporter (on its own thread) sees the answer and says so.
    while collector.spans().is_empty() || !logs.text().contains("reachable again") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "export never resumed"
        );
        calls_for(&mut client, Duration::from_millis(100)).await;
    }
    let text = logs.text();
    assert_eq!(
        text.matches("trace collector reachable again").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("trace collector unreachable").count(),
        1,
        "{text}"
    );
}
