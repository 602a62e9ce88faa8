//! CreateRoom, ListRooms, GetRoom, DeleteRoom, UpdateRoomMetadata.

use serde_json::json;

use super::{Admitted, convert};
use crate::error::ApiError;
use crate::livekit::{LiveKit, NewRoom};
use crate::proto::v1::*;
use crate::rpc::Rpc;

pub async fn create_room(livekit: &LiveKit, call: Admitted<CreateRoomRequest>) -> Result<Room, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let room = NewRoom {
        name: request.name,
        empty_timeout: request.empty_timeout,
        departure_timeout: request.departure_timeout,
        max_participants: request.max_participants,
        metadata: request.metadata,
    };
    let room = livekit.create_room(room, deadline).await?;
    let detail = json!({
        "sid": room.sid,
        "emptyTimeout": room.empty_timeout,
        "departureTimeout": room.departure_timeout,
        "maxParticipants": room.max_participants,
    });
    audit.record(Rpc::CreateRoom, &room.name, "", detail).await;
    Ok(convert::room(room))
}

pub async fn list_rooms(livekit: &LiveKit, call: Admitted<ListRoomsRequest>) -> Result<ListRoomsResponse, ApiError> {
    let Admitted { caller, deadline, request, .. } = call;
    let rooms = livekit.list_rooms(request.names, deadline).await?;
    // Only the rooms the caller may touch; the others are not its business.
    let rooms = rooms.into_iter().filter(|room| caller.may_touch(&room.name)).map(convert::room).collect();
    Ok(ListRoomsResponse { rooms })
}

pub async fn get_room(livekit: &LiveKit, call: Admitted<GetRoomRequest>) -> Result<Room, ApiError> {
    Ok(convert::room(livekit.get_room(&call.request.name, call.deadline).await?))
}

pub async fn delete_room(livekit: &LiveKit, call: Admitted<DeleteRoomRequest>) -> Result<DeleteRoomResponse, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    livekit.delete_room(&request.name, deadline).await?;
    audit.record(Rpc::DeleteRoom, &request.name, "", json!({})).await;
    Ok(DeleteRoomResponse {})
}

pub async fn update_room_metadata(
    livekit: &LiveKit,
    call: Admitted<UpdateRoomMetadataRequest>,
) -> Result<Room, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let room = livekit.update_room_metadata(&request.room, &request.metadata, deadline).await?;
    let detail = json!({ "metadataBytes": request.metadata.len() });
    audit.record(Rpc::UpdateRoomMetadata, &request.room, "", detail).await;
    Ok(convert::room(room))
}
