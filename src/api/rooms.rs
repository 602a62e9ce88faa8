//! CreateRoom, ListRooms, GetRoom, DeleteRoom, UpdateRoomMetadata.

use livekit_protocol as lk;
use serde_json::json;

use super::{Admitted, convert};
use crate::error::ApiError;
use crate::livekit::{LiveKit, NewRoom};
use crate::proto::v1::*;
use crate::rpc::Rpc;

pub async fn create_room(livekit: &LiveKit, call: Admitted<CreateRoomRequest>) -> Result<Room, ApiError> {
    let Admitted { caller, deadline, request, audit } = call;
    if !request.agents.is_empty() && !caller.has(crate::auth::Scope::AgentsDispatch) {
        return Err(ApiError::PermissionDenied(format!(
            "{caller} lacks the scope agents:dispatch, which CreateRoom with agents needs besides rooms:write; create the room without agents, or use a credential with agents:dispatch"
        )));
    }
    let room = NewRoom {
        name: request.name,
        empty_timeout: request.empty_timeout,
        departure_timeout: request.departure_timeout,
        max_participants: request.max_participants,
        metadata: request.metadata,
    };
    let room = if request.agents.is_empty() {
        livekit.create_room(room, deadline).await?
    } else {
        let agents = request
            .agents
            .iter()
            .map(|agent| lk::RoomAgentDispatch {
                agent_name: agent.agent_name.clone(),
                metadata: agent.metadata.clone(),
                attributes: agent.attributes.clone(),
                ..Default::default()
            })
            .collect();
        livekit.create_room_with_agents(room, agents, deadline).await?
    };
    let agents: Vec<&str> = request.agents.iter().map(|agent| agent.agent_name.as_str()).collect();
    let detail = json!({
        "sid": room.sid,
        "emptyTimeout": room.empty_timeout,
        "departureTimeout": room.departure_timeout,
        "maxParticipants": room.max_participants,
        "agents": agents,
    });
    audit.record(Rpc::CreateRoom, &room.name, "", detail).await;
    super::agents::remember_room_agents(livekit, audit.timeline(), &room.name, &request.agents, &audit).await;
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
