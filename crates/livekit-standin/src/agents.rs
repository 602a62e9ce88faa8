//! Agent dispatch (`livekit.AgentDispatchService`) and the agent workers
//! that take the jobs, on [`State`].
//!
//! From server v1.13 `pkg/service/agent_dispatch_service.go`,
//! `pkg/rtc/room.go` (`createAgentDispatchesFromRoomAgent`,
//! `AddAgentDispatch`, `DeleteAgentDispatch`, `launchRoomAgents`,
//! `handleNewJobs`), `pkg/agent/client.go` (`LaunchJob`) and
//! `pkg/agent/worker.go` (`AssignJob`):
//! - a room gets its dispatches when it is created: those of its CreateRoom
//!   `agents`, or else one with an empty agent name;
//! - a dispatch launches a JT_ROOM job only if a worker is registered for
//!   its agent name; nothing retries later;
//! - the room keeps the job as the worker accepted it (JS_RUNNING): later
//!   changes of the job (the agent leaving, crashing) are not copied back,
//!   so ListDispatch keeps showing JS_RUNNING.

use std::time::SystemTime;

use livekit_protocol as proto;
use rand::seq::SliceRandom;

use crate::state::{Departure, State, Timer, guid};
use crate::twirp::TwirpError;

/// `agent.AgentNameAttributeKey`: the attribute an agent participant gets.
const AGENT_NAME_ATTRIBUTE: &str = "lk.agent_name";

