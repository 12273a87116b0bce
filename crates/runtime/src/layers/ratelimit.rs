//! [`RateLimitLayer`]: every call but health and reflection is checked against the rate
//! limits ([`strata_ratelimit`]: GCRA in Redis, shared by every replica) before it runs.
//!
//! **Whose budget.** The layer sits after authentication, so the key is a verified
//! identity: the API key, else the user ([`Principal`], or for the auth service, which
//! authenticates its own calls, [`IdentifiedCaller`]); a call without one is keyed by the
//! client's address. The address is the TCP peer's, unless the peer is a configured
//! trusted proxy: then `x-forwarded-for` is read from the right, skipping trusted proxies,
//! and the first address that is not one is the client (an untrusted peer's header is
//! ignored, so it cannot pick its own key). IPv6 clients are keyed by their /64, the
//! block one subscriber gets.
//!
//! **Which limits.** An authenticated call is checked against `authenticated` (per API key,
//! else per user) and `user` (per user, over all of their keys and sessions); an
//! unauthenticated one against `unauthenticated` (per address), and `SignUp` and `Login`
//! also against `sign_in` (per address). All of a call's checks go to Redis in one round
//! trip, and a refused call uses none of them. Each method costs one unit of every check
//! unless [`RateLimits::costs`] says otherwise; cost 0 exempts it (`VerifyToken` and
//! `GetJwks` by default: the suite's services call them to authenticate their own calls).
//!
//! **What the client sees.** Every checked response carries, as metadata, the fields of
//! draft-ietf-httpapi-ratelimit-headers for the limit that binds (the one with least left):
//! `ratelimit-policy: "authenticated";q=120;w=60` and `ratelimit: "authenticated";r=119;t=1`,
//! and the familiar `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`
//! (seconds until the budget is whole again). A refused call is `RESOURCE_EXHAUSTED` with
//! `retry-after` metadata (whole seconds, rounded up), `RetryInfo` (exact) and a
//! `QuotaFailure` naming the limit, its key and its value; it succeeds once that delay has
//! passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use strata_errors::{ApiError, QuotaViolation};
use strata_ratelimit::{Check, Decision, Key, Limiter, Policy};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

use super::{INFRASTRUCTURE_SERVICES, grpc_service, take_ready};
use crate::identity::{Credential, IdentifiedCaller, Principal};

/// `ratelimit-policy`: the binding limit's quota and window.
pub const RATELIMIT_POLICY_HEADER: &str = "ratelimit-policy";
/// `ratelimit`: what is left of it and when it is whole again.
pub const RATELIMIT_HEADER: &str = "ratelimit";
/// `x-ratelimit-limit`
pub const X_RATELIMIT_LIMIT_HEADER: &str = "x-ratelimit-limit";
/// `x-ratelimit-remaining`
pub const X_RATELIMIT_REMAINING_HEADER: &str = "x-ratelimit-remaining";
/// `x-ratelimit-reset`: seconds until the budget is whole again.
pub const X_RATELIMIT_RESET_HEADER: &str = "x-ratelimit-reset";
/// `retry-after`: whole seconds until a refused call would be admitted.
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// Methods checked against `sign_in` too.
const SIGN_IN_METHODS: &[&str] = &[
    "strata.auth.v1.AuthService/SignUp",
    "strata.auth.v1.AuthService/Login",
];

/// Costs other than 1, before `STRATA_RATE_LIMIT_COSTS`.
pub const DEFAULT_COSTS: &[(&str, u32)] = &[
    // Called by every service of the suite to authenticate its own calls.
    ("strata.auth.v1.AuthService/VerifyToken", 0),
    ("strata.auth.v1.AuthService/GetJwks", 0),
    // Two password hashes.
    ("strata.auth.v1.AuthService/ChangePassword", 5),
    // Rebuilds every summary view.
    ("strata.analytics.v1.AnalyticsService/RefreshViews", 10),
    // Plans (and may run) a statement.
    ("strata.admin.v1.AdminService/ExplainQuery", 5),
];

