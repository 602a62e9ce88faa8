//! Reads each RoomControl call's request before the call may take a slot:
//! the content type, then the whole body, within
//! `server.request_body_timeout` and `server.max_message_bytes`.
//!
//! Every RoomControl RPC is unary, so nothing is lost by reading the
//! request in full first, and a client that stalls mid-body (a length
//! prefix that promises more than it sends, a chunked body that never
//! ends) holds no call slot while it stalls and is answered when the
//! deadline passes. Health, reflection (a bidirectional stream) and the
//! console pass untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tonic::body::Body;
use tower::Service;

use crate::rpc;

/// The gRPC frame header before each message: a compression flag and a
/// 4-byte length.
const FRAME_HEADER_BYTES: usize = 5;

/// The limits a request is read within.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub timeout: Duration,
    pub max_message_bytes: usize,
}

/// Reads the request of every RoomControl call in full before passing it
/// on; answers the call itself when the request cannot be read.
#[derive(Debug, Clone)]
pub struct ReadRequest<S> {
    inner: S,
    limits: RequestLimits,
}

impl<S> ReadRequest<S> {
    pub fn new(inner: S, limits: RequestLimits) -> Self {
        Self { inner, limits }
    }
}

impl<S> Service<Request<Body>> for ReadRequest<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !request.uri().path().starts_with(rpc::PATH_PREFIX) {
            return Either::Left(self.inner.call(request));
        }
        // The clone is not ready; the one `poll_ready` prepared serves this
        // call once its request is read.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits;
        Either::Right(Box::pin(async move {
            if !is_grpc(&request) {
                return Ok(unsupported_media_type());
            }
            let (parts, body) = request.into_parts();
            match read(body, limits).await {
                Ok(body) => inner.call(Request::from_parts(parts, Body::new(Full::new(body)))).await,
                Err(status) => Ok(status.into_http()),
            }
        }))
    }
}

/// Whether the request says it is gRPC (grpc-web was translated to gRPC
/// above this layer).
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// What the gRPC specification asks for a request that is not gRPC: HTTP
/// 415, so the client learns it is talking to the wrong kind of server.
fn unsupported_media_type() -> Response<Body> {
    http::Response::builder()
        .status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::new(Full::new(Bytes::from_static(
            b"RoomControl's RPCs take gRPC (content-type application/grpc) or grpc-web (application/grpc-web)\n",
        ))))
        .expect("a static response is valid")
}

/// The whole body, or the status that says why it could not be had. The
/// messages never carry a library's own error text.
async fn read(body: Body, limits: RequestLimits) -> Result<Bytes, tonic::Status> {
    let limit = limits.max_message_bytes + FRAME_HEADER_BYTES;
    let too_large = || {
        tonic::Status::resource_exhausted(format!(
            "the request message is larger than {} bytes (server.max_message_bytes)",
            limits.max_message_bytes
        ))
    };
    let collected = match tokio::time::timeout(limits.timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        // The stream was reset or the connection closed: the client left.
        Ok(Err(_)) => return Err(tonic::Status::cancelled("the client ended the call before its request arrived")),
        Err(_) => {
            return Err(tonic::Status::deadline_exceeded(format!(
                "the request message did not arrive in full within {} (server.request_body_timeout)",
                crate::duration::display(limits.timeout)
            )));
        }
    };
    if collected.is_empty() {
        return Err(tonic::Status::invalid_argument(
            "the call carries no request message: a gRPC client sends one framed message, even an empty one",
        ));
    }
    // A frame header that promises more than the limit, whatever follows.
    if let Some(header) = collected.get(..FRAME_HEADER_BYTES) {
        let promised = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if promised > limits.max_message_bytes {
            return Err(too_large());
        }
    }
    Ok(collected)
}