fn nanos(now: SystemTime) -> i64 {
    now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl State {
    /// `createAgentDispatchesFromRoomAgent` for a room just created: one
    /// dispatch per `agents` entry, or the default one (empty agent name);
    /// their jobs launched.
    pub(crate) fn init_dispatches(&mut self, room: &str, agents: &[proto::RoomAgentDispatch], now: SystemTime) {
        let default = [proto::RoomAgentDispatch::default()];
        let agents = if agents.is_empty() { &default[..] } else { agents };
        for a in agents {
            let dispatch = proto::AgentDispatch {
                id: guid("AD_"),
                agent_name: a.agent_name.clone(),
                room: room.to_owned(),
                metadata: a.metadata.clone(),
                restart_policy: a.restart_policy,
                deployment: a.deployment.clone(),
                attributes: a.attributes.clone(),
                state: None,
            };
            self.add_dispatch(dispatch, now);
        }
    }

    /// `Room.AddAgentDispatch`: stored with its state (no jobs, created
    /// now), its job launched if a worker serves its agent name.
    fn add_dispatch(&mut self, mut dispatch: proto::AgentDispatch, now: SystemTime) -> Option<proto::AgentDispatch> {
        dispatch.state = Some(proto::AgentDispatchState { jobs: Vec::new(), created_at: nanos(now), deleted_at: 0 });
        let r = self.rooms.get_mut(&dispatch.room)?;
        r.dispatches.push(dispatch.clone());
        if self.agent_workers.contains(&dispatch.agent_name) {
            self.timers.push(Timer::AgentJoin {
                room: dispatch.room.clone(),
                room_sid: r.room.sid.clone(),
                dispatch_id: dispatch.id.clone(),
            });
        }
        Some(dispatch)
    }

    /// `CreateDispatch`: the room is created if it is not live
    /// (room_started, with its default dispatch), then the dispatch added.
    pub(crate) fn create_dispatch(
        &mut self,
        req: &proto::CreateAgentDispatchRequest,
        now: SystemTime,
    ) -> proto::AgentDispatch {
        self.create_room(&proto::CreateRoomRequest { name: req.room.clone(), ..Default::default() }, now);
        let dispatch = proto::AgentDispatch {
            id: guid("AD_"),
            agent_name: req.agent_name.clone(),
            room: req.room.clone(),
            metadata: req.metadata.clone(),
            restart_policy: req.restart_policy,
            deployment: req.deployment.clone(),
            attributes: req.attributes.clone(),
            state: None,
        };
        self.add_dispatch(dispatch, now).expect("the room was just created")
    }

    /// `ListDispatch`: `None` if the room is not live (nobody serves its
    /// topic); an unknown id lists nothing. Go map order.
    pub(crate) fn list_dispatch(&self, room: &str, dispatch_id: &str) -> Option<Vec<proto::AgentDispatch>> {
        let r = self.rooms.get(room)?;
        let mut list: Vec<proto::AgentDispatch> =
            r.dispatches.iter().filter(|d| dispatch_id.is_empty() || d.id == dispatch_id).cloned().collect();
        list.shuffle(&mut rand::rng());
        Some(list)
    }

    /// `DeleteDispatch`: `None` if the room is not live; the dispatch as it
    /// was, or not_found. Its jobs are terminated: their agents leave a
    /// step later.
    pub(crate) fn delete_dispatch(
        &mut self,
        room: &str,
        dispatch_id: &str,
    ) -> Option<Result<proto::AgentDispatch, TwirpError>> {
        let r = self.rooms.get_mut(room)?;
        let Some(i) = r.dispatches.iter().position(|d| d.id == dispatch_id) else {
            return Some(Err(TwirpError::psrpc("not_found", "dispatch ID not found")));
        };
        let dispatch = r.dispatches.remove(i);
        let room_sid = r.room.sid.clone();
        let identities: Vec<String> = dispatch
            .state
            .iter()
            .flat_map(|s| s.jobs.iter())
            .filter_map(|j| j.state.as_ref().map(|s| s.participant_identity.clone()))
            .filter(|id| !id.is_empty() && r.participants.iter().any(|p| &p.identity == id))
            .collect();
        for identity in identities {
            self.timers.push(Timer::AgentLeave { room: room.to_owned(), room_sid: room_sid.clone(), identity });
        }
        Some(Ok(dispatch))
    }

    /// A worker accepted the dispatch's job: the job (JS_RUNNING) is added
    /// to the dispatch, and its agent joins as an AGENT participant.
    pub(crate) fn agent_join(&mut self, room: &str, room_sid: &str, dispatch_id: &str, now: SystemTime) {
        let Some(r) = self.rooms.get(room).filter(|r| r.room.sid == room_sid) else {
            return;
        };
        let Some(dispatch) = r.dispatches.iter().find(|d| d.id == dispatch_id).cloned() else {
            return;
        };
        let room_proto = r.to_proto();
        let t = nanos(now);
        let job_id = guid("AJ_");
        let identity = format!("agent-{job_id}");
        let job = proto::Job {
            id: job_id.clone(),
            dispatch_id: dispatch.id.clone(),
            r#type: proto::JobType::JtRoom as i32,
            room: Some(room_proto),
            agent_name: dispatch.agent_name.clone(),
            metadata: dispatch.metadata.clone(),
            deployment: dispatch.deployment.clone(),
            attributes: dispatch.attributes.clone(),
            state: Some(proto::JobState {
                status: proto::JobStatus::JsRunning as i32,
                started_at: t,
                updated_at: t,
                participant_identity: identity.clone(),
                worker_id: guid("AW_"),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(d) = self.rooms.get_mut(room).and_then(|r| r.dispatches.iter_mut().find(|d| d.id == dispatch_id))
            && let Some(state) = d.state.as_mut()
        {
            state.jobs.push(job);
        }
        let agent_name = dispatch.agent_name.clone();
        self.join(room, &identity, true, proto::participant_info::Kind::Agent, now, |p| {
            p.attributes.insert(AGENT_NAME_ATTRIBUTE.to_owned(), agent_name);
            #[allow(deprecated)]
            if let Some(permission) = p.permission.as_mut() {
                permission.can_update_metadata = true;
                permission.agent = true;
            }
        });
    }

    /// The agent's process dies: its participant goes the abrupt way
    /// (participant_left, CONNECTION_TIMEOUT). `None` if it is not there.
    pub(crate) fn crash_agent(
        &mut self,
        room: &str,
        identity: &str,
        now: SystemTime,
    ) -> Option<proto::ParticipantInfo> {
        self.close_participant(room, identity, Departure::ConnectionLost, now)
    }

    /// The dispatches of a live room, oldest first.
    pub(crate) fn dispatches(&self, room: &str) -> Vec<proto::AgentDispatch> {
        self.rooms.get(room).map(|r| r.dispatches.clone()).unwrap_or_default()
    }
}
