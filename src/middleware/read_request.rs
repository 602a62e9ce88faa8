//! Reads each RoomControl call's request before the call may take a slot:
//! the content type, then the whole body, within
//! `server.request_body_timeout` and `server.max_message_bytes`. It reads
//! the body as it came (grpc-web included, before tonic-web translates it),
//! so a broken body is answered in RoomControl's words, not a library's.
//!
//! Every RoomControl RPC takes one request message (WatchEvents streams
//! only its replies), so nothing is lost by reading the request in full
//! first, and a client that stalls mid-body (a length
//! prefix that promises more than it sends, a chunked body that never
//! ends) holds no call slot while it stalls and is answered when the
//! deadline passes. Health, reflection (a bidirectional stream) and the
//! console pass untouched.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tonic::body::Body;
use tower::Service;

use super::{PassOrBoxed, refusal, take_ready};
use crate::rpc;

/// A request whose body is not a gRPC message yet: the REST routes
/// (`crate::rest`) send their JSON body through the stack with this in the
/// request's extensions. The body is read like a gRPC request's (within
/// `server.request_body_timeout` and `server.max_message_bytes`), then this
/// turns it into the framed message; its refusal is the call's answer.
#[derive(Clone)]
pub struct Transcode(Arc<TranscodeFn>);

type TranscodeFn = dyn Fn(Bytes) -> Result<Bytes, tonic::Status> + Send + Sync;

impl Transcode {
    pub fn new(transcode: impl Fn(Bytes) -> Result<Bytes, tonic::Status> + Send + Sync + 'static) -> Self {
        Self(Arc::new(transcode))
    }
}

/// The ErrorInfo reasons a transcoded body's refusal carries, so the REST
/// routes answer HTTP's own statuses (413, 408) where gRPC has one code for
/// several causes.
pub const BODY_TOO_LARGE: &str = "BODY_TOO_LARGE";
pub const BODY_TOO_SLOW: &str = "BODY_TOO_SLOW";

impl Transcode {
    /// The refusal, with the ErrorInfo reason that tells which limit broke.
    fn explain(status: tonic::Status) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let reason = match status.code() {
            tonic::Code::ResourceExhausted => BODY_TOO_LARGE,
            tonic::Code::DeadlineExceeded => BODY_TOO_SLOW,
            _ => return status,
        };
        let details = ErrorDetails::with_error_info(reason, "roomcontrol", std::collections::HashMap::new());
        tonic::Status::with_error_details(status.code(), status.message(), details)
    }
}

impl std::fmt::Debug for Transcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transcode")
    }
}

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
    type Future = PassOrBoxed<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !request.uri().path().starts_with(rpc::PATH_PREFIX) {
            return Either::Left(self.inner.call(request));
        }
        // The request is read in a future of its own.
        let mut inner = take_ready(&mut self.inner);
        let limits = self.limits;
        Either::Right(Box::pin(async move {
            if !is_grpc(&request) {
                return Ok(unsupported_media_type());
            }
            let (mut parts, body) = request.into_parts();
            let read = match parts.extensions.remove::<Transcode>() {
                Some(transcode) => collect(body, limits.max_message_bytes, limits)
                    .await
                    .map_err(Transcode::explain)
                    .and_then(|json| (transcode.0)(json)),
                None => read(body, is_grpc_web_text(&parts.headers), limits).await,
            };
            match read {
                Ok(body) => inner.call(Request::from_parts(parts, Body::new(Full::new(body)))).await,
                Err(status) => Ok(refusal(&parts.headers, status)),
            }
        }))
    }
}

/// Whether the request says it is gRPC or grpc-web.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// grpc-web's text form: the body is base64.
fn is_grpc_web_text(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web-text"))
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
async fn read(body: Body, base64_text: bool, limits: RequestLimits) -> Result<Bytes, tonic::Status> {
    let framed_limit = limits.max_message_bytes + FRAME_HEADER_BYTES;
    // grpc-web's text form takes 4 bytes for every 3.
    let limit = if base64_text { framed_limit.div_ceil(3) * 4 } else { framed_limit };
    let collected = collect(body, limit, limits).await?;
    if collected.is_empty() {
        return Err(tonic::Status::invalid_argument(
            "the call carries no request message: a gRPC client sends one framed message, even an empty one",
        ));
    }
    let decoded;
    let framed = if base64_text {
        decoded = decode_base64(&collected)
            .ok_or_else(|| tonic::Status::invalid_argument("the grpc-web-text request body is not base64"))?;
        &decoded[..]
    } else {
        &collected[..]
    };
    // A frame header that promises more than the limit, whatever follows.
    if let Some(header) = framed.get(..FRAME_HEADER_BYTES) {
        let promised = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if promised > limits.max_message_bytes {
            return Err(too_large(limits));
        }
    }
    Ok(collected)
}

fn too_large(limits: RequestLimits) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "the request message is larger than {} bytes (server.max_message_bytes)",
        limits.max_message_bytes
    ))
}

/// The body as it came, at most `limit` bytes, within the deadline.
async fn collect(body: Body, limit: usize, limits: RequestLimits) -> Result<Bytes, tonic::Status> {
    match tokio::time::timeout(limits.timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limits)),
        Ok(Err(error)) if is_malformed(error.as_ref()) => {
            Err(tonic::Status::invalid_argument("the request body is malformed: its HTTP framing cannot be read"))
        }
        // The stream was reset or the connection closed: the client left.
        Ok(Err(_)) => Err(tonic::Status::cancelled("the client ended the call before its request arrived")),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the request message did not arrive in full within {} (server.request_body_timeout)",
            crate::duration::display(limits.timeout)
        ))),
    }
}

/// The body of a grpc-web-text request, decoded as tonic-web will decode
/// it (standard alphabet, padding optional); `None` where it would fail.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(text).ok()
}

/// Whether a body error says the body's framing was broken (hyper reports
/// a bad chunk as invalid input), rather than that the client went away.
fn is_malformed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData);
        }
        if error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse) {
            return true;
        }
        next = error.source();
    }
    false
}
