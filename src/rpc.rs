//! The registry of every RPC the main port serves: one table that the
//! handlers, authorization, audit, metrics and the middleware all read.
//!
//! Adding an RPC to the proto means adding a row to [`RPCS`] (and a variant
//! to [`Rpc`]); a unit test compares the table with the service descriptor
//! the build generates, so an RPC missing here fails `cargo test`.

use crate::auth::Scope;
use crate::limits::Limit;

/// The RoomControl service's full name, as paths and health checks use it.
pub const SERVICE: &str = "roomcontrol.v1.RoomControl";

/// What every RoomControl RPC's path starts with.
pub const PATH_PREFIX: &str = "/roomcontrol.v1.RoomControl/";

/// One RoomControl RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    CreateRoom,
    ListRooms,
    GetRoom,
    DeleteRoom,
    UpdateRoomMetadata,
    ListParticipants,
    GetParticipant,
    RemoveParticipant,
    UpdateParticipant,
    MutePublishedTrack,
    UpdateSubscriptions,
    SendData,
    CreateToken,
    ListEvents,
    WatchEvents,
    BanParticipant,
    UnbanParticipant,
    ListBans,
    StartRoomRecording,
    StartTrackRecording,
    StartParticipantRecording,
    StartStream,
    ListRecordings,
    StopRecording,
    DispatchAgent,
    ListAgentDispatches,
    CancelAgentDispatch,
    ListRoomSessions,
    GetRoomSession,
    GetUsage,
}

/// What RoomControl knows about one RPC.
#[derive(Debug)]
pub struct RpcInfo {
    pub rpc: Rpc,
    /// The method name, as in the proto: `CreateRoom`.
    pub name: &'static str,
    /// The HTTP/2 path: `/roomcontrol.v1.RoomControl/CreateRoom`.
    pub path: &'static str,
    /// The scopes that allow the call; any one of them suffices.
    pub scopes: &'static [Scope],
    /// Whether the call changes something (or mints a credential): such
    /// calls write an audit line.
    pub changes_state: bool,
    /// Whether the call waits on the LiveKit server.
    pub calls_livekit: bool,
}

use Scope::*;

