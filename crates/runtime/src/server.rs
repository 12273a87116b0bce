//! Server bootstrap shared by every Strata process: [`ServerBuilder`] collects the
//! services' gRPC servers, adds the admin service, `grpc.health.v1` and reflection (v1 and
//! v1alpha), binds, and serves with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::GrpcServer;
use strata_proto::admin::admin_service_server::AdminServiceServer;
use strata_proto::auth::auth_service_server::SERVICE_NAME as AUTH_SERVICE_NAME;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

use crate::admin::{Admin, AdminGuard};
use crate::context::AppContext;
use crate::error::Error;
use crate::health;
use crate::identity::{AuthLayer, Authenticator};
use crate::layers::{MetadataLimitLayer, RateLimitLayer, RequestLayer};
use crate::tasks::{Running, Task};

/// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`: far above [`crate::layers::MAX_METADATA_BYTES`]
/// (see `serve`). With the concurrent-stream limit it bounds header memory per connection.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;
/// Part of the shutdown grace period kept for the background tasks' last rounds (at most a
/// quarter of it).
const TASK_FLUSH_RESERVE: Duration = Duration::from_secs(5);
/// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls in flight on one connection.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// Collects services and serves them. See the module docs.
pub struct ServerBuilder {
    ctx: Arc<AppContext>,
    routes: RoutesBuilder,
    names: Vec<String>,
    tasks: Vec<Task>,
    peers: Vec<Peer>,
}

/// A channel to another service of the suite, made when the server binds: to the URL its
/// setting names, else to this process's own address when it serves that service, else
/// none (see [`ServerBuilder::peer`]). Clients built on it should carry the trace context
/// ([`crate::telemetry::TraceContextInterceptor`]).
#[derive(Debug, Clone)]
pub struct Peer {
    service: &'static str,
    setting: &'static str,
    url: Option<String>,
    channel: Arc<std::sync::OnceLock<tonic::transport::Channel>>,
}

impl Peer {
    /// The channel, once the server is bound and if the service is reachable.
    pub fn channel(&self) -> Option<tonic::transport::Channel> {
        self.channel.get().cloned()
    }

    /// Sets the channel to `url` (lazily connected).
    fn connect(&self, url: &str) -> Result<(), Error> {
        let channel = lazy_channel(url)
            .map_err(|e| Error::FailedPrecondition(format!("{}: {e}", self.setting)))?;
        let _ = self.channel.set(channel);
        Ok(())
    }
}

