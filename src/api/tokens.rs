//! CreateToken: signs a LiveKit join token in-process.

use prost_types::Timestamp;

use serde_json::json;

use super::{Audit, record_room};
use crate::auth::{Caller, Scope, policy};
use crate::bans::Bans;
use crate::config::{SelfServiceConfig, TokenConfig};
use crate::error::ApiError;
use crate::events::EncodedStruct;
use crate::proto::v1::*;
use crate::rpc::Rpc;
use crate::tokens::{JoinGrant, TokenSigner};
use crate::{track_sources, validate};

/// CreateToken for an authenticated caller: `tokens:create` mints for any
/// identity in the caller's rooms; `tokens:create:self` only for the caller
/// itself, within the self-service policy.
pub async fn authorized_create_token(
    signer: &TokenSigner,
    limits: &TokenConfig,
    self_service: &SelfServiceConfig,
    bans: &Bans,
    caller: &Caller,
    mut request: CreateTokenRequest,
    audit: &Audit,
) -> Result<CreateTokenResponse, ApiError> {
    caller.authorize(Rpc::CreateToken, None)?;
    let for_anyone = caller.has(Scope::TokensCreate);
    if !for_anyone && request.identity.is_empty() {
        request.identity = caller.subject().to_owned();
    }
    let mut ttl = validate(limits, &request)?;
    if !for_anyone && request.ttl.is_none() {
        // No lifetime asked: the default, within the self-service cap.
        ttl = ttl.min(self_service.max_ttl);
    }
    let request = if for_anyone {
        caller.authorize_room(&request.room)?;
        request
    } else {
        let request = policy::self_service(caller, self_service, request, ttl)?;
        // The policy fills in the identity and name from the credential:
        // they obey the same limits as what a caller sends.
        validate(limits, &request)?;
        request
    };
    // Whoever asks: a banned identity gets no token for a room its ban
    // covers.
    if let Some(ban) = bans.matching(&request.identity, &request.room) {
        return Err(ApiError::Banned {
            until: crate::bans::until(&ban),
            reason: if ban.reason.is_empty() { String::new() } else { format!(": {}", ban.reason) },
            identity: ban.identity,
            room: request.room,
            ban_id: ban.id,
        });
    }
    // Recorded before the token exists: no token leaves unrecorded.
    let detail = encoded_token_detail(&request, ttl, for_anyone);
    audit
        .require_encoded(Rpc::CreateToken, &request.room, &request.identity, &detail, || {
            token_detail(&request, ttl, for_anyone)
        })
        .await?;
    sign(signer, request, ttl)
}

/// [`token_detail`], written straight to the bytes of the `Struct` the
/// timeline stores (the same bytes): every CreateToken makes one.
fn encoded_token_detail(request: &CreateTokenRequest, ttl: std::time::Duration, for_anyone: bool) -> EncodedStruct {
    let default = TokenPermissions::default();
    let permissions = request.permissions.as_ref().unwrap_or(&default);
    let sources = permissions
        .can_publish_sources
        .iter()
        .filter_map(|source| track_sources::from_proto(*source))
        .map(|source| source.name);
    let mut detail = EncodedStruct::with_capacity(256);
    // In the order of the names.
    detail
        .strings("attributes", request.attributes.keys())
        .optional_bool("canPublish", permissions.can_publish)
        .optional_bool("canPublishData", permissions.can_publish_data)
        .strings("canPublishSources", sources)
        .optional_bool("canSubscribe", permissions.can_subscribe)
        .optional_bool("canUpdateOwnMetadata", permissions.can_update_own_metadata)
        .optional_bool("hidden", permissions.hidden)
        .number("metadataBytes", request.metadata.len() as f64)
        .string("name", &request.name)
        .bool("selfService", !for_anyone)
        .string("ttl", &crate::duration::display(ttl));
    detail
}