/// Every RPC, in the proto's order; `RPCS[rpc as usize].rpc == rpc`.
pub const RPCS: [RpcInfo; 30] = [
    row(Rpc::CreateRoom, "CreateRoom", "/roomcontrol.v1.RoomControl/CreateRoom", &[RoomsWrite], true, true),
    row(Rpc::ListRooms, "ListRooms", "/roomcontrol.v1.RoomControl/ListRooms", &[RoomsRead], false, true),
    row(Rpc::GetRoom, "GetRoom", "/roomcontrol.v1.RoomControl/GetRoom", &[RoomsRead], false, true),
    row(Rpc::DeleteRoom, "DeleteRoom", "/roomcontrol.v1.RoomControl/DeleteRoom", &[RoomsWrite], true, true),
    row(
        Rpc::UpdateRoomMetadata,
        "UpdateRoomMetadata",
        "/roomcontrol.v1.RoomControl/UpdateRoomMetadata",
        &[RoomsWrite],
        true,
        true,
    ),
    row(
        Rpc::ListParticipants,
        "ListParticipants",
        "/roomcontrol.v1.RoomControl/ListParticipants",
        &[RoomsRead],
        false,
        true,
    ),
    row(Rpc::GetParticipant, "GetParticipant", "/roomcontrol.v1.RoomControl/GetParticipant", &[RoomsRead], false, true),
    row(
        Rpc::RemoveParticipant,
        "RemoveParticipant",
        "/roomcontrol.v1.RoomControl/RemoveParticipant",
        &[ParticipantsModerate],
        true,
        true,
    ),
    row(
        Rpc::UpdateParticipant,
        "UpdateParticipant",
        "/roomcontrol.v1.RoomControl/UpdateParticipant",
        &[ParticipantsModerate],
        true,
        true,
    ),
    row(
        Rpc::MutePublishedTrack,
        "MutePublishedTrack",
        "/roomcontrol.v1.RoomControl/MutePublishedTrack",
        &[ParticipantsModerate],
        true,
        true,
    ),
    row(
        Rpc::UpdateSubscriptions,
        "UpdateSubscriptions",
        "/roomcontrol.v1.RoomControl/UpdateSubscriptions",
        &[ParticipantsModerate],
        true,
        true,
    ),
    row(Rpc::SendData, "SendData", "/roomcontrol.v1.RoomControl/SendData", &[ParticipantsModerate], true, true),
    // Signed in-process: never waits on LiveKit.
    row(
        Rpc::CreateToken,
        "CreateToken",
        "/roomcontrol.v1.RoomControl/CreateToken",
        &[TokensCreate, TokensCreateSelf],
        true,
        false,
    ),
    // Read from the store. WatchEvents holds its slot only until its stream
    // starts (the slot is released with the response's headers).
    row(Rpc::ListEvents, "ListEvents", "/roomcontrol.v1.RoomControl/ListEvents", &[EventsRead], false, false),
    row(Rpc::WatchEvents, "WatchEvents", "/roomcontrol.v1.RoomControl/WatchEvents", &[EventsRead], false, false),
    // Removes the banned identity from the live rooms it matches.
    row(
        Rpc::BanParticipant,
        "BanParticipant",
        "/roomcontrol.v1.RoomControl/BanParticipant",
        &[ParticipantsBan],
        true,
        true,
    ),
    row(
        Rpc::UnbanParticipant,
        "UnbanParticipant",
        "/roomcontrol.v1.RoomControl/UnbanParticipant",
        &[ParticipantsBan],
        true,
        false,
    ),
    row(Rpc::ListBans, "ListBans", "/roomcontrol.v1.RoomControl/ListBans", &[ParticipantsBan], false, false),
    // Egress, through LiveKit's Egress service.
    row(
        Rpc::StartRoomRecording,
        "StartRoomRecording",
        "/roomcontrol.v1.RoomControl/StartRoomRecording",
        &[RecordingsWrite],
        true,
        true,
    ),
    row(
        Rpc::StartTrackRecording,
        "StartTrackRecording",
        "/roomcontrol.v1.RoomControl/StartTrackRecording",
        &[RecordingsWrite],
        true,
        true,
    ),
    row(
        Rpc::StartParticipantRecording,
        "StartParticipantRecording",
        "/roomcontrol.v1.RoomControl/StartParticipantRecording",
        &[RecordingsWrite],
        true,
        true,
    ),
    row(Rpc::StartStream, "StartStream", "/roomcontrol.v1.RoomControl/StartStream", &[RecordingsWrite], true, true),
    row(
        Rpc::ListRecordings,
        "ListRecordings",
        "/roomcontrol.v1.RoomControl/ListRecordings",
        &[RecordingsRead, RecordingsWrite],
        false,
        true,
    ),
    row(
        Rpc::StopRecording,
        "StopRecording",
        "/roomcontrol.v1.RoomControl/StopRecording",
        &[RecordingsWrite],
        true,
        true,
    ),
    // Through LiveKit's AgentDispatchService.
    row(
        Rpc::DispatchAgent,
        "DispatchAgent",
        "/roomcontrol.v1.RoomControl/DispatchAgent",
        &[AgentsDispatch],
        true,
        true,
    ),
    row(
        Rpc::ListAgentDispatches,
        "ListAgentDispatches",
        "/roomcontrol.v1.RoomControl/ListAgentDispatches",
        &[AgentsDispatch],
        false,
        true,
    ),
    row(
        Rpc::CancelAgentDispatch,
        "CancelAgentDispatch",
        "/roomcontrol.v1.RoomControl/CancelAgentDispatch",
        &[AgentsDispatch],
        true,
        true,
    ),
    // Read from the history's tables in the store.
    row(
        Rpc::ListRoomSessions,
        "ListRoomSessions",
        "/roomcontrol.v1.RoomControl/ListRoomSessions",
        &[HistoryRead],
        false,
        false,
    ),
    row(
        Rpc::GetRoomSession,
        "GetRoomSession",
        "/roomcontrol.v1.RoomControl/GetRoomSession",
        &[HistoryRead],
        false,
        false,
    ),
    row(Rpc::GetUsage, "GetUsage", "/roomcontrol.v1.RoomControl/GetUsage", &[HistoryRead], false, false),
];

