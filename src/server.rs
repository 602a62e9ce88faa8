//! The one place where the router and its layers are assembled, and where
//! connections are accepted and drained.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::RoomControlService;
use crate::auth::{AuthLayer, Authenticator};
use crate::config::{Config, CorsConfig};
use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::middleware::{Branch, BrowserCors, CallLogLayer, EndWatchesLayer, LimitCallsLayer};
use crate::proto::v1::room_control_server::RoomControlServer;
use crate::proto::{FILE_DESCRIPTOR_SET, SERVICE_NAME};
use crate::tls::{self, Tls};
use crate::{crypto, health};

/// Why RoomControl could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source} (server.host / server.port)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on {addr} for the admin port: {source} (admin.host / admin.port)")]
    AdminBind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    #[error("invalid LiveKit settings: {0}")]
    LiveKit(String),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("invalid authentication settings: {0}")]
    Auth(String),
    #[error(
        "refusing to serve on {0} without authentication: configure auth.issuers or auth.api_keys (see the README's Authentication section), listen on a loopback address, or set auth.allow_unauthenticated = true to accept calls from anyone who can reach the port"
    )]
    Unauthenticated(std::net::IpAddr),
}

type HttpService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// A bound, ready-to-run RoomControl.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    admin: Option<TcpListener>,
    service: HttpService,
    livekit: Arc<LiveKit>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    tls: Option<Tls>,
    reporter: HealthReporter,
    config: Config,
    close_connections: watch::Sender<bool>,
    closing: watch::Receiver<bool>,
    admin_health: HttpService,
}

