//! Process-wide cryptography providers, chosen once, explicitly, at start-up.
//!
//! Two crates pick a provider lazily and globally:
//! - `jsonwebtoken` 10: whichever provider is installed first wins for the
//!   whole process. `livekit-api` installs an HMAC-only one on first use,
//!   which would leave RSA, EC and EdDSA verification broken, so RoomControl
//!   installs the full RustCrypto provider before anything signs.
//! - `rustls`: RoomControl links only `ring`; installing it as the default
//!   keeps any TLS user that asks for the process default from panicking.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Installs RoomControl's crypto providers. Idempotent; call it before any
/// token is signed or verified and before any TLS connection.
pub fn install_providers() {
    INSTALL.call_once(|| {
        // Err means some code signed or verified a JWT (or opened a TLS
        // connection) before start-up called this; the entry points call it
        // first, so that would be a bug in RoomControl, not a user error.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// rustls with ring and the webpki roots, like `livekit-api`'s own.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    install_providers();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up failed: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An HTTP client for RoomControl's own outbound calls (JWKS), every
/// request bounded by `timeout`.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config()?)
        .connect_timeout(timeout)
        .timeout(timeout)
        // Never follow a redirect: it could leave https, or carry a bearer
        // token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| format!("HTTP client set-up failed: {error}"))
}

/// The pooled HTTP/1.1 client of the direct LiveKit calls.
pub type LiveKitHttp = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A bare hyper client for the hot LiveKit calls: a pooled connection and
/// a prepared URI per call, none of reqwest's per-request URL handling.
/// It follows no redirect; callers bound each request's time themselves.
pub fn livekit_http(connect_timeout: std::time::Duration) -> Result<LiveKitHttp, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // A backstop: callers bound every request (connection included) by
    // `livekit.timeout` and report that; this only ends a connection
    // attempt the pool would otherwise leave running.
    http.set_connect_timeout(Some(connect_timeout + std::time::Duration::from_secs(1)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        // Below the idle timeouts of common proxies and servers, so a
        // pooled connection is rarely closed under a request (and such a
        // request is retried on a new connection).
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(https))
}