const fn row(
    rpc: Rpc,
    name: &'static str,
    path: &'static str,
    scopes: &'static [Scope],
    changes_state: bool,
    calls_livekit: bool,
) -> RpcInfo {
    RpcInfo { rpc, name, path, scopes, changes_state, calls_livekit }
}

impl Rpc {
    /// Every RPC, in the proto's order.
    pub fn all() -> impl Iterator<Item = Rpc> {
        RPCS.iter().map(|info| info.rpc)
    }

    pub fn info(self) -> &'static RpcInfo {
        &RPCS[self as usize]
    }

    /// The method name: `CreateRoom`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The rate limit (`limits.*`) a call counts against. CreateToken by a
    /// caller that may mint only for itself (`self_service`: it lacks
    /// `tokens:create`) is a self-service token; by any other caller, a
    /// token; any other call is a write if it changes state, else a read.
    pub fn rate_limit(self, self_service: bool) -> Limit {
        match self {
            Rpc::CreateToken if self_service => Limit::SelfServiceTokens,
            Rpc::CreateToken => Limit::Tokens,
            _ if self.info().changes_state => Limit::Writes,
            _ => Limit::Reads,
        }
    }

    /// The RPC a request path names, if it is one of RoomControl's.
    pub fn from_path(path: &str) -> Option<Rpc> {
        let name = path.strip_prefix(PATH_PREFIX)?;
        RPCS.iter().find(|info| info.name == name).map(|info| info.rpc)
    }
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The services of the main port that need no credential and never wait
/// for a concurrency slot: health checks and reflection.
const PUBLIC_SERVICES: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// The public methods, each with its own metrics series.
const PUBLIC_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The health `Watch` stream, which the drain ends (see `middleware`).
pub const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Whether a path belongs to a public service (health or reflection).
pub fn is_public(path: &str) -> bool {
    PUBLIC_SERVICES.iter().any(|prefix| path.starts_with(prefix))
}

/// What a request path is, for metrics and logs: one of RoomControl's
/// RPCs, a public method, or anything else (which shares one label, so a
/// caller cannot grow the label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    RoomControl(Rpc),
    /// An index into the public methods.
    Public(usize),
    Other,
}

impl Route {
    /// How many routes there are: every RPC, every public method, "other".
    pub const COUNT: usize = RPCS.len() + PUBLIC_METHODS.len() + 1;

    pub fn of(path: &str) -> Route {
        if let Some(rpc) = Rpc::from_path(path) {
            return Route::RoomControl(rpc);
        }
        match PUBLIC_METHODS.iter().position(|method| *method == path) {
            Some(index) => Route::Public(index),
            None => Route::Other,
        }
    }

    /// Every route, in [`Route::index`] order.
    pub fn all() -> impl Iterator<Item = Route> {
        Rpc::all()
            .map(Route::RoomControl)
            .chain((0..PUBLIC_METHODS.len()).map(Route::Public))
            .chain(std::iter::once(Route::Other))
    }

    /// A dense index, `0..Route::COUNT`.
    pub fn index(self) -> usize {
        match self {
            Route::RoomControl(rpc) => rpc as usize,
            Route::Public(index) => RPCS.len() + index,
            Route::Other => Route::COUNT - 1,
        }
    }