impl Application {
    /// Builds the service stack and binds the listening socket. Port 0
    /// picks a free port; [`Application::local_addr`] tells which.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        crypto::install_providers();
        let metrics = Metrics::new();
        let livekit = Arc::new(LiveKit::new(&config.livekit, metrics.clone()).map_err(StartupError::LiveKit)?);
        let tls = config.server.tls.as_ref().map(Tls::load).transpose().map_err(StartupError::Tls)?;
        let authenticator = Arc::new(Authenticator::new(&config.auth).map_err(StartupError::Auth)?);
        if !authenticator.is_enabled() {
            // Secure default: anyone who can reach the port can do anything.
            if !config.server.host.is_loopback() && !config.auth.allow_unauthenticated {
                return Err(StartupError::Unauthenticated(config.server.host));
            }
            tracing::warn!(
                host = %config.server.host,
                "authentication is off: every caller may manage rooms and mint tokens (configure auth.issuers or auth.api_keys)"
            );
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
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

        // Told to every connection (and every health Watch) when the drain
        // reaches the point of closing connections.
        let (close_connections, closing) = watch::channel(false);
        let admin_health: HttpService = BoxCloneSyncService::new(Routes::new(health_service.clone()).prepare());
        let room_control = RoomControlService::new(
            livekit.clone(),
            metrics.clone(),
            config.tokens.clone(),
            config.auth.self_service.clone(),
        );
        let mut routes = Routes::builder();
        routes
            .add_service(RoomControlServer::new(room_control))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        // Outermost first.
        let grpc = ServiceBuilder::new()
            // One span and one log line per call, grpc and grpc-web alike.
            .layer(CallLogLayer::new(metrics.clone()))
            // grpc-web (HTTP/1.1 or HTTP/2) in, gRPC to the services.
            .layer(tonic_web::GrpcWebLayer::new())
            // Health Watch streams end when connections close (drain).
            .layer(EndWatchesLayer::new(closing.clone()))
            // Who is calling: a Caller for the handlers, or UNAUTHENTICATED.
            // Inside grpc-web so its refusals are translated too.
            .layer(AuthLayer::new(authenticator.clone()))
            // Bound the RoomControl calls in flight; extra calls wait for a
            // slot. After authentication; health never waits.
            .layer(LimitCallsLayer::new(config.server.max_concurrent_calls))
            // A panic in a handler answers INTERNAL instead of killing the
            // connection (and every call multiplexed on it).
            .map_response(|response: http::Response<_>| response.map(Body::new))
            .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a handler panicked; answered INTERNAL");
                tonic::Status::internal("internal error").into_http::<Body>()
            }))
            .service(routes.routes().prepare());
        // Browsers send `Origin`: CORS answers their preflights and labels
        // cross-origin replies. Backends send none and skip it.
        let grpc = BrowserCors::new(cors_layer(&config.server.cors), grpc);
        let service: HttpService = match console_service(&config.console.dir) {
            Some(console) => BoxCloneSyncService::new(Branch::new(is_console_request, console, grpc)),
            None => BoxCloneSyncService::new(grpc),
        };

        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind { addr, source })?;
        let admin = if config.admin.enabled {
            let addr = config.admin_addr();
            Some(TcpListener::bind(addr).await.map_err(|source| StartupError::AdminBind { addr, source })?)
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
            config,
            close_connections,
            closing,
            admin_health,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin (metrics) address actually bound, when the admin port is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains: health turns
    /// NOT_SERVING at once, calls are still served for
    /// `server.drain_delay` (so load balancers stop sending first), then the
    /// listener closes, connections get GOAWAY (HTTP/2) or close after their
    /// current call (HTTP/1.1), and in-flight calls have
    /// `server.grace_period` to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) {
        let Application {
            listener,
            local_addr,
            admin,
            service,
            livekit,
            authenticator,
            metrics,
            tls,
            reporter,
            config,
            close_connections,
            closing,
            admin_health,
        } = self;
        let runtime = tokio::runtime::Handle::current();
        tracing::info!(
            address = %local_addr,
            worker_threads = runtime.metrics().num_workers(),
            runtime = ?runtime.runtime_flavor(),
            tls = tls.is_some(),
            livekit = %config.livekit.url,
            authentication = authenticator.is_enabled(),
            "RoomControl listening: gRPC and grpc-web on HTTP/2 and HTTP/1.1, grpc.health.v1, reflection"
        );
        // Identity providers' key sets, fetched before the first caller needs them.
        tokio::spawn(async move { authenticator.prefetch().await });

        let (stop_background, stopped) = watch::channel(false);
        let checks = tokio::spawn(health::watch_livekit(
            livekit,
            reporter.clone(),
            metrics.clone(),
            config.livekit.health_check_interval,
            stopped.clone(),
        ));
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch_files(stopped.clone()));
        }
        // The admin port serves until the process ends (probes and scrapes
        // during the drain).
        let admin = admin.map(|listener| tokio::spawn(serve_admin(listener, metrics.clone(), admin_health)));

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let mut connections = JoinSet::new();
        let drain_delay = config.server.drain_delay;
        let mut checks = checks;
        let draining = async {
            shutdown.await;
            // Stop the LiveKit checks first, so none can turn readiness back
            // to SERVING during the drain.
            let _ = stop_background.send(true);
            let _ = (&mut checks).await;
            health::set_shutting_down(&reporter).await;
            metrics.set_ready(false);
            if !drain_delay.is_zero() {
                tracing::info!(
                    drain_delay = %humantime::format_duration(drain_delay),
                    "health NOT_SERVING; still serving while load balancers catch up"
                );
                tokio::time::sleep(drain_delay).await;
            }
        };
        let mut draining = std::pin::pin!(draining);

        loop {
            tokio::select! {
                biased;
                () = &mut draining => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            accept_error(error).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let connection = Connection {
                        service: service.clone(),
                        builder: builder.clone(),
                        closing: closing.clone(),
                        max_age: config.server.max_connection_age,
                        peer,
                    };
                    let acceptor = tls.as_ref().map(Tls::acceptor);
                    connections.spawn(async move {
                        match acceptor {
                            None => connection.serve(stream).await,
                            Some(acceptor) => match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => connection.serve(stream).await,
                                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            },
                        }
                    });
                }
            }
        }

        drop(listener);
        let _ = close_connections.send(true);
        let grace = config.server.grace_period;
        tracing::info!(
            connections = connections.len(),
            grace_period = %humantime::format_duration(grace),
            "stopped accepting; draining in-flight calls"
        );
        let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
        match drained {
            Ok(()) => tracing::info!("all calls finished; stopped"),
            Err(_) => tracing::warn!(
                connections = connections.len(),
                "grace period elapsed with calls still in flight; closing their connections"
            ),
        }
        connections.shutdown().await;
        if let Some(admin) = admin {
            admin.abort();
        }
    }
}

/// One accepted connection and what it needs.
struct Connection {
    service: HttpService,
    builder: auto::Builder<TokioExecutor>,
    closing: watch::Receiver<bool>,
    max_age: Option<Duration>,
    peer: SocketAddr,
}