/// A channel to `url`, connected on first use, with a short connect timeout.
fn lazy_channel(url: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

impl ServerBuilder {
    /// A server for `ctx` with the admin service already added.
    pub fn new(ctx: AppContext) -> Self {
        let ctx = Arc::new(ctx);
        let mut builder = Self {
            ctx: Arc::clone(&ctx),
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            tasks: Vec::new(),
            peers: Vec::new(),
        };
        let admin = AdminServiceServer::new(Admin::new(Arc::clone(&ctx)))
            .with_message_limit(ctx.config.max_message_bytes);
        let guarded = tonic::service::interceptor::InterceptedService::new(
            admin,
            AdminGuard::new(ctx.config.admin_token.clone()),
        );
        builder.add_route(guarded);
        builder
    }

    /// The shared context, for constructing service handlers.
    pub fn context(&self) -> Arc<AppContext> {
        Arc::clone(&self.ctx)
    }

    /// Adds a generated gRPC server, with the process's message-size limit; its name
    /// (the generated `SERVICE_NAME`) gets a `grpc.health.v1` entry.
    pub fn add_service<S, B>(&mut self, service: S) -> &mut Self
    where
        S: GrpcServer
            + tower_service::Service<
                http::Request<Body>,
                Error = Infallible,
                Response = http::Response<B>,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limited = service.with_message_limit(self.ctx.config.max_message_bytes);
        self.add_route(limited)
    }

    /// A channel to the service named `service` (its generated `SERVICE_NAME`), made when
    /// the server binds: to `url` (the value of the setting named `setting`) when set,
    /// else to this process when it serves that service.
    pub fn peer(
        &mut self,
        service: &'static str,
        setting: &'static str,
        url: Option<String>,
    ) -> Peer {
        let peer = Peer {
            service,
            setting,
            url,
            channel: Arc::default(),
        };
        self.peers.push(peer.clone());
        peer
    }

    /// Adds a background task, started when the server serves and drained when it stops
    /// (see [`crate::tasks`]).
    pub fn add_task(&mut self, task: Task) -> &mut Self {
        self.tasks.push(task);
        self
    }

    /// Adds a route whose limits are already set (the guarded admin service).
    fn add_route<S, B>(&mut self, service: S) -> &mut Self
    where
        S: tower_service::Service<
                http::Request<Body>,
                Error = Infallible,
                Response = http::Response<B>,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.names.push(S::NAME.to_owned());
        self.routes.add_service(service);
        self
    }

    /// Applies pending migrations (when `STRATA_MIGRATE_ON_START`) and binds the listen
    /// address, so a caller learns the real port (`:0`) before serving.
    pub async fn bind(self) -> Result<BoundServer, Error> {
        if self.ctx.config.migrate_on_start {
            let applied = self.ctx.migrate().await?;
            tracing::info!(migrations.applied = applied.len(), "migrations up to date");
        }
        let listener = TcpListener::bind(self.ctx.config.listen_addr).await?;
        let local_addr = listener.local_addr()?;
        let authenticator = self.authenticator(local_addr)?;
        for peer in &self.peers {
            if let Some(url) = self.peer_url(peer.service, peer.url.as_ref(), local_addr) {
                peer.connect(&url)?;
            }
        }
        Ok(BoundServer {
            local_addr,
            listener,
            authenticator,
            builder: self,
        })
    }

    /// Where the service named `service` is: `configured`, else this process (at
    /// `local_addr`) when it serves it.
    fn peer_url(
        &self,
        service: &str,
        configured: Option<&String>,
        local_addr: SocketAddr,
    ) -> Option<String> {
        if let Some(url) = configured {
            return Some(url.clone());
        }
        if !self.names.iter().any(|n| n == service) {
            return None;
        }
        let ip = if local_addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            local_addr.ip()
        };
        Some(format!("http://{}", SocketAddr::new(ip, local_addr.port())))
    }

    /// The authenticator of the suite's calls, when an auth service is known: the one at
    /// `STRATA_AUTH_URL`, else this process's own when it serves auth.
    fn authenticator(&self, local_addr: SocketAddr) -> Result<Option<Arc<Authenticator>>, Error> {
        let config = &self.ctx.config;
        let Some(url) = self.peer_url(AUTH_SERVICE_NAME, config.auth_url.as_ref(), local_addr)
        else {
            return Ok(None);
        };
        let channel = lazy_channel(&url)
            .map_err(|e| Error::FailedPrecondition(format!("STRATA_AUTH_URL: {e}")))?;
        Ok(Some(Arc::new(Authenticator::new(
            channel,
            config.tokens.clone(),
            self.ctx.redis.clone(),
        ))))
    }
}

/// A bound, not yet serving, server.
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    authenticator: Option<Arc<Authenticator>>,
    builder: ServerBuilder,
}

