//! TLS for the main port: rustls (ring) from PEM files, with optional client
//! certificates, reloaded when the files change so a renewed certificate
//! (cert-manager, a rotated Secret) takes effect without a restart. The
//! handshake itself is bounded by `server.handshake_timeout`
//! (`server::accept`).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The current TLS settings, swapped when the files change.
#[derive(Clone)]
pub struct Tls {
    config: TlsConfig,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files; any problem stops start-up with the file named.
    pub fn load(config: &TlsConfig) -> Result<Self, String> {
        let acceptor = acceptor(config)?;
        Ok(Self { config: config.clone(), current: Arc::new(RwLock::new(acceptor)) })
    }

    /// The acceptor new connections use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Checks the files every `reload_interval` until `stop` turns true;
    /// on a change, loads them again, keeping the old settings if the new
    /// files are bad.
    pub async fn watch_files(self, mut stop: watch::Receiver<bool>) {
        let mut seen = self.modified();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.reload_interval) => {}
                () = crate::shutdown::stopped(&mut stop) => return,
            }
            let now = self.modified();
            if now == seen {
                continue;
            }
            seen = now;
            match acceptor(&self.config) {
                Ok(acceptor) => {
                    *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = acceptor;
                    tracing::info!(cert = %self.config.cert_file.display(), "TLS certificate reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "TLS files changed but cannot be used; keeping the previous ones")
                }
            }
        }
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        let files = [Some(&self.config.cert_file), Some(&self.config.key_file), self.config.client_ca_file.as_ref()];
        files.into_iter().flatten().map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok()).collect()
    }
}

fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&config.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|error| {
        format!("server.tls.key_file {}: no usable private key ({error})", config.key_file.display())
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up failed: {error}"))?;
    let builder = match &config.client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|error| format!("server.tls.client_ca_file {}: {error}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("server.tls.client_ca_file {}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|error| format!("server.tls: the certificate and key do not fit together ({error})"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("{}: cannot read PEM certificates ({error})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}
