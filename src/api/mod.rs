//! The RoomControl gRPC service: one file per group of RPCs.
//!
//! Every call is admitted the same way ([`admit`]): the caller holds one of
//! the RPC's scopes (from the registry, `crate::rpc`), the request keeps its
//! rules (`crate::validate`), the room is recorded on the call's span, and
//! the caller may touch the room. Only then does a handler run: it maps the
//! request to a question for the LiveKit adapter and the answer to the
//! reply. Transport, CORS, authentication and logging are layers
//! (`crate::server`, `crate::middleware`), not handler code.

pub(crate) mod agents;
pub(crate) mod bans;
pub(crate) mod convert;
pub(crate) mod history;
mod participants;
pub mod recordings;
mod rooms;
mod tokens;
pub mod watch_route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::config::{SelfServiceConfig, TokenConfig};
use crate::error::ApiError;
use crate::events::Timeline;
use crate::events::watch::{WatchContext, WatchStream};
use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::proto::v1::room_control_server::RoomControl;
use crate::proto::v1::*;
use crate::rpc::Rpc;
use crate::tokens::TokenSigner;
use crate::validate::{AboutRoom, Validate};

pub use tokens::create_token;

/// WatchEvents' replies, decoded.
pub struct DecodedWatchStream {
    replies: WatchStream,
    /// Frames received and not yet decoded.
    frames: bytes::Bytes,
}

impl DecodedWatchStream {
    /// The next reply in `frames`, if any.
    fn next_reply(&mut self) -> Option<Result<WatchEventsResponse, Status>> {
        use bytes::Buf as _;
        const PREFIX: usize = crate::events::timeline::FRAME_PREFIX;
        if self.frames.is_empty() {
            return None;
        }
        let len = self.frames.get(1..PREFIX).map(|mut len| len.get_u32() as usize);
        let Some(len) = len.filter(|len| PREFIX + len <= self.frames.len()) else {
            self.frames.clear();
            return Some(Err(Status::internal("a WatchEvents reply was cut short")));
        };
        self.frames.advance(PREFIX);
        let message = self.frames.split_to(len);
        Some(
            WatchEventsResponse::decode(message)
                .map_err(|error| Status::internal(format!("cannot decode a WatchEvents reply: {error}"))),
        )
    }
}

impl futures_util::Stream for DecodedWatchStream {
    type Item = Result<WatchEventsResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            if let Some(reply) = self.next_reply() {
                return std::task::Poll::Ready(Some(reply));
            }
            match std::task::ready!(std::pin::Pin::new(&mut self.replies).poll_next(cx)) {
                Some(Ok(frames)) => self.frames = frames,
                Some(Err(status)) => return std::task::Poll::Ready(Some(Err(status))),
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

/// The RoomControl service: shared by every connection.
#[derive(Debug, Clone)]
pub struct RoomControlService {
    livekit: Arc<LiveKit>,
    signer: Arc<TokenSigner>,
    metrics: Arc<Metrics>,
    tokens: TokenConfig,
    self_service: SelfServiceConfig,
    watch: WatchContext,
    bans: crate::bans::Bans,
    recorder: Arc<recordings::Recorder>,
}

impl std::fmt::Debug for WatchContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchContext").field("timeline", &self.timeline).finish_non_exhaustive()
    }
}

impl RoomControlService {
    pub fn new(
        signer: TokenSigner,
        tokens: TokenConfig,
        self_service: SelfServiceConfig,
        watch: WatchContext,
        bans: crate::bans::Bans,
        recorder: recordings::Recorder,
    ) -> Self {
        Self {
            recorder: Arc::new(recorder),
            livekit: watch.livekit.clone(),
            signer: Arc::new(signer),
            metrics: watch.metrics.clone(),
            tokens,
            self_service,
            watch,
            bans,
        }
    }

    /// WatchEvents, its replies encoded (see [`watch_route`]).
    pub(crate) async fn watch(&self, request: Request<WatchEventsRequest>) -> Result<Response<WatchStream>, Status> {
        let call = self.admit(Rpc::WatchEvents, request)?;
        Ok(Response::new(crate::events::watch::watch_events(&self.watch, call).await?))
    }

    fn timeline(&self) -> &Timeline {
        &self.watch.timeline
    }

    /// The security order every RPC but CreateToken follows, in one place:
    /// scope, validation, the room on the call's span, the room's
    /// authorization. PERMISSION_DENIED or INVALID_ARGUMENT name the rule
    /// that failed; nothing reaches LiveKit before all of it passed.
    fn admit<T: Validate + AboutRoom>(&self, rpc: Rpc, request: Request<T>) -> Result<Admitted<T>, ApiError> {
        let caller = caller(&request)?;
        let deadline = deadline(&request);
        let request = request.into_inner();
        caller.authorize(rpc, None)?;
        request.violations().into_result()?;
        if let Some(room) = request.room() {
            record_room(room);
            caller.authorize_room(room)?;
        }
        let audit = Audit { timeline: self.timeline().clone(), caller: caller.clone() };
        Ok(Admitted { caller, deadline, request, audit })
    }
}

