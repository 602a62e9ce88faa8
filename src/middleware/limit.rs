//! The bound on RoomControl calls served at once (`server.max_concurrent_calls`).
//!
//! Written by hand rather than with tower's `ConcurrencyLimit`: that one
//! waits for a slot in `poll_ready`, before it sees the request, so a full
//! limit would hold up every call on the connection, health probes and
//! reflection included; this one decides per request and lets the public
//! services through without a slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use tower::Service;

use crate::rpc;

/// Bounds the RoomControl calls served at once (`server.max_concurrent_calls`);
/// more wait for a slot. Health, reflection and the console never wait, so
/// probes keep answering on a saturated replica; placed after
/// authentication, so unauthenticated callers cannot take slots.
#[derive(Debug, Clone)]
pub struct LimitCalls<S> {
    inner: S,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<S> LimitCalls<S> {
    /// `slots` is shared by every connection's copy of the service.
    pub fn new(inner: S, slots: Arc<tokio::sync::Semaphore>) -> Self {
        Self { inner, slots }
    }
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
        if !request.uri().path().starts_with(rpc::PATH_PREFIX) {
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
