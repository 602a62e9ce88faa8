//! Each caller's rate limits (`crate::limits`), checked right after
//! authentication: the first point where the caller is known, and before
//! anything costs more. A refused call has its request body left unread,
//! takes no call slot and never reaches tonic, so a flood costs little;
//! and since grpc-web and the REST routes pass here as gRPC calls do, one
//! check covers all three. The price: a call that admission would refuse
//! anyway (a missing scope, a broken rule) counts against its caller's
//! limit too, as any call of a caller flooding RoomControl should.
//!
//! Refusals are answered in the caller's protocol (this layer sits outside
//! grpc-web's translation) and marked [`QuietRefusal`], so CallLog logs
//! them at debug: they are counted in `roomcontrol_rate_limited_total`.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderMap, Request, Response};
use tonic::body::Body;
use tower::Service;

use super::{PassOrBoxed, QuietRefusal, refusal, take_ready};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::rpc::Rpc;

/// Holds every RoomControl call to its caller's rate limit; everything
/// else passes. Stacked with `layer_fn(|inner| LimitRates::new(inner,
/// limiter))` below Authenticate.
#[derive(Debug, Clone)]
pub struct LimitRates<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
}

impl<S> LimitRates<S> {
    pub fn new(inner: S, limiter: Arc<RateLimiter>) -> Self {
        Self { inner, limiter }
    }
}

impl<S> Service<Request<Body>> for LimitRates<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    /// Calls within their limit (or under none) pass unboxed; a check in
    /// Redis, and a refusal, are boxed.
    type Future = PassOrBoxed<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(rpc) = Rpc::from_path(request.uri().path()) else {
            return Either::Left(self.inner.call(request));
        };
        // No caller: admission answers UNAUTHENTICATED.
        let Some(caller) = request.extensions().get::<Arc<Caller>>().cloned() else {
            return Either::Left(self.inner.call(request));
        };
        let limit = rpc.rate_limit(!caller.has(Scope::TokensCreate));
        let Some(rate) = self.limiter.rate(limit) else {
            return Either::Left(self.inner.call(request));
        };
        if !self.limiter.is_shared() {
            return match self.limiter.check_local(limit, rate, &caller) {
                Ok(()) => Either::Left(self.inner.call(request)),
                Err(refused) => {
                    let response = refuse(request.headers(), refused);
                    Either::Right(Box::pin(async move { Ok(response) }))
                }
            };
        }
        let mut inner = take_ready(&mut self.inner);
        let limiter = self.limiter.clone();
        Either::Right(Box::pin(async move {
            match limiter.check(limit, rate, &caller).await {
                Ok(()) => inner.call(request).await,
                Err(refused) => Ok(refuse(request.headers(), refused)),
            }
        }))
    }
}

fn refuse(headers: &HeaderMap, error: ApiError) -> Response<Body> {
    let mut response = refusal(headers, error.into());
    response.extensions_mut().insert(QuietRefusal);
    response
}
