//! Self-service join tokens: what a caller holding only `tokens:create:self`
//! may ask for. Anything beyond `auth.self_service` is refused with a
//! message naming the rule, never silently trimmed.

use super::Caller;
use crate::config::SelfServiceConfig;
use crate::error::ApiError;
use crate::proto::v1::{CreateTokenRequest, TokenPermissions, TrackSource};
use crate::track_sources;

/// Checks a self-service request against the policy and returns the request
/// to sign: the caller's own identity, permissions made explicit within the
/// policy. `ttl` is the lifetime already chosen from the request.
pub fn self_service(
    caller: &Caller,
    policy: &SelfServiceConfig,
    mut request: CreateTokenRequest,
    ttl: std::time::Duration,
) -> Result<CreateTokenRequest, ApiError> {
    let deny = |rule: String| Err(ApiError::PermissionDenied(format!("self-service token: {rule}")));
    if !request.identity.is_empty() && request.identity != caller.subject() {
        return deny(format!(
            "the identity must be your own ({:?}) or empty; minting for another identity needs scope tokens:create",
            caller.subject()
        ));
    }
    request.identity = caller.subject().to_owned();
    caller.authorize_room(&request.room)?;
    if ttl > policy.max_ttl {
        return deny(format!(
            "ttl {} exceeds auth.self_service.max_ttl ({})",
            crate::duration::display(ttl),
            crate::duration::display(policy.max_ttl)
        ));
    }
    if !request.name.is_empty() && !policy.allow_name {
        return deny("setting a display name is not allowed (auth.self_service.allow_name)".to_owned());
    }
    if request.name.is_empty()
        && let Some(name) = caller.display_name()
    {
        request.name = name.to_owned();
    }
    if (!request.metadata.is_empty() || !request.attributes.is_empty()) && !policy.allow_metadata {
        return deny("metadata and attributes are not allowed (auth.self_service.allow_metadata)".to_owned());
    }

    let asked = request.permissions.take().unwrap_or_default();
    let capped = |field: &str, asked: Option<bool>, allowed: bool| -> Result<Option<bool>, ApiError> {
        match asked {
            Some(true) if !allowed => Err(ApiError::PermissionDenied(format!(
                "self-service token: {field} is not allowed (auth.self_service.{field})"
            ))),
            // Unset: what the policy allows, spelled out so LiveKit's
            // defaults (publish and subscribe allowed) never exceed it.
            None => Ok(Some(allowed)),
            explicit => Ok(explicit),
        }
    };
    let can_publish = capped("can_publish", asked.can_publish, policy.can_publish)?;
    let can_subscribe = capped("can_subscribe", asked.can_subscribe, policy.can_subscribe)?;
    let can_publish_data = capped("can_publish_data", asked.can_publish_data, policy.can_publish_data)?;
    let can_update_own_metadata =
        capped("can_update_own_metadata", asked.can_update_own_metadata, policy.can_update_own_metadata)?;
    if asked.hidden == Some(true) && !policy.allow_hidden {
        return deny("a hidden participant is not allowed (auth.self_service.allow_hidden)".to_owned());
    }
    let allowed_sources: Vec<i32> = policy
        .can_publish_sources
        .iter()
        .filter_map(|name| track_sources::from_name(name))
        .map(|s| s.proto as i32)
        .collect();
    let can_publish_sources = if allowed_sources.is_empty() {
        asked.can_publish_sources
    } else if asked.can_publish_sources.is_empty() {
        allowed_sources
    } else {
        if let Some(source) = asked.can_publish_sources.iter().find(|source| !allowed_sources.contains(source)) {
            let name = TrackSource::try_from(*source).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
            return deny(format!(
                "publishing from {name} is not allowed (auth.self_service.can_publish_sources: {})",
                policy.can_publish_sources.join(", ")
            ));
        }
        asked.can_publish_sources
    };
    request.permissions = Some(TokenPermissions {
        can_publish,
        can_subscribe,
        can_publish_data,
        can_publish_sources,
        can_update_own_metadata,
        hidden: asked.hidden,
    });
    Ok(request)
}
