//! The authentication layer: every call but health and reflection gets a
//! [`Caller`] or is answered here, in the caller's protocol (it sits
//! outside grpc-web's translation, so no request body is read for a caller
//! without a credential).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tonic::body::Body;
use tower::Service;

use super::{AuthFailure, Authenticator, Unauthenticated};
use crate::middleware::{PassOrBoxed, refusal, take_ready};
use crate::rpc;

/// Whether the request names a loopback host (`Host`, or `:authority` in
/// HTTP/2); a request naming none is allowed.
fn addressed_to_loopback<B>(request: &Request<B>) -> bool {
    let loopback = |host: &str| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if let Some(authority) = request.uri().authority() {
        return loopback(authority.host());
    }
    match request.headers().get(http::header::HOST).map(|host| http::uri::Authority::try_from(host.as_bytes())) {
        Some(Ok(authority)) => loopback(authority.host()),
        // No Host, or one that is not a host name at all.
        None | Some(Err(_)) => true,
    }
}

/// Authenticates every call but health and reflection: a [`Caller`] in
/// the request's extensions, or UNAUTHENTICATED answered here. Stacked with
/// `layer_fn(|inner| Authenticate::new(inner, authenticator))`.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> Authenticate<S> {
    pub fn new(inner: S, authenticator: Arc<Authenticator>) -> Self {
        Self { inner, authenticator }
    }
}

impl<S> Service<Request<Body>> for Authenticate<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    /// Calls that need no check pass straight through, unboxed.
    type Future = PassOrBoxed<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if rpc::is_public(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let authenticator = &self.authenticator;
        if !authenticator.enabled {
            if authenticator.local_only && !addressed_to_loopback(&request) {
                let headers = std::mem::take(request.headers_mut());
                return Either::Right(Box::pin(async move {
                    Ok(refusal(
                        &headers,
                        tonic::Status::permission_denied(
                            "RoomControl runs without authentication and answers only requests addressed to localhost, 127.0.0.1 or [::1]; configure authentication (auth.issuers or auth.api_keys) to serve other names",
                        ),
                    ))
                }));
            }
            // Nothing to wait for: the shared anonymous caller, at once. Not
            // recorded in the call's span: recording re-serializes the span's
            // JSON fields, and "anonymous" tells a log reader nothing.
            request.extensions_mut().insert(authenticator.anonymous.clone());
            return Either::Left(self.inner.call(request));
        }
        // The credential is checked in a future of its own.
        let mut inner = take_ready(&mut self.inner);
        let authenticator = self.authenticator.clone();
        Either::Right(Box::pin(async move {
            let header = request.headers().get(http::header::AUTHORIZATION).cloned();
            match authenticator.authenticate(header.as_ref().map(http::HeaderValue::as_bytes)).await {
                Ok(caller) => {
                    tracing::Span::current().record("caller", tracing::field::display(&caller));
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(AuthFailure::Unauthenticated(Unauthenticated(message))) => {
                    Ok(refusal(request.headers(), tonic::Status::unauthenticated(message)))
                }
                Err(AuthFailure::Unavailable(message)) => {
                    Ok(refusal(request.headers(), tonic::Status::unavailable(message)))
                }
            }
        }))
    }
}