impl BoundServer {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, reports `NOT_SERVING`,
    /// and waits up to `STRATA_SHUTDOWN_GRACE_MS` for in-flight calls to finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let ServerBuilder {
            ctx,
            mut routes,
            names,
            tasks,
            ..
        } = self.builder;
        let config = &ctx.config;

        let mut running = Running::start(tasks, &ctx.tasks);
        let (reporter, health_service) = tonic_health::server::health_reporter();
        health::set_all(&reporter, &names, ServingStatus::NotServing).await;
        let monitor = health::spawn_monitor(
            reporter.clone(),
            ctx.db.clone(),
            names.clone(),
            config.health_interval,
        );

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e: tonic_reflection::server::Error| {
            Error::FailedPrecondition(format!("reflection: {e}"))
        };
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        routes.add_service(health_service);
        routes.add_service(reflection_v1);
        routes.add_service(reflection_v1alpha);

        // Shutdown runs in two steps: the signal flips health to NOT_SERVING (load
        // balancers stop routing here) and tells tonic to stop accepting and drain; the
        // grace timer then bounds how long the drain may take.
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let (began_tx, began_rx) = tokio::sync::watch::channel(None::<Instant>);
        let grace = config.shutdown_grace;
        let shutdown_reporter = reporter.clone();
        let shutdown_names = names.clone();
        let monitor_handle = monitor.abort_handle();
        let stopping_ctx = Arc::clone(&ctx);
        let signal_task = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            stopping_ctx.stopping.send_replace(true);
            // The monitor must not flip health back to SERVING during the drain.
            monitor_handle.abort();
            health::set_all(
                &shutdown_reporter,
                &shutdown_names,
                ServingStatus::NotServing,
            )
            .await;
            let _ = began_tx.send(Some(Instant::now()));
            let _ = drain_tx.send(());
        });

        // Replies go out at once: without TCP_NODELAY a response larger than one segment
        // waits for the client's delayed ACK (~40 ms) under Nagle's algorithm.
        let incoming = tonic::transport::server::TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let server = tonic::transport::Server::builder()
            // Deadline of every call; a shorter client `grpc-timeout` wins.
            .timeout(config.request_timeout)
            // HTTP/2 limits, set deliberately. h2 answers a header list over its limit with a
            // bare HTTP 431, and one whose single value exceeds the limit with GOAWAY, which
            // fails every call on the connection; so the limit sits far above what the
            // metadata layer below accepts, and an oversized header fails only its own call,
            // with a gRPC status naming it. Above this, h2's abuse protection still applies.
            .http2_max_header_list_size(Some(HTTP2_MAX_HEADER_LIST_BYTES))
            .max_concurrent_streams(Some(HTTP2_MAX_CONCURRENT_STREAMS))
            // Outermost: span + trace context, query accounting, panic → INTERNAL, and the
            // profiling metadata, which must see the whole call including every inner layer.
            .layer(RequestLayer)
            // Oversized metadata is refused before anything reads it (authentication
            // included), inside the request span so the refusal is traced and profiled.
            .layer(MetadataLimitLayer)
            // Then authentication, inside the span so its refusals are traced and profiled
            // too; absent when no auth service is known (admin RPCs then take the token).
            .layer(tower::util::option_layer(
                self.authenticator.map(AuthLayer::new),
            ))
            // Then the rate limits, after authentication so that they are keyed by a verified
            // identity (else the client's address).
            .layer(RateLimitLayer::new(
                ctx.limiter.clone(),
                config.rate_limits.clone(),
            ))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = drain_rx.await;
            });
        // The drain may take the grace period but what the background tasks' last rounds
        // (pending writes) are guaranteed: a call running to its deadline cannot starve them.
        let reserve = (grace / 4).min(TASK_FLUSH_RESERVE);
        let drain = grace.saturating_sub(reserve);
        let mut drain_rx = began_rx.clone();
        let grace_over = async move {
            if drain_rx.wait_for(|began| began.is_some()).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain).await;
        };
        let result = tokio::select! {
            result = server => result,
            () = grace_over => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; abandoning in-flight calls");
                Ok(())
            }
        };
        monitor.abort();
        signal_task.abort();
        // The server accepts no more calls (any still running were abandoned at the end of
        // the drain): each task finishes its round and flushes what is pending, within what
        // is left of the grace period, at least the reserve.
        let began = (*began_rx.borrow()).unwrap_or_else(Instant::now);
        let left = grace.saturating_sub(began.elapsed()).max(reserve);
        if tokio::time::timeout(left, running.stop()).await.is_err() {
            tracing::warn!("grace period over; abandoning background tasks");
            running.abort();
        }
        Ok(result?)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
