//! CreateRoom, ListRooms, GetRoom, DeleteRoom, UpdateRoomMetadata.

use std::time::Instant;

use super::{convert, record_room};
use crate::error::ApiError;
use crate::livekit::{LiveKit, NewRoom};
use crate::proto::v1::*;
use crate::validate::{LIST_ROOMS_MAX_NAMES, Violations};

pub async fn create_room(
    livekit: &LiveKit,
    request: CreateRoomRequest,
    deadline: Option<Instant>,
) -> Result<Room, ApiError> {
    let mut violations = Violations::new();
    violations.room_name("name", &request.name);
    violations.metadata("metadata", &request.metadata);
    violations.into_result()?;
    record_room(&request.name);
    let room = NewRoom {
        name: request.name,
        empty_timeout: request.empty_timeout,
        departure_timeout: request.departure_timeout,
        max_participants: request.max_participants,
        metadata: request.metadata,
    };
    Ok(convert::room(livekit.create_room(room, deadline).await?))
}

pub async fn list_rooms(
    livekit: &LiveKit,
    request: ListRoomsRequest,
    deadline: Option<Instant>,
) -> Result<ListRoomsResponse, ApiError> {
    let mut violations = Violations::new();
    violations.count("names", request.names.len(), 0, LIST_ROOMS_MAX_NAMES);
    for (index, name) in request.names.iter().enumerate() {
        violations.room_name(&format!("names[{index}]"), name);
    }
    violations.into_result()?;
    let rooms = livekit.list_rooms(request.names, deadline).await?;
    Ok(ListRoomsResponse { rooms: rooms.into_iter().map(convert::room).collect() })
}

pub async fn get_room(livekit: &LiveKit, request: GetRoomRequest, deadline: Option<Instant>) -> Result<Room, ApiError> {
    let mut violations = Violations::new();
    violations.room_name("name", &request.name);
    violations.into_result()?;
    record_room(&request.name);
    let rooms = livekit.list_rooms(vec![request.name.clone()], deadline).await?;
    // LiveKit filters by name; checking again guards against a server that
    // ignores the filter.
    rooms
        .into_iter()
        .find(|room| room.name == request.name)
        .map(convert::room)
        .ok_or_else(|| ApiError::NotFound(format!("room {:?} does not exist", request.name)))
}

pub async fn delete_room(
    livekit: &LiveKit,
    request: DeleteRoomRequest,
    deadline: Option<Instant>,
) -> Result<DeleteRoomResponse, ApiError> {
    let mut violations = Violations::new();
    violations.room_name("name", &request.name);
    violations.into_result()?;
    record_room(&request.name);
    livekit.delete_room(&request.name, deadline).await?;
    Ok(DeleteRoomResponse {})
}

pub async fn update_room_metadata(
    livekit: &LiveKit,
    request: UpdateRoomMetadataRequest,
    deadline: Option<Instant>,
) -> Result<Room, ApiError> {
    let mut violations = Violations::new();
    violations.room_name("room", &request.room);
    violations.metadata("metadata", &request.metadata);
    violations.into_result()?;
    record_room(&request.room);
    Ok(convert::room(livekit.update_room_metadata(&request.room, &request.metadata, deadline).await?))
}
