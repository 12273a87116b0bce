//! Authentication of incoming calls, for every service: [`AuthLayer`] takes the bearer
//! credential from the metadata, has [`Authenticator`] verify it, and puts the caller's
//! [`Principal`] into the request extensions for handlers (and the admin guard) to read.
//!
//! - Access tokens are verified locally with the auth service's public keys, fetched over
//!   gRPC (`GetJwks`), cached, and fetched again when a token names an unknown `kid`.
//! - Revocation: the session of an access token is checked in Redis through
//!   [`SessionCheck`] (see [`super::revocation`]), answers cached for `TokenSettings::cache_ttl` (one second). When Redis
//!   cannot vouch, the auth service decides (`VerifyToken`, the database); when neither can
//!   answer the call is refused (`UNAVAILABLE`).
//! - API keys are verified by the auth service (`VerifyToken`), answers cached as long.
//!
//! Calls without credentials are `UNAUTHENTICATED`, except health, reflection, and the
//! auth service itself, which authenticates its own calls more strictly (database-backed).
//! For the auth service's calls that carry a credential, the layer still finds out whose
//! it is ([`IdentifiedCaller`]: an access token's signature, or the auth service's answer
//! for an API key), so the rate limits that follow key them by identity, not by address.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use sha2::{Digest, Sha256};
use strata_errors::ApiError;
use strata_proto::auth::auth_service_client::AuthServiceClient;
use strata_proto::auth::auth_service_server::SERVICE_NAME as AUTH_SERVICE_NAME;
use strata_proto::auth::{self as pb};
use tonic::body::Body;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use uuid::Uuid;

use super::revocation::{Revocation, SessionCheck};
use super::token::{API_KEY_PREFIX, PublicKeys, TokenError, TokenSettings, VerifiedTokens};
use super::{Credential, Principal, Role};
use crate::layers::{INFRASTRUCTURE_SERVICES, grpc_service, take_ready};
use crate::redis::RedisHandle;
use crate::telemetry::{TraceContextInterceptor, client_call};

/// Access tokens whose verification is remembered, and for how long at most.
const VERIFIED_TOKENS: u64 = 100_000;
const VERIFIED_TOKEN_MAX_AGE: Duration = Duration::from_secs(60);
/// Minimum time between two JWKS fetches triggered by unknown `kid`s.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Deadline of calls to the auth service.
const AUTH_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Who a call to a service that authenticates its own calls (auth) comes from, as far as
/// rate limiting needs: an access token whose signature and expiry verify (its session may
/// have ended), or an API key the auth service vouched for. Never an authorization: the
/// service decides that itself.
#[derive(Debug, Clone)]
pub struct IdentifiedCaller(pub Principal);

/// When the JWKS was last fetched, and whether that worked.
#[derive(Debug, Clone, Copy)]
struct KeyFetch {
    at: Instant,
    ok: bool,
}

