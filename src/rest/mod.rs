//! The NestJS app's REST routes (`/livekit/rooms`, `/livekit/token`...),
//! with its JSON shapes, on the main port, and their OpenAPI document at
//! `/livekit/openapi.json`.
//!
//! Each REST request becomes an in-process gRPC call through the very
//! stack the main port serves RPCs with (`server`): call log and metrics,
//! authentication, the request read within its deadline and size limit,
//! call slots, the RPC's handler with its admission and validation. So a
//! REST call is answered exactly as its RPC would be, and whatever the gRPC
//! path gains later applies here too. This module only translates: the
//! route and its path, query and body into the RPC's request message
//! (`routes`, `json`; the body is turned into the message inside the stack,
//! by `ReadRequest`, after authentication, so a caller without a
//! credential costs no body read), and the reply or status back into JSON
//! in NestJS's shapes (`errors`).
//!
//! Browsers get the same CORS policy as grpc-web callers (the layer sits
//! outside this service, in `server`). A browser request that needs no CORS
//! preflight (a plain POST) from an origin that policy does not allow is
//! refused here, before anything happens: CORS alone would only hide the
//! answer from the page, not stop the call.

mod errors;
mod json;
mod openapi;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tower::Service;

use crate::config::Config;
use crate::error::ApiError;
use crate::middleware::{Protocol, Transcode, take_ready};
pub use routes::is_rest_path;
use routes::{Route, Target};

/// Whether a request is for the REST routes (`/livekit/...`, but not the
/// paths other parts of RoomControl serve there, such as the webhook).
pub fn is_rest_request<B>(request: &Request<B>) -> bool {
    is_rest_path(request.uri().path())
}

/// The OpenAPI document, as served (for tools and tests).
pub fn openapi_json(authentication: bool) -> String {
    serde_json::to_string_pretty(&openapi::document(authentication)).expect("the document serializes")
}

/// What every clone of the service shares.
#[derive(Debug)]
struct Shared {
    document: Bytes,
    origins: AllowedOrigins,
    max_body_bytes: usize,
}

/// Serves the REST routes by calling `inner`, the main port's gRPC stack.
#[derive(Debug, Clone)]
pub struct Rest<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Rest<S> {
    pub fn new(config: &Config, authentication: bool, inner: S) -> Self {
        let shared = Shared {
            document: Bytes::from(openapi_json(authentication)),
            origins: AllowedOrigins::new(&config.server.cors.allowed_origins),
            max_body_bytes: config.server.max_message_bytes,
        };
        Self { inner, shared: Arc::new(shared) }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for Rest<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> BoxFuture {
        let answer = match routes::find(request.method(), request.uri().path()) {
            Target::Route(route, params) => {
                let inner = take_ready(&mut self.inner);
                return Box::pin(call(inner, self.shared.clone(), route, params, request));
            }
            Target::Document => {
                let mut response = Response::new(Body::new(Full::new(self.shared.document.clone())));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
                if request.method() == Method::HEAD {
                    *response.body_mut() = Body::empty();
                }
                response
            }
            Target::WrongMethod(methods) => {
                let mut response = cannot(StatusCode::METHOD_NOT_ALLOWED, &request);
                let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_str(&allow).expect("method names"));
                response
            }
            Target::NotFound => cannot(StatusCode::NOT_FOUND, &request),
            Target::BadPath => errors::error(
                StatusCode::BAD_REQUEST,
                json::ErrorMessage::Text("the path is not UTF-8 once percent-decoded".to_owned()),
            ),
        };
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// NestJS's answer to a path it has no route for: `Cannot GET /path`.
fn cannot<B>(status: StatusCode, request: &Request<B>) -> Response<Body> {
    let message = format!("Cannot {} {}", request.method(), request.uri().path());
    errors::error(status, json::ErrorMessage::Text(message))
}

/// One REST call: checked, sent through the gRPC stack, answered in JSON.
async fn call<S>(
    mut inner: S,
    shared: Arc<Shared>,
    route: &'static Route,
    params: routes::PathParams,
    request: Request<Body>,
) -> Result<Response<Body>, Infallible>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let (parts, body) = request.into_parts();
    if let Some(refusal) = refuse_early(&shared, route, &parts) {
        return Ok(refusal);
    }
    let endpoint = route.endpoint;
    let query = parts.uri.query().map(str::to_owned);
    let transcode = Transcode::new(move |body: Bytes| {
        endpoint
            .request(&params, query.as_deref(), &body)
            .map(routes::frame)
            .map_err(|violations| tonic::Status::from(ApiError::InvalidArgument(violations)))
    });
    let grpc = grpc_request(&parts, route, body, transcode);
    let response = inner.call(grpc).await?;
    Ok(answer(route, response).await)
}

/// What is refused before the call: a browser origin that may not call, a
/// body that is not JSON or announces more than the size limit.
fn refuse_early(shared: &Shared, route: &Route, parts: &http::request::Parts) -> Option<Response<Body>> {
    if parts.method != Method::GET && !shared.origins.allows(&parts.headers) {
        let origin = String::from_utf8_lossy(parts.headers[header::ORIGIN].as_bytes()).into_owned();
        return Some(errors::error(
            StatusCode::FORBIDDEN,
            json::ErrorMessage::Text(format!(
                "the browser origin {origin} may not call RoomControl: add it to server.cors.allowed_origins"
            )),
        ));
    }
    if !route.has_body() {
        return None;
    }
    let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > shared.max_body_bytes as u64) {
        return Some(errors::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            json::ErrorMessage::Text(format!(
                "the request body is larger than {} bytes (server.max_message_bytes)",
                shared.max_body_bytes
            )),
        ));
    }
    let has_body = length.is_none_or(|length| length > 0);
    let json = parts.headers.get(header::CONTENT_TYPE).is_none_or(|value| is_json(value.as_bytes()));
    if has_body && !json {
        return Some(errors::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json::ErrorMessage::Text("send the body as JSON, with content-type: application/json".to_owned()),
        ));
    }
    None
}