/// A call that passed admission: who is calling, until when, and what it
/// asked for, checked.
pub(crate) struct Admitted<T> {
    pub caller: Arc<Caller>,
    pub deadline: Option<Instant>,
    pub request: T,
    /// Where the call's action is recorded.
    pub audit: Audit,
}

/// Records a caller's actions in the timeline: the audit trail.
pub(crate) struct Audit {
    timeline: Timeline,
    caller: Arc<Caller>,
}

impl Audit {
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Records an action LiveKit has carried out. It happened: a store that
    /// fails now does not turn it into an error for the caller (who would
    /// retry it); the failure is logged and counted instead.
    pub async fn record(&self, rpc: Rpc, room: &str, identity: &str, detail: serde_json::Value) {
        if let Err(error) = self.require(rpc, room, identity, detail).await {
            tracing::error!(%error, rpc = rpc.name(), room, identity, "an action was carried out but not recorded in the timeline");
        }
    }

    /// Records an action LiveKit has carried out, with what it changes
    /// beside the timeline (a recording, a dispatch); failures are logged,
    /// as for [`Audit::record`].
    pub async fn record_with(
        &self,
        rpc: Rpc,
        room: &str,
        identity: &str,
        detail: serde_json::Value,
        presence: crate::store::Presence,
    ) {
        if let Err(error) = self.require_with(rpc, room, identity, detail, presence).await {
            tracing::error!(%error, rpc = rpc.name(), room, identity, "an action was carried out but not recorded in the timeline");
        }
    }

    /// Records an action before it takes effect: no record, no action
    /// (CreateToken: a token is not handed out unless its minting is
    /// durably recorded).
    pub async fn require(
        &self,
        rpc: Rpc,
        room: &str,
        identity: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.require_with(rpc, room, identity, detail, crate::store::Presence::Unchanged).await
    }

    /// [`Audit::require`] with the detail encoded already, and made as JSON
    /// only for the `roomcontrol::audit` debug line, when it is on
    /// (CreateToken: docs/benchmarks.md).
    pub async fn require_encoded(
        &self,
        rpc: Rpc,
        room: &str,
        identity: &str,
        detail: &crate::events::EncodedStruct,
        detail_json: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), ApiError> {
        debug_assert!(rpc.info().changes_state, "{rpc} changes nothing: it is not an action");
        tracing::debug!(target: "roomcontrol::audit", caller = %self.caller, rpc = rpc.name(), room, identity, detail = %detail_json(), "audit");
        let (event, _) = crate::events::action(&self.caller, rpc, room, identity, serde_json::Value::Null);
        self.timeline.append_with_detail(event, detail, crate::store::Presence::Unchanged).await?;
        Ok(())
    }

    /// Records an action and what it changes beside the timeline, in one
    /// transaction (BanParticipant: the ban itself).
    pub async fn require_with(
        &self,
        rpc: Rpc,
        room: &str,
        identity: &str,
        detail: serde_json::Value,
        presence: crate::store::Presence,
    ) -> Result<(), ApiError> {
        debug_assert!(rpc.info().changes_state, "{rpc} changes nothing: it is not an action");
        tracing::debug!(target: "roomcontrol::audit", caller = %self.caller, rpc = rpc.name(), room, identity, %detail, "audit");
        let (event, _) = crate::events::action(&self.caller, rpc, room, identity, detail);
        self.timeline.append(event, presence).await?;
        Ok(())
    }
}

/// The caller the authentication layer identified.
fn caller<T>(request: &Request<T>) -> Result<Arc<Caller>, ApiError> {
    request.extensions().get::<Arc<Caller>>().cloned().ok_or_else(|| {
        ApiError::Unauthenticated("no caller identity: RoomControl's authentication layer is missing".to_owned())
    })
}

