//! LiveKit's Egress (recordings and streams) and AgentDispatchService,
//! sent directly as Twirp with the `livekit-protocol` types: the crate's
//! EgressClient always sends 1080p30 H264 and drops ListEgress's next page,
//! and its RoomClient cannot send CreateRoom's agents.
//!
//! LiveKit answers slowly where it has nothing to answer with: a Start for a
//! live room on a LiveKit without egress waits about 20 s for a worker, a
//! dispatch call for a room that is not live about 15 s. So the adapter
//! asks first what answers at once (ListEgress says "egress not connected"
//! immediately; ListRooms says whether the room is live) and maps LiveKit's
//! answers to what a caller can act on.

use std::time::Instant;

use livekit_protocol as lk;

use super::twirp::Grant;
use super::{LiveKit, LiveKitError, Missing, NewRoom, TwirpCode};

const EGRESS: &str = "livekit.Egress";
const AGENT_DISPATCH: &str = "livekit.AgentDispatchService";
const ROOM_SERVICE: &str = "livekit.RoomService";

/// ListEgress pages followed at most: a LiveKit with more than this many
/// pages of egresses for one question is answered in part.
const MAX_EGRESS_PAGES: usize = 20;

/// What to start: LiveKit's request, whichever kind.
#[derive(Debug, Clone)]
pub enum EgressRequest {
    RoomComposite(Box<lk::RoomCompositeEgressRequest>),
    Participant(Box<lk::ParticipantEgressRequest>),
    Track(Box<lk::TrackEgressRequest>),
}

impl EgressRequest {
    fn room(&self) -> &str {
        match self {
            EgressRequest::RoomComposite(request) => &request.room_name,
            EgressRequest::Participant(request) => &request.room_name,
            EgressRequest::Track(request) => &request.room_name,
        }
    }
}

impl LiveKit {
    /// Starts an egress. Asks ListEgress first, which tells at once whether
    /// LiveKit has an egress service at all ([`LiveKitError::NoEgressService`]);
    /// a room that is not live is [`Missing::LiveRoom`].
    pub async fn start_egress(
        &self,
        request: EgressRequest,
        deadline: Option<Instant>,
    ) -> Result<lk::EgressInfo, LiveKitError> {
        let room = request.room().to_owned();
        self.list_egress(&room, "", true, deadline).await?;
        let started = match request {
            EgressRequest::RoomComposite(request) => {
                self.egress_call("StartRoomCompositeEgress", deadline, *request).await
            }
            EgressRequest::Participant(request) => self.egress_call("StartParticipantEgress", deadline, *request).await,
            EgressRequest::Track(request) => self.egress_call("StartTrackEgress", deadline, *request).await,
        };
        started.map_err(|error| match error {
            LiveKitError::Twirp { code: TwirpCode::NotFound, .. } => LiveKitError::NotFound(Missing::LiveRoom { room }),
            LiveKitError::Twirp { method, code: TwirpCode::Unavailable, msg } if msg.contains("no response") => {
                LiveKitError::NoEgressWorker { method, msg }
            }
            other => other,
        })
    }

