//! Every RPC as a value, so tables of requests can drive any of them.

use roomcontrol::proto::v1::*;

#[derive(Debug, Clone)]
pub enum Rpc {
    CreateRoom(CreateRoomRequest),
    ListRooms(ListRoomsRequest),
    GetRoom(GetRoomRequest),
    DeleteRoom(DeleteRoomRequest),
    UpdateRoomMetadata(UpdateRoomMetadataRequest),
    ListParticipants(ListParticipantsRequest),
    GetParticipant(GetParticipantRequest),
    RemoveParticipant(RemoveParticipantRequest),
    UpdateParticipant(UpdateParticipantRequest),
    MutePublishedTrack(MutePublishedTrackRequest),
    UpdateSubscriptions(UpdateSubscriptionsRequest),
    SendData(SendDataRequest),
    CreateToken(CreateTokenRequest),
}

impl Rpc {
    pub fn name(&self) -> &'static str {
        match self {
            Rpc::CreateRoom(_) => "CreateRoom",
            Rpc::ListRooms(_) => "ListRooms",
            Rpc::GetRoom(_) => "GetRoom",
            Rpc::DeleteRoom(_) => "DeleteRoom",
            Rpc::UpdateRoomMetadata(_) => "UpdateRoomMetadata",
            Rpc::ListParticipants(_) => "ListParticipants",
            Rpc::GetParticipant(_) => "GetParticipant",
            Rpc::RemoveParticipant(_) => "RemoveParticipant",
            Rpc::UpdateParticipant(_) => "UpdateParticipant",
            Rpc::MutePublishedTrack(_) => "MutePublishedTrack",
            Rpc::UpdateSubscriptions(_) => "UpdateSubscriptions",
            Rpc::SendData(_) => "SendData",
            Rpc::CreateToken(_) => "CreateToken",
        }
    }
}

impl Rpc {
    /// The request, protobuf-encoded.
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Rpc::CreateRoom(m) => m.encode_to_vec(),
            Rpc::ListRooms(m) => m.encode_to_vec(),
            Rpc::GetRoom(m) => m.encode_to_vec(),
            Rpc::DeleteRoom(m) => m.encode_to_vec(),
            Rpc::UpdateRoomMetadata(m) => m.encode_to_vec(),
            Rpc::ListParticipants(m) => m.encode_to_vec(),
            Rpc::GetParticipant(m) => m.encode_to_vec(),
            Rpc::RemoveParticipant(m) => m.encode_to_vec(),
            Rpc::UpdateParticipant(m) => m.encode_to_vec(),
            Rpc::MutePublishedTrack(m) => m.encode_to_vec(),
            Rpc::UpdateSubscriptions(m) => m.encode_to_vec(),
            Rpc::SendData(m) => m.encode_to_vec(),
            Rpc::CreateToken(m) => m.encode_to_vec(),
        }
    }
}

/// A valid request for each RPC that calls LiveKit.
pub fn livekit_bound(room: &str) -> Vec<Rpc> {
    let room = room.to_owned();
    let identity = "alice".to_owned();
    let track = "TR_abcdef123456".to_owned();
    vec![
        Rpc::CreateRoom(CreateRoomRequest { name: room.clone(), ..Default::default() }),
        Rpc::ListRooms(ListRoomsRequest::default()),
        Rpc::GetRoom(GetRoomRequest { name: room.clone() }),
        Rpc::DeleteRoom(DeleteRoomRequest { name: room.clone() }),
        Rpc::UpdateRoomMetadata(UpdateRoomMetadataRequest { room: room.clone(), metadata: "m".into() }),
        Rpc::ListParticipants(ListParticipantsRequest { room: room.clone() }),
        Rpc::GetParticipant(GetParticipantRequest { room: room.clone(), identity: identity.clone() }),
        Rpc::RemoveParticipant(RemoveParticipantRequest { room: room.clone(), identity: identity.clone() }),
        Rpc::UpdateParticipant(UpdateParticipantRequest {
            room: room.clone(),
            identity: identity.clone(),
            metadata: Some("m".into()),
            ..Default::default()
        }),
        Rpc::MutePublishedTrack(MutePublishedTrackRequest {
            room: room.clone(),
            identity: identity.clone(),
            track_sid: track.clone(),
            muted: true,
        }),
        Rpc::UpdateSubscriptions(UpdateSubscriptionsRequest {
            room: room.clone(),
            identity,
            track_sids: vec![track],
            subscribe: true,
        }),
        Rpc::SendData(SendDataRequest { room, data: b"x".to_vec(), ..Default::default() }),
    ]
}
