//! The browser console's static files under `/console/`.

use std::convert::Infallible;

use http::Method;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

use super::HttpService;
use crate::middleware::Branch;

/// The built console, or `None` (logged) when it was not built.
pub(super) fn service(dir: &std::path::Path) -> Option<HttpService> {
    use tower_http::services::{ServeDir, ServeFile};
    if !dir.join("index.html").is_file() {
        tracing::info!(dir = %dir.display(), "no browser console at console.dir (build it: see the README, Browser console)");
        return None;
    }
    tracing::info!(dir = %dir.display(), "browser console at /console/");
    // Unknown paths under /console/ get index.html (client-side routes).
    let files = ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")));
    let files = tower::ServiceBuilder::new()
        .map_request(|request: http::Request<Body>| {
            // Strip the /console prefix: /console/app.js is dir/app.js.
            let (mut parts, body) = request.into_parts();
            let path = parts.uri.path().strip_prefix("/console").unwrap_or("/");
            let path = if path.is_empty() { "/" } else { path };
            let path_and_query = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            parts.uri = path_and_query.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
            http::Request::from_parts(parts, body)
        })
        .map_response(|response: http::Response<_>| response.map(Body::new))
        .service(files);
    // `/console` itself redirects to `/console/`, so relative asset paths
    // resolve under it.
    let redirect = tower::service_fn(|_request: http::Request<Body>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(http::StatusCode::PERMANENT_REDIRECT)
                .header(http::header::LOCATION, "/console/")
                .body(Body::empty())
                .expect("a static response is valid"),
        )
    });
    let console = Branch::new(|request: &http::Request<Body>| request.uri().path() == "/console", redirect, files);
    Some(BoxCloneSyncService::new(console))
}

/// Whether a request is for the console: a GET or HEAD of `/console` or
/// below. Everything else goes to gRPC.
pub(super) fn is_console_request(request: &http::Request<Body>) -> bool {
    let path = request.uri().path();
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && (path == "/console" || path.starts_with("/console/"))
}
