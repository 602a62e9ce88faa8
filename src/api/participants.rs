//! ListParticipants, GetParticipant, RemoveParticipant, UpdateParticipant,
//! MutePublishedTrack, UpdateSubscriptions, SendData.

use serde_json::json;

use super::{Admitted, convert};
use crate::error::ApiError;
use crate::livekit::{DataPacket, LiveKit, ParticipantUpdate};
use crate::proto::v1::*;
use crate::rpc::Rpc;

pub async fn list_participants(
    livekit: &LiveKit,
    call: Admitted<ListParticipantsRequest>,
) -> Result<ListParticipantsResponse, ApiError> {
    let participants = livekit.list_participants(&call.request.room, call.deadline).await?;
    Ok(ListParticipantsResponse { participants: participants.into_iter().map(convert::participant).collect() })
}

pub async fn get_participant(
    livekit: &LiveKit,
    call: Admitted<GetParticipantRequest>,
) -> Result<Participant, ApiError> {
    let Admitted { deadline, request, .. } = call;
    Ok(convert::participant(livekit.get_participant(&request.room, &request.identity, deadline).await?))
}

pub async fn remove_participant(
    livekit: &LiveKit,
    call: Admitted<RemoveParticipantRequest>,
) -> Result<RemoveParticipantResponse, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    livekit.remove_participant(&request.room, &request.identity, deadline).await?;
    audit.record(Rpc::RemoveParticipant, &request.room, &request.identity, json!({})).await;
    Ok(RemoveParticipantResponse {})
}

pub async fn update_participant(
    livekit: &LiveKit,
    call: Admitted<UpdateParticipantRequest>,
) -> Result<Participant, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let detail = json!({
        "metadata": request.metadata.is_some(),
        "name": request.name.is_some(),
        "attributes": request.attributes.keys().collect::<Vec<_>>(),
        "permission": request.permission.is_some(),
    });
    let update = ParticipantUpdate {
        metadata: request.metadata,
        name: request.name,
        attributes: request.attributes,
        permission: request.permission.as_ref().map(convert::permission_to_livekit),
    };
    let participant = livekit.update_participant(&request.room, &request.identity, update, deadline).await?;
    audit.record(Rpc::UpdateParticipant, &request.room, &request.identity, detail).await;
    Ok(convert::participant(participant))
}

pub async fn mute_published_track(
    livekit: &LiveKit,
    call: Admitted<MutePublishedTrackRequest>,
) -> Result<Track, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let track = livekit
        .mute_published_track(&request.room, &request.identity, &request.track_sid, request.muted, deadline)
        .await?;
    let detail = json!({ "trackSid": request.track_sid, "muted": request.muted });
    audit.record(Rpc::MutePublishedTrack, &request.room, &request.identity, detail).await;
    Ok(convert::track(track))
}

pub async fn update_subscriptions(
    livekit: &LiveKit,
    call: Admitted<UpdateSubscriptionsRequest>,
) -> Result<UpdateSubscriptionsResponse, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let detail = json!({ "subscribe": request.subscribe, "trackSids": request.track_sids });
    livekit
        .update_subscriptions(&request.room, &request.identity, request.track_sids, request.subscribe, deadline)
        .await?;
    audit.record(Rpc::UpdateSubscriptions, &request.room, &request.identity, detail).await;
    Ok(UpdateSubscriptionsResponse {})
}

pub async fn send_data(livekit: &LiveKit, call: Admitted<SendDataRequest>) -> Result<SendDataResponse, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let room = request.room.clone();
    let detail = json!({
        "bytes": request.data.len(),
        "destinationIdentities": request.destination_identities,
        "topic": request.topic,
        "reliable": request.reliable,
    });
    let packet = DataPacket {
        room: request.room,
        data: request.data,
        reliable: request.reliable,
        destination_identities: request.destination_identities,
        topic: request.topic,
        nonce: request.nonce,
    };
    livekit.send_data(packet, deadline).await?;
    audit.record(Rpc::SendData, &room, "", detail).await;
    Ok(SendDataResponse {})
}
