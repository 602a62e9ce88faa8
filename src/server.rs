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
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::RoomControlService;
use crate::auth::{AuthLayer, Authenticator};
use crate::config::{Config, CorsConfig};
use crate::livekit::LiveKit;
use crate::middleware::CallLogLayer;
use crate::proto::v1::room_control_server::RoomControlServer;
use crate::proto::{FILE_DESCRIPTOR_SET, SERVICE_NAME};
use crate::{crypto, health};

/// Why RoomControl could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source} (server.host / server.port)")]
    Bind { addr: SocketAddr, source: std::io::Error },
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
    service: HttpService,
    livekit: Arc<LiveKit>,
    authenticator: Arc<Authenticator>,
    reporter: HealthReporter,
    config: Config,
}

impl Application {
    /// Builds the service stack and binds the listening socket. Port 0
    /// picks a free port; [`Application::local_addr`] tells which.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        crypto::install_providers();
        let livekit = Arc::new(LiveKit::new(&config.livekit).map_err(StartupError::LiveKit)?);
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

        let room_control =
            RoomControlService::new(livekit.clone(), config.tokens.clone(), config.auth.self_service.clone());
        let mut routes = Routes::builder();
        routes
            .add_service(RoomControlServer::new(room_control))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        // Outermost first.
        let service = ServiceBuilder::new()
            // Browsers: answer CORS preflights, label cross-origin replies.
            .layer(cors_layer(&config.server.cors))
            // One span and one log line per call, grpc and grpc-web alike.
            .layer(CallLogLayer)
            // grpc-web (HTTP/1.1 or HTTP/2) in, gRPC to the services.
            .layer(tonic_web::GrpcWebLayer::new())
            // Who is calling: a Caller for the handlers, or UNAUTHENTICATED.
            // Inside grpc-web so its refusals are translated too.
            .layer(AuthLayer::new(authenticator.clone()))
            // Bound the work in flight; extra calls wait for a slot.
            .layer(GlobalConcurrencyLimitLayer::new(config.server.max_concurrent_calls))
            .service(routes.routes().prepare());
        let service: HttpService = BoxCloneSyncService::new(service);

        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Application { listener, local_addr, service, livekit, authenticator, reporter, config })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then drains: health turns
    /// NOT_SERVING, the listener closes, HTTP/2 connections get GOAWAY and
    /// in-flight calls have `server.grace_period` to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) {
        let Application { listener, local_addr, service, livekit, authenticator, reporter, config } = self;
        // Identity providers' key sets, fetched before the first caller needs them.
        tokio::spawn(async move { authenticator.prefetch().await });
        tracing::info!(
            address = %local_addr,
            livekit = %config.livekit.url,
            "RoomControl listening: gRPC and grpc-web on HTTP/2 and HTTP/1.1, grpc.health.v1, reflection"
        );

        let (stop_checks, stop_rx) = watch::channel(false);
        let checks = tokio::spawn(health::watch_livekit(
            livekit,
            reporter.clone(),
            config.livekit.health_check_interval,
            stop_rx,
        ));

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
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
                    let service = service.clone().map_request(|request: http::Request<hyper::body::Incoming>| request.map(Body::new));
                    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
            }
        }

        health::set_shutting_down(&reporter).await;
        let _ = stop_checks.send(true);
        drop(listener);
        let grace = config.server.grace_period;
        tracing::info!(
            connections = connections.len(),
            grace_period = %humantime::format_duration(grace),
            "stopped accepting; draining in-flight calls"
        );
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all calls finished; stopped"),
            Err(_) => tracing::warn!(
                connections = connections.len(),
                "grace period elapsed with calls still in flight; closing their connections"
            ),
        }
        connections.shutdown().await;
        let _ = checks.await;
    }
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