/// Verifies credentials; shared by every request of a process.
pub struct Authenticator {
    auth: AuthServiceClient<InterceptedService<Channel, TraceContextInterceptor>>,
    settings: TokenSettings,
    keys: RwLock<Arc<PublicKeys>>,
    last_key_fetch: tokio::sync::Mutex<Option<KeyFetch>>,
    sessions: SessionCheck,
    verified: VerifiedTokens,
    remote: Option<moka::future::Cache<[u8; 32], Principal>>,
    /// Credentials the auth service refused, by digest, as briefly: a flood of made-up API
    /// keys costs the auth service one look-up per key and second, not one per call.
    refused: Option<moka::future::Cache<[u8; 32], ()>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn unauthenticated() -> ApiError {
    ApiError::unauthenticated("invalid, expired or revoked credentials")
}

fn unavailable() -> ApiError {
    ApiError::unavailable("cannot verify credentials right now; retry later")
}

impl Authenticator {
    /// An authenticator asking the auth service behind `channel`.
    pub fn new(channel: Channel, settings: TokenSettings, redis: Option<RedisHandle>) -> Self {
        let ttl = settings.cache_ttl;
        Self {
            auth: AuthServiceClient::with_interceptor(channel, TraceContextInterceptor),
            settings,
            keys: RwLock::new(Arc::new(PublicKeys::default())),
            last_key_fetch: tokio::sync::Mutex::new(None),
            verified: VerifiedTokens::new(VERIFIED_TOKENS, VERIFIED_TOKEN_MAX_AGE),
            sessions: if ttl.is_zero() {
                SessionCheck::uncached(redis)
            } else {
                SessionCheck::cached(redis, ttl)
            },
            remote: (!ttl.is_zero()).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build()
            }),
            refused: (!ttl.is_zero()).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build()
            }),
        }
    }

    /// The principal behind `token`, or the status to answer with.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if token.starts_with(API_KEY_PREFIX) {
            return self.remote(token).await;
        }
        let principal = match self.verify_locally(token) {
            Err(TokenError::UnknownKey) => {
                self.refresh_keys().await?;
                self.verify_locally(token)
            }
            other => other,
        }
        .map_err(|_| unauthenticated())?;
        match self.sessions.check(&principal).await {
            Revocation::Live => Ok(principal),
            Revocation::Revoked => Err(unauthenticated()),
            // Redis cannot tell: the auth service decides.
            Revocation::Unknown => self.remote(token).await,
        }
    }

    /// Whose `token` is, for [`IdentifiedCaller`]; `None` when it does not verify.
    pub async fn identify(&self, token: &str) -> Option<Principal> {
        if token.starts_with(API_KEY_PREFIX) {
            return self.remote(token).await.ok();
        }
        match self.verify_locally(token) {
            Err(TokenError::UnknownKey) => {
                self.refresh_keys().await.ok()?;
                self.verify_locally(token).ok()
            }
            other => other.ok(),
        }
    }

    fn verify_locally(&self, token: &str) -> Result<Principal, TokenError> {
        let keys = self
            .keys
            .read()
            .map(|k| Arc::clone(&k))
            .map_err(|_| TokenError::UnknownKey)?;
        self.verified.verify(token, &keys, &self.settings)
    }

    /// Fetches the JWKS again, at most once per [`KEY_REFETCH_INTERVAL`]. Until the next
    /// fetch may run, callers get the last fetch's outcome: after a failed one, UNAVAILABLE
    /// (the keys are not known), never a verification against keys that were not fetched.
    async fn refresh_keys(&self) -> Result<(), ApiError> {
        let mut last = self.last_key_fetch.lock().await;
        if let Some(fetch) = *last
            && fetch.at.elapsed() < KEY_REFETCH_INTERVAL
        {
            return if fetch.ok { Ok(()) } else { Err(unavailable()) };
        }
        *last = Some(KeyFetch {
            at: Instant::now(),
            ok: false,
        });
        let mut request = tonic::Request::new(pb::GetJwksRequest {});
        request.set_timeout(AUTH_CALL_TIMEOUT);
        let mut auth = self.auth.clone();
        let jwks = client_call(AUTH_SERVICE_NAME, "GetJwks", auth.get_jwks(request))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "fetching the auth service's keys failed");
                unavailable()
            })?;
        if let Some(fetch) = last.as_mut() {
            fetch.ok = true;
        }
        let keys = PublicKeys::from_jwks(jwks.into_inner().keys);
        tracing::info!(keys = keys.len(), "fetched signing keys");
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        Ok(())
    }

    /// Verification by the auth service, cached briefly by the token's digest.
    async fn remote(&self, token: &str) -> Result<Principal, ApiError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cache) = &self.remote
            && let Some(principal) = cache.get(&digest).await
        {
            return Ok(principal);
        }
        if let Some(refused) = &self.refused
            && refused.contains_key(&digest)
        {
            return Err(unauthenticated());
        }
        let mut request = tonic::Request::new(pb::VerifyTokenRequest {
            token: token.to_owned(),
        });
        request.set_timeout(AUTH_CALL_TIMEOUT);
        let mut auth = self.auth.clone();
        let answer =
            client_call(AUTH_SERVICE_NAME, "VerifyToken", auth.verify_token(request)).await;
        if let (Err(status), Some(refused)) = (&answer, &self.refused)
            && matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument)
        {
            refused.insert(digest, ()).await;
        }
        let answer = answer.map_err(|status| match status.code() {
            Code::Unauthenticated | Code::InvalidArgument => unauthenticated(),
            _ => {
                tracing::warn!(error = %status.message(), "the auth service could not verify a credential");
                unavailable()
            }
        })?;
        let principal = principal_from_proto(answer.into_inner().principal.unwrap_or_default())
            .ok_or_else(unauthenticated)?;
        if let Some(cache) = &self.remote {
            cache.insert(digest, principal.clone()).await;
        }
        Ok(principal)
    }
}

fn principal_from_proto(p: pb::Principal) -> Option<Principal> {
    let parse = |s: &str| (!s.is_empty()).then(|| Uuid::parse_str(s).ok()).flatten();
    Some(Principal {
        user_id: Uuid::parse_str(&p.user_id).ok()?,
        role: if p.role == i32::from(pb::Role::Admin) {
            Role::Admin
        } else {
            Role::User
        },
        credential: match parse(&p.api_key_id) {
            Some(key_id) => Credential::ApiKey {
                key_id,
                scopes: p.scopes,
            },
            None => Credential::Session {
                session_id: parse(&p.session_id)?,
            },
        },
        expires_at: p.expire_time.map(|t| t.seconds),
    })
}

/// Layer adding [`AuthService`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer verifying with `authenticator`.
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> tower_service::Service<Request<Body>> for AuthService<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let service = grpc_service(request.uri().path());
        if service.is_some_and(|s| INFRASTRUCTURE_SERVICES.contains(&s)) {
            return Box::pin(inner.call(request));
        }
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let authenticator = Arc::clone(&self.authenticator);
        // The auth service authenticates its own calls against the database; the caller
        // is only identified here, for the rate limits.
        if service == Some(AUTH_SERVICE_NAME) {
            let Some(token) = token else {
                return Box::pin(inner.call(request));
            };
            return Box::pin(async move {
                if let Some(caller) = authenticator.identify(&token).await {
                    request.extensions_mut().insert(IdentifiedCaller(caller));
                }
                inner.call(request).await
            });
        }
        Box::pin(async move {
            let Some(token) = token else {
                return Ok(
                    Status::from(ApiError::unauthenticated("missing bearer credentials"))
                        .into_http(),
                );
            };
            match authenticator.authenticate(&token).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(error) => Ok(Status::from(error).into_http()),
            }
        })
    }
}
