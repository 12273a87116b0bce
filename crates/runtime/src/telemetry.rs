//! Logs and traces: `tracing` with an env filter, human (pretty on a terminal, plain
//! elsewhere) or JSON output, and an OpenTelemetry OTLP/gRPC span exporter when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! What leaves the process is filtered twice, whatever `RUST_LOG` or `STRATA_TRACE_FILTER`
//! ask for:
//! - libraries whose debug and trace events can carry request data ([`CAPPED`]: SQL bind
//!   values from the PostgreSQL driver, header values from the HTTP/2 stack, …) never log
//!   or export below INFO;
//! - the HTTP/2 stack and the exporter itself ([`NEVER_EXPORTED`]) are never exported as
//!   spans, so an idle server does not export its own exports. Trace export has its own
//!   filter, `STRATA_TRACE_FILTER` (default: Strata's spans at INFO and above).
//!
//! A collector that cannot be reached is reported once per outage (a warning, then a line
//! when it is back), not once per batch.
//!
//! W3C trace context (`traceparent`/`tracestate`) crosses process boundaries in gRPC
//! metadata: [`extract`] reads it from an incoming request's headers (used by the server
//! layer in [`crate::layers`]), and [`TraceContextInterceptor`] writes the current span's
//! context into every outgoing call of a client built with it. [`client_call`] gives an
//! outgoing call its own client span, so a slow hop shows on the caller's side.

use std::future::Future;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Instrument as _, Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, ServerConfig};
use crate::error::Error;

/// Targets whose events below INFO can carry request data (bind values, headers,
/// payloads): never logged or exported below INFO.
pub const CAPPED: &[&str] = &[
    "tokio_postgres",
    "postgres_protocol",
    "diesel",
    "diesel_async",
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "redis",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "tracing_opentelemetry",
];

/// Targets never exported as spans: the HTTP/2 stack (ours and the exporter's) and the
/// exporter itself.
pub const NEVER_EXPORTED: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "tracing_opentelemetry",
];

/// Whether `target` is one of `crates` or inside one (`h2::proto::…`).
fn within(target: &str, crates: &[&str]) -> bool {
    crates.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Nothing below INFO from the [`CAPPED`] libraries.
fn allowed(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= Level::INFO || !within(metadata.target(), CAPPED)
}

/// Flushes and shuts down the trace exporter when dropped (at process exit).
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {e}");
        }
    }
}

/// Installs the global subscriber and propagator, logging to stderr. Call once, from
/// `main`, inside the tokio runtime (the exporter's connection spawns onto it).
pub fn init(config: &ServerConfig) -> Result<TelemetryGuard, Error> {
    let terminal = std::io::stderr().is_terminal();
    let (dispatch, guard) = subscriber(config, std::io::stderr, terminal)?;
    // Also routes the `log` records of libraries that use it into this subscriber.
    dispatch
        .try_init()
        .map_err(|e| Error::Telemetry(e.to_string()))?;
    Ok(guard)
}

/// The subscriber [`init`] installs, writing logs to `writer` (`terminal`: whether that is
/// a terminal, for `auto` format and colours). Also sets the global propagator. Tests
/// install it for their thread with `tracing::dispatcher::set_default`.
pub fn subscriber<W>(
    config: &ServerConfig,
    writer: W,
    terminal: bool,
) -> Result<(Dispatch, TelemetryGuard), Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| Error::Telemetry(format!("RUST_LOG: {e}")))?;
    let format = match config.log_format {
        LogFormat::Auto if terminal => LogFormat::Pretty,
        LogFormat::Auto => LogFormat::Plain,
        other => other,
    };
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        // Colours only on a terminal: no ANSI codes in files, whatever was asked.
        LogFormat::Pretty | LogFormat::Plain | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(format == LogFormat::Pretty && terminal)
            .with_target(true)
            .boxed(),
    };
    let mut layers: Vec<OtelLayer> = vec![fmt.with_filter(filter.and(filter_fn(allowed))).boxed()];
    // The exporter logs from the processor's own thread, where no subscriber is the
    // default: it logs through this one.
    let exporter_logs = Arc::new(OnceLock::new());
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (layer, provider) = otel_layer(config, endpoint, Arc::clone(&exporter_logs))?;
            layers.push(layer);
            Some(provider)
        }
        None => None,
    };
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layers));
    let _ = exporter_logs.set(dispatch.downgrade());
    Ok((dispatch, TelemetryGuard { provider }))
}

