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

/// An HTTP client for RoomControl's own outbound calls (LiveKit, JWKS):
/// rustls with ring and the webpki roots, like `livekit-api`'s own, every
/// request bounded by `timeout`.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    install_providers();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS set-up failed: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(timeout)
        .timeout(timeout)
        // Never follow a redirect: it could leave https, or carry a bearer
        // token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| format!("HTTP client set-up failed: {error}"))
}
