//! CORS for browsers only, and the policy grpc-web callers get.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::{HeaderName, Method, Request, Response};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::take_ready;
use crate::config::CorsConfig;

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
        // Wrapped in the policy (`Cors` asks nothing more of it).
        let ready = take_ready(&mut self.inner);
        Either::Left(self.policy.layer(ready).call(request))
    }
}

/// The CORS policy for the REST routes (`crate::rest`): the same allowed
/// origins as grpc-web callers, with REST's methods and headers.
pub fn rest_policy(config: &CorsConfig) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allow_origin(config))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([http::header::CONTENT_TYPE, http::header::AUTHORIZATION])
        .expose_headers([http::header::RETRY_AFTER, http::header::WWW_AUTHENTICATE])
        .max_age(Duration::from_secs(24 * 3600))
}

fn allow_origin(config: &CorsConfig) -> AllowOrigin {
    if config.allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.allowed_origins.iter().filter_map(|origin| origin.parse().ok()))
    }
}

/// The CORS policy for grpc-web callers.
pub fn policy(config: &CorsConfig) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allow_origin(config))
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
