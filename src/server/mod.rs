//! Where RoomControl is assembled: the services, the layer stack every call
//! passes through (top to bottom below), the listening sockets, and the
//! lifecycle from the first accepted connection to the end of the drain.
//!
//! - [`accept`]: the main port's accept loop, connections, the drain;
//! - [`admin`]: the admin port (metrics and health);
//! - [`console`]: the browser console's files.

mod accept;
mod admin;
mod console;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncService;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::RoomControlService;
use crate::api::watch_route::WatchEventsRoute;
use crate::auth::{Authenticate, Authenticator};
use crate::bans::Bans;
use crate::config::Config;
use crate::crypto;
use crate::events::intake::{self, Intake};
use crate::events::watch::WatchContext;
use crate::events::{self as timeline_events, Timeline};
use crate::health::{self, Readiness};
use crate::limits::RateLimiter;
use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::middleware::{
    Branch, BrowserCors, Budgets, CallLog, EndWatches, LimitCalls, LimitRates, ReadRequest, RequestLimits, browser_cors,
};
use crate::proto::v1::room_control_server::RoomControlServer;
use crate::proto::{FILE_DESCRIPTOR_SET, SERVICE_NAME};
use crate::rest::{self, Rest};
use crate::store::Store;
use crate::tls::Tls;
use crate::tokens::TokenSigner;

/// Why RoomControl could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "cannot listen on {addr}: {source}; set server.port (PORT) to a free port, as another process (perhaps another RoomControl) holds it (server.host / server.port)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "cannot listen on {addr} for the admin port: {source}; each copy on one host needs its own: set admin.port (ROOMCONTROL_ADMIN__PORT) to a free port, or admin.enabled = false (admin.host / admin.port)"
    )]
    AdminBind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    #[error("invalid LiveKit settings: {0}")]
    LiveKit(String),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("invalid authentication settings: {0}")]
    Auth(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("invalid rate limit settings: {0}")]
    Limits(String),
}

/// Any HTTP service of the stack, type-erased.
type HttpService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// A bound, ready-to-run RoomControl.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The admin port's listener and the health service it serves.
    admin: Option<(TcpListener, HttpService)>,
    /// What every connection of the main port serves.
    service: HttpService,
    livekit: Arc<LiveKit>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    tls: Option<Tls>,
    reporter: HealthReporter,
    /// What readiness says, from every condition that can block it.
    readiness: Readiness,
    config: Config,
    /// Turns true when the drain closes connections (and health Watches).
    close_connections: watch::Sender<bool>,
    /// The timeline: webhooks and actions in, watches out.
    timeline: Timeline,
    /// The bans in force, for reconciliation to enforce.
    bans: Bans,
    /// Every caller's rate limits.
    limiter: Arc<RateLimiter>,
}