impl Connection {
    /// Serves HTTP/2 or HTTP/1.1 until the client leaves, or ends it
    /// gracefully on shutdown or at its maximum age.
    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { service, builder, mut closing, max_age, peer } = self;
        let service = service.map_request(|request: http::Request<hyper::body::Incoming>| request.map(Body::new));
        let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let aged = async {
            match max_age {
                // Up to 10% later, so connections opened together do not all
                // close at once.
                Some(age) => tokio::time::sleep(age + age.mul_f64(rand::random::<f64>() * 0.1)).await,
                None => std::future::pending().await,
            }
        };
        let mut aged = std::pin::pin!(aged);
        let mut ending = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = crate::shutdown::stopped(&mut closing), if !ending => {
                    connection.as_mut().graceful_shutdown();
                    ending = true;
                }
                () = &mut aged, if !ending => {
                    tracing::debug!(%peer, "connection reached server.max_connection_age; asking the client to reconnect");
                    connection.as_mut().graceful_shutdown();
                    ending = true;
                }
            }
        }
    }
}

/// The admin port, always plaintext: `GET /metrics` (Prometheus text
/// format) and `grpc.health.v1.Health`, so Kubernetes' gRPC probes (which
/// cannot speak TLS) still work when the main port serves TLS.
async fn serve_admin(listener: TcpListener, metrics: Arc<Metrics>, health: HttpService) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_error(error).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        let service = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (metrics, health) = (metrics.clone(), health.clone());
            async move {
                let path = request.uri().path();
                if path.starts_with("/grpc.health.v1.Health/") {
                    return health.oneshot(request.map(Body::new)).await;
                }
                let response = if path == "/metrics" && request.method() == Method::GET {
                    http::Response::builder()
                        .header(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Body::new(http_body_util::Full::new(bytes::Bytes::from(metrics.encode()))))
                } else {
                    http::Response::builder().status(http::StatusCode::NOT_FOUND).body(Body::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"not found: try GET /metrics\n")),
                    ))
                };
                Ok(response.expect("a static response is valid"))
            }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).await;
        });
    }
}

/// The built console, or `None` (logged) when it was not built.
fn console_service(dir: &std::path::Path) -> Option<HttpService> {
    use tower_http::services::{ServeDir, ServeFile};
    if !dir.join("index.html").is_file() {
        tracing::info!(dir = %dir.display(), "no browser console at console.dir (build it: see the README, Browser console)");
        return None;
    }
    tracing::info!(dir = %dir.display(), "browser console at /console/");
    // Unknown paths under /console/ get index.html (client-side routes).
    let files = ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")));
    let files = tower::ServiceBuilder::new()
        .map_request(|request: http::Request<Body>| {
            // Strip the /console prefix: /console/app.js is dir/app.js.
            let (mut parts, body) = request.into_parts();
            let path = parts.uri.path().strip_prefix("/console").unwrap_or("/");
            let path = if path.is_empty() { "/" } else { path };
            let path_and_query = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            parts.uri = path_and_query.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
            http::Request::from_parts(parts, body)
        })
        .map_response(|response: http::Response<_>| response.map(Body::new))
        .service(files);
    // `/console` itself redirects to `/console/`, so relative asset paths
    // resolve under it.
    let redirect = tower::service_fn(|_request: http::Request<Body>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(http::StatusCode::PERMANENT_REDIRECT)
                .header(http::header::LOCATION, "/console/")
                .body(Body::empty())
                .expect("a static response is valid"),
        )
    });
    let console = Branch::new(|request: &http::Request<Body>| request.uri().path() == "/console", redirect, files);
    Some(BoxCloneSyncService::new(console))
}

/// Whether a request is for the console: a GET or HEAD of `/console` or
/// below. Everything else goes to gRPC.
fn is_console_request(request: &http::Request<Body>) -> bool {
    let path = request.uri().path();
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && (path == "/console" || path.starts_with("/console/"))
}

/// Accept errors that concern one connection are skipped; running out of
/// file descriptors pauses accepting briefly instead of spinning.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(error.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The CORS policy for grpc-web callers.
fn cors_layer(config: &CorsConfig) -> CorsLayer {
    let allow_origin = if config.allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.allowed_origins.iter().filter_map(|origin| origin.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            http::header::CONTENT_TYPE,
            http::header::AUTHORIZATION,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("connect-protocol-version"),
            HeaderName::from_static("connect-timeout-ms"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600))
}
