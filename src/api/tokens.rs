//! CreateToken: signs a LiveKit join token in-process.

use prost_types::Timestamp;

use super::participants::check_sources;
use super::{convert, record_room};
use crate::config::TokenConfig;
use crate::error::ApiError;
use crate::livekit::{JoinGrant, TokenSigner};
use crate::proto::v1::*;
use crate::validate::Violations;

/// Validates a token request and signs the token. Shared by the RPC and the
/// `roomcontrol token` command, so both apply the same rules.
pub fn create_token(
    signer: &TokenSigner,
    policy: &TokenConfig,
    request: CreateTokenRequest,
) -> Result<CreateTokenResponse, ApiError> {
    let mut violations = Violations::new();
    violations.room_name("room", &request.room);
    violations.identity("identity", &request.identity);
    violations.display_name("name", &request.name);
    violations.metadata("metadata", &request.metadata);
    violations.attributes("attributes", &request.attributes);
    let ttl = violations.ttl("ttl", request.ttl.as_ref(), policy.default_ttl, policy.max_ttl);
    let permissions = request.permissions.unwrap_or_default();
    check_sources(&mut violations, "permissions.can_publish_sources", &permissions.can_publish_sources);
    violations.into_result()?;
    record_room(&request.room);

    let name = if request.name.is_empty() { request.identity.clone() } else { request.name };
    let grant = JoinGrant {
        room: request.room.clone(),
        identity: request.identity.clone(),
        name,
        metadata: request.metadata,
        attributes: request.attributes,
        ttl,
        can_publish: permissions.can_publish,
        can_subscribe: permissions.can_subscribe,
        can_publish_data: permissions.can_publish_data,
        can_publish_sources: permissions
            .can_publish_sources
            .iter()
            .filter_map(|s| convert::source_token_name(*s))
            .collect(),
        can_update_own_metadata: permissions.can_update_own_metadata,
        hidden: permissions.hidden.unwrap_or(false),
    };
    let signed = signer.sign(grant)?;
    Ok(CreateTokenResponse {
        token: signed.token,
        server_url: signed.server_url,
        identity: request.identity,
        room: request.room,
        expires_at: Some(Timestamp { seconds: signed.expires_at as i64, nanos: 0 }),
    })
}