/// The limits of a process; see the module documentation. `None` turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Per API key, else per user (default 120/min).
    pub authenticated: Option<Arc<Policy>>,
    /// Per user, over all of their credentials (default 600/min).
    pub user: Option<Arc<Policy>>,
    /// Per address, calls without a verified identity (default 30/min).
    pub unauthenticated: Option<Arc<Policy>>,
    /// Per address, `SignUp` and `Login`, on top of `unauthenticated` (default 10/min).
    pub sign_in: Option<Arc<Policy>>,
    /// Cost per method (`package.Service/Method`); missing: 1; 0: not limited.
    pub costs: HashMap<String, u32>,
    /// Peers whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RateLimits {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            authenticated: Some(Arc::new(Policy::new("authenticated", 120, minute))),
            user: Some(Arc::new(Policy::new("user", 600, minute))),
            unauthenticated: Some(Arc::new(Policy::new("unauthenticated", 30, minute))),
            sign_in: Some(Arc::new(Policy::new("sign_in", 10, minute))),
            costs: DEFAULT_COSTS
                .iter()
                .map(|(method, cost)| ((*method).to_owned(), *cost))
                .collect(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl RateLimits {
    /// Every limit `limit` per `period`, same costs and proxies (tests, the bench).
    pub fn all(limit: u32, period: Duration) -> Self {
        let policy = |name: &str| Some(Arc::new(Policy::new(name, limit, period)));
        Self {
            authenticated: policy("authenticated"),
            user: policy("user"),
            unauthenticated: policy("unauthenticated"),
            sign_in: policy("sign_in"),
            ..Self::default()
        }
    }

    /// A limit read from a setting: `off`, or `<n>/<unit>` with unit `s`, `min`, `h` or
    /// `d` (also `second`, `minute`, `hour`, `day`), or `<n>/<k><unit>` (`100/10s`).
    pub fn parse_policy(name: &str, value: &str) -> Result<Option<Arc<Policy>>, String> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bad = || format!("{value:?} is neither `off` nor `<calls>/<period>` (e.g. `120/min`)");
        let (calls, period) = value.split_once('/').ok_or_else(bad)?;
        let calls: u32 = calls.trim().parse().map_err(|_| bad())?;
        if calls == 0 {
            return Err(format!(
                "{value:?}: at least one call per period (or `off`)"
            ));
        }
        let period = period.trim();
        let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (count, unit) = period.split_at(split);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count.parse().map_err(|_| bad())?
        };
        let unit = match unit {
            "ms" => Duration::from_millis(1),
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        let period = u32::try_from(count)
            .ok()
            .and_then(|count| unit.checked_mul(count))
            .filter(|p| !p.is_zero() && *p <= Duration::from_secs(366 * 86_400))
            .ok_or_else(|| format!("{value:?}: the period must be between 1 ms and a year"))?;
        // The limiter counts in microseconds: a faster rate would be rounded to one.
        if u128::from(calls) > period.as_micros() {
            return Err(format!(
                "{value:?}: at most one call per microsecond (1000000/s, 60000000/min)"
            ));
        }
        Ok(Some(Arc::new(Policy::new(name, calls, period))))
    }

    /// Refuses a method cost that some limit could never admit (more than its whole
    /// budget): such calls would be refused forever while told to retry.
    pub fn check_costs(&self) -> Result<(), String> {
        let smallest = [
            &self.authenticated,
            &self.user,
            &self.unauthenticated,
            &self.sign_in,
        ]
        .into_iter()
        .flatten()
        .min_by_key(|p| p.limit);
        let Some(smallest) = smallest else {
            return Ok(());
        };
        match self.costs.iter().find(|(_, cost)| **cost > smallest.limit) {
            Some((method, cost)) => Err(format!(
                "{method} costs {cost}, more than the {} limit's whole budget ({})",
                smallest.name, smallest.limit
            )),
            None => Ok(()),
        }
    }

    /// Method costs read from a setting (`package.Service/Method=cost`, comma-separated)
    /// over [`DEFAULT_COSTS`]; every method must be one of `known`.
    pub fn parse_costs(value: &str, known: &[String]) -> Result<HashMap<String, u32>, String> {
        let mut costs: HashMap<String, u32> = DEFAULT_COSTS
            .iter()
            .map(|(method, cost)| ((*method).to_owned(), *cost))
            .collect();
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (method, cost) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not `package.Service/Method=cost`"))?;
            let method = method.trim().trim_start_matches('/');
            if !known.iter().any(|k| k == method) {
                return Err(format!("{method:?} is not a method of this suite"));
            }
            let cost = cost
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("{item:?}: the cost must be a whole number"))?;
            costs.insert(method.to_owned(), cost);
        }
        Ok(costs)
    }

    /// Trusted proxies read from a setting: addresses or CIDR blocks, comma-separated.
    pub fn parse_proxies(value: &str) -> Result<Vec<IpNet>, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(|item| item.parse())
            .collect()
    }

    /// Whether any limit applies to `subject`'s calls (`sign_in`: to `SignUp` or `Login`).
    fn apply_to(&self, subject: &Subject, sign_in: bool) -> bool {
        match subject {
            Subject::Caller { .. } => self.authenticated.is_some() || self.user.is_some(),
            Subject::Address(_) => {
                self.unauthenticated.is_some() || (sign_in && self.sign_in.is_some())
            }
        }
    }

    /// The checks of a call by `subject` (`sign_in`: to `SignUp` or `Login`), at `cost`
    /// each.
    fn checks<'a>(&'a self, subject: &Subject, sign_in: bool, cost: u32) -> Checks<'a> {
        let mut checks = Checks::new();
        let mut add = |policy: &'a Option<Arc<Policy>>, key: &Key| {
            if let Some(policy) = policy {
                checks.push(Check {
                    policy,
                    key: key.clone(),
                    cost,
                });
            }
        };
        match subject {
            Subject::Caller { user, credential } => {
                add(&self.authenticated, credential);
                add(&self.user, user);
            }
            Subject::Address(address) => {
                add(&self.unauthenticated, address);
                if sign_in {
                    add(&self.sign_in, address);
                }
            }
        }
        checks
    }
}