/// What the timeline says about a minted token: its lifetime and
/// permissions (never the token).
fn token_detail(request: &CreateTokenRequest, ttl: std::time::Duration, for_anyone: bool) -> serde_json::Value {
    let default = TokenPermissions::default();
    let permissions = request.permissions.as_ref().unwrap_or(&default);
    let sources: Vec<&str> = permissions
        .can_publish_sources
        .iter()
        .filter_map(|source| track_sources::from_proto(*source))
        .map(|source| source.name)
        .collect();
    json!({
        "selfService": !for_anyone,
        "name": request.name,
        "ttl": crate::duration::display(ttl),
        "canPublish": permissions.can_publish,
        "canSubscribe": permissions.can_subscribe,
        "canPublishData": permissions.can_publish_data,
        "canPublishSources": sources,
        "canUpdateOwnMetadata": permissions.can_update_own_metadata,
        "hidden": permissions.hidden,
        "metadataBytes": request.metadata.len(),
        "attributes": request.attributes.keys().collect::<Vec<_>>(),
    })
}

/// Validates a token request and signs the token, with no caller policy:
/// the `roomcontrol token` command, run by whoever holds the API secret.
pub fn create_token(
    signer: &TokenSigner,
    limits: &TokenConfig,
    request: CreateTokenRequest,
) -> Result<CreateTokenResponse, ApiError> {
    let ttl = validate(limits, &request)?;
    sign(signer, request, ttl)
}

/// Checks the request's fields; returns the lifetime to give the token.
fn validate(limits: &TokenConfig, request: &CreateTokenRequest) -> Result<std::time::Duration, ApiError> {
    let ttl = validate::create_token(limits, request)?;
    record_room(&request.room);
    Ok(ttl)
}

fn sign(
    signer: &TokenSigner,
    request: CreateTokenRequest,
    ttl: std::time::Duration,
) -> Result<CreateTokenResponse, ApiError> {
    let permissions = request.permissions.unwrap_or_default();

    let name = if request.name.is_empty() { request.identity.clone() } else { request.name };
    let grant = JoinGrant {
        room: request.room,
        identity: request.identity,
        name,
        metadata: request.metadata,
        attributes: request.attributes,
        ttl,
        can_publish: permissions.can_publish,
        can_subscribe: permissions.can_subscribe,
        // LiveKit reads an absent canPublishData as canPublish, while its
        // SDKs' verifiers read it as true: when publishing is refused, say
        // that data is refused too, so every reader agrees.
        can_publish_data: permissions.can_publish_data.or((permissions.can_publish == Some(false)).then_some(false)),
        can_publish_sources: permissions
            .can_publish_sources
            .iter()
            .filter_map(|source| track_sources::from_proto(*source))
            .map(|source| source.name)
            .collect(),
        can_update_own_metadata: permissions.can_update_own_metadata,
        hidden: permissions.hidden.unwrap_or(false),
    };
    let signed = signer.sign(&grant)?;
    Ok(CreateTokenResponse {
        token: signed.token,
        server_url: signed.server_url,
        identity: grant.identity,
        room: grant.room,
        expires_at: Some(Timestamp { seconds: signed.expires_at as i64, nanos: 0 }),
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The timeline stores the same bytes as when the detail went through
    /// JSON and a `Struct`: events read back as they did.
    #[test]
    fn the_encoded_detail_is_the_json_detail_encoded() {
        let full = CreateTokenRequest {
            room: "standup".into(),
            identity: "alice".into(),
            name: "Alice \"A\" é".into(),
            metadata: "x".repeat(200),
            attributes: [("team", "blue"), ("", "empty"), ("role", "host")]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            ttl: None,
            permissions: Some(TokenPermissions {
                can_publish: Some(true),
                can_subscribe: Some(false),
                can_publish_data: None,
                can_publish_sources: vec![TrackSource::Camera as i32, TrackSource::Microphone as i32, 9999],
                can_update_own_metadata: Some(true),
                hidden: Some(false),
            }),
        };
        let bare = CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() };
        for (request, ttl, for_anyone) in [
            (&full, std::time::Duration::from_secs(6 * 3600), true),
            (&full, std::time::Duration::from_millis(90_500), false),
            (&bare, std::time::Duration::from_secs(1), true),
        ] {
            let serde_json::Value::Object(json) = token_detail(request, ttl, for_anyone) else { panic!("an object") };
            let expected = crate::events::to_struct(json).encode_to_vec();
            assert_eq!(encoded_token_detail(request, ttl, for_anyone).as_bytes(), expected, "{request:?}");
        }
    }
}