/// `application/json`, with parameters, or any `+json` type.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// The in-process gRPC call: the RPC's path, the caller's credential and
/// host (authentication's inputs), and the JSON body to transcode.
fn grpc_request(parts: &http::request::Parts, route: &Route, body: Body, transcode: Transcode) -> Request<Body> {
    let mut uri = http::uri::Parts::default();
    if let (Some(scheme), Some(authority)) = (parts.uri.scheme(), parts.uri.authority()) {
        uri.scheme = Some(scheme.clone());
        uri.authority = Some(authority.clone());
    }
    uri.path_and_query = Some(http::uri::PathAndQuery::from_static(route.rpc.info().path));
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http::Uri::from_parts(uri).expect("an RPC path with the request's own authority");
    // gRPC's own transport; tonic-web passes only HTTP/2 gRPC through.
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    for name in [header::AUTHORIZATION, header::HOST] {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    request.extensions_mut().insert(Protocol::Rest);
    request.extensions_mut().insert(transcode);
    request
}

/// The gRPC answer in JSON: the reply's JSON with the route's success
/// status, or the status in NestJS's error shape.
async fn answer(route: &Route, response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let in_headers = tonic::Status::from_header_map(&parts.headers);
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => return errors::from_status(route.endpoint, &status),
    };
    let in_trailers = collected.trailers().and_then(tonic::Status::from_header_map);
    let message = collected.to_bytes();
    match in_headers.or(in_trailers) {
        Some(status) if status.code() != tonic::Code::Ok => errors::from_status(route.endpoint, &status),
        Some(_) => reply(route, &message),
        // Not a gRPC answer at all (nothing in the stack answers so).
        None => errors::from_status(
            route.endpoint,
            &tonic::Status::internal(format!("the call answered HTTP {} without a gRPC status", parts.status)),
        ),
    }
}

/// A success: the route's status and the reply's JSON.
fn reply(route: &Route, framed: &[u8]) -> Response<Body> {
    let message = match framed.get(..5) {
        Some([0, length @ ..])
            if framed.len() - 5 == u32::from_be_bytes(*<&[u8; 4]>::try_from(length).expect("4 bytes")) as usize =>
        {
            &framed[5..]
        }
        _ => return errors::from_status(route.endpoint, &tonic::Status::internal("the reply is not one gRPC message")),
    };
    match route.endpoint.reply(message) {
        Ok(Some(json)) => errors::json_bytes(route.success, json),
        Ok(None) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = route.success;
            response
        }
        Err(error) => errors::from_status(
            route.endpoint,
            &tonic::Status::internal(format!("the reply cannot be decoded: {error}")),
        ),
    }
}

/// The browser origins that may call: server.cors.allowed_origins, and
/// the server's own origin (a page it serves).
#[derive(Debug)]
struct AllowedOrigins {
    any: bool,
    listed: Vec<String>,
}

impl AllowedOrigins {
    fn new(allowed: &[String]) -> Self {
        Self { any: allowed.iter().any(|origin| origin == "*"), listed: allowed.to_vec() }
    }

    /// Whether a request may proceed: it carries no `Origin` (not a
    /// browser's cross-origin call), or one that is allowed or the
    /// server's own.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|origin| origin.to_str().ok()) else {
            return !headers.contains_key(header::ORIGIN);
        };
        if self.any || self.listed.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let own_host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, host)| host);
        matches!((origin_host, own_host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap())).collect()
    }

    #[test]
    fn only_allowed_or_same_origins_may_call() {
        let origins = AllowedOrigins::new(&["https://app.example.com".to_owned()]);
        assert!(origins.allows(&headers(&[])));
        assert!(origins.allows(&headers(&[(header::ORIGIN, "https://app.example.com")])));
        assert!(
            origins.allows(&headers(&[(header::ORIGIN, "http://127.0.0.1:3000"), (header::HOST, "127.0.0.1:3000")]))
        );
        assert!(
            !origins.allows(&headers(&[(header::ORIGIN, "https://evil.example"), (header::HOST, "127.0.0.1:3000")]))
        );
        assert!(!origins.allows(&headers(&[(header::ORIGIN, "null")])));
        assert!(AllowedOrigins::new(&["*".to_owned()]).allows(&headers(&[(header::ORIGIN, "https://any.example")])));
    }

    #[test]
    fn json_content_types_are_recognised() {
        for yes in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(is_json(yes.as_bytes()), "{yes}");
        }
        for no in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json"] {
            assert!(!is_json(no.as_bytes()), "{no}");
        }
    }
}