/// The checks of a call (two at most: no allocation).
type Checks<'a> = smallvec::SmallVec<[Check<'a>; 2]>;

/// Whose budgets a call uses.
#[derive(Debug)]
enum Subject {
    /// A verified caller: its credential (API key, else user) and its user.
    Caller { user: Key, credential: Key },
    /// Anyone else, by address.
    Address(Key),
}

impl Subject {
    fn of(principal: &Principal) -> Self {
        let user = Key::User(principal.user_id);
        let credential = match &principal.credential {
            Credential::ApiKey { key_id, .. } => Key::ApiKey(*key_id),
            Credential::Session { .. } => user.clone(),
        };
        Self::Caller { user, credential }
    }
}

/// An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    network: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(net)), self.prefix, 32)
                    == mask(u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net), self.prefix, 128) == mask(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-bit address.
fn mask(address: u128, prefix: u8, bits: u8) -> u128 {
    let keep = u32::from(prefix.min(bits));
    if keep == 0 {
        return 0;
    }
    let shift = u32::from(bits) - keep;
    (address >> shift) << shift
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IP address or CIDR block");
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| bad())?;
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
            None => bits,
        };
        Ok(Self { network, prefix })
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the rightmost
/// address of `x-forwarded-for` that is not a trusted proxy.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer?.to_canonical();
    if !is_trusted(client) {
        return Some(client);
    }
    // A line that is not text reads as a hop that is not an address: it ends the chain.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        // A hop that is not an address ends the chain: what is left of it is unverifiable.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    Some(client)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The metadata values of a policy that never change, made once.
#[derive(Debug)]
struct PolicyHeaders {
    policy: Arc<Policy>,
    /// `"name";q=<limit>;w=<window>`
    quota: HeaderValue,
    /// `<limit>`
    limit: HeaderValue,
    /// `"name";r=`, the start of the `ratelimit` value.
    left: String,
}

impl PolicyHeaders {
    /// The values of `policy`; `None` if its name cannot be sent as metadata.
    fn new(policy: Arc<Policy>) -> Option<Self> {
        let quota = format!(
            "\"{}\";q={};w={}",
            policy.name,
            policy.limit,
            seconds(policy.period)
        );
        Some(Self {
            quota: HeaderValue::from_str(&quota).ok()?,
            limit: HeaderValue::from(policy.limit),
            left: format!("\"{}\";r=", policy.name),
            policy,
        })
    }

    /// [`PolicyHeaders::new`] for a layer's own policies, whose values last as long as the
    /// process: a response's copy of them is then free, where a shared value costs two
    /// atomic counts per response, on a cache line every thread writes.
    fn lasting(policy: Arc<Policy>) -> Option<Self> {
        let made = Self::new(policy)?;
        let lasting = |value: &HeaderValue| {
            // Made from a valid value: `from_static` accepts it.
            value
                .to_str()
                .ok()
                .map(|text| HeaderValue::from_static(interned(text)))
        };
        Some(Self {
            quota: lasting(&made.quota)?,
            limit: lasting(&made.limit)?,
            ..made
        })
    }
}

