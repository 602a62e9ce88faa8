//! The admin port: metrics and health, plaintext, apart from the main port.

use std::sync::Arc;

use http::Method;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::body::Body;
use tower::ServiceExt;

use super::HttpService;
use super::accept::accept_error;
use crate::metrics::Metrics;

/// The admin port, always plaintext: `GET /metrics` (Prometheus text
/// format) and `grpc.health.v1.Health`, so Kubernetes' gRPC probes (which
/// cannot speak TLS) still work when the main port serves TLS.
pub(super) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: HttpService) {
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
