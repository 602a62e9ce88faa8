//! JWTs from the application's identity providers.
//!
//! Signatures are checked with `jsonwebtoken`'s RustCrypto provider named
//! explicitly rather than the process-wide default: `livekit-api` installs
//! an HMAC-only default on first use, and whichever code signs or verifies
//! first must not decide whether RS256, PS256, ES256 or EdDSA tokens work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::api_keys::scope_names;
use super::authenticator::truncate;
use super::{AuthFailure, Caller, CallerKind, RoomPatterns, Scope, Unauthenticated};
use crate::config::IssuerConfig;

/// What can be read from a token before it is verified.
pub(super) struct Unverified {
    pub iss: Option<String>,
    header: Header,
    claims: Value,
}

/// Reads a token's header and claims without trusting them yet.
pub(super) fn peek(token: &str) -> Result<Unverified, Unauthenticated> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        Unauthenticated(
            "malformed token: its header is not a JWT header with a supported algorithm (\"none\" is never accepted)"
                .to_owned(),
        )
    })?;
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .map_err(|_| Unauthenticated("malformed token: its claims are not a JSON object".to_owned()))?
        .claims;
    if !claims.is_object() {
        return Err(Unauthenticated("malformed token: its claims are not a JSON object".to_owned()));
    }
    let iss = claims.get("iss").and_then(Value::as_str).map(str::to_owned);
    Ok(Unverified { iss, header, claims })
}

/// One accepted identity provider.
#[derive(Debug)]
pub(super) struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    leeway: Duration,
    scopes_claim: String,
    scope_map: BTreeMap<String, Vec<Scope>>,
    rooms_claim: String,
    default_rooms: RoomPatterns,
    identity_prefix: String,
}

#[derive(Debug)]
enum Keys {
    Static(DecodingKey),
    Jwks(Jwks),
}

impl Issuer {
    pub(super) fn new(config: &IssuerConfig, leeway: Duration) -> Result<Self, String> {
        let context = |what: &str| format!("auth.issuers {:?}: {what}", config.issuer);
        let keys = if let Some(secret) = &config.secret {
            Keys::Static(DecodingKey::from_secret(secret.expose_secret().as_bytes()))
        } else if let Some(path) = &config.secret_file {
            let secret = std::fs::read(path).map_err(|e| context(&format!("cannot read {}: {e}", path.display())))?;
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            Keys::Static(DecodingKey::from_secret(secret))
        } else if let Some(pem) = &config.public_key_pem {
            Keys::Static(public_key(pem.as_bytes()).map_err(|e| context(&e))?)
        } else if let Some(path) = &config.public_key_file {
            let pem = std::fs::read(path).map_err(|e| context(&format!("cannot read {}: {e}", path.display())))?;
            Keys::Static(public_key(&pem).map_err(|e| context(&e))?)
        } else if let Some(path) = &config.jwks_file {
            let jwks = Jwks::new(JwksLocation::File(path.clone()), config.jwks_min_refresh_interval);
            jwks.load_file().map_err(|e| context(&e))?;
            Keys::Jwks(jwks)
        } else if let Some(url) = &config.jwks_url {
            let http = crate::crypto::http_client(Duration::from_secs(5))?;
            Keys::Jwks(Jwks::new(JwksLocation::Url(url.clone(), http), config.jwks_min_refresh_interval))
        } else {
            return Err(context("no key source"));
        };
        let algorithms = if config.algorithms.is_empty() {
            match &keys {
                Keys::Static(key) => key.family().algorithms().to_vec(),
                Keys::Jwks(_) => ASYMMETRIC.to_vec(),
            }
        } else {
            config.algorithms.clone()
        };
        let scope_map = config
            .scope_map
            .iter()
            .map(|(value, scopes)| (value.clone(), scopes.iter().filter_map(|s| Scope::from_name(s)).collect()))
            .collect();
        Ok(Self {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms,
            keys,
            leeway,
            scopes_claim: config.scopes_claim.clone(),
            scope_map,
            rooms_claim: config.rooms_claim.clone(),
            default_rooms: RoomPatterns::new(config.default_rooms.clone()),
            identity_prefix: config.identity_prefix.clone(),
        })
    }