/// A layer of the subscriber.
type OtelLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

fn otel_layer(
    config: &ServerConfig,
    endpoint: &str,
    logs: Arc<OnceLock<WeakDispatch>>,
) -> Result<(OtelLayer, SdkTracerProvider), Error> {
    use opentelemetry_otlp::WithExportConfig;
    let trace_filter = EnvFilter::try_new(&config.trace_filter)
        .map_err(|e| Error::Telemetry(format!("STRATA_TRACE_FILTER: {e}")))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_owned())
        .build()
        .map_err(|e| Error::Telemetry(e.to_string()))?;
    let processor = BatchSpanProcessor::builder(OutageReporting::new(exporter, logs))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(config.trace_export_interval)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("strata-{}", config.service))
                .build(),
        )
        .build();
    let tracer = provider.tracer("strata");
    opentelemetry::global::set_tracer_provider(provider.clone());
    let exported =
        filter_fn(|metadata| allowed(metadata) && !within(metadata.target(), NEVER_EXPORTED));
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(trace_filter.and(exported))
        .boxed();
    Ok((layer, provider))
}

/// A span exporter that reports a collector outage once (a warning when exports start
/// failing, an info line when they work again) instead of an error line per batch; the
/// spans of failed batches are dropped, as they would be anyway.
#[derive(Debug)]
pub struct OutageReporting<E> {
    inner: E,
    failing: AtomicBool,
    logs: Arc<OnceLock<WeakDispatch>>,
}

impl<E> OutageReporting<E> {
    /// Wraps `inner`, logging through the subscriber `logs` will hold (else the default).
    pub fn new(inner: E, logs: Arc<OnceLock<WeakDispatch>>) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
            logs,
        }
    }

    fn log(&self, event: impl FnOnce()) {
        match self.logs.get().and_then(WeakDispatch::upgrade) {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, event),
            None => event(),
        }
    }
}

impl<E: SpanExporter> SpanExporter for OutageReporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self.inner.export(batch).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    self.log(|| tracing::info!("trace collector reachable again; exporting spans"));
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::SeqCst) {
                    self.log(|| {
                        tracing::warn!(
                            error = %e,
                            "trace collector unreachable; spans are dropped until it is back"
                        );
                    });
                }
            }
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Runs the outgoing call `call` to `service`/`method` inside a client span (OpenTelemetry
/// RPC conventions: `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), so
/// the time spent waiting on another service shows on the caller's side. A client built
/// with [`TraceContextInterceptor`] sends this span as the callee's parent.
pub async fn client_call<T>(
    service: &str,
    method: &str,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let span = tracing::info_span!(
        "grpc.client",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let result = call.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// Reads W3C trace context from request headers (gRPC metadata).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The remote parent context carried by `headers`, if any.
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Client interceptor that propagates the current span's trace context. Every client a
/// service uses to call another service is built with it:
/// `AuthServiceClient::with_interceptor(channel, TraceContextInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new()
            .inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        Ok(request)
    }
}

/// The current span's W3C `traceparent`, to store beside work done later on its behalf
/// (an outbox row); `None` outside a trace.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Links the current span to the span `traceparent` names (as stored by
/// [`current_traceparent`]): a batch shipped later points back at the requests it carries.
pub fn link_to(traceparent: &str) {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .clone();
    if span.is_valid() {
        tracing::Span::current().add_link(span);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    #[test]
    fn library_internals_are_capped_and_not_exported() {
        assert!(within("h2", NEVER_EXPORTED));
        assert!(within("h2::proto::streams", NEVER_EXPORTED));
        assert!(!within("h2x", NEVER_EXPORTED));
        assert!(within("tokio_postgres::query", CAPPED));
        assert!(!within("strata_storage::query", CAPPED));
        assert!(
            !within("tokio_postgres", NEVER_EXPORTED),
            "its INFO events may be"
        );
    }

    #[test]
    fn trace_context_round_trips_through_metadata() {
        let remote = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote.clone());
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let headers = metadata.into_headers();
        let extracted = extract(&headers);
        assert_eq!(
            extracted.span().span_context().trace_id(),
            remote.trace_id()
        );
        assert_eq!(extracted.span().span_context().span_id(), remote.span_id());
    }
}
