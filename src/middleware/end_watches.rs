//! Health `Watch` streams that end when the server closes its connections.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tower::Service;

use super::PassOrBoxed;
use crate::rpc;

/// Ends health `Watch` streams once the server closes its connections:
/// a watcher (a client-side health checker, a load balancer) has already
/// heard NOT_SERVING by then, and an open stream would otherwise hold its
/// connection, and the drain, for the whole grace period.
#[derive(Debug, Clone)]
pub struct EndWatches<S> {
    inner: S,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl<S> EndWatches<S> {
    pub fn new(inner: S, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { inner, closing }
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for EndWatches<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    /// Every call but a Watch passes straight through, unboxed.
    type Future = PassOrBoxed<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let watch = request.uri().path() == rpc::HEALTH_WATCH;
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
