//! The Twirp methods the stand-in routes (RoomService, Egress,
//! AgentDispatchService), their request types, and what the stand-in
//! records about each call.

use livekit_api::access_token::Claims;
use livekit_protocol as proto;
use serde_json::Value;

/// How a request body was encoded (its `Content-Type`); replies use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/protobuf`, what the livekit-api crate sends.
    Protobuf,
    /// `application/json` (protobuf JSON).
    Json,
}

/// A decoded request, one variant per method (RoomService, Egress and
/// AgentDispatchService; the method names do not overlap).
// Unboxed on purpose: tests match on these; a few KiB per recorded call is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RoomRequest {
    CreateRoom(proto::CreateRoomRequest),
    ListRooms(proto::ListRoomsRequest),
    DeleteRoom(proto::DeleteRoomRequest),
    ListParticipants(proto::ListParticipantsRequest),
    GetParticipant(proto::RoomParticipantIdentity),
    RemoveParticipant(proto::RoomParticipantIdentity),
    MutePublishedTrack(proto::MuteRoomTrackRequest),
    UpdateParticipant(proto::UpdateParticipantRequest),
    UpdateSubscriptions(proto::UpdateSubscriptionsRequest),
    SendData(proto::SendDataRequest),
    UpdateRoomMetadata(proto::UpdateRoomMetadataRequest),
    ForwardParticipant(proto::ForwardParticipantRequest),
    MoveParticipant(proto::MoveParticipantRequest),
    PerformRpc(proto::PerformRpcRequest),
    StartRoomCompositeEgress(proto::RoomCompositeEgressRequest),
    StartWebEgress(proto::WebEgressRequest),
    StartParticipantEgress(proto::ParticipantEgressRequest),
    StartTrackCompositeEgress(proto::TrackCompositeEgressRequest),
    StartTrackEgress(proto::TrackEgressRequest),
    StartEgress(proto::StartEgressRequest),
    UpdateLayout(proto::UpdateLayoutRequest),
    UpdateStream(proto::UpdateStreamRequest),
    ListEgress(proto::ListEgressRequest),
    StopEgress(proto::StopEgressRequest),
    CreateDispatch(proto::CreateAgentDispatchRequest),
    DeleteDispatch(proto::DeleteAgentDispatchRequest),
    ListDispatch(proto::ListAgentDispatchRequest),
}

/// `livekit.RoomService`, `livekit.Egress` and `livekit.AgentDispatchService`:
/// the Twirp path prefix of each service and every method it routes
/// (`livekit_room.twirp.go`, `livekit_egress.twirp.go`,
/// `livekit_agent_dispatch.twirp.go`).
pub(crate) const SERVICES: &[(&str, &[&str])] = &[
    ("/twirp/livekit.RoomService/", ROOM_METHODS),
    ("/twirp/livekit.Egress/", EGRESS_METHODS),
    ("/twirp/livekit.AgentDispatchService/", DISPATCH_METHODS),
];

const EGRESS_METHODS: &[&str] = &[
    "StartRoomCompositeEgress",
    "StartWebEgress",
    "StartParticipantEgress",
    "StartTrackCompositeEgress",
    "StartTrackEgress",
    "StartEgress",
    "UpdateLayout",
    "UpdateStream",
    "ListEgress",
    "StopEgress",
];

const DISPATCH_METHODS: &[&str] = &["CreateDispatch", "DeleteDispatch", "ListDispatch"];

/// The service prefix a path starts with, and the method it names if that
/// service routes it.
pub(crate) fn route(path: &str) -> Option<(&'static str, Option<&'static str>)> {
    SERVICES.iter().find_map(|(prefix, methods)| {
        let rest = path.strip_prefix(prefix)?;
        Some((*prefix, methods.iter().find(|m| **m == rest).copied()))
    })
}

/// Every method livekit-server's RoomService routes (`livekit_room.twirp.go`).
const ROOM_METHODS: &[&str] = &[
    "CreateRoom",
    "ListRooms",
    "DeleteRoom",
    "ListParticipants",
    "GetParticipant",
    "RemoveParticipant",
    "MutePublishedTrack",
    "UpdateParticipant",
    "UpdateSubscriptions",
    "SendData",
    "UpdateRoomMetadata",
    "ForwardParticipant",
    "MoveParticipant",
    "PerformRpc",
];

/// Why a routed body could not be turned into a request.
pub(crate) enum DecodeError {
    /// `the protobuf request could not be decoded` / `the json request could
    /// not be decoded` (twirp `malformed`).
    Malformed(&'static str),
}

const PROTOBUF_MALFORMED: &str = "the protobuf request could not be decoded";
pub(crate) const JSON_MALFORMED: &str = "the json request could not be decoded";

fn decode_as<T>(encoding: Encoding, body: &[u8]) -> Result<T, DecodeError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|_| DecodeError::Malformed(PROTOBUF_MALFORMED)),
        Encoding::Json => {
            // Go's json.Decoder reads the first JSON value and ignores what
            // follows; protojson then decodes it (unknown fields discarded).
            let first = serde_json::Deserializer::from_slice(body).into_iter::<Value>().next();
            match first {
                Some(Ok(value)) => serde_json::from_value(value).map_err(|_| DecodeError::Malformed(JSON_MALFORMED)),
                _ => Err(DecodeError::Malformed(JSON_MALFORMED)),
            }
        }
    }
}

