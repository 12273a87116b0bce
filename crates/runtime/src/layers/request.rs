//! [`RequestLayer`] is the outermost layer of every Strata server. For each call it
//! - opens the request's tracing span, parented on the caller's W3C trace context;
//! - installs a query-accounting scope, so storage instrumentation counts the queries the
//!   handler runs;
//! - turns a handler panic into `INTERNAL` instead of tearing down the connection;
//! - adds `x-process-time-ms`, `x-query-count` and `x-query-time-ms` to the response
//!   metadata (also on error responses, which are trailers-only in gRPC and so carry them
//!   in the same header block).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use strata_storage::instrument::{self, QueryStats};
use tonic::body::Body;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Response metadata: wall-clock time of the call inside the server, in milliseconds.
pub const PROCESS_TIME_HEADER: &str = "x-process-time-ms";
/// Response metadata: number of SQL statements the call ran.
pub const QUERY_COUNT_HEADER: &str = "x-query-count";
/// Response metadata: summed duration of those statements, in milliseconds.
pub const QUERY_TIME_HEADER: &str = "x-query-time-ms";

/// Layer adding [`RequestService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLayer;

impl<S> tower_layer::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestService<S> {
    inner: S,
}

impl<S> tower_service::Service<Request<Body>> for RequestService<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        // A malformed or absent traceparent just starts a new trace.
        let _ = span.set_parent(crate::telemetry::extract(request.headers()));
        let stats = Arc::new(QueryStats::default());
        let handler = self.inner.call(request);
        let scoped = instrument::scope(Arc::clone(&stats), handler);
        Box::pin(
            async move {
                let mut response = match AssertUnwindSafe(scoped).catch_unwind().await {
                    Ok(result) => result?,
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(panic.message = %message, "handler panicked");
                        tonic::Status::internal("internal error").into_http()
                    }
                };
                let headers = response.headers_mut();
                let ms = |d: std::time::Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
                for (name, value) in [
                    (PROCESS_TIME_HEADER, ms(started.elapsed())),
                    (QUERY_COUNT_HEADER, stats.count().to_string()),
                    (QUERY_TIME_HEADER, ms(stats.total())),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