    /// The metrics label: the path without its leading slash, or "other".
    pub fn label(self) -> &'static str {
        match self {
            Route::RoomControl(rpc) => &rpc.info().path[1..],
            Route::Public(index) => &PUBLIC_METHODS[index][1..],
            Route::Other => "other",
        }
    }

    /// Probes and reflection: frequent and dull, logged at debug.
    pub fn is_routine(self) -> bool {
        matches!(self, Route::Public(_))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_table_is_indexed_by_the_enum() {
        for (index, info) in RPCS.iter().enumerate() {
            assert_eq!(info.rpc as usize, index, "{}", info.name);
            assert_eq!(info.path, format!("/{SERVICE}/{}", info.name));
            assert_eq!(info.path, format!("{PATH_PREFIX}{}", info.name));
            assert!(!info.scopes.is_empty(), "{} needs a scope", info.name);
        }
    }

    #[test]
    fn the_registry_lists_every_method_of_the_service_descriptor_in_order() {
        let descriptors = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let (package, service) = SERVICE.rsplit_once('.').unwrap();
        let service = descriptors
            .file
            .iter()
            .filter(|file| file.package() == package)
            .flat_map(|file| &file.service)
            .find(|candidate| candidate.name() == service)
            .expect("the descriptor set holds the RoomControl service");
        let from_proto: Vec<&str> = service.method.iter().map(|method| method.name()).collect();
        let registered: Vec<&str> = RPCS.iter().map(|info| info.name).collect();
        assert_eq!(registered, from_proto, "src/rpc.rs must list every RPC of the proto, in its order");
        assert_eq!(SERVICE, crate::proto::SERVICE_NAME);
    }

    #[test]
    fn every_rpc_counts_against_one_rate_limit() {
        use Limit::*;
        let expected = [
            (Rpc::CreateRoom, Writes),
            (Rpc::ListRooms, Reads),
            (Rpc::GetRoom, Reads),
            (Rpc::DeleteRoom, Writes),
            (Rpc::UpdateRoomMetadata, Writes),
            (Rpc::ListParticipants, Reads),
            (Rpc::GetParticipant, Reads),
            (Rpc::RemoveParticipant, Writes),
            (Rpc::UpdateParticipant, Writes),
            (Rpc::MutePublishedTrack, Writes),
            (Rpc::UpdateSubscriptions, Writes),
            (Rpc::SendData, Writes),
            (Rpc::CreateToken, Tokens),
            (Rpc::ListEvents, Reads),
            (Rpc::WatchEvents, Reads),
            (Rpc::BanParticipant, Writes),
            (Rpc::UnbanParticipant, Writes),
            (Rpc::ListBans, Reads),
            (Rpc::StartRoomRecording, Writes),
            (Rpc::StartTrackRecording, Writes),
            (Rpc::StartParticipantRecording, Writes),
            (Rpc::StartStream, Writes),
            (Rpc::ListRecordings, Reads),
            (Rpc::StopRecording, Writes),
            (Rpc::DispatchAgent, Writes),
            (Rpc::ListAgentDispatches, Reads),
            (Rpc::CancelAgentDispatch, Writes),
            (Rpc::ListRoomSessions, Reads),
            (Rpc::GetRoomSession, Reads),
            (Rpc::GetUsage, Reads),
        ];
        assert_eq!(expected.len(), RPCS.len());
        for (rpc, limit) in expected {
            assert_eq!(rpc.rate_limit(false), limit, "{rpc}");
        }
        assert_eq!(Rpc::CreateToken.rate_limit(true), SelfServiceTokens);
        assert_eq!(Rpc::CreateRoom.rate_limit(true), Writes, "only CreateToken has a self-service limit");
    }

    #[test]
    fn paths_resolve_to_their_route_and_unknown_paths_share_one() {
        for route in Route::all() {
            if route != Route::Other {
                assert_eq!(Route::of(&format!("/{}", route.label())), route);
            }
        }
        assert_eq!(Route::all().count(), Route::COUNT);
        assert!(Route::all().enumerate().all(|(index, route)| route.index() == index));
        assert_eq!(Route::of("/roomcontrol.v1.RoomControl/GetRoom").label(), "roomcontrol.v1.RoomControl/GetRoom");
        assert_eq!(Route::of("/grpc.health.v1.Health/Check").label(), "grpc.health.v1.Health/Check");
        for unknown in ["/roomcontrol.v1.RoomControl/Nope", "/random/path/12345", "/other", ""] {
            assert_eq!(Route::of(unknown), Route::Other, "{unknown:?}");
        }
    }

    #[test]
    fn health_and_reflection_are_public_and_room_control_is_not() {
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public("/grpc.health.v1.Health/List"));
        assert!(is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
        assert!(!is_public("/roomcontrol.v1.RoomControl/GetRoom"));
        assert!(!is_public("/grpc.healthx/Check"));
    }
}
