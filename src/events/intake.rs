//! `POST /livekit/webhook` (`events.webhook_path`): LiveKit's webhooks in.
//!
//! Checked as LiveKit sends them: the raw JWT in `Authorization` (a
//! `Bearer ` prefix is accepted too), HS256-signed with the secret of the
//! LiveKit API key named by its `iss` (`livekit.api_key`, or one of
//! `events.webhook_keys` during a rotation), `exp` and `nbf` with a minute
//! of leeway, and its `sha256` claim equal, in constant time, to the
//! SHA-256 of the exact bytes received (LiveKit's Go encoder puts stray
//! spaces in its JSON, so nothing is re-encoded).
//!
//! Answers: 200 once the event is durably stored (or was stored before:
//! LiveKit's retries carry the same id); 401 for a missing or bad
//! signature, 400 for a body that is not a LiveKit event, 413 for one over
//! `events.webhook_max_body_bytes`, 408 for one not received within
//! `server.request_body_timeout`: none of them is stored, and LiveKit does
//! not retry them. 503 when the store fails: LiveKit retries it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::body::Body;

use super::{Appended, Timeline, from_webhook};
use crate::bans::Bans;
use crate::config::Config;
use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::store::Presence;

/// LiveKit's signing clock and ours may disagree by this much.
const LEEWAY_SECS: u64 = 60;

/// What the intake needs, shared by every request.
pub struct Intake {
    keys: HashMap<String, DecodingKey>,
    max_body_bytes: usize,
    body_timeout: Duration,
    timeline: Timeline,
    metrics: Arc<Metrics>,
    /// A banned identity that joins anyway is removed at once.
    bans: Bans,
    livekit: Arc<LiveKit>,
    /// `agents.max_redispatches`.
    max_redispatches: u32,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys' names only: never a secret.
        f.debug_struct("Intake").field("keys", &self.keys.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sha256: String,
}

#[derive(Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: String,
}

/// Why a webhook was refused, with the status LiveKit gets.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    outcome: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Self {
        Self { status, outcome, message: message.into() }
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl Intake {
    pub fn new(
        config: &Config,
        timeline: Timeline,
        metrics: Arc<Metrics>,
        bans: Bans,
        livekit: Arc<LiveKit>,
    ) -> Arc<Intake> {
        let mut keys = HashMap::new();
        for key in &config.events.webhook_keys {
            keys.insert(key.api_key.clone(), DecodingKey::from_secret(key.api_secret.expose_secret().as_bytes()));
        }
        keys.insert(
            config.livekit.api_key.clone(),
            DecodingKey::from_secret(config.livekit.api_secret.expose_secret().as_bytes()),
        );
        Arc::new(Intake {
            keys,
            max_body_bytes: config.events.webhook_max_body_bytes,
            body_timeout: config.server.request_body_timeout,
            timeline,
            metrics,
            bans,
            livekit,
            max_redispatches: config.agents.max_redispatches,
        })
    }

    /// Answers one webhook request.
    pub async fn handle(self: Arc<Self>, request: Request<Body>) -> Result<Response<Body>, Infallible> {
        let (status, outcome, message) = match self.receive(request).await {
            Ok(Appended::Stored(cursor)) => (StatusCode::OK, "stored", format!("stored at cursor {cursor}")),
            Ok(Appended::Duplicate) => (StatusCode::OK, "duplicate", "already stored".to_owned()),
            Err(refusal) => {
                tracing::warn!(status = refusal.status.as_u16(), reason = %refusal.message, "webhook refused");
                (refusal.status, refusal.outcome, refusal.message)
            }
        };
        self.metrics.webhook_received(outcome);
        let mut response = Response::new(Body::new(Full::new(Bytes::from(message + "\n"))));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        Ok(response)
    }

    async fn receive(&self, request: Request<Body>) -> Result<Appended, Refusal> {
        if request.method() != http::Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                "LiveKit's webhooks are POSTed here; nothing else is",
            ));
        }
        let token = bearer_or_raw(request.headers())?.to_owned();
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over events.webhook_max_body_bytes ({} bytes)", self.max_body_bytes),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_body_bytes as u64) {
            return Err(too_large());
        }
        let read = Limited::new(request.into_body(), self.max_body_bytes).collect();
        let body = match tokio::time::timeout(self.body_timeout, read).await {
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "bad_request",
                    format!(
                        "the body did not arrive within server.request_body_timeout ({})",
                        crate::duration::display(self.body_timeout)
                    ),
                ));
            }
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Ok(Err(error)) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("cannot read the body: {error}"),
                ));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        self.verify(&token, &body)?;
        let (event, presence) = from_webhook(&body, SystemTime::now()).map_err(|error| {
            Refusal::new(StatusCode::BAD_REQUEST, "bad_request", format!("not a LiveKit webhook: {error}"))
        })?;
        let joined = match &presence {
            Presence::ParticipantJoined { room, identity, .. } => Some((room.clone(), identity.clone())),
            _ => None,
        };
        let agent_left = agent_left(&event);
        let appended = self.timeline.append(event, presence).await.map_err(|error| {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "store_failed", format!("not stored, send it again: {error}"))
        })?;
        if let (Appended::Stored(_), Some((room, identity))) = (appended, joined) {
            self.enforce_bans(room, identity);
        }
        if let (Appended::Stored(_), Some((room, identity, reason))) = (appended, agent_left) {
            let (livekit, timeline, max) = (self.livekit.clone(), self.timeline.clone(), self.max_redispatches);
            tokio::spawn(async move {
                crate::api::agents::after_agent_left(&livekit, &timeline, max, &room, &identity, &reason).await;
            });
        }
        Ok(appended)
    }

    /// A participant joined: if a ban keeps its identity out of the room (it
    /// held a token minted before the ban), it is removed now, without
    /// holding LiveKit's webhook answer.
    fn enforce_bans(&self, room: String, identity: String) {
        let Some(ban) = self.bans.matching(&identity, &room) else {
            return;
        };
        let livekit = self.livekit.clone();
        let timeline = self.timeline.clone();
        tokio::spawn(async move {
            match crate::api::bans::enforce(&livekit, &timeline, &ban, &room, None).await {
                Ok(removed) => {
                    tracing::info!(ban = ban.id, room, identity, removed, "a banned identity joined; removed")
                }
                Err(error) => {
                    tracing::warn!(%error, ban = ban.id, room, identity, "a banned identity joined and could not be removed")
                }
            }
        });
    }

    /// The signature, its key, its times, and the body's hash.
    fn verify(&self, token: &str, body: &[u8]) -> Result<(), Refusal> {
        let issuer = unverified_issuer(token)
            .ok_or_else(|| Refusal::unauthorized("the Authorization header is not a JWT with an iss claim"))?;
        let key = self.keys.get(&issuer).ok_or_else(|| {
            Refusal::unauthorized(format!(
                "the webhook is signed with the API key {issuer:?}, which RoomControl does not know (livekit.api_key, events.webhook_keys)"
            ))
        })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|error| Refusal::unauthorized(format!("the webhook's signature does not hold: {error}")))?
            .claims;
        let claimed = base64::engine::general_purpose::STANDARD
            .decode(claims.sha256.as_bytes())
            .map_err(|_| Refusal::unauthorized("the webhook's sha256 claim is missing or not base64"))?;
        let actual = Sha256::digest(body);
        if claimed.len() != actual.len() || !bool::from(claimed.as_slice().ct_eq(&actual[..])) {
            return Err(Refusal::unauthorized("the body's SHA-256 differs from the signed sha256 claim"));
        }
        Ok(())
    }
}