    pub(super) fn accepts_issuer(&self, iss: &Option<String>) -> bool {
        iss.as_deref() == Some(self.issuer.as_str())
    }

    pub(super) async fn prefetch(&self) {
        if let Keys::Jwks(jwks) = &self.keys {
            jwks.refresh().await;
        }
    }

    /// Verifies signature and claims and returns the caller.
    pub(super) async fn verify(&self, token: &str, unverified: Unverified) -> Result<Caller, AuthFailure> {
        let Unverified { header, claims, .. } = unverified;
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(Unauthenticated(format!(
                "algorithm {alg:?} is not accepted for issuer {} (accepted: {})",
                self.issuer,
                self.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
        let key = match &self.keys {
            Keys::Static(key) => key.clone(),
            Keys::Jwks(jwks) => {
                let Some(kid) = header.kid.as_deref() else {
                    return Err(Unauthenticated(format!(
                        "the token has no kid header; issuer {} publishes its keys as a JWKS",
                        self.issuer
                    ))
                    .into());
                };
                jwks.key(kid, alg).await?
            }
        };
        if key.family() != alg.family() {
            return Err(
                Unauthenticated(format!("algorithm {alg:?} does not match issuer {}'s key", self.issuer)).into()
            );
        }
        verify_signature(token, alg, &key)?;
        self.check_claims(&claims)?;
        Ok(self.caller(&claims)?)
    }

    fn check_claims(&self, claims: &Value) -> Result<(), Unauthenticated> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let leeway = self.leeway.as_secs_f64();
        let Some(exp) = claims.get("exp").and_then(Value::as_f64) else {
            return Err(Unauthenticated("the token has no exp claim: tokens must expire".to_owned()));
        };
        if now > exp + leeway {
            return Err(Unauthenticated("the token has expired".to_owned()));
        }
        if let Some(nbf) = claims.get("nbf") {
            let Some(nbf) = nbf.as_f64() else {
                return Err(Unauthenticated("the token's nbf claim is not a number".to_owned()));
            };
            if now + leeway < nbf {
                return Err(Unauthenticated("the token is not valid yet (nbf is in the future)".to_owned()));
            }
        }
        if !self.audiences.is_empty() {
            let audiences = strings(claims.get("aud"));
            if !audiences.iter().any(|aud| self.audiences.contains(aud)) {
                return Err(Unauthenticated(format!(
                    "the token's audience is not accepted (expected one of: {})",
                    self.audiences.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn caller(&self, claims: &Value) -> Result<Caller, Unauthenticated> {
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
        if subject.is_empty() {
            return Err(Unauthenticated("the token has no sub claim".to_owned()));
        }
        let mut scopes = BTreeSet::new();
        for value in strings(claim(claims, &self.scopes_claim)) {
            if let Some(scope) = Scope::from_name(&value) {
                scopes.insert(scope);
            }
            if let Some(mapped) = self.scope_map.get(&value) {
                scopes.extend(mapped.iter().copied());
            }
        }
        let rooms = match claim(claims, &self.rooms_claim) {
            Some(value) => RoomPatterns::new(strings(Some(value))),
            None => self.default_rooms.clone(),
        };
        Ok(Caller {
            kind: CallerKind::Jwt { issuer: self.issuer.clone() },
            // Not shortened: an identity over LiveKit's limit is refused by
            // CreateToken's validation, naming the rule.
            subject: format!("{}{subject}", self.identity_prefix),
            display_name: claims.get("name").and_then(Value::as_str).map(str::to_owned),
            scopes,
            rooms,
        })
    }
}

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Checks the signature with the RustCrypto provider, named explicitly.
fn verify_signature(token: &str, alg: Algorithm, key: &DecodingKey) -> Result<(), Unauthenticated> {
    let bad = || Unauthenticated("the token's signature is invalid".to_owned());
    let (message, signature) = token.rsplit_once('.').ok_or_else(bad)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| bad())?;
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    let verifier = (provider.verifier_factory)(&alg, key).map_err(|_| bad())?;
    verifier.verify(message.as_bytes(), &signature).map_err(|_| bad())
}

/// A claim by path: `realm_access.roles` reaches into objects.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.split('.').try_fold(claims, |value, part| value.get(part))
}

/// A claim's strings: an array of strings, or one space-separated string.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// An RSA, EC or Ed25519 public key in PEM.
fn public_key(pem: &[u8]) -> Result<DecodingKey, String> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| "expected an RSA, EC or Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----)".to_owned())
}

#[derive(Debug)]
enum JwksLocation {
    File(PathBuf),
    Url(String, reqwest::Client),
}

/// A JWKS, refreshed when a token names a key it does not hold, at most
/// once per `min_interval` so a flood of made-up kids cannot hammer the
/// provider.
#[derive(Debug)]
struct Jwks {
    location: JwksLocation,
    keys: RwLock<HashMap<String, (DecodingKey, Option<Algorithm>)>>,
    /// Why the last load failed; `None` after a success.
    last_error: RwLock<Option<String>>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl Jwks {
    fn new(location: JwksLocation, min_interval: Duration) -> Self {
        Self {
            location,
            keys: RwLock::default(),
            last_error: RwLock::new(Some("not loaded yet".to_owned())),
            last_refresh: tokio::sync::Mutex::new(None),
            min_interval,
        }
    }

    fn load_file(&self) -> Result<(), String> {
        let JwksLocation::File(path) = &self.location else {
            return Ok(());
        };
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.replace(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthFailure> {
        if let Some(key) = self.cached(kid, alg).map_err(Unauthenticated)? {
            return Ok(key);
        }
        self.refresh_if_due().await;
        if let Some(key) = self.cached(kid, alg).map_err(Unauthenticated)? {
            return Ok(key);
        }
        // A key set that could not be loaded is RoomControl's problem (or the
        // provider's), not the caller's: answer UNAVAILABLE so clients retry.
        let failure = self.last_error.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match failure {
            Some(error) => Err(AuthFailure::Unavailable(format!(
                "the identity provider's keys could not be loaded ({error}); try again later"
            ))),
            None => {
                Err(Unauthenticated(format!("the token's key id {:?} is not in the JWKS", truncate(kid, 64))).into())
            }
        }
    }

    fn cached(&self, kid: &str, alg: Algorithm) -> Result<Option<DecodingKey>, String> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match keys.get(kid) {
            Some((_, Some(key_alg))) if *key_alg != alg => {
                Err(format!("the token's algorithm {alg:?} is not its JWKS key's ({key_alg:?})"))
            }
            Some((key, _)) => Ok(Some(key.clone())),
            None => Ok(None),
        }
    }

    /// One refresh at a time, and none sooner than `min_interval` after the
    /// last.
    async fn refresh_if_due(&self) {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch().await;
    }

    async fn refresh(&self) {
        let mut last = self.last_refresh.lock().await;
        *last = Some(Instant::now());
        self.fetch().await;
    }

    async fn fetch(&self) {
        let result = match &self.location {
            JwksLocation::File(_) => self.load_file(),
            JwksLocation::Url(url, http) => match fetch_url(http, url).await {
                Ok(bytes) => self.replace(&bytes).map_err(|e| format!("{url}: {e}")),
                Err(error) => Err(format!("{url}: {error}")),
            },
        };
        match &result {
            Ok(()) => tracing::info!(keys = self.len(), "JWKS loaded"),
            Err(error) => tracing::warn!(%error, "JWKS refresh failed; keeping the keys already known"),
        }
        *self.last_error.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = result.err();
    }

    fn len(&self) -> usize {
        self.keys.read().map(|keys| keys.len()).unwrap_or_default()
    }

    fn replace(&self, bytes: &[u8]) -> Result<(), String> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else { continue };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
                || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
            {
                continue;
            }
            let alg = jwk.common.key_algorithm.and_then(|alg| alg.to_string().parse::<Algorithm>().ok());
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), (key, alg));
            }
        }
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        Ok(())
    }
}

/// Largest JWKS accepted: real ones are a few KiB.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// Fetches a JWKS; the client bounds the whole request in time.
async fn fetch_url(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(format!("larger than {JWKS_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn check_config(index: usize, issuer: &IssuerConfig) -> Result<(), (String, String, String)> {
    let key = |name: &str| format!("auth.issuers[{index}].{name}");
    if issuer.issuer.is_empty() {
        return Err((
            key("issuer"),
            "\"\"".to_owned(),
            "expected the iss value the provider's tokens carry".to_owned(),
        ));
    }
    if issuer.audiences.is_empty() && !issuer.allow_any_audience {
        return Err((
            key("audiences"),
            "[]".to_owned(),
            "expected the aud value(s) your provider puts in tokens meant for RoomControl (or allow_any_audience = true, which accepts tokens issued for any application)".to_owned(),
        ));
    }
    if issuer.jwks_url.is_some() && issuer.jwks_min_refresh_interval < Duration::from_secs(1) {
        return Err((
            key("jwks_min_refresh_interval"),
            format!("{:?}", crate::duration::display(issuer.jwks_min_refresh_interval)),
            "expected at least 1s: it is what keeps a flood of unknown key ids from hammering the provider".to_owned(),
        ));
    }
    let sources = [
        issuer.secret.is_some(),
        issuer.secret_file.is_some(),
        issuer.public_key_pem.is_some(),
        issuer.public_key_file.is_some(),
        issuer.jwks_file.is_some(),
        issuer.jwks_url.is_some(),
    ];
    if sources.iter().filter(|set| **set).count() != 1 {
        return Err((
            format!("auth.issuers[{index}]"),
            format!("{:?}", issuer.issuer),
            "expected exactly one of secret, secret_file, public_key_pem, public_key_file, jwks_file, jwks_url"
                .to_owned(),
        ));
    }
    let symmetric = issuer.secret.is_some() || issuer.secret_file.is_some();
    for alg in &issuer.algorithms {
        let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        if hmac != symmetric {
            return Err((
                key("algorithms"),
                format!("{alg:?}"),
                if symmetric {
                    "expected HS256, HS384 or HS512 with a shared secret".to_owned()
                } else {
                    "expected RS*, PS*, ES* or EdDSA with a public key or JWKS (never HS* with a public key)".to_owned()
                },
            ));
        }
    }
    if let Some(url) = &issuer.jwks_url {
        let parsed =
            url::Url::parse(url).map_err(|_| (key("jwks_url"), format!("{url:?}"), "expected a URL".to_owned()))?;
        let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err((
                key("jwks_url"),
                format!("{url:?}"),
                "expected an https:// URL (http:// only on loopback)".to_owned(),
            ));
        }
    }
    for scopes in issuer.scope_map.values() {
        for scope in scopes {
            if Scope::from_name(scope).is_none() {
                return Err((key("scope_map"), format!("{scope:?}"), scope_names()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_found_by_name_or_dotted_path() {
        let claims = serde_json::json!({
            "scope": "rooms:read tokens:create",
            "realm_access": {"roles": ["rooms:write"]},
            "cognito:groups": ["admins"],
        });
        assert_eq!(strings(claim(&claims, "scope")), ["rooms:read", "tokens:create"]);
        assert_eq!(strings(claim(&claims, "realm_access.roles")), ["rooms:write"]);
        assert_eq!(strings(claim(&claims, "cognito:groups")), ["admins"]);
        assert!(strings(claim(&claims, "missing.path")).is_empty());
    }
}
