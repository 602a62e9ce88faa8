//! ListParticipants, GetParticipant, RemoveParticipant, UpdateParticipant,
//! MutePublishedTrack, UpdateSubscriptions, SendData.

use std::time::Instant;

use super::{audit, convert, record_room};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::livekit::{DataPacket, LiveKit, LiveKitError, ParticipantUpdate};
use crate::proto::v1::*;
use crate::validate::{DESTINATIONS_MAX, TOPIC_MAX_BYTES, TRACK_SIDS_MAX, Violations};

/// Checks the room and identity every participant call names.
fn room_and_identity(room: &str, identity: &str) -> Violations {
    let mut violations = Violations::new();
    violations.room_name("room", room);
    violations.identity("identity", identity);
    violations
}

pub async fn list_participants(
    livekit: &LiveKit,
    caller: &Caller,
    request: ListParticipantsRequest,
    deadline: Option<Instant>,
) -> Result<ListParticipantsResponse, ApiError> {
    caller.authorize("ListParticipants", Scope::RoomsRead, None)?;
    let mut violations = Violations::new();
    violations.room_name("room", &request.room);
    violations.into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    let participants = livekit.list_participants(&request.room, deadline).await?;
    Ok(ListParticipantsResponse { participants: participants.into_iter().map(convert::participant).collect() })
}

pub async fn get_participant(
    livekit: &LiveKit,
    caller: &Caller,
    request: GetParticipantRequest,
    deadline: Option<Instant>,
) -> Result<Participant, ApiError> {
    caller.authorize("GetParticipant", Scope::RoomsRead, None)?;
    room_and_identity(&request.room, &request.identity).into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    Ok(convert::participant(livekit.get_participant(&request.room, &request.identity, deadline).await?))
}

pub async fn remove_participant(
    livekit: &LiveKit,
    caller: &Caller,
    request: RemoveParticipantRequest,
    deadline: Option<Instant>,
) -> Result<RemoveParticipantResponse, ApiError> {
    caller.authorize("RemoveParticipant", Scope::ParticipantsModerate, None)?;
    room_and_identity(&request.room, &request.identity).into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    livekit.remove_participant(&request.room, &request.identity, deadline).await?;
    audit(caller, "RemoveParticipant", &request.room, &request.identity, "");
    Ok(RemoveParticipantResponse {})
}

pub async fn update_participant(
    livekit: &LiveKit,
    caller: &Caller,
    request: UpdateParticipantRequest,
    deadline: Option<Instant>,
) -> Result<Participant, ApiError> {
    caller.authorize("UpdateParticipant", Scope::ParticipantsModerate, None)?;
    let mut violations = room_and_identity(&request.room, &request.identity);
    if let Some(metadata) = &request.metadata {
        if metadata.is_empty() {
            violations.add(
                "metadata",
                "must not be empty: LiveKit reads empty as \"unchanged\"; leave it unset to keep the metadata, or set a placeholder such as \"{}\"",
            );
        }
        violations.metadata("metadata", metadata);
    }
    if let Some(name) = &request.name {
        if name.is_empty() {
            violations.add(
                "name",
                "must not be empty: LiveKit reads empty as \"unchanged\"; leave it unset to keep the name",
            );
        }
        violations.display_name("name", name);
    }
    violations.attributes("attributes", &request.attributes);
    if let Some(permission) = &request.permission {
        check_sources(&mut violations, "permission.can_publish_sources", &permission.can_publish_sources);
    }
    if request.metadata.is_none()
        && request.name.is_none()
        && request.attributes.is_empty()
        && request.permission.is_none()
    {
        violations.add("metadata, name, attributes, permission", "set at least one: there is nothing to update");
    }
    violations.into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    let detail = format!(
        "metadata: {}, name: {}, attributes: {}, permission: {}",
        request.metadata.is_some(),
        request.name.is_some(),
        request.attributes.len(),
        request.permission.is_some()
    );
    let (room, identity) = (request.room.clone(), request.identity.clone());
    let update = ParticipantUpdate {
        metadata: request.metadata,
        name: request.name,
        attributes: request.attributes,
        permission: request.permission.as_ref().map(convert::permission_to_livekit),
    };
    let participant = livekit.update_participant(&room, &identity, update, deadline).await?;
    audit(caller, "UpdateParticipant", &room, &identity, &detail);
    Ok(convert::participant(participant))
}