/// `text`, kept for the life of the process, once per distinct text (a process has a few
/// policies; their values are all that is kept).
fn interned(text: &str) -> &'static str {
    static KEPT: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut kept = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kept) = kept.iter().find(|k| **k == text) {
        return kept;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    kept.push(leaked);
    leaked
}

/// The metadata names, made at compile time (made from a string per call, they would be
/// parsed per call).
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static(RATELIMIT_POLICY_HEADER);
const RATELIMIT: HeaderName = HeaderName::from_static(RATELIMIT_HEADER);
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static(X_RATELIMIT_LIMIT_HEADER);
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static(X_RATELIMIT_REMAINING_HEADER);
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static(X_RATELIMIT_RESET_HEADER);
const RETRY_AFTER: HeaderName = HeaderName::from_static(RETRY_AFTER_HEADER);

/// Layer adding [`RateLimitService`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

/// What the calls of a layer share (one reference counted per call).
#[derive(Debug)]
struct Shared {
    limiter: Limiter,
    limits: RateLimits,
    headers: Vec<PolicyHeaders>,
    /// [`RateLimits::costs`], looked up with a faster hash (a method name per call).
    costs: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
}

impl RateLimitLayer {
    /// A layer checking `limits` with `limiter`.
    pub fn new(limiter: Limiter, limits: RateLimits) -> Self {
        let headers = [
            &limits.authenticated,
            &limits.user,
            &limits.unauthenticated,
            &limits.sign_in,
        ]
        .into_iter()
        .flatten()
        .filter_map(|policy| PolicyHeaders::lasting(Arc::clone(policy)))
        .collect();
        let costs = limits
            .costs
            .iter()
            .map(|(method, cost)| (Box::from(method.as_str()), *cost))
            .collect();
        Self {
            shared: Arc::new(Shared {
                limiter,
                limits,
                headers,
                costs,
            }),
        }
    }
}

impl<S> tower_layer::Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> tower_service::Service<Request<Body>> for RateLimitService<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Decided here and now, as nearly every call is, the call goes to the inner service
        // polled ready; only a call that waits for Redis takes it along (a clone takes its
        // place).
        let path = request.uri().path();
        let method = path.trim_start_matches('/');
        let shared = &self.shared;
        let limits = &shared.limits;
        let cost = shared.costs.get(method).copied().unwrap_or(1);
        if cost == 0 || grpc_service(path).is_some_and(|s| INFRASTRUCTURE_SERVICES.contains(&s)) {
            return RateLimitFuture::admitted(self.inner.call(request), None);
        }
        // Signing in is limited per address whoever the caller says they are: a token of
        // one's own must not lift the limit on guessing someone else's password.
        let sign_in = SIGN_IN_METHODS.contains(&method);
        let caller = if sign_in {
            None
        } else {
            request
                .extensions()
                .get::<Principal>()
                .or_else(|| request.extensions().get::<IdentifiedCaller>().map(|c| &c.0))
        };
        let subject = match caller {
            Some(principal) => Subject::of(principal),
            None => {
                let peer = request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr)
                    .map(|a| a.ip());
                Subject::Address(Key::address(client_address(
                    peer,
                    request.headers(),
                    &limits.trusted_proxies,
                )))
            }
        };
        if !limits.apply_to(&subject, sign_in) {
            return RateLimitFuture::admitted(self.inner.call(request), None);
        }
        // Nearly every call is decided here and now, from this process's leases: the call
        // goes on at once, and its metadata is added to its response. The others wait for
        // Redis.
        let checks = limits.checks(&subject, sign_in, cost);
        match shared.limiter.check_here(&checks) {
            Ok(decision) => {
                let metadata = RateLimitMetadata::of(&decision, &shared.headers);
                if decision.allowed {
                    return RateLimitFuture::admitted(self.inner.call(request), metadata);
                }
                let mut response = refusal(&decision, &checks).into_http();
                if let Some(metadata) = metadata {
                    metadata.add_to(response.headers_mut());
                }
                RateLimitFuture::refused(response)
            }
            Err(unpaid) => {
                let mut inner = take_ready(&mut self.inner);
                let shared = Arc::clone(shared);
                RateLimitFuture::waiting(Box::pin(async move {
                    let checks = shared.limits.checks(&subject, sign_in, cost);
                    let decision = shared.limiter.check_rest(&checks, unpaid).await;
                    let metadata = RateLimitMetadata::of(&decision, &shared.headers);
                    let mut response = if decision.allowed {
                        inner.call(request).await?
                    } else {
                        refusal(&decision, &checks).into_http()
                    };
                    if let Some(metadata) = metadata {
                        metadata.add_to(response.headers_mut());
                    }
                    Ok(response)
                }))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`RateLimitService`]: the inner service's, with the rate-limit
    /// metadata added, or a refusal.
    pub struct RateLimitFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = Projected]
    enum State<F, E> {
        // Admitted (or not limited): the inner call, and the metadata for its response.
        Admitted {
            #[pin]
            inner: F,
            metadata: Option<RateLimitMetadata>,
        },
        // Refused without asking anyone: the refusal, until it is given.
        Refused { response: Option<Response<Body>> },
        // Waiting for Redis to decide, then for the inner call.
        Waiting { future: BoxFuture<'static, Result<Response<Body>, E>> },
    }
}