/// An agent's leave: its room, identity and LiveKit's disconnect reason
/// (`UNKNOWN_REASON` when the webhook leaves it out, as protojson does
/// with a zero value).
fn agent_left(event: &crate::proto::v1::Event) -> Option<(String, String, String)> {
    use prost_types::value::Kind;
    if !matches!(event.r#type.as_str(), "participant_left" | "participant_connection_aborted") {
        return None;
    }
    let participant = event.participant.as_ref().filter(|participant| participant.kind == "agent")?;
    let reason = event
        .detail
        .as_ref()
        .and_then(|detail| detail.fields.get("participant"))
        .and_then(|value| match &value.kind {
            Some(Kind::StructValue(fields)) => fields.fields.get("disconnectReason"),
            _ => None,
        })
        .and_then(|value| match &value.kind {
            Some(Kind::StringValue(reason)) => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "UNKNOWN_REASON".to_owned());
    let room = event.room.as_ref().map(|room| room.name.clone()).unwrap_or_default();
    Some((room, participant.identity.clone(), reason))
}

/// The JWT in `Authorization`: raw, as LiveKit sends it, or after `Bearer `.
fn bearer_or_raw(headers: &http::HeaderMap) -> Result<&str, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Refusal::unauthorized("no Authorization header: LiveKit signs every webhook"))?
        .to_str()
        .map_err(|_| Refusal::unauthorized("the Authorization header is not text"))?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value,
    };
    if token.is_empty() {
        return Err(Refusal::unauthorized("the Authorization header is empty"));
    }
    Ok(token)
}

/// The `iss` claim, read before the signature is checked, only to choose
/// the key that checks it.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let issuer: Issuer = serde_json::from_slice(&bytes).ok()?;
    (!issuer.iss.is_empty()).then_some(issuer.iss)
}

/// Whether a request is for the intake.
pub fn is_webhook(path: &str, request: &Request<Body>) -> bool {
    request.uri().path() == path
}
