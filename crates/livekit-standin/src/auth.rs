//! Request authentication, step for step as livekit-server does it.
//!
//! `pkg/service/auth.go` (`APIKeyAuthMiddleware`) with protocol
//! `auth/verifier.go` (`ParseAPIToken`, `Verify`) on golang-jwt v5.3:
//!
//! 1. `Authorization` present but not starting with `Bearer ` ->
//!    401 "invalid authorization header. Must start with Bearer ".
//!    No header: the `access_token` query parameter is used instead; no token
//!    at all lets the request through with no grants.
//! 2. The token is parsed without verification (three segments, base64url
//!    header and claims, JSON, a known `alg`); any failure -> 401
//!    "invalid authorization token".
//! 3. `iss` names the API key; an unknown key -> 401 "invalid API key".
//! 4. Verification, in golang-jwt's order: claims decode (grants included),
//!    `alg` must be HS256, HMAC signature, then `exp` (required) and `nbf`
//!    with one minute of leeway. Failures -> 401
//!    "invalid authorization token: <golang-jwt error text>".
//!
//! All of these 401s are plain text (`HandleError` writes `err.Error()`).

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey};
use livekit_api::access_token::Claims;
use serde_json::{Map, Value};

/// What the authentication middleware concluded about a request.
#[derive(Debug, Clone)]
pub(crate) enum AuthResult {
    /// No token anywhere: the request proceeds with no grants.
    NoToken,
    /// A token signed with a known key, verified.
    Verified { api_key: String, claims: Box<Claims> },
    /// Rejected with a plain-text 401 carrying this message.
    Rejected(String),
}

const BEARER: &str = "Bearer ";
const LEEWAY_SECS: f64 = 60.0;

const ERR_MISSING_AUTHORIZATION: &str = "invalid authorization header. Must start with Bearer ";
const ERR_INVALID_TOKEN: &str = "invalid authorization token";
const ERR_INVALID_API_KEY: &str = "invalid API key";

/// The signing methods golang-jwt v5 registers; any other `alg` fails parsing.
const KNOWN_ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
    "EdDSA", "none",
];

/// Installs jsonwebtoken's RustCrypto provider for the process unless one is
/// already installed (e.g. livekit-api's HMAC-only one, which is enough here).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    });
}

pub(crate) fn authenticate(
    authorization: Option<&str>,
    query_token: Option<String>,
    secret_for: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> AuthResult {
    let token = match authorization {
        Some(h) if !h.is_empty() => match h.strip_prefix(BEARER) {
            Some(t) => t.to_owned(),
            None => return AuthResult::Rejected(ERR_MISSING_AUTHORIZATION.to_owned()),
        },
        _ => query_token.unwrap_or_default(),
    };
    if token.is_empty() {
        return AuthResult::NoToken;
    }

    let Some(parsed) = parse_unverified(&token) else {
        return AuthResult::Rejected(ERR_INVALID_TOKEN.to_owned());
    };
    let Some(secret) = secret_for(&parsed.iss).filter(|s| !s.is_empty()) else {
        return AuthResult::Rejected(ERR_INVALID_API_KEY.to_owned());
    };
    match verify(&token, &parsed, &secret, now) {
        Ok(claims) => AuthResult::Verified { api_key: parsed.iss, claims: Box::new(claims) },
        Err(e) => AuthResult::Rejected(format!("{ERR_INVALID_TOKEN}: {e}")),
    }
}

struct Parsed {
    alg: String,
    iss: String,
    sub: String,
    exp: Option<f64>,
    nbf: Option<f64>,
    claims: Map<String, Value>,
    signing_input_len: usize,
}

/// `ParseAPIToken`: jwt.ParseUnverified into `jwt.RegisteredClaims`.
fn parse_unverified(token: &str) -> Option<Parsed> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    let claims: Value = serde_json::from_slice(&b64url_decode(c)?).ok()?;
    let header = match header {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return None,
    };
    let claims = match claims {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return None,
    };
    let iss = string_claim(&claims, "iss")?;
    let sub = string_claim(&claims, "sub")?;
    string_claim(&claims, "jti")?;
    audience_ok(&claims).then_some(())?;
    let exp = date_claim(&claims, "exp")?;
    let nbf = date_claim(&claims, "nbf")?;
    date_claim(&claims, "iat")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) if KNOWN_ALGS.contains(&a.as_str()) => a.clone(),
        _ => return None,
    };
    b64url_decode(s)?;
    Some(Parsed { alg, iss, sub, exp, nbf, claims, signing_input_len: h.len() + 1 + c.len() })
}

