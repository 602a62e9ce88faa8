//! CreateRoom, ListRooms, GetRoom, DeleteRoom, UpdateRoomMetadata.

use super::{Admitted, audit, convert};
use crate::error::ApiError;
use crate::livekit::{LiveKit, NewRoom};
use crate::proto::v1::*;
use crate::rpc::Rpc;

pub async fn create_room(livekit: &LiveKit, call: Admitted<CreateRoomRequest>) -> Result<Room, ApiError> {
    let Admitted { caller, deadline, request } = call;
    let room = NewRoom {
        name: request.name,
        empty_timeout: request.empty_timeout,
        departure_timeout: request.departure_timeout,
        max_participants: request.max_participants,
        metadata: request.metadata,
    };
    let room = livekit.create_room(room, deadline).await?;
    audit(&caller, Rpc::CreateRoom, &room.name, "", "");
    Ok(convert::room(room))
}

pub async fn list_rooms(livekit: &LiveKit, call: Admitted<ListRoomsRequest>) -> Result<ListRoomsResponse, ApiError> {
    let Admitted { caller, deadline, request } = call;
    let rooms = livekit.list_rooms(request.names, deadline).await?;
    // Only the rooms the caller may touch; the others are not its business.
    let rooms = rooms.into_iter().filter(|room| caller.may_touch(&room.name)).map(convert::room).collect();
    Ok(ListRoomsResponse { rooms })
}

pub async fn get_room(livekit: &LiveKit, call: Admitted<GetRoomRequest>) -> Result<Room, ApiError> {
    Ok(convert::room(livekit.get_room(&call.request.name, call.deadline).await?))
}

pub async fn delete_room(livekit: &LiveKit, call: Admitted<DeleteRoomRequest>) -> Result<DeleteRoomResponse, ApiError> {
    let Admitted { caller, deadline, request } = call;
    livekit.delete_room(&request.name, deadline).await?;
    audit(&caller, Rpc::DeleteRoom, &request.name, "", "");
    Ok(DeleteRoomResponse {})
}

pub async fn update_room_metadata(
    livekit: &LiveKit,
    call: Admitted<UpdateRoomMetadataRequest>,
) -> Result<Room, ApiError> {
    let Admitted { caller, deadline, request } = call;
    let room = livekit.update_room_metadata(&request.room, &request.metadata, deadline).await?;
    let detail = format!("{} bytes of metadata", request.metadata.len());
    audit(&caller, Rpc::UpdateRoomMetadata, &request.room, "", &detail);
    Ok(convert::room(room))
}