impl RoomRequest {
    /// Decodes `body` as the request of `method` (one of [`SERVICES`]' methods).
    pub(crate) fn decode(method: &str, encoding: Encoding, body: &[u8]) -> Result<Self, DecodeError> {
        use RoomRequest as R;
        Ok(match method {
            "CreateRoom" => R::CreateRoom(decode_as(encoding, body)?),
            "ListRooms" => R::ListRooms(decode_as(encoding, body)?),
            "DeleteRoom" => R::DeleteRoom(decode_as(encoding, body)?),
            "ListParticipants" => R::ListParticipants(decode_as(encoding, body)?),
            "GetParticipant" => R::GetParticipant(decode_as(encoding, body)?),
            "RemoveParticipant" => R::RemoveParticipant(decode_as(encoding, body)?),
            "MutePublishedTrack" => R::MutePublishedTrack(decode_as(encoding, body)?),
            "UpdateParticipant" => R::UpdateParticipant(decode_as(encoding, body)?),
            "UpdateSubscriptions" => R::UpdateSubscriptions(decode_as(encoding, body)?),
            "SendData" => R::SendData(decode_as(encoding, body)?),
            "UpdateRoomMetadata" => R::UpdateRoomMetadata(decode_as(encoding, body)?),
            "ForwardParticipant" => R::ForwardParticipant(decode_as(encoding, body)?),
            "MoveParticipant" => R::MoveParticipant(decode_as(encoding, body)?),
            "StartRoomCompositeEgress" => R::StartRoomCompositeEgress(decode_as(encoding, body)?),
            "StartWebEgress" => R::StartWebEgress(decode_as(encoding, body)?),
            "StartParticipantEgress" => R::StartParticipantEgress(decode_as(encoding, body)?),
            "StartTrackCompositeEgress" => R::StartTrackCompositeEgress(decode_as(encoding, body)?),
            "StartTrackEgress" => R::StartTrackEgress(decode_as(encoding, body)?),
            "StartEgress" => R::StartEgress(decode_as(encoding, body)?),
            "UpdateLayout" => R::UpdateLayout(decode_as(encoding, body)?),
            "UpdateStream" => R::UpdateStream(decode_as(encoding, body)?),
            "ListEgress" => R::ListEgress(decode_as(encoding, body)?),
            "StopEgress" => R::StopEgress(decode_as(encoding, body)?),
            "CreateDispatch" => R::CreateDispatch(decode_as(encoding, body)?),
            "DeleteDispatch" => R::DeleteDispatch(decode_as(encoding, body)?),
            "ListDispatch" => R::ListDispatch(decode_as(encoding, body)?),
            _ => R::PerformRpc(decode_as(encoding, body)?),
        })
    }

