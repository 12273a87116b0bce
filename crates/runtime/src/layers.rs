//! Tower layers of the server's request path.
//!
//! [`RequestLayer`] is the outermost layer of every Strata server. For each call it
//! - opens the request's tracing span, parented on the caller's W3C trace context;
//! - installs a query-accounting scope, so storage instrumentation counts the queries the
//!   handler runs;
//! - turns a handler panic into `INTERNAL` instead of tearing down the connection;
//! - adds `x-process-time-ms`, `x-query-count` and `x-query-time-ms` to the response
//!   metadata (also on error responses, which are trailers-only in gRPC and so carry them
//!   in the same header block).
//!
//! [`MetadataLimitLayer`] refuses a call whose metadata is too large for any honest client
//! (one value over [`MAX_METADATA_VALUE_BYTES`], or all of it over
//! [`MAX_METADATA_BYTES`]) with `INVALID_ARGUMENT` naming the header. The HTTP/2 header
//! list limit is set well above these (see `server.rs`), so an oversized header reaches
//! this layer and fails only its own call, instead of h2 refusing it with a bare HTTP 431
//! or, for one large value, tearing down the connection and every call on it.

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

/// Largest single metadata value accepted (an access token is about 600 bytes).
pub const MAX_METADATA_VALUE_BYTES: usize = 8 * 1024;
/// Largest metadata of one call, counted as HTTP/2 does (name + value + 32 per entry).
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Layer adding [`MetadataLimitService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataLimitLayer;

impl<S> tower_layer::Layer<S> for MetadataLimitLayer {
    type Service = MetadataLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetadataLimitService { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MetadataLimitService<S> {
    inner: S,
}

/// The refusal of oversized `headers`, if they are.
fn oversized(headers: &http::HeaderMap) -> Option<tonic::Status> {
    let mut total = 0;
    for (name, value) in headers {
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Some(crate::error::invalid_argument(
                name.as_str(),
                &format!(
                    "metadata value is {} bytes; at most {MAX_METADATA_VALUE_BYTES} are accepted",
                    value.len()
                ),
            ));
        }
        total += name.as_str().len() + value.len() + 32;
    }
    (total > MAX_METADATA_BYTES).then(|| {
        crate::error::invalid_argument(
            "metadata",
            &format!("is {total} bytes in all; at most {MAX_METADATA_BYTES} are accepted"),
        )
    })
}

impl<S> tower_service::Service<Request<Body>> for MetadataLimitService<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match oversized(request.headers()) {
            Some(status) => {
                futures_util::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
            None => futures_util::future::Either::Left(self.inner.call(request)),
        }
    }
}

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
