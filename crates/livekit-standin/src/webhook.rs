//! What a livekit-server webhook is on the wire: the body, the signature and
//! the record the stand-in keeps of each attempt to send one. Queues, retries
//! and the HTTP client live in `notifier.rs`.
//!
//! From protocol v1.50 `webhook/resource_url_notifier.go` (`send`) and
//! `auth/accesstoken.go` (`ToJWT`), server v1.13.5 `pkg/telemetry/events.go`
//! (`NotifyEvent`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use livekit_protocol as proto;
use sha2::{Digest, Sha256};

use crate::protojson;
use crate::twirp::go_json_string;

/// The `Content-Type` of every webhook POST (a custom type, so that a
/// receiver checks the signature before it parses anything).
pub const WEBHOOK_CONTENT_TYPE: &str = "application/webhook+json";

/// The `User-Agent` of every webhook POST (`DefaultUserAgent`).
pub const WEBHOOK_USER_AGENT: &str = "LiveKit";

/// How long a webhook token is valid (`SetValidFor(5 * time.Minute)`).
pub const WEBHOOK_TOKEN_VALIDITY_SECS: i64 = 5 * 60;

/// The body LiveKit sends for `event`: `protojson.Marshal` with the default
/// options (lowerCamelCase names, only populated fields, 64-bit integers as
/// strings, enums by name), with Go's random spaces after commas. Two calls
/// for one event can differ in those spaces: sign and send the bytes of one
/// call.
pub fn webhook_body(event: &proto::WebhookEvent) -> Vec<u8> {
    protojson::to_protojson("WebhookEvent", event).with_random_spaces()
}

/// The `Authorization` header LiveKit sends with `body`: a bare JWT (no
/// `Bearer ` prefix), HS256 with `api_secret`, claims `iss` = `api_key`,
/// `exp` = now + 5 min, `nbf` = `iat` = now and `sha256` = the standard
/// base64 (padded) of the SHA-256 of `body`. No `sub`, no `video`.
pub fn sign_webhook(api_key: &str, api_secret: &str, body: &[u8]) -> String {
    sign_webhook_at(api_key, api_secret, body, SystemTime::now())
}

/// [`sign_webhook`] as if signed at `issued_at`, e.g. to forge a token
/// that has expired (`issued_at` more than 5 minutes ago).
pub fn sign_webhook_at(api_key: &str, api_secret: &str, body: &[u8], issued_at: SystemTime) -> String {
    let iat = match issued_at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let sha256 = STANDARD.encode(Sha256::digest(body));
    // golang-jwt: the header is a Go map (keys sorted), the claims
    // `RegisteredClaims` then `ClaimGrants` with empty fields left out, both
    // through encoding/json.
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = format!(
        r#"{{"iss":{},"exp":{},"nbf":{iat},"iat":{iat},"sha256":{}}}"#,
        go_json_string(api_key),
        iat + WEBHOOK_TOKEN_VALIDITY_SECS,
        go_json_string(&sha256),
    );
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(api_secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// What became of one attempt to send a webhook to one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered with this HTTP status (the body is ignored).
    Status(u16),
    /// No HTTP answer (refused, reset, closed mid-request, ...): the error.
    ConnectionError(String),
    /// Never sent: lost on purpose by [`crate::StandIn::drop_webhooks`].
    Dropped,
    /// Never sent: the URL's queue for the room already held
    /// `webhook_queue_depth` events (LiveKit only logs it).
    QueueFull,
    /// Never sent: it waited in the queue longer than `webhook_max_age`
    /// (LiveKit only logs it).
    Expired,
}

impl WebhookOutcome {
    /// The receiver answered 2xx.
    pub fn is_success(&self) -> bool {
        matches!(self, WebhookOutcome::Status(status) if (200..300).contains(status))
    }

    /// `retryablehttp`'s `baseRetryPolicy`: connection errors, 429 and 5xx
    /// except 501 are retried; every other answer is final.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            WebhookOutcome::Status(status) => *status == 429 || (*status >= 500 && *status != 501),
            WebhookOutcome::ConnectionError(_) => true,
            WebhookOutcome::Dropped | WebhookOutcome::QueueFull | WebhookOutcome::Expired => false,
        }
    }
}

/// One attempt to send a webhook to one URL, or an event given up before
/// any attempt (then `attempt` is 0).
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// The receiver's URL, as configured.
    pub url: String,
    /// The event's name, e.g. "participant_joined".
    pub event: String,
    /// The event's id (`EV_...`): the same on every URL and every retry.
    pub id: String,
    /// The room the event is about (its queue's key); for egress events,
    /// whose queue is their egress's, the egress id.
    pub room: String,
    /// 1 for the first POST, up to 5 (four retries); 0 if never sent.
    pub attempt: u32,
    pub outcome: WebhookOutcome,
    /// The exact body bytes (the same on every URL and every retry).
    pub body: Bytes,
    /// The exact `Authorization` header sent (one token per URL, reused by
    /// its retries); empty if never sent.
    pub authorization: String,
    /// When the outcome was known: the answer or error came back, or the
    /// event was given up. Consecutive attempts are at least the retry
    /// wait apart.
    pub at: Instant,
}

impl WebhookDelivery {
    /// The event, decoded from [`WebhookDelivery::body`].
    ///
    /// # Panics
    /// Never for a body the stand-in wrote.
    pub fn decode(&self) -> proto::WebhookEvent {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("livekit-standin: a webhook body that does not decode: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_golang_jwt_byte_for_byte() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let token = sign_webhook_at("devkey", "secret", b"{}", at);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        // sha256("{}") = 44136fa3...; standard base64 with padding
        assert_eq!(
            claims,
            r#"{"iss":"devkey","exp":1700000300,"nbf":1700000000,"iat":1700000000,"sha256":"RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o="}"#
        );
    }

    #[test]
    fn the_token_verifies_with_the_secret() {
        crate::auth::install_crypto_provider();
        let token = sign_webhook("devkey", "secret", b"body");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["devkey"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sha256"], STANDARD.encode(Sha256::digest(b"body")));
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &jsonwebtoken::DecodingKey::from_secret(b"other"),
                &validation
            )
            .is_err()
        );
    }

    #[test]
    fn only_connection_errors_429_and_5xx_but_501_are_retried() {
        let retried: Vec<u16> = [200, 204, 301, 400, 401, 404, 429, 500, 501, 502, 503, 599]
            .into_iter()
            .filter(|s| WebhookOutcome::Status(*s).is_retryable())
            .collect();
        assert_eq!(retried, [429, 500, 502, 503, 599]);
        assert!(WebhookOutcome::ConnectionError("refused".into()).is_retryable());
    }
}