/// `APIKeyTokenVerifier.Verify`; the error is golang-jwt's text.
fn verify(token: &str, parsed: &Parsed, secret: &str, now: SystemTime) -> Result<Claims, String> {
    let claims =
        decode_grants(parsed).map_err(|e| format!("token is malformed: could not JSON decode claim: json: {e}"))?;
    if parsed.alg != "HS256" {
        return Err(format!("token signature is invalid: signing method {} is invalid", parsed.alg));
    }
    install_crypto_provider();
    let signing_input = &token[..parsed.signing_input_len];
    let signature = &token[parsed.signing_input_len + 1..];
    let valid = jsonwebtoken::crypto::verify(
        signature,
        signing_input.as_bytes(),
        &DecodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap_or(false);
    if !valid {
        return Err("token signature is invalid: signature is invalid".to_owned());
    }

    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let mut errs = Vec::new();
    match parsed.exp {
        None => errs.push("token is missing required claim: exp claim is required"),
        Some(exp) if now >= exp.floor() + LEEWAY_SECS => errs.push("token is expired"),
        Some(_) => {}
    }
    if let Some(nbf) = parsed.nbf
        && now < nbf.floor() - LEEWAY_SECS
    {
        errs.push("token is not valid yet");
    }
    if !errs.is_empty() {
        return Err(format!("token has invalid claims: {}", errs.join(", ")));
    }
    Ok(claims)
}

/// The top-level claim names of `tokenClaims` (RegisteredClaims + ClaimGrants).
const GRANT_KEYS: &[&str] = &[
    "name",
    "kind",
    "video",
    "sip",
    "agent",
    "agentEndpoint",
    "agentThread",
    "inference",
    "observability",
    "roomConfig",
    "sha256",
    "metadata",
    "attributes",
];

const VIDEO_KEYS: &[&str] = &[
    "roomCreate",
    "roomList",
    "roomRecord",
    "roomAdmin",
    "roomJoin",
    "room",
    "destinationRoom",
    "canPublish",
    "canSubscribe",
    "canPublishData",
    "canPublishSources",
    "canUpdateOwnMetadata",
    "ingressAdmin",
    "hidden",
    "recorder",
    "agent",
];

/// Decodes the grants as Go's encoding/json would into `ClaimGrants`: keys
/// match case-insensitively, `null` leaves a field unset, unknown keys are
/// ignored, a wrong type is an error.
fn decode_grants(parsed: &Parsed) -> Result<Claims, serde_json::Error> {
    let mut grants = normalize(&parsed.claims, GRANT_KEYS);
    if let Some(Value::Object(video)) = grants.get("video") {
        let video = normalize(video, VIDEO_KEYS);
        grants.insert("video".to_owned(), Value::Object(video));
    }
    let mut claims: Claims = serde_json::from_value(Value::Object(grants))?;
    claims.iss = parsed.iss.clone();
    claims.sub = parsed.sub.clone();
    claims.exp = parsed.exp.map(|e| e.max(0.0) as usize).unwrap_or(0);
    claims.nbf = parsed.nbf.map(|e| e.max(0.0) as usize).unwrap_or(0);
    Ok(claims)
}

fn normalize(obj: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for key in known {
        if let Some(v) = get_ci(obj, key).filter(|v| !v.is_null()) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    out
}

/// encoding/json's field matching: the exact name first, then any key equal
/// under case folding.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn string_claim(claims: &Map<String, Value>, key: &str) -> Option<String> {
    match get_ci(claims, key) {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => None,
    }
}

/// `jwt.NumericDate`: a JSON number, or a string holding a valid number
/// (decoded through `json.Number`). `Some(None)` when absent.
#[allow(clippy::option_option)]
fn date_claim(claims: &Map<String, Value>, key: &str) -> Option<Option<f64>> {
    match get_ci(claims, key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_f64().map(Some),
        Some(Value::String(s)) => serde_json::from_str::<serde_json::Number>(s).ok().and_then(|n| n.as_f64()).map(Some),
        Some(_) => None,
    }
}

/// `jwt.ClaimStrings`: a string or an array of strings.
fn audience_ok(claims: &Map<String, Value>) -> bool {
    match get_ci(claims, "aud") {
        None | Some(Value::Null) | Some(Value::String(_)) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        Some(_) => false,
    }
}

/// Go's `base64.RawURLEncoding.DecodeString` (not strict): URL alphabet, no
/// padding, CR and LF ignored, stray trailing bits accepted.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut count = 0usize;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        count += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if count % 4 == 1 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..10 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(b64url_decode(&b64(&data)).unwrap(), data);
        }
        assert!(b64url_decode("abc=").is_none());
        assert!(b64url_decode("a").is_none());
    }

    fn token(claims: &str, alg: &str, secret: &str) -> String {
        install_crypto_provider();
        let signing =
            format!("{}.{}", b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes()), b64(claims.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(
            signing.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing}.{sig}")
    }

    fn check(tok: &str, now: u64) -> AuthResult {
        authenticate(
            Some(&format!("Bearer {tok}")),
            None,
            |k| (k == "devkey").then(|| "secret".to_owned()),
            UNIX_EPOCH + Duration::from_secs(now),
        )
    }

    fn rejection(r: AuthResult) -> String {
        match r {
            AuthResult::Rejected(m) => m,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn grants_are_decoded_case_insensitively_like_go() {
        let t = token(
            r#"{"iss":"devkey","exp":2000,"video":{"RoomAdmin":true,"room":"r","roomList":null}}"#,
            "HS256",
            "secret",
        );
        match check(&t, 1000) {
            AuthResult::Verified { claims, api_key } => {
                assert_eq!(api_key, "devkey");
                assert!(claims.video.room_admin);
                assert_eq!(claims.video.room, "r");
                assert_eq!(claims.exp, 2000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expiry_has_one_minute_of_leeway() {
        let t = token(r#"{"iss":"devkey","exp":1000}"#, "HS256", "secret");
        assert!(matches!(check(&t, 1059), AuthResult::Verified { .. }));
        assert_eq!(
            rejection(check(&t, 1060)),
            "invalid authorization token: token has invalid claims: token is expired"
        );
    }

    #[test]
    fn missing_exp_and_early_nbf_are_both_reported() {
        let t = token(r#"{"iss":"devkey","nbf":5000}"#, "HS256", "secret");
        assert_eq!(
            rejection(check(&t, 1000)),
            "invalid authorization token: token has invalid claims: token is missing required claim: exp claim is required, token is not valid yet"
        );
    }

    #[test]
    fn other_algorithms_and_bad_signatures_are_refused() {
        let t = token(r#"{"iss":"devkey","exp":2000}"#, "HS512", "secret");
        assert_eq!(
            rejection(check(&t, 1000)),
            "invalid authorization token: token signature is invalid: signing method HS512 is invalid"
        );
        let t = token(r#"{"iss":"devkey","exp":2000}"#, "HS256", "other");
        assert_eq!(
            rejection(check(&t, 1000)),
            "invalid authorization token: token signature is invalid: signature is invalid"
        );
        let t = token(r#"{"iss":"nokey","exp":2000}"#, "HS256", "secret");
        assert_eq!(rejection(check(&t, 1000)), "invalid API key");
        assert_eq!(rejection(check("a.b", 1000)), "invalid authorization token");
    }
}
