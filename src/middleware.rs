//! Tower middleware of RoomControl's own.
//!
//! [`CallLogLayer`]: one tracing span per call, carrying the RPC, the
//! protocol (grpc or grpc-web), the caller and the room (recorded by the
//! handler), closed by one log line with the gRPC status code and the
//! latency: at `info` or `warn` for a failed or refused call, at `debug`
//! for a success.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, field};

use crate::metrics::{Metrics, Rpc};

/// Adds a span, a closing log line and the call metrics to every call.
#[derive(Debug, Clone)]
pub struct CallLogLayer {
    metrics: Arc<Metrics>,
}

impl CallLogLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLog { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`CallLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct CallLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
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
        let rpc = Rpc::of(path);
        let grpc_web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"));
        let protocol = if grpc_web { "grpc-web" } else { "grpc" };
        // Probes and reflection are frequent and dull: debug level.
        let routine = path.starts_with("/grpc.");
        // The path as sent (not its label): a log reader wants to see what
        // an unknown path was. Formatted only if the span is enabled.
        let span = if routine {
            tracing::debug_span!("call", rpc = %path, protocol, caller = field::Empty, room = field::Empty)
        } else {
            tracing::info_span!("call", rpc = %path, protocol, caller = field::Empty, room = field::Empty)
        };
        let started = Instant::now();
        let in_flight = self.metrics.call_started();
        let metrics = self.metrics.clone();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                let elapsed = started.elapsed();
                match &result {
                    Ok(response) => {
                        let code = log_response(response, elapsed);
                        metrics.call_finished(rpc, grpc_web, code, elapsed);
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

/// The gRPC status of a unary response: in the headers of a trailers-only
/// (error) response, otherwise OK (sent later in the trailers).
fn log_response<B>(response: &Response<B>, elapsed: Duration) -> tonic::Code {
    let headers = response.headers();
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(if response.status().is_success() { 0 } else { 2 });
    let code = tonic::Code::from_i32(code);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Decoded only for the lines that carry it.
    let grpc_message = || {
        headers
            .get("grpc-message")
            .map(|value| percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned())
            .unwrap_or_default()
    };
    match code {
        // Successes are counted and timed by the metrics; a line each would
        // double the CPU of a CreateToken (JSON formatting and a write).
        // `roomcontrol::middleware=debug` brings them back.
        tonic::Code::Ok => tracing::debug!(code = ?code, latency_ms, "call finished"),
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

/// Ends health `Watch` streams once the server closes its connections:
/// a watcher (a client-side health checker, a load balancer) has already
/// heard NOT_SERVING by then, and an open stream would otherwise hold its
/// connection, and the drain, for the whole grace period.
#[derive(Debug, Clone)]
pub struct EndWatchesLayer {
    closing: tokio::sync::watch::Receiver<bool>,
}

impl EndWatchesLayer {
    pub fn new(closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { closing }
    }
}

impl<S> Layer<S> for EndWatchesLayer {
    type Service = EndWatches<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EndWatches { inner, closing: self.closing.clone() }
    }
}

/// The service [`EndWatchesLayer`] makes.
#[derive(Debug, Clone)]
pub struct EndWatches<S> {
    inner: S,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for EndWatches<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    /// Every call but a Watch passes straight through, unboxed.
    type Future = Either<S::Future, Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let watch = request.uri().path() == "/grpc.health.v1.Health/Watch";
        let future = self.inner.call(request);
        if !watch {
            return Either::Left(future);
        }
        let mut closing = self.closing.clone();
        Either::Right(Box::pin(async move {
            let response = future.await?;
            let closed = Box::pin(async move { crate::shutdown::stopped(&mut closing).await });
            Ok(response.map(|body| tonic::body::Body::new(EndOnClose { inner: body, closed, ended: false })))
        }))
    }
}

/// A response body that ends with UNAVAILABLE trailers when `closed` resolves.
struct EndOnClose {
    inner: tonic::body::Body,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl http_body::Body for EndOnClose {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Updates already sent (NOT_SERVING) go out before the end.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.closed.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("server%20shutting%20down"));
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        Poll::Pending
    }
}

/// Bounds the RoomControl calls served at once (`server.max_concurrent_calls`);
/// more wait for a slot. Health, reflection and the console never wait, so
/// probes keep answering on a saturated replica; placed after
/// authentication, so unauthenticated callers cannot take slots.
#[derive(Debug, Clone)]
pub struct LimitCallsLayer {
    slots: Arc<tokio::sync::Semaphore>,
}

impl LimitCallsLayer {
    pub fn new(max_concurrent_calls: usize) -> Self {
        Self { slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_calls)) }
    }
}

impl<S> Layer<S> for LimitCallsLayer {
    type Service = LimitCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitCalls { inner, slots: self.slots.clone() }
    }
}

/// The service [`LimitCallsLayer`] makes.
#[derive(Debug, Clone)]
pub struct LimitCalls<S> {
    inner: S,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for LimitCalls<S>
where
    S: Service<Request<ReqBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    /// Served now (the usual case, unboxed), or boxed while it waits.
    type Future = Either<Holding<S::Future>, Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !request.uri().path().starts_with("/roomcontrol.v1.RoomControl/") {
            return Either::Left(Holding { future: self.inner.call(request), slot: None });
        }
        // A free slot (the usual case): serve now, holding the slot until
        // the answer is ready.
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Either::Left(Holding { future: self.inner.call(request), slot: Some(slot) });
        }
        // Wait for a slot. The clone is not ready; the one `poll_ready`
        // prepared serves this call once a slot frees up.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slots = self.slots.clone();
        Either::Right(Box::pin(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let _slot = slots.acquire_owned().await.ok();
            inner.call(request).await
        }))
    }
}

pin_project_lite::pin_project! {
    /// A call's future and the concurrency slot it holds until it is ready.
    pub struct Holding<F> {
        #[pin]
        future: F,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        this.slot.take();
        Poll::Ready(output)
    }
}

/// Sends each request to `yes` when `choose` says so, else to `no`, with
/// no allocation: how the console's paths leave the gRPC stack.
#[derive(Debug, Clone)]
pub struct Branch<Yes, No, F> {
    choose: F,
    yes: Yes,
    no: No,
}

impl<Yes, No, F> Branch<Yes, No, F> {
    pub fn new(choose: F, yes: Yes, no: No) -> Self {
        Self { choose, yes, no }
    }
}

impl<Yes, No, F, Req> Service<Req> for Branch<Yes, No, F>
where
    Yes: Service<Req>,
    No: Service<Req, Response = Yes::Response, Error = Yes::Error>,
    F: Fn(&Req) -> bool,
{
    type Response = Yes::Response;
    type Error = Yes::Error;
    type Future = Either<Yes::Future, No::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both, since either may get the call.
        std::task::ready!(self.yes.poll_ready(cx))?;
        self.no.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if (self.choose)(&request) {
            Either::Left(self.yes.call(request))
        } else {
            Either::Right(self.no.call(request))
        }
    }
}

/// CORS for browsers only: requests that carry `Origin` (every browser
/// request the CORS rules concern) go through `tower-http`'s [`Cors`];
/// the others (backends, probes) skip it and get no CORS headers. The
/// policy is shared, so serving a backend's call copies none of it.
///
/// [`Cors`]: tower_http::cors::Cors
#[derive(Debug, Clone)]
pub struct BrowserCors<S> {
    inner: S,
    policy: Arc<tower_http::cors::CorsLayer>,
}

impl<S> BrowserCors<S> {
    pub fn new(policy: tower_http::cors::CorsLayer, inner: S) -> Self {
        Self { inner, policy: Arc::new(policy) }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BrowserCors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<<tower_http::cors::Cors<S> as Service<Request<ReqBody>>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !request.headers().contains_key(http::header::ORIGIN) {
            return Either::Right(self.inner.call(request));
        }
        // The service `poll_ready` prepared, wrapped in the policy (`Cors`
        // asks nothing more of it); a clone stays for the next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        Either::Left(self.policy.layer(ready).call(request))
    }
}