    /// Egresses, newest pages followed: of one room (empty: every room), one
    /// id (empty: any), only active ones.
    pub async fn list_egress(
        &self,
        room: &str,
        egress_id: &str,
        active: bool,
        deadline: Option<Instant>,
    ) -> Result<Vec<lk::EgressInfo>, LiveKitError> {
        let mut items = Vec::new();
        let mut page_token = None;
        for _ in 0..MAX_EGRESS_PAGES {
            let request = lk::ListEgressRequest {
                room_name: room.to_owned(),
                egress_id: egress_id.to_owned(),
                active,
                page_token: page_token.take(),
            };
            let page: lk::ListEgressResponse = match self.egress_call("ListEgress", deadline, request).await {
                Ok(page) => page,
                // Asked by id, LiveKit answers an unknown one with not_found.
                Err(LiveKitError::Twirp { code: TwirpCode::NotFound, .. }) if !egress_id.is_empty() => {
                    return Ok(Vec::new());
                }
                Err(error) => return Err(error),
            };
            items.extend(page.items);
            match page.next_page_token {
                Some(next) if !next.token.is_empty() => page_token = Some(next),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Stops an egress; [`Missing::Recording`] for an id LiveKit does not
    /// know (asked first: LiveKit without egress answers Stop only after
    /// about 15 s).
    pub async fn stop_egress(
        &self,
        egress_id: &str,
        deadline: Option<Instant>,
    ) -> Result<lk::EgressInfo, LiveKitError> {
        let request = lk::StopEgressRequest { egress_id: egress_id.to_owned() };
        self.egress_call("StopEgress", deadline, request).await.map_err(|error| match error {
            LiveKitError::Twirp { code: TwirpCode::NotFound, .. } => {
                LiveKitError::NotFound(Missing::Recording { id: egress_id.to_owned() })
            }
            other => other,
        })
    }

    /// Dispatches an agent; LiveKit creates the room if it is not live.
    pub async fn create_dispatch(
        &self,
        request: lk::CreateAgentDispatchRequest,
        deadline: Option<Instant>,
    ) -> Result<lk::AgentDispatch, LiveKitError> {
        let room = request.room.clone();
        self.dispatch_call("CreateDispatch", &room, deadline, request).await
    }

    /// A live room's dispatches (one, with `dispatch_id`).
    pub async fn list_dispatch(
        &self,
        room: &str,
        dispatch_id: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<lk::AgentDispatch>, LiveKitError> {
        // LiveKit takes about 15 s to fail for a room that is not live.
        self.require_live(room, deadline).await?;
        let request = lk::ListAgentDispatchRequest { dispatch_id: dispatch_id.to_owned(), room: room.to_owned() };
        let reply: lk::ListAgentDispatchResponse = self.dispatch_call("ListDispatch", room, deadline, request).await?;
        Ok(reply.agent_dispatches)
    }

    /// Cancels a dispatch of a live room.
    pub async fn delete_dispatch(
        &self,
        room: &str,
        dispatch_id: &str,
        deadline: Option<Instant>,
    ) -> Result<lk::AgentDispatch, LiveKitError> {
        let missing =
            || LiveKitError::NotFound(Missing::Dispatch { room: room.to_owned(), id: dispatch_id.to_owned() });
        let listed = self.list_dispatch(room, dispatch_id, deadline).await?;
        if !listed.iter().any(|dispatch| dispatch.id == dispatch_id) {
            return Err(missing());
        }
        let request = lk::DeleteAgentDispatchRequest { dispatch_id: dispatch_id.to_owned(), room: room.to_owned() };
        self.dispatch_call("DeleteDispatch", room, deadline, request).await.map_err(|error| match error {
            LiveKitError::Twirp { code: TwirpCode::NotFound, .. } => missing(),
            other => other,
        })
    }

    /// CreateRoom with the agents to dispatch when it creates the room
    /// (the crate cannot send them).
    pub async fn create_room_with_agents(
        &self,
        room: NewRoom,
        agents: Vec<lk::RoomAgentDispatch>,
        deadline: Option<Instant>,
    ) -> Result<lk::Room, LiveKitError> {
        let request = lk::CreateRoomRequest {
            name: room.name,
            empty_timeout: room.empty_timeout,
            departure_timeout: room.departure_timeout,
            max_participants: room.max_participants,
            metadata: room.metadata,
            agents,
            ..Default::default()
        };
        let call = self.direct.call_service(ROOM_SERVICE, "CreateRoom", Grant::Create, request);
        self.bounded_direct("CreateRoom", deadline, call).await
    }

    async fn require_live(&self, room: &str, deadline: Option<Instant>) -> Result<(), LiveKitError> {
        match self.get_room(room, deadline).await {
            Err(LiveKitError::NotFound(Missing::Room { room })) => {
                Err(LiveKitError::NotFound(Missing::LiveRoom { room }))
            }
            other => other.map(drop),
        }
    }

    async fn egress_call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        request: Req,
    ) -> Result<Resp, LiveKitError> {
        let call = self.direct.call_service(EGRESS, method, Grant::Record, request);
        self.bounded_direct(method, deadline, call).await.map_err(|error| match error {
            LiveKitError::Twirp { method, code: TwirpCode::Internal, msg } if msg.contains("egress not connected") => {
                LiveKitError::NoEgressService { method, msg }
            }
            other => other,
        })
    }

    async fn dispatch_call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: &'static str,
        room: &str,
        deadline: Option<Instant>,
        request: Req,
    ) -> Result<Resp, LiveKitError> {
        let call = self.direct.call_service(AGENT_DISPATCH, method, Grant::Admin(room), request);
        self.bounded_direct(method, deadline, call).await
    }
}
