//! LiveKit's webhooks, as a test sends them itself: signed like LiveKit
//! signs them, with the JSON LiveKit's Go encoder writes (stray spaces
//! after some commas included).

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::TestApp;

/// The `Authorization` value LiveKit sends: a raw HS256 JWT, no `Bearer `.
pub fn sign(api_key: &str, api_secret: &str, body: &[u8]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "iss": api_key,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "sha256": base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body)),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(api_secret.as_bytes()),
    )
    .unwrap()
}

/// A webhook body as LiveKit's protojson writes it: a space after every
/// other top-level comma, as Go's encoder randomly does.
pub fn body(event: &Value) -> Vec<u8> {
    let compact = event.to_string();
    let mut out = String::with_capacity(compact.len() + 8);
    let (mut depth, mut in_string, mut escaped, mut commas) = (0, false, false, 0);
    for c in compact.chars() {
        out.push(c);
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 1 => {
                commas += 1;
                if commas % 2 == 1 {
                    out.push(' ');
                }
            }
            _ => {}
        }
    }
    out.into_bytes()
}

/// A room and participant event as LiveKit sends it.
pub fn event(name: &str, id: &str, room: (&str, &str), participant: Option<(&str, &str)>) -> Value {
    let mut event = json!({
        "event": name,
        "id": id,
        "createdAt": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string(),
        "room": { "sid": room.1, "name": room.0, "emptyTimeout": 300, "creationTime": "1700000000" },
    });
    if let Some((identity, sid)) = participant {
        event["participant"] = json!({
            "sid": sid,
            "identity": identity,
            "state": "ACTIVE",
            "joinedAt": "1700000001",
            "name": identity,
            "permission": { "canSubscribe": true, "canPublish": true, "canPublishData": true },
        });
    }
    event
}

/// What the intake answered.
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl TestApp {
    /// Posts a webhook signed with the app's LiveKit key.
    pub async fn post_webhook(&self, event: &Value) -> Answer {
        let body = body(event);
        let authorization = sign(&self.livekit.api_key, &self.livekit.api_secret, &body);
        self.post_webhook_raw(body, Some(authorization)).await
    }

    /// Posts exactly these bytes with this `Authorization` value.
    pub async fn post_webhook_raw(&self, body: Vec<u8>, authorization: Option<String>) -> Answer {
        // One client for every webhook of the test binary, as LiveKit keeps
        // its connections.
        static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        let mut request = CLIENT
            .get_or_init(reqwest::Client::new)
            .post(format!("{}/livekit/webhook", self.http_url()))
            .header("content-type", "application/webhook+json")
            .body(body);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.expect("the intake answers");
        let status = response.status().as_u16();
        Answer { status, text: response.text().await.unwrap_or_default() }
    }
}