    /// The request in protobuf wire form.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        use prost::Message as _;
        match self {
            RoomRequest::CreateRoom(r) => r.encode_to_vec(),
            RoomRequest::ListRooms(r) => r.encode_to_vec(),
            RoomRequest::DeleteRoom(r) => r.encode_to_vec(),
            RoomRequest::ListParticipants(r) => r.encode_to_vec(),
            RoomRequest::GetParticipant(r) => r.encode_to_vec(),
            RoomRequest::RemoveParticipant(r) => r.encode_to_vec(),
            RoomRequest::MutePublishedTrack(r) => r.encode_to_vec(),
            RoomRequest::UpdateParticipant(r) => r.encode_to_vec(),
            RoomRequest::UpdateSubscriptions(r) => r.encode_to_vec(),
            RoomRequest::SendData(r) => r.encode_to_vec(),
            RoomRequest::UpdateRoomMetadata(r) => r.encode_to_vec(),
            RoomRequest::ForwardParticipant(r) => r.encode_to_vec(),
            RoomRequest::MoveParticipant(r) => r.encode_to_vec(),
            RoomRequest::PerformRpc(r) => r.encode_to_vec(),
            RoomRequest::StartRoomCompositeEgress(r) => r.encode_to_vec(),
            RoomRequest::StartWebEgress(r) => r.encode_to_vec(),
            RoomRequest::StartParticipantEgress(r) => r.encode_to_vec(),
            RoomRequest::StartTrackCompositeEgress(r) => r.encode_to_vec(),
            RoomRequest::StartTrackEgress(r) => r.encode_to_vec(),
            RoomRequest::StartEgress(r) => r.encode_to_vec(),
            RoomRequest::UpdateLayout(r) => r.encode_to_vec(),
            RoomRequest::UpdateStream(r) => r.encode_to_vec(),
            RoomRequest::ListEgress(r) => r.encode_to_vec(),
            RoomRequest::StopEgress(r) => r.encode_to_vec(),
            RoomRequest::CreateDispatch(r) => r.encode_to_vec(),
            RoomRequest::DeleteDispatch(r) => r.encode_to_vec(),
            RoomRequest::ListDispatch(r) => r.encode_to_vec(),
        }
    }

    /// The method this request is for.
    pub fn method(&self) -> &'static str {
        match self {
            RoomRequest::CreateRoom(_) => "CreateRoom",
            RoomRequest::ListRooms(_) => "ListRooms",
            RoomRequest::DeleteRoom(_) => "DeleteRoom",
            RoomRequest::ListParticipants(_) => "ListParticipants",
            RoomRequest::GetParticipant(_) => "GetParticipant",
            RoomRequest::RemoveParticipant(_) => "RemoveParticipant",
            RoomRequest::MutePublishedTrack(_) => "MutePublishedTrack",
            RoomRequest::UpdateParticipant(_) => "UpdateParticipant",
            RoomRequest::UpdateSubscriptions(_) => "UpdateSubscriptions",
            RoomRequest::SendData(_) => "SendData",
            RoomRequest::UpdateRoomMetadata(_) => "UpdateRoomMetadata",
            RoomRequest::ForwardParticipant(_) => "ForwardParticipant",
            RoomRequest::MoveParticipant(_) => "MoveParticipant",
            RoomRequest::PerformRpc(_) => "PerformRpc",
            RoomRequest::StartRoomCompositeEgress(_) => "StartRoomCompositeEgress",
            RoomRequest::StartWebEgress(_) => "StartWebEgress",
            RoomRequest::StartParticipantEgress(_) => "StartParticipantEgress",
            RoomRequest::StartTrackCompositeEgress(_) => "StartTrackCompositeEgress",
            RoomRequest::StartTrackEgress(_) => "StartTrackEgress",
            RoomRequest::StartEgress(_) => "StartEgress",
            RoomRequest::UpdateLayout(_) => "UpdateLayout",
            RoomRequest::UpdateStream(_) => "UpdateStream",
            RoomRequest::ListEgress(_) => "ListEgress",
            RoomRequest::StopEgress(_) => "StopEgress",
            RoomRequest::CreateDispatch(_) => "CreateDispatch",
            RoomRequest::DeleteDispatch(_) => "DeleteDispatch",
            RoomRequest::ListDispatch(_) => "ListDispatch",
        }
    }
}

/// What the authentication middleware made of a recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No `Authorization` header and no `access_token` parameter: the call
    /// went on with no grants (and then fails any grant check).
    NoToken,
    /// A valid token signed with the secret of `api_key`.
    Verified { api_key: String },
    /// Refused with a plain-text 401 carrying `message` (bad signature,
    /// expired, unknown key, no `Bearer ` prefix, ...).
    Rejected { message: String },
}

/// How the stand-in answered a recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedResponse {
    /// HTTP status.
    pub status: u16,
    /// The Twirp error code, for Twirp error replies.
    pub twirp_code: Option<String>,
}

/// A request to a routed method (a POST to `/twirp/livekit.RoomService/`,
/// `/twirp/livekit.Egress/` or `/twirp/livekit.AgentDispatchService/` and
/// a method the real server routes there), whatever became of it.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The method name, e.g. "MutePublishedTrack".
    pub method: String,
    /// The body's encoding; `None` for an unsupported `Content-Type`.
    pub encoding: Option<Encoding>,
    /// The decoded request; `None` if the body could not be decoded.
    pub request: Option<RoomRequest>,
    /// The verified token's claims, when authentication succeeded.
    pub claims: Option<Claims>,
    /// The authentication outcome.
    pub auth: AuthOutcome,
    /// The `X-Twirp-Timeout-Ms` header, if sent.
    pub timeout_ms: Option<i64>,
    /// The injected fault this call consumed, if any.
    pub fault: Option<crate::Fault>,
    /// The reply; `None` while the call is in flight (or hangs).
    pub response: Option<RecordedResponse>,
}

impl RecordedCall {
    /// The request as the `livekit-protocol` message `M`, whichever encoding
    /// it came in, e.g.
    /// `let req: livekit_protocol::SendDataRequest = call.decode();`
    ///
    /// # Panics
    /// If the body could not be decoded, or does not decode as `M`: a test bug.
    pub fn decode<M: prost::Message + Default>(&self) -> M {
        let Some(request) = &self.request else {
            panic!("livekit-standin: the {} call's body could not be decoded", self.method);
        };
        M::decode(request.encode_to_vec().as_slice())
            .unwrap_or_else(|e| panic!("livekit-standin: the {} request does not decode as asked: {e}", self.method))
    }

    /// True when the call was answered with HTTP 200.
    pub fn succeeded(&self) -> bool {
        self.response.as_ref().is_some_and(|r| r.status == 200)
    }
}