impl Application {
    /// Builds the service stack and binds the listening sockets. Port 0
    /// picks a free port; [`Application::local_addr`] tells which.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        crypto::install_providers();
        let metrics = Metrics::new();
        let livekit = Arc::new(LiveKit::new(&config.livekit, metrics.clone()).map_err(StartupError::LiveKit)?);
        let signer = TokenSigner::new(&config.livekit).map_err(StartupError::LiveKit)?;
        let tls = config.server.tls.as_ref().map(Tls::load).transpose().map_err(StartupError::Tls)?;
        config.check_unauthenticated_reach().map_err(StartupError::Unauthenticated)?;
        let authenticator = Arc::new(Authenticator::new(&config.auth).map_err(StartupError::Auth)?);
        if !authenticator.is_enabled() {
            tracing::warn!(
                host = %config.server.host,
                "authentication is off: every caller may manage rooms and mint tokens (configure auth.issuers or auth.api_keys)"
            );
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness::new();
        // The process answers; readiness waits for LiveKit's first answer.
        reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;

        // Both reflection versions: grpcurl and older tools ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc.BadRequest and friends, so grpcurl can show error details.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(|e| StartupError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| StartupError::Reflection(e.to_string()))?;

        let store = Store::open(&config.store).await?;
        tracing::info!(store = %crate::store::redacted_url(&config.store.url), schema = crate::store::SCHEMA_VERSION, "store open");
        let timeline = Timeline::start(store.clone(), &config.events, metrics.clone()).await?;
        let bans = Bans::start(store, config.events.poll_interval).await?;
        // Told to every connection (and every health Watch) when the drain
        // reaches the point of closing connections.
        let close_connections = watch::Sender::new(false);

        let admin_health: HttpService = BoxCloneSyncService::new(Routes::new(health_service.clone()).prepare());
        let room_control = RoomControlService::new(
            signer,
            config.tokens.clone(),
            config.auth.self_service.clone(),
            WatchContext {
                timeline: timeline.clone(),
                livekit: livekit.clone(),
                metrics: metrics.clone(),
                closing: close_connections.subscribe(),
            },
            bans.clone(),
        );
        // WatchEvents has a route of its own, which sends each event encoded
        // once for every watcher (api::watch_route).
        let watch_route = WatchEventsRoute::new(room_control.clone(), config.server.max_message_bytes);
        let mut routes = Routes::builder();
        routes
            // The size limit is checked before tonic sees the message
            // (ReadRequest); tonic's own is set to match.
            .add_service(
                RoomControlServer::new(room_control).max_decoding_message_size(config.server.max_message_bytes),
            )
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let routes =
            Routes::from(routes.routes().into_axum_router().route_service(crate::api::watch_route::PATH, watch_route));

        let limiter =
            Arc::new(RateLimiter::new(&config.limits, &config.redis, &metrics).map_err(StartupError::Limits)?);
        tracing::info!(limits = %limiter.describe(), "rate limits");
        let budgets = Budgets::new(&config.server, readiness.clone(), metrics.clone());
        let request_limits = RequestLimits {
            timeout: config.server.request_body_timeout,
            max_message_bytes: config.server.max_message_bytes,
        };
        // The layers every call passes through, outermost first.
        let grpc = ServiceBuilder::new()
            // One span and one log line per call, grpc and grpc-web alike.
            .layer(layer_fn(|inner| CallLog::new(inner, metrics.clone())))
            // Who is calling: a Caller for the handlers, or UNAUTHENTICATED
            // (answered in grpc-web to grpc-web callers). Before any request
            // body is read, so a caller without a credential costs nothing.
            .layer(layer_fn(|inner| Authenticate::new(inner, authenticator.clone())))
            // Each caller's rate limits (limits.*), as soon as the caller is
            // known: a refused call has no body read, takes no slot and never
            // reaches tonic, so a flood costs little.
            .layer(layer_fn(|inner| LimitRates::new(inner, limiter.clone())))
            // Read each RoomControl call's request in full, within a deadline
            // and a size limit, before it may take a slot: a stalled client
            // holds nothing. Before grpc-web's translation, which would turn
            // a broken body into INTERNAL with its own words.
            .layer(layer_fn(|inner| ReadRequest::new(inner, request_limits)))
            // grpc-web (HTTP/1.1 or HTTP/2) in, gRPC to the services.
            .layer(tonic_web::GrpcWebLayer::new())
            // Health Watch streams end when connections close (drain).
            .layer(layer_fn(|inner| EndWatches::new(inner, close_connections.subscribe())))
            // Bound the RoomControl calls in flight, LiveKit-bound and local
            // calls in separate budgets; extra calls wait briefly in a bounded
            // queue, then are refused. Health and reflection never wait.
            .layer(layer_fn(|inner| LimitCalls::new(inner, budgets.clone())))
            // A panic in a handler answers INTERNAL instead of killing the
            // connection (and every call multiplexed on it).
            .map_response(|response: http::Response<_>| response.map(Body::new))
            .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a handler panicked; answered INTERNAL");
                tonic::Status::internal("internal error").into_http::<Body>()
            }))
            .service(routes.prepare());
        // The NestJS app's REST routes (/livekit/...): each request becomes
        // an in-process call of its RPC through the stack above, so it is
        // logged, authenticated, limited and handled exactly as the RPC.
        let rest = config.rest.enabled.then(|| Rest::new(&config, authenticator.is_enabled(), grpc.clone()));
        // Browsers send `Origin`: CORS answers their preflights and labels
        // cross-origin replies. Backends send none and skip it. The REST
        // routes get the same allowed origins, with REST's methods.
        let grpc = BrowserCors::new(browser_cors::policy(&config.server.cors), grpc);
        let api: HttpService = match rest {
            Some(rest) => BoxCloneSyncService::new(Branch::new(
                rest::is_rest_request,
                BrowserCors::new(browser_cors::rest_policy(&config.server.cors), rest),
                grpc,
            )),
            None => BoxCloneSyncService::new(grpc),
        };
        let service: HttpService = match console::service(&config.console.dir) {
            Some(console) => BoxCloneSyncService::new(Branch::new(console::is_console_request, console, api)),
            None => api,
        };
        // LiveKit's webhooks: verified by their own signature, not a
        // caller's credential, so they leave before authentication.
        let intake = Intake::new(&config, timeline.clone(), metrics.clone(), bans.clone(), livekit.clone());
        let webhook_path = config.events.webhook_path.clone();
        let intake: HttpService =
            BoxCloneSyncService::new(tower::service_fn(move |request| intake.clone().handle(request)));
        let service: HttpService = BoxCloneSyncService::new(Branch::new(
            move |request: &http::Request<Body>| intake::is_webhook(&webhook_path, request),
            intake,
            service,
        ));

        let addr = config.listen_addr();
        let listener = listen(addr).map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind { addr, source })?;
        let admin = if config.admin.enabled {
            let addr = config.admin_addr();
            let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::AdminBind { addr, source })?;
            Some((listener, admin_health))
        } else {
            None
        };
        Ok(Application {
            listener,
            local_addr,
            admin,
            service,
            livekit,
            authenticator,
            metrics,
            tls,
            reporter,
            readiness,
            config,
            close_connections,
            timeline,
            bans,
            limiter,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin (metrics) address actually bound, when the admin port is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains: health turns
    /// NOT_SERVING at once, calls are still served for
    /// `server.drain_delay` (so load balancers stop sending first), then the
    /// listener closes, connections get GOAWAY (HTTP/2) or close after their
    /// current call (HTTP/1.1), and in-flight calls have
    /// `server.grace_period` to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) {
        let runtime = tokio::runtime::Handle::current();
        tracing::info!(
            address = %self.local_addr,
            worker_threads = runtime.metrics().num_workers(),
            runtime = ?runtime.runtime_flavor(),
            tls = self.tls.is_some(),
            livekit = %self.config.livekit.url,
            authentication = self.authenticator.is_enabled(),
            "RoomControl listening: gRPC and grpc-web on HTTP/2 and HTTP/1.1, grpc.health.v1, reflection"
        );
        // Identity providers' key sets, fetched before the first caller needs them.
        let authenticator = self.authenticator;
        tokio::spawn(async move { authenticator.prefetch().await });
        // Redis (when the limits are shared), asked once so a Redis that is
        // down is reported before a call needs it.
        let limiter = self.limiter.clone();
        tokio::spawn(async move { limiter.warm_up().await });

        let (stop_background, stopped) = watch::channel(false);
        let interval = self.config.events.reconcile_interval;
        let reconcile = (!interval.is_zero()).then(|| {
            tokio::spawn(timeline_events::reconcile::run(
                self.timeline.clone(),
                self.livekit.clone(),
                self.bans.clone(),
                interval,
            ))
        });
        // Room and participant sessions, projected from the timeline.
        let history = if self.config.history.enabled {
            crate::history::start(&self.timeline, &self.config.history)
        } else {
            Vec::new()
        };
        let mut checks = tokio::spawn(health::watch_livekit(
            self.livekit,
            self.readiness.clone(),
            self.config.livekit.health_check_interval,
            stopped.clone(),
        ));
        let mut publisher =
            tokio::spawn(self.readiness.clone().publish(self.reporter.clone(), self.metrics.clone(), stopped.clone()));
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.clone().watch_files(stopped.clone()));
        }
        // The admin port serves until the process ends (probes and scrapes
        // during the drain).
        let deadlines = accept::Deadlines::of(&self.config.server);
        let admin = self
            .admin
            .map(|(listener, health)| tokio::spawn(admin::serve(listener, self.metrics.clone(), health, deadlines)));

        let (reporter, metrics, drain_delay) = (self.reporter, self.metrics, self.config.server.drain_delay);
        let draining = async {
            shutdown.await;
            // Stop the LiveKit checks first, so none can turn readiness back
            // to SERVING during the drain.
            let _ = stop_background.send(true);
            let _ = (&mut checks).await;
            let _ = (&mut publisher).await;
            health::set_shutting_down(&reporter).await;
            metrics.set_ready(false);
            if !drain_delay.is_zero() {
                tracing::info!(
                    drain_delay = %crate::duration::display(drain_delay),
                    "health NOT_SERVING; still serving while load balancers catch up"
                );
                tokio::time::sleep(drain_delay).await;
            }
        };
        let serving = accept::Serving {
            service: self.service,
            tls: self.tls,
            deadlines,
            max_age: self.config.server.max_connection_age,
            closing: self.close_connections.subscribe(),
            max_connections: accept::effective_max_connections(self.config.server.max_connections),
            limit_name: "server.max_connections",
            port: "main",
            readiness: Some(self.readiness.clone()),
            metrics: Some(metrics.clone()),
        };
        let connections = accept::accept_until(self.listener, serving, draining).await;
        let _ = self.close_connections.send(true);
        accept::drain(connections, self.config.server.grace_period).await;
        if let Some(reconcile) = reconcile {
            reconcile.abort();
        }
        for task in history {
            task.abort();
        }
        self.timeline.shutdown().await;
        if let Some(admin) = admin {
            admin.abort();
        }
    }
}

/// How many connections the kernel may hold for the main port beyond the
/// ones accepted (the listen backlog). At `server.max_connections` the
/// accept loop stops accepting and new connections wait here; std's 128
/// would drop connection attempts after a small burst.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the main port with [`LISTEN_BACKLOG`] (address reuse on, as std
/// does on Unix, so a restart can bind while old connections linger).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
