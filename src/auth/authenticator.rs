//! Checking credentials: API keys and identity providers' JWTs.

use std::sync::Arc;

use super::{Caller, api_keys, jwt};
use crate::config::AuthConfig;
use crate::track_sources;

/// Why a credential was not accepted. The message never repeats it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The credential is missing or bad: UNAUTHENTICATED.
    #[error(transparent)]
    Unauthenticated(#[from] Unauthenticated),
    /// The credential could not be checked (an identity provider's keys
    /// could not be loaded): UNAVAILABLE, so clients retry rather than
    /// sign their user out.
    #[error("{0}")]
    Unavailable(String),
}

/// Checks credentials. Built once at start-up, shared by every connection.
#[derive(Debug)]
pub struct Authenticator {
    pub(super) enabled: bool,
    /// Authentication off on loopback: only requests addressed to a
    /// loopback name are served, so a web page cannot reach RoomControl
    /// through DNS rebinding.
    pub(super) local_only: bool,
    max_credential_bytes: usize,
    api_keys: api_keys::ApiKeys,
    issuers: Vec<jwt::Issuer>,
    /// The caller of every call when authentication is off, built once.
    pub(super) anonymous: Arc<Caller>,
}

impl Authenticator {
    /// Loads keys and key files; JWKS URLs are fetched in the background.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let issuers =
            config.issuers.iter().map(|issuer| jwt::Issuer::new(issuer, config.leeway)).collect::<Result<_, _>>()?;
        Ok(Self {
            enabled: config.is_enabled(),
            local_only: config.loopback_only(),
            max_credential_bytes: config.max_credential_bytes,
            api_keys: api_keys::ApiKeys::new(&config.api_keys)?,
            issuers,
            anonymous: Arc::new(Caller::anonymous()),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Fetches every JWKS URL once, so the first caller does not wait.
    pub async fn prefetch(&self) {
        for issuer in &self.issuers {
            issuer.prefetch().await;
        }
    }

    /// The caller behind an `authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Caller>, AuthFailure> {
        if !self.enabled {
            return Ok(self.anonymous.clone());
        }
        self.check_credential(authorization).await.map(Arc::new)
    }

    async fn check_credential(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthFailure> {
        let Some(header) = authorization else {
            return Err(Unauthenticated(
                "missing credentials: send the metadata \"authorization: Bearer <token or API key>\"".to_owned(),
            )
            .into());
        };
        if header.len() > self.max_credential_bytes + "Bearer ".len() {
            return Err(Unauthenticated(format!(
                "the credential is larger than {} bytes (auth.max_credential_bytes)",
                self.max_credential_bytes
            ))
            .into());
        }
        let header = std::str::from_utf8(header)
            .map_err(|_| Unauthenticated("the authorization header is not valid text".to_owned()))?;
        let Some((scheme, credential)) = header.split_once(' ') else {
            return Err(
                Unauthenticated("the authorization header must be \"Bearer <token or API key>\"".to_owned()).into()
            );
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Unauthenticated(format!(
                "unsupported authorization scheme {:?}: use \"Bearer <token or API key>\"",
                truncate(scheme, 16)
            ))
            .into());
        }
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(Unauthenticated("empty bearer credential".to_owned()).into());
        }
        if credential.bytes().filter(|&b| b == b'.').count() == 2 {
            self.authenticate_jwt(credential).await
        } else {
            Ok(self.api_keys.authenticate(credential)?)
        }
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Caller, AuthFailure> {
        let unverified = jwt::peek(token)?;
        let Some(issuer) = self.issuers.iter().find(|issuer| issuer.accepts_issuer(&unverified.iss)) else {
            return Err(Unauthenticated(match unverified.iss.as_deref() {
                Some(iss) => format!("tokens from issuer {:?} are not accepted", truncate(iss, 200)),
                None => "the token has no iss claim".to_owned(),
            })
            .into());
        };
        issuer.verify(token, unverified).await
    }
}

/// At most `max` characters of something a caller sent, for messages.
pub(super) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_owned(),
    }
}

/// Checks the `[auth]` section: (key, value shown, what was expected).
pub fn check_config(config: &AuthConfig) -> Result<(), (String, String, String)> {
    api_keys::check_config(&config.api_keys)?;
    for (index, issuer) in config.issuers.iter().enumerate() {
        jwt::check_config(index, issuer)?;
        if config.issuers[..index].iter().any(|earlier| earlier.issuer == issuer.issuer) {
            return Err((
                format!("auth.issuers[{index}].issuer"),
                format!("{:?}", issuer.issuer),
                "expected each issuer once (list several keys in one JWKS to rotate keys)".to_owned(),
            ));
        }
    }
    if config.self_service.max_ttl.is_zero() {
        return Err((
            "auth.self_service.max_ttl".to_owned(),
            "0s".to_owned(),
            "expected a positive duration such as \"1h\"".to_owned(),
        ));
    }
    for source in &config.self_service.can_publish_sources {
        if track_sources::from_name(source).is_none() {
            return Err((
                "auth.self_service.can_publish_sources".to_owned(),
                format!("{source:?}"),
                format!("expected {}", track_sources::names()),
            ));
        }
    }
    if config.max_credential_bytes == 0 {
        return Err(("auth.max_credential_bytes".to_owned(), "0".to_owned(), "expected at least 1".to_owned()));
    }
    Ok(())
}
