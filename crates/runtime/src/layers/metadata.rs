//! [`MetadataLimitLayer`] refuses a call whose metadata is too large for any honest client
//! (one value over [`MAX_METADATA_VALUE_BYTES`], or all of it over
//! [`MAX_METADATA_BYTES`]) with `INVALID_ARGUMENT` naming the header. The HTTP/2 header
//! list limit is set well above these (see `server.rs`), so an oversized header reaches
//! this layer and fails only its own call, instead of h2 refusing it with a bare HTTP 431
//! or, for one large value, tearing down the connection and every call on it.

use std::task::{Context, Poll};

use http::{Request, Response};
use strata_errors::ApiError;
use tonic::body::Body;

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
fn oversized(headers: &http::HeaderMap) -> Option<ApiError> {
    let mut total = 0;
    for (name, value) in headers {
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Some(ApiError::invalid(
                name.as_str(),
                format!(
                    "metadata value is {} bytes; at most {MAX_METADATA_VALUE_BYTES} are accepted",
                    value.len()
                ),
            ));
        }
        total += name.as_str().len() + value.len() + 32;
    }
    (total > MAX_METADATA_BYTES).then(|| {
        ApiError::invalid(
            "metadata",
            format!("is {total} bytes in all; at most {MAX_METADATA_BYTES} are accepted"),
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
            Some(status) => futures_util::future::Either::Right(std::future::ready(Ok(
                tonic::Status::from(status).into_http(),
            ))),
            None => futures_util::future::Either::Left(self.inner.call(request)),
        }
    }
}