impl<F, E> RateLimitFuture<F, E> {
    fn admitted(inner: F, metadata: Option<RateLimitMetadata>) -> Self {
        Self {
            state: State::Admitted { inner, metadata },
        }
    }

    fn refused(response: Response<Body>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    fn waiting(future: BoxFuture<'static, Result<Response<Body>, E>>) -> Self {
        Self {
            state: State::Waiting { future },
        }
    }
}

impl<F, E> std::future::Future for RateLimitFuture<F, E>
where
    F: std::future::Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Admitted { inner, metadata } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                if let Some(metadata) = metadata.take() {
                    metadata.add_to(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            // Polled again once done: a contract the caller broke; it waits forever.
            Projected::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            Projected::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

/// `RESOURCE_EXHAUSTED` for a refused call, with `RetryInfo` and `QuotaFailure`.
fn refusal(decision: &Decision<'_>, checks: &[Check<'_>]) -> Status {
    let policy = decision.policy;
    let retry_after = decision.retry_after.unwrap_or(policy.period);
    let key = checks
        .iter()
        .find(|c| std::ptr::eq(c.policy, policy))
        .map(|c| &c.key);
    let window = describe(policy.period);
    let description = format!(
        "{} calls per {window} for each {}",
        policy.limit,
        key.map_or("caller", Key::kind)
    );
    let violation = QuotaViolation {
        subject: key.map(Key::to_string).unwrap_or_default(),
        description: description.clone(),
        quota_id: policy.name.clone(),
        quota_metric: "calls".to_owned(),
        quota_value: i64::from(policy.limit),
        ..QuotaViolation::default()
    };
    Status::from(ApiError::ResourceExhausted {
        message: format!(
            "rate limit {:?} exceeded ({description}); retry in {:.3} s",
            policy.name,
            retry_after.as_secs_f64()
        )
        .into(),
        retry_after,
        quota: vec![violation],
    })
}

/// `1 minute`, `10 s`, `250 ms`.
fn describe(period: Duration) -> String {
    let ms = period.as_millis();
    match ms {
        60_000 => "minute".to_owned(),
        3_600_000 => "hour".to_owned(),
        86_400_000 => "day".to_owned(),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// Whole seconds, rounded up.
fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The rate-limit metadata of a call's response, made when the call is decided.
///
/// **On the wire.** HPACK sends the values that repeat (the policy, the limit, usually the
/// reset, what is left of a large budget: see [`shown`]) as one-byte references to its
/// table once sent. The values that change from call to call (what is left of a small
/// budget) are sent as never-indexed literals: in the table they would only evict the
/// values that repeat. A literal still names its header by reference when the name is in
/// the table, so one response in [`SEED_NAMES_EVERY`] (per thread) sends them indexed,
/// which puts their names in the table of its connection.
#[derive(Debug)]
pub struct RateLimitMetadata {
    quota: HeaderValue,
    limit: HeaderValue,
    /// `"name";r=<remaining>;t=<reset>`
    left: HeaderValue,
    remaining: HeaderValue,
    reset: HeaderValue,
    retry_after: Option<HeaderValue>,
}

impl RateLimitMetadata {
    /// The metadata of `decision` (`made`: the values made once per policy).
    fn of(decision: &Decision<'_>, made: &[PolicyHeaders]) -> Option<Self> {
        let policy = decision.policy;
        let made_here;
        // Whether the policy's values were made once, for every call (a policy Redis
        // named that is not the layer's is made here).
        let (made, listed) = match made.iter().find(|m| std::ptr::eq(&*m.policy, policy)) {
            Some(made) => (made, true),
            None => {
                made_here = PolicyHeaders::new(Arc::new(policy.clone()))?;
                (&made_here, false)
            }
        };
        let (remaining, exact) = shown(decision.remaining);
        let reset = seconds(decision.reset);
        let retry_after = decision
            .retry_after
            .map(|retry| HeaderValue::from(seconds(retry)));
        // A rounded budget repeats from call to call: its values, once made on this
        // thread for the policy, are used again (a reference count each) instead of made
        // anew.
        if !exact
            && listed
            && let Some((left, remaining, reset)) = REPEATED.with_borrow(|last| {
                last.iter()
                    .find(|last| last.is(&made.policy, remaining, reset))
                    .map(Repeated::values)
            })
        {
            return Some(Self {
                quota: made.quota.clone(),
                limit: made.limit.clone(),
                left,
                remaining,
                reset,
                retry_after,
            });
        }
        // One buffer for the three values with numbers: the numbers of `ratelimit` are
        // the values of `x-ratelimit-remaining` and `x-ratelimit-reset`.
        let remaining_number = remaining;
        let mut digits = itoa::Buffer::new();
        let remaining = digits.format(remaining);
        let mut text = bytes::BytesMut::with_capacity(made.left.len() + remaining.len() + 24);
        text.extend_from_slice(made.left.as_bytes());
        let remaining_at = text.len()..text.len() + remaining.len();
        text.extend_from_slice(remaining.as_bytes());
        text.extend_from_slice(b";t=");
        let reset_at = text.len();
        text.extend_from_slice(digits.format(reset).as_bytes());
        let text = text.freeze();
        let seed = SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            seen.set(n);
            n % SEED_NAMES_EVERY == 0
        });
        let changing = |value: bytes::Bytes| {
            HeaderValue::from_maybe_shared(value).ok().map(|mut value| {
                value.set_sensitive(exact && !seed);
                value
            })
        };
        let metadata = Self {
            quota: made.quota.clone(),
            limit: made.limit.clone(),
            remaining: changing(text.slice(remaining_at))?,
            reset: HeaderValue::from_maybe_shared(text.slice(reset_at..)).ok()?,
            left: changing(text)?,
            retry_after,
        };
        if !exact && listed {
            let repeated = Repeated {
                policy: Arc::clone(&made.policy),
                remaining_number,
                reset_number: reset,
                left: metadata.left.clone(),
                remaining: metadata.remaining.clone(),
                reset: metadata.reset.clone(),
            };
            REPEATED.with_borrow_mut(|last| {
                match last
                    .iter()
                    .position(|last| Arc::ptr_eq(&last.policy, &made.policy))
                {
                    Some(at) => last[at] = repeated,
                    // Four policies per layer at most, and a process has a few layers.
                    None if last.len() < 16 => last.push(repeated),
                    None => last[0] = repeated,
                }
            });
        }
        Some(metadata)
    }

    /// Adds the metadata to a response's.
    fn add_to(self, headers: &mut HeaderMap) {
        headers.reserve(6);
        headers.insert(RATELIMIT_POLICY, self.quota);
        headers.insert(RATELIMIT, self.left);
        headers.insert(X_RATELIMIT_LIMIT, self.limit);
        headers.insert(X_RATELIMIT_REMAINING, self.remaining);
        headers.insert(X_RATELIMIT_RESET, self.reset);
        if let Some(retry) = self.retry_after {
            headers.insert(RETRY_AFTER, retry);
        }
    }
}

/// What is left as told to the client, and whether it is exact: below 1000 exactly; above,
/// to three significant digits, rounded down. What is left is an estimate in any case (a
/// lease's units, other replicas' calls), and one that never says more is left than is
/// stays true; rounded, it changes every thousandth of the budget instead of every call,
/// so HPACK sends it as a one-byte reference to its table.
fn shown(remaining: u64) -> (u64, bool) {
    if remaining < 1000 {
        return (remaining, true);
    }
    let mut unit = 1;
    while remaining / unit >= 1000 {
        unit *= 10;
    }
    (remaining / unit * unit, false)
}

/// One response in this many (per thread) sends the changing values indexed; see
/// [`RateLimitMetadata`].
const SEED_NAMES_EVERY: u32 = 256;

thread_local! {
    /// Responses annotated on this thread.
    static SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The values last made on this thread for a rounded budget, per policy.
    static REPEATED: std::cell::RefCell<Vec<Repeated>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The changing values of [`RateLimitMetadata`] made for a rounded budget (see [`shown`]),
/// which the calls that follow are likely to have too.
struct Repeated {
    /// Held, so that the address compared is never another policy's.
    policy: Arc<Policy>,
    remaining_number: u64,
    reset_number: u64,
    left: HeaderValue,
    remaining: HeaderValue,
    reset: HeaderValue,
}

impl Repeated {
    /// Whether these are the values of `remaining` and `reset` (seconds) of `policy`.
    fn is(&self, policy: &Arc<Policy>, remaining: u64, reset: u64) -> bool {
        Arc::ptr_eq(&self.policy, policy)
            && self.remaining_number == remaining
            && self.reset_number == reset
    }

    fn values(&self) -> (HeaderValue, HeaderValue, HeaderValue) {
        (
            self.left.clone(),
            self.remaining.clone(),
            self.reset.clone(),
        )
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn policies_costs_and_proxies_parse_or_say_why_not() {
        let p = RateLimits::parse_policy("a", "120/min").unwrap().unwrap();
        assert_eq!((p.limit, p.period), (120, Duration::from_secs(60)));
        let p = RateLimits::parse_policy("a", " 5 / 10s ").unwrap().unwrap();
        assert_eq!((p.limit, p.period), (5, Duration::from_secs(10)));
        assert_eq!(RateLimits::parse_policy("a", "OFF").unwrap(), None);
        let p = RateLimits::parse_policy("a", "60000000/min")
            .unwrap()
            .unwrap();
        assert_eq!((p.emission_us(), p.tolerance_us()), (1, 60_000_000));
        for bad in [
            "",
            "120",
            "0/min",
            "-1/min",
            "1/fortnight",
            "1/0s",
            "1/99999999d",
            "x/s",
            "1000001/s",
            "1000000000/min",
        ] {
            assert!(RateLimits::parse_policy("a", bad).is_err(), "{bad}");
        }
        let known = vec!["strata.auth.v1.AuthService/Login".to_owned()];
        let costs = RateLimits::parse_costs("strata.auth.v1.AuthService/Login=3", &known).unwrap();
        assert_eq!(costs["strata.auth.v1.AuthService/Login"], 3);
        assert_eq!(costs["strata.auth.v1.AuthService/VerifyToken"], 0);
        assert!(RateLimits::parse_costs("Nope/Login=3", &known).is_err());
        assert!(RateLimits::parse_costs("strata.auth.v1.AuthService/Login=-3", &known).is_err());
        // A cost no budget could ever pay is refused.
        let mut limits = RateLimits::default();
        assert!(limits.check_costs().is_ok());
        limits
            .costs
            .insert("strata.auth.v1.AuthService/Login".into(), 11);
        assert!(limits.check_costs().unwrap_err().contains("sign_in"));
        let proxies = RateLimits::parse_proxies("10.0.0.0/8, ::1,192.0.2.7").unwrap();
        assert_eq!(proxies.len(), 3);
        assert!(RateLimits::parse_proxies("10.0.0.0/33").is_err());
        assert!(RateLimits::parse_proxies("proxy.local").is_err());
    }

    #[test]
    fn what_is_left_is_exact_below_a_thousand_and_never_more_than_is() {
        assert_eq!(shown(0), (0, true));
        assert_eq!(shown(999), (999, true));
        assert_eq!(shown(1000), (1000, false));
        assert_eq!(shown(1234), (1230, false));
        assert_eq!(shown(99_999), (99_900, false));
        assert_eq!(shown(999_999_876), (999_000_000, false));
        assert_eq!(shown(u64::MAX).0, 18_400_000_000_000_000_000);
    }

    #[test]
    fn metadata_made_again_from_a_thread_s_last_values_is_the_decision_s_own() {
        let big = Arc::new(Policy::new("big", 60_000_000, Duration::from_secs(60)));
        let other = Arc::new(Policy::new("other", 60_000_000, Duration::from_secs(60)));
        let small = Arc::new(Policy::new("small", 120, Duration::from_secs(60)));
        let made: Vec<PolicyHeaders> = [&big, &other, &small]
            .into_iter()
            .map(|p| PolicyHeaders::new(Arc::clone(p)).unwrap())
            .collect();
        let text = |policy: &Policy, remaining: u64, reset_ms: u64| {
            let decision = Decision {
                allowed: true,
                policy,
                remaining,
                reset: Duration::from_millis(reset_ms),
                retry_after: None,
                local: false,
            };
            let mut headers = HeaderMap::new();
            RateLimitMetadata::of(&decision, &made)
                .unwrap()
                .add_to(&mut headers);
            let value = |name: &str| headers[name].to_str().unwrap().to_owned();
            (
                value(RATELIMIT_HEADER),
                value(X_RATELIMIT_REMAINING_HEADER),
                value(X_RATELIMIT_RESET_HEADER),
                headers[RATELIMIT_HEADER].is_sensitive(),
            )
        };
        let expect = |r: &str, remaining: &str, reset: &str, sensitive: bool| {
            (
                r.to_owned(),
                remaining.to_owned(),
                reset.to_owned(),
                sensitive,
            )
        };
        let first = text(&big, 59_999_876, 1);
        assert_eq!(
            first,
            expect("\"big\";r=59900000;t=1", "59900000", "1", false)
        );
        // The same rounded budget: the same values.
        assert_eq!(text(&big, 59_900_001, 900), first);
        // Anything that differs is made anew: what is left, the reset, the policy.
        assert_eq!(
            text(&big, 59_899_999, 900),
            expect("\"big\";r=59800000;t=1", "59800000", "1", false)
        );
        assert_eq!(
            text(&big, 59_899_999, 1_500),
            expect("\"big\";r=59800000;t=2", "59800000", "2", false)
        );
        assert_eq!(
            text(&other, 59_899_999, 1_500),
            expect("\"other\";r=59800000;t=2", "59800000", "2", false)
        );
        // An exact budget is never the last one's, and changes with every call.
        assert_eq!(
            text(&small, 119, 500),
            expect("\"small\";r=119;t=1", "119", "1", true)
        );
        assert_eq!(text(&small, 118, 1_000).0, "\"small\";r=118;t=1");
        // A policy the layer does not list (one Redis named) is made for the call alone.
        let unlisted = Policy::new("unlisted", 60_000_000, Duration::from_secs(60));
        assert_eq!(
            text(&unlisted, 59_999_876, 1).0,
            "\"unlisted\";r=59900000;t=1"
        );
        assert_eq!(text(&big, 59_999_876, 1), first);
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let trusted = RateLimits::parse_proxies("10.0.0.0/8,fd00::/8").unwrap();
        let headers = |xff: &[&str]| {
            let mut h = HeaderMap::new();
            for v in xff {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            h
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // A trusted proxy's: the rightmost hop that is not a trusted proxy.
        assert_eq!(
            client_address(
                ip("10.1.1.1"),
                &headers(&["6.6.6.6, 198.51.100.1", "10.2.2.2"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
        // Garbage ends the chain at the last verifiable hop.
        assert_eq!(
            client_address(
                ip("10.1.1.1"),
                &headers(&["198.51.100.1, nonsense, 10.3.3.3"]),
                &trusted
            ),
            ip("10.3.3.3")
        );
        // A line that is not text ends the chain too.
        let mut opaque = headers(&["198.51.100.1"]);
        opaque.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(
            client_address(ip("10.1.1.1"), &opaque, &trusted),
            ip("10.1.1.1")
        );
        // Mapped IPv4 and ports are understood; no header leaves the proxy itself.
        assert_eq!(
            client_address(
                ip("::ffff:10.1.1.1"),
                &headers(&["[2001:db8::1]:443"]),
                &trusted
            ),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(ip("10.1.1.1"), &HeaderMap::new(), &trusted),
            ip("10.1.1.1")
        );
        assert_eq!(
            Key::address(ip("2001:db8:1:2:3:4:5:6")).to_string(),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(
            Key::address(ip("::ffff:192.0.2.1")).to_string(),
            "ip:192.0.2.1"
        );
    }
}