/// When the caller stops waiting: the `grpc-timeout` it sent, if any.
fn deadline<T>(request: &Request<T>) -> Option<Instant> {
    let header = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(header).map(|timeout| Instant::now() + timeout)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Records the room a call is about on the call's span (see `middleware`).
fn record_room(room: &str) {
    tracing::Span::current().record("room", room);
}

/// Each RPC: admitted, then handled in its group's file.
#[tonic::async_trait]
impl RoomControl for RoomControlService {
    async fn create_room(&self, request: Request<CreateRoomRequest>) -> Result<Response<Room>, Status> {
        let call = self.admit(Rpc::CreateRoom, request)?;
        Ok(Response::new(rooms::create_room(&self.livekit, call).await?))
    }

    async fn start_room_recording(
        &self,
        request: Request<StartRoomRecordingRequest>,
    ) -> Result<Response<Recording>, Status> {
        let call = self.admit(Rpc::StartRoomRecording, request)?;
        Ok(Response::new(recordings::start_room_recording(&self.livekit, &self.recorder, call).await?))
    }

    async fn start_track_recording(
        &self,
        request: Request<StartTrackRecordingRequest>,
    ) -> Result<Response<Recording>, Status> {
        let call = self.admit(Rpc::StartTrackRecording, request)?;
        Ok(Response::new(recordings::start_track_recording(&self.livekit, &self.recorder, call).await?))
    }

    async fn start_participant_recording(
        &self,
        request: Request<StartParticipantRecordingRequest>,
    ) -> Result<Response<Recording>, Status> {
        let call = self.admit(Rpc::StartParticipantRecording, request)?;
        Ok(Response::new(recordings::start_participant_recording(&self.livekit, &self.recorder, call).await?))
    }

    async fn start_stream(&self, request: Request<StartStreamRequest>) -> Result<Response<Recording>, Status> {
        let call = self.admit(Rpc::StartStream, request)?;
        Ok(Response::new(recordings::start_stream(&self.livekit, &self.recorder, call).await?))
    }

    async fn list_recordings(
        &self,
        request: Request<ListRecordingsRequest>,
    ) -> Result<Response<ListRecordingsResponse>, Status> {
        let call = self.admit(Rpc::ListRecordings, request)?;
        Ok(Response::new(recordings::list_recordings(&self.livekit, self.timeline(), call).await?))
    }

    async fn stop_recording(&self, request: Request<StopRecordingRequest>) -> Result<Response<Recording>, Status> {
        let call = self.admit(Rpc::StopRecording, request)?;
        Ok(Response::new(recordings::stop_recording(&self.livekit, self.timeline(), call).await?))
    }

    async fn dispatch_agent(&self, request: Request<DispatchAgentRequest>) -> Result<Response<AgentDispatch>, Status> {
        let call = self.admit(Rpc::DispatchAgent, request)?;
        Ok(Response::new(agents::dispatch_agent(&self.livekit, call).await?))
    }

    async fn list_agent_dispatches(
        &self,
        request: Request<ListAgentDispatchesRequest>,
    ) -> Result<Response<ListAgentDispatchesResponse>, Status> {
        let call = self.admit(Rpc::ListAgentDispatches, request)?;
        Ok(Response::new(agents::list_agent_dispatches(&self.livekit, self.timeline(), call).await?))
    }

    async fn cancel_agent_dispatch(
        &self,
        request: Request<CancelAgentDispatchRequest>,
    ) -> Result<Response<AgentDispatch>, Status> {
        let call = self.admit(Rpc::CancelAgentDispatch, request)?;
        Ok(Response::new(agents::cancel_agent_dispatch(&self.livekit, self.timeline(), call).await?))
    }

    async fn list_rooms(&self, request: Request<ListRoomsRequest>) -> Result<Response<ListRoomsResponse>, Status> {
        let call = self.admit(Rpc::ListRooms, request)?;
        Ok(Response::new(rooms::list_rooms(&self.livekit, call).await?))
    }

    async fn get_room(&self, request: Request<GetRoomRequest>) -> Result<Response<Room>, Status> {
        let call = self.admit(Rpc::GetRoom, request)?;
        Ok(Response::new(rooms::get_room(&self.livekit, call).await?))
    }

    async fn delete_room(&self, request: Request<DeleteRoomRequest>) -> Result<Response<DeleteRoomResponse>, Status> {
        let call = self.admit(Rpc::DeleteRoom, request)?;
        Ok(Response::new(rooms::delete_room(&self.livekit, call).await?))
    }

    async fn update_room_metadata(
        &self,
        request: Request<UpdateRoomMetadataRequest>,
    ) -> Result<Response<Room>, Status> {
        let call = self.admit(Rpc::UpdateRoomMetadata, request)?;
        Ok(Response::new(rooms::update_room_metadata(&self.livekit, call).await?))
    }

    async fn list_participants(
        &self,
        request: Request<ListParticipantsRequest>,
    ) -> Result<Response<ListParticipantsResponse>, Status> {
        let call = self.admit(Rpc::ListParticipants, request)?;
        Ok(Response::new(participants::list_participants(&self.livekit, call).await?))
    }

    async fn get_participant(&self, request: Request<GetParticipantRequest>) -> Result<Response<Participant>, Status> {
        let call = self.admit(Rpc::GetParticipant, request)?;
        Ok(Response::new(participants::get_participant(&self.livekit, call).await?))
    }

    async fn remove_participant(
        &self,
        request: Request<RemoveParticipantRequest>,
    ) -> Result<Response<RemoveParticipantResponse>, Status> {
        let call = self.admit(Rpc::RemoveParticipant, request)?;
        Ok(Response::new(participants::remove_participant(&self.livekit, call).await?))
    }

    async fn update_participant(
        &self,
        request: Request<UpdateParticipantRequest>,
    ) -> Result<Response<Participant>, Status> {
        let call = self.admit(Rpc::UpdateParticipant, request)?;
        Ok(Response::new(participants::update_participant(&self.livekit, call).await?))
    }

    async fn mute_published_track(
        &self,
        request: Request<MutePublishedTrackRequest>,
    ) -> Result<Response<Track>, Status> {
        let call = self.admit(Rpc::MutePublishedTrack, request)?;
        Ok(Response::new(participants::mute_published_track(&self.livekit, call).await?))
    }

    async fn update_subscriptions(
        &self,
        request: Request<UpdateSubscriptionsRequest>,
    ) -> Result<Response<UpdateSubscriptionsResponse>, Status> {
        let call = self.admit(Rpc::UpdateSubscriptions, request)?;
        Ok(Response::new(participants::update_subscriptions(&self.livekit, call).await?))
    }

    async fn send_data(&self, request: Request<SendDataRequest>) -> Result<Response<SendDataResponse>, Status> {
        let call = self.admit(Rpc::SendData, request)?;
        Ok(Response::new(participants::send_data(&self.livekit, call).await?))
    }

    /// Admitted by the token policy instead (self-service callers get
    /// their own identity filled in before the rules are checked).
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = caller(&request)?;
        let audit = Audit { timeline: self.timeline().clone(), caller: caller.clone() };
        let reply = tokens::authorized_create_token(
            &self.signer,
            &self.tokens,
            &self.self_service,
            &self.bans,
            &caller,
            request.into_inner(),
            &audit,
        )
        .await?;
        self.metrics.token_minted(!caller.has(crate::auth::Scope::TokensCreate));
        Ok(Response::new(reply))
    }

    async fn list_events(&self, request: Request<ListEventsRequest>) -> Result<Response<ListEventsResponse>, Status> {
        let call = self.admit(Rpc::ListEvents, request)?;
        Ok(Response::new(crate::events::watch::list_events(self.timeline(), call).await?))
    }

    type WatchEventsStream = DecodedWatchStream;

    /// The server answers WatchEvents on its own route
    /// ([`watch_route::WatchEventsRoute`]), which sends the encoded replies
    /// as they are; this typed form, for callers of the trait, decodes them.
    async fn watch_events(&self, request: Request<WatchEventsRequest>) -> Result<Response<DecodedWatchStream>, Status> {
        Ok(self.watch(request).await?.map(|replies| DecodedWatchStream { replies, frames: bytes::Bytes::new() }))
    }

    async fn ban_participant(
        &self,
        request: Request<BanParticipantRequest>,
    ) -> Result<Response<BanParticipantResponse>, Status> {
        let call = self.admit(Rpc::BanParticipant, request)?;
        Ok(Response::new(bans::ban_participant(&self.livekit, &self.bans, call).await?))
    }

    async fn unban_participant(
        &self,
        request: Request<UnbanParticipantRequest>,
    ) -> Result<Response<UnbanParticipantResponse>, Status> {
        let call = self.admit(Rpc::UnbanParticipant, request)?;
        Ok(Response::new(bans::unban_participant(&self.bans, call).await?))
    }

    async fn list_bans(&self, request: Request<ListBansRequest>) -> Result<Response<ListBansResponse>, Status> {
        let call = self.admit(Rpc::ListBans, request)?;
        Ok(Response::new(bans::list_bans(&self.bans, call)))
    }

    async fn list_room_sessions(
        &self,
        request: Request<ListRoomSessionsRequest>,
    ) -> Result<Response<ListRoomSessionsResponse>, Status> {
        let call = self.admit(Rpc::ListRoomSessions, request)?;
        Ok(Response::new(history::list_room_sessions(self.timeline(), call).await?))
    }

    async fn get_room_session(
        &self,
        request: Request<GetRoomSessionRequest>,
    ) -> Result<Response<GetRoomSessionResponse>, Status> {
        let call = self.admit(Rpc::GetRoomSession, request)?;
        Ok(Response::new(history::get_room_session(self.timeline(), call).await?))
    }

    async fn get_usage(&self, request: Request<GetUsageRequest>) -> Result<Response<GetUsageResponse>, Status> {
        let call = self.admit(Rpc::GetUsage, request)?;
        Ok(Response::new(history::get_usage(self.timeline(), call).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "1", "1x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
