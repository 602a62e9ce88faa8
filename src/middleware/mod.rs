//! Tower middleware of RoomControl's own, one file per service. Each is
//! stacked in `server` with `tower::layer::layer_fn`, in the order the
//! comments there explain.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::Either;
use http::{HeaderMap, HeaderValue, Response};
use tonic::body::Body;

/// The future of a layer that passes most calls straight through (unboxed)
/// and answers the others, or waits for them, in a boxed future of its own.
pub type PassOrBoxed<F, E> = Either<F, Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>>;

mod branch;
pub mod browser_cors;
mod call_log;
mod end_watches;
mod limit;
mod rate_limit;
mod read_request;

pub use branch::Branch;
pub use browser_cors::BrowserCors;
pub use call_log::{CallLog, Protocol};
pub use end_watches::EndWatches;
pub use limit::{Budgets, Holding, LimitCalls};
pub use rate_limit::LimitRates;
pub use read_request::{BODY_TOO_LARGE, BODY_TOO_SLOW, ReadRequest, RequestLimits, Transcode};

/// A refusal in the caller's own protocol, for layers that answer before
/// tonic-web translates grpc-web: a trailers-only gRPC answer, labelled
/// grpc-web (binary or text, as asked) when the request was grpc-web, so
/// browsers' clients read it.
pub fn refusal(request: &HeaderMap, status: tonic::Status) -> Response<Body> {
    let mut response = status.into_http();
    let content_type = request.get(http::header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    if content_type.starts_with(b"application/grpc-web-text") {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc-web-text+proto"));
    } else if content_type.starts_with(b"application/grpc-web") {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc-web+proto"));
    }
    response
}

/// Marks a refusal that is counted in a metric of its own and must not
/// log a line per call above debug (CallLog reads it): a flood of them
/// would flood the log. Rate-limited calls carry it.
#[derive(Debug, Clone, Copy)]
pub struct QuietRefusal;

/// The service `poll_ready` prepared, for a call that finishes in a future
/// of its own; a clone (not yet ready) stays for the next call. The tower
/// idiom for services whose futures outlive `call`'s borrow.
pub fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}
