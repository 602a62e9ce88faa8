//! CreateRoom, ListRooms, GetRoom, DeleteRoom, UpdateRoomMetadata.

use std::time::Instant;

use super::{audit, convert, record_room};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::livekit::{LiveKit, NewRoom};
use crate::proto::v1::*;
use crate::validate::{LIST_ROOMS_MAX_NAMES, Violations};

pub async fn create_room(
    livekit: &LiveKit,
    caller: &Caller,
    request: CreateRoomRequest,
    deadline: Option<Instant>,
) -> Result<Room, ApiError> {
    caller.authorize("CreateRoom", Scope::RoomsWrite, None)?;
    let mut violations = Violations::new();
    violations.room_name("name", &request.name);
    violations.metadata("metadata", &request.metadata);
    violations.into_result()?;
    record_room(&request.name);
    caller.authorize_room(&request.name)?;
    let room = NewRoom {
        name: request.name,
        empty_timeout: request.empty_timeout,
        departure_timeout: request.departure_timeout,
        max_participants: request.max_participants,
        metadata: request.metadata,
    };
    let room = livekit.create_room(room, deadline).await?;
    audit(caller, "CreateRoom", &room.name, "", "");
    Ok(convert::room(room))
}

pub async fn list_rooms(
    livekit: &LiveKit,
    caller: &Caller,
    request: ListRoomsRequest,
    deadline: Option<Instant>,
) -> Result<ListRoomsResponse, ApiError> {
    caller.authorize("ListRooms", Scope::RoomsRead, None)?;
    let mut violations = Violations::new();
    violations.count("names", request.names.len(), 0, LIST_ROOMS_MAX_NAMES);
    for (index, name) in request.names.iter().enumerate() {
        violations.room_name(&format!("names[{index}]"), name);
    }
    violations.into_result()?;
    let rooms = livekit.list_rooms(request.names, deadline).await?;
    // Only the rooms the caller may touch; the others are not its business.
    let rooms = rooms.into_iter().filter(|room| caller.may_touch(&room.name)).map(convert::room).collect();
    Ok(ListRoomsResponse { rooms })
}

pub async fn get_room(
    livekit: &LiveKit,
    caller: &Caller,
    request: GetRoomRequest,
    deadline: Option<Instant>,
) -> Result<Room, ApiError> {
    caller.authorize("GetRoom", Scope::RoomsRead, None)?;
    let mut violations = Violations::new();
    violations.room_name("name", &request.name);
    violations.into_result()?;
    record_room(&request.name);
    caller.authorize_room(&request.name)?;
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
    caller: &Caller,
    request: DeleteRoomRequest,
    deadline: Option<Instant>,
) -> Result<DeleteRoomResponse, ApiError> {
    caller.authorize("DeleteRoom", Scope::RoomsWrite, None)?;
    let mut violations = Violations::new();
    violations.room_name("name", &request.name);
    violations.into_result()?;
    record_room(&request.name);
    caller.authorize_room(&request.name)?;
    livekit.delete_room(&request.name, deadline).await?;
    audit(caller, "DeleteRoom", &request.name, "", "");
    Ok(DeleteRoomResponse {})
}

pub async fn update_room_metadata(
    livekit: &LiveKit,
    caller: &Caller,
    request: UpdateRoomMetadataRequest,
    deadline: Option<Instant>,
) -> Result<Room, ApiError> {
    caller.authorize("UpdateRoomMetadata", Scope::RoomsWrite, None)?;
    let mut violations = Violations::new();
    violations.room_name("room", &request.room);
    violations.metadata("metadata", &request.metadata);
    violations.into_result()?;
    record_room(&request.room);
    caller.authorize_room(&request.room)?;
    let room = livekit.update_room_metadata(&request.room, &request.metadata, deadline).await?;
    audit(caller, "UpdateRoomMetadata", &request.room, "", &format!("{} bytes of metadata", request.metadata.len()));
    Ok(convert::room(room))
}
