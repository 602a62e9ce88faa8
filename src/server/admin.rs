//! The admin port: metrics and health, plaintext, apart from the main port.

use std::sync::Arc;

use http::Method;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::HttpService;
use super::accept::{self, Deadlines};
use crate::metrics::Metrics;

/// Connections the admin port holds at once. Its clients are a few probes
/// and scrapers; a cap of its own keeps a flood of them from taking the
/// process's file descriptors, and the main port's cap keeps this many
/// back for it (`accept::effective_max_connections`), so health and
/// metrics still answer while the main port is full.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// The admin port, always plaintext: `GET /metrics` (Prometheus text
/// format) and `grpc.health.v1.Health`, so Kubernetes' gRPC probes (which
/// cannot speak TLS) still work when the main port serves TLS. Its
/// connections have the main port's handshake and idle deadlines.
pub(super) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: HttpService, deadlines: Deadlines) {
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let (metrics, health) = (metrics.clone(), health.clone());
        async move {
            let path = request.uri().path();
            if path.starts_with("/grpc.health.v1.Health/") {
                return health.oneshot(request).await;
            }
            let response = if path == "/metrics" && request.method() == Method::GET {
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
                    .body(Body::new(http_body_util::Full::new(bytes::Bytes::from(metrics.encode()))))
            } else {
                http::Response::builder().status(http::StatusCode::NOT_FOUND).body(Body::new(
                    http_body_util::Full::new(bytes::Bytes::from_static(b"not found: try GET /metrics\n")),
                ))
            };
            Ok(response.expect("a static response is valid"))
        }
    });
    // Never told to close: the admin port serves until the process ends
    // (probes and scrapes during the drain).
    let (_never, closing) = watch::channel(false);
    let serving = accept::Serving {
        service: BoxCloneSyncService::new(service),
        tls: None,
        deadlines,
        max_age: None,
        closing,
        max_connections: MAX_CONNECTIONS,
        limit_name: "the admin port's fixed limit",
        port: "admin",
        readiness: None,
        metrics: None,
    };
    accept::accept_until(listener, serving, std::future::pending()).await;
}