pub async fn mute_published_track(
    livekit: &LiveKit,
    caller: &Caller,
    request: MutePublishedTrackRequest,
    deadline: Option<Instant>,
) -> Result<Track, ApiError> {
    caller.authorize("MutePublishedTrack", Scope::ParticipantsModerate, None)?;
    let mut violations = room_and_identity(&request.room, &request.identity);
    violations.track_sid("track_sid", &request.track_sid);
    violations.into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    // LiveKit answers a mute for an absent participant only after its
    // internal routing gives up (about 3 s, as UNAVAILABLE): ask first.
    let participant = livekit.get_participant(&request.room, &request.identity, deadline).await?;
    if !participant.tracks.iter().any(|track| track.sid == request.track_sid) {
        return Err(no_such_track(&request));
    }
    let track = livekit
        .mute_published_track(&request.room, &request.identity, &request.track_sid, request.muted, deadline)
        .await?
        // The track went away between the two calls.
        .ok_or_else(|| no_such_track(&request))?;
    let detail = format!("track {} muted: {}", request.track_sid, request.muted);
    audit(caller, "MutePublishedTrack", &request.room, &request.identity, &detail);
    Ok(convert::track(track))
}

fn no_such_track(request: &MutePublishedTrackRequest) -> ApiError {
    ApiError::NotFound(format!(
        "participant {:?} in room {:?} publishes no track {:?}",
        request.identity, request.room, request.track_sid
    ))
}

pub async fn update_subscriptions(
    livekit: &LiveKit,
    caller: &Caller,
    request: UpdateSubscriptionsRequest,
    deadline: Option<Instant>,
) -> Result<UpdateSubscriptionsResponse, ApiError> {
    caller.authorize("UpdateSubscriptions", Scope::ParticipantsModerate, None)?;
    let mut violations = room_and_identity(&request.room, &request.identity);
    violations.count("track_sids", request.track_sids.len(), 1, TRACK_SIDS_MAX);
    for (index, sid) in request.track_sids.iter().enumerate() {
        violations.track_sid(&format!("track_sids[{index}]"), sid);
    }
    violations.into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    // As for mute: LiveKit takes seconds to fail for an absent participant.
    livekit.get_participant(&request.room, &request.identity, deadline).await?;
    livekit
        .update_subscriptions(&request.room, &request.identity, request.track_sids.clone(), request.subscribe, deadline)
        .await?;
    let detail = format!("subscribe: {}, tracks: {}", request.subscribe, request.track_sids.join(" "));
    audit(caller, "UpdateSubscriptions", &request.room, &request.identity, &detail);
    Ok(UpdateSubscriptionsResponse {})
}

pub async fn send_data(
    livekit: &LiveKit,
    caller: &Caller,
    request: SendDataRequest,
    deadline: Option<Instant>,
) -> Result<SendDataResponse, ApiError> {
    caller.authorize("SendData", Scope::ParticipantsModerate, None)?;
    let mut violations = Violations::new();
    violations.room_name("room", &request.room);
    violations.nonce("nonce", &request.nonce);
    violations.count("destination_identities", request.destination_identities.len(), 0, DESTINATIONS_MAX);
    for (index, identity) in request.destination_identities.iter().enumerate() {
        violations.identity(&format!("destination_identities[{index}]"), identity);
    }
    if let Some(topic) = &request.topic {
        violations.max_bytes("topic", topic, TOPIC_MAX_BYTES);
    }
    violations.into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    let room = request.room.clone();
    let packet = DataPacket {
        room: request.room,
        data: request.data,
        reliable: request.reliable,
        destination_identities: request.destination_identities,
        topic: request.topic,
        nonce: request.nonce,
    };
    let detail = format!("{} bytes to {} participants", packet.data.len(), packet.destination_identities.len());
    match livekit.send_data(packet, deadline).await {
        Ok(()) => {
            audit(caller, "SendData", &room, "", &detail);
            Ok(SendDataResponse {})
        }
        // LiveKit answers UNAVAILABLE (after seconds) when no server hosts
        // the room; say NOT_FOUND when that is because the room is absent.
        Err(error @ LiveKitError::Twirp { .. }) if error_code_is(&error, "unavailable") => {
            let rooms = livekit.list_rooms(vec![room.clone()], deadline).await?;
            if rooms.iter().any(|found| found.name == room) {
                Err(error.into())
            } else {
                Err(ApiError::NotFound(format!("room {room:?} does not exist")))
            }
        }
        Err(error) => Err(error.into()),
    }
}

fn error_code_is(error: &LiveKitError, expected: &str) -> bool {
    matches!(error, LiveKitError::Twirp { code, .. } if code == expected)
}

/// Track sources must be named ones: not UNSPECIFIED, not unknown numbers.
pub(super) fn check_sources(violations: &mut Violations, field: &str, sources: &[i32]) {
    for (index, source) in sources.iter().enumerate() {
        if convert::source_to_livekit(*source).is_none() {
            violations.add(
                format!("{field}[{index}]"),
                format!("must be CAMERA, MICROPHONE, SCREEN_SHARE or SCREEN_SHARE_AUDIO, got {source}"),
            );
        }
    }
}
