//! Tower middleware of RoomControl's own.
//!
//! [`CallLogLayer`]: one tracing span per call, carrying the RPC, the
//! protocol (grpc or grpc-web), the room (recorded by the handler), the
//! gRPC status code and the latency, closed by one log line.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, field};

/// Adds a span and a closing log line to every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLogLayer;

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLog { inner }
    }
}

/// The service [`CallLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct CallLog<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CallLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let rpc = request.uri().path().to_owned();
        let grpc_web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc-web"));
        let protocol = if grpc_web { "grpc-web" } else { "grpc" };
        // Probes and reflection are frequent and dull: debug level.
        let routine = rpc.starts_with("/grpc.");
        let span = if routine {
            tracing::debug_span!("call", rpc = %rpc, protocol, caller = field::Empty, room = field::Empty)
        } else {
            tracing::info_span!("call", rpc = %rpc, protocol, caller = field::Empty, room = field::Empty)
        };
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(response) => log_response(response, latency_ms, routine),
                    Err(_) => tracing::warn!(latency_ms, "call failed in transport"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The gRPC status of a unary response: in the headers of a trailers-only
/// (error) response, otherwise OK (sent later in the trailers).
fn log_response<B>(response: &Response<B>, latency_ms: f64, routine: bool) {
    let headers = response.headers();
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(if response.status().is_success() { 0 } else { 2 });
    let code = tonic::Code::from_i32(code);
    let grpc_message = headers
        .get("grpc-message")
        .map(|value| percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let http_status = response.status().as_u16();
    match code {
        tonic::Code::Ok if routine => tracing::debug!(code = ?code, latency_ms, "call finished"),
        tonic::Code::Ok => tracing::info!(code = ?code, latency_ms, "call finished"),
        tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Unavailable
        | tonic::Code::Internal
        | tonic::Code::DataLoss => {
            tracing::warn!(code = ?code, http_status, grpc_message, latency_ms, "call failed")
        }
        _ => tracing::info!(code = ?code, grpc_message, latency_ms, "call refused"),
    }
}
