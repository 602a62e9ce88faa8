//! One tracing span per call, carrying the RPC, the protocol (grpc,
//! grpc-web or rest), the caller and the room (recorded by the handler), closed by
//! one log line with the gRPC status code and the latency: at `info` or
//! `warn` for a failed or refused call, at `debug` for a success.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::Service;
use tracing::{Instrument, field};

use crate::metrics::Metrics;
use crate::rpc::{self, Route};

/// Adds a span, a closing log line and the call metrics to every call.
/// Stacked with `layer_fn(|inner| CallLog::new(inner, metrics))`.
#[derive(Debug, Clone)]
pub struct CallLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> CallLog<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
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
        let path = request.uri().path();
        let route = Route::of(path);
        let protocol = Protocol::of(&request);
        // Probes and reflection are frequent and dull: debug level.
        let routine = rpc::is_public(path);
        // The path as sent (not its label): a log reader wants to see what
        // an unknown path was. Formatted only if the span is enabled.
        let span = if routine {
            tracing::debug_span!("call", rpc = %path, protocol = protocol.label(), caller = field::Empty, room = field::Empty)
        } else {
            tracing::info_span!("call", rpc = %path, protocol = protocol.label(), caller = field::Empty, room = field::Empty)
        };
        let started = Instant::now();
        let in_flight = self.metrics.call_started();
        let metrics = self.metrics.clone();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                // Counts the call as cancelled if it is dropped unanswered.
                let mut unanswered = Unanswered { metrics: &metrics, route, protocol, started, answered: false };
                let result = future.await;
                unanswered.answered = true;
                let elapsed = started.elapsed();
                match &result {
                    Ok(response) => {
                        let code = log_response(response, elapsed);
                        metrics.call_finished(route, protocol, code, elapsed);
                    }
                    Err(_) => tracing::warn!(latency_ms = elapsed.as_secs_f64() * 1000.0, "call failed in transport"),
                }
                drop(in_flight);
                result
            }
            .instrument(span),
        )
    }
}

/// How a call reached RoomControl, for its span and its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    /// A REST route (`crate::rest`), sent through the stack as gRPC with
    /// this in its extensions.
    Rest,
}

impl Protocol {
    fn of<B>(request: &Request<B>) -> Protocol {
        if let Some(protocol) = request.extensions().get::<Protocol>() {
            return *protocol;
        }
        let grpc_web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"));
        if grpc_web { Protocol::GrpcWeb } else { Protocol::Grpc }
    }

    /// The metrics label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Rest => "rest",
        }
    }
}

/// A call whose answer is not ready yet. When the client cancels (an
/// HTTP/2 RST_STREAM, a closed connection) the server drops the call's
/// future: the call is then counted as CANCELLED and logged at debug, as
/// the client's choice it is, never as a failure of RoomControl's.
struct Unanswered<'a> {
    metrics: &'a Metrics,
    route: Route,
    protocol: Protocol,
    started: Instant,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        tracing::debug!(latency_ms = elapsed.as_secs_f64() * 1000.0, "call cancelled by the client");
        self.metrics.call_finished(self.route, self.protocol, tonic::Code::Cancelled, elapsed);
    }
}

/// The code of an answer that carries no gRPC status: OK for a success,
/// INVALID_ARGUMENT for a request that was not gRPC at all (HTTP 415: the
/// client's mistake), UNKNOWN otherwise.
fn code_of_http_status(status: http::StatusCode) -> i32 {
    match status {
        status if status.is_success() => tonic::Code::Ok as i32,
        http::StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument as i32,
        _ => tonic::Code::Unknown as i32,
    }
}

/// The gRPC status of a unary response: in the headers of a trailers-only
/// (error) response, otherwise OK (sent later in the trailers).
fn log_response<B>(response: &Response<B>, elapsed: Duration) -> tonic::Code {
    let headers = response.headers();
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or_else(|| code_of_http_status(response.status()));
    let code = tonic::Code::from_i32(code);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Decoded only for the lines that carry it.
    let grpc_message = || {
        headers
            .get("grpc-message")
            .map(|value| percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned())
            .unwrap_or_default()
    };
    // Refusals counted elsewhere (rate limits): a flood must not flood the log.
    if response.extensions().get::<super::QuietRefusal>().is_some() {
        tracing::debug!(code = ?code, grpc_message = grpc_message(), latency_ms, "call refused");
        return code;
    }
    match code {
        // Successes are counted and timed by the metrics; a line each would
        // double the CPU of a CreateToken (JSON formatting and a write).
        // `roomcontrol::middleware=debug` brings them back.
        tonic::Code::Ok => tracing::debug!(code = ?code, latency_ms, "call finished"),
        // The client left: its choice, not a failure.
        tonic::Code::Cancelled => {
            tracing::debug!(code = ?code, grpc_message = grpc_message(), latency_ms, "call cancelled")
        }
        tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Unavailable
        | tonic::Code::Internal
        | tonic::Code::DataLoss => {
            let http_status = response.status().as_u16();
            tracing::warn!(code = ?code, http_status, grpc_message = grpc_message(), latency_ms, "call failed")
        }
        _ => tracing::info!(code = ?code, grpc_message = grpc_message(), latency_ms, "call refused"),
    }
    code
}
