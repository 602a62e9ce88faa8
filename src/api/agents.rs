//! DispatchAgent, ListAgentDispatches, CancelAgentDispatch, CreateRoom's
//! agents; and the redispatch of an agent that left a live room
//! unexpectedly (`redispatch_on_failure`).

use std::collections::HashMap;

use livekit_protocol as lk;
use prost::Message;
use serde_json::json;

use super::Admitted;
use crate::error::ApiError;
use crate::events::{Appended, Timeline};
use crate::livekit::{LiveKit, LiveKitError};
use crate::proto::v1::*;
use crate::recordings::timestamp;
use crate::rpc::Rpc;
use crate::store::{DispatchRow, Presence};

/// LiveKit's dispatch as RoomControl's.
pub fn from_livekit(dispatch: lk::AgentDispatch) -> AgentDispatch {
    let state = dispatch.state.unwrap_or_default();
    AgentDispatch {
        id: dispatch.id,
        agent_name: dispatch.agent_name,
        room: dispatch.room,
        metadata: dispatch.metadata,
        attributes: dispatch.attributes,
        created_at: timestamp(state.created_at),
        deleted_at: timestamp(state.deleted_at),
        jobs: state
            .jobs
            .into_iter()
            .map(|job| {
                let state = job.state.unwrap_or_default();
                AgentJob {
                    id: job.id,
                    status: match lk::JobStatus::try_from(state.status) {
                        Ok(lk::JobStatus::JsPending) => "pending".to_owned(),
                        Ok(lk::JobStatus::JsRunning) => "running".to_owned(),
                        Ok(lk::JobStatus::JsSuccess) => "success".to_owned(),
                        Ok(lk::JobStatus::JsFailed) => "failed".to_owned(),
                        Err(_) => state.status.to_string(),
                    },
                    participant_identity: state.participant_identity,
                    error: state.error,
                    started_at: timestamp(state.started_at),
                    ended_at: timestamp(state.ended_at),
                }
            })
            .collect(),
        redispatch_on_failure: false,
        redispatch_of: String::new(),
    }
}

/// The row that remembers a dispatch made through RoomControl.
fn row(dispatch: &AgentDispatch, generation: i32) -> DispatchRow {
    DispatchRow {
        id: dispatch.id.clone(),
        room: dispatch.room.clone(),
        redispatch: dispatch.redispatch_on_failure,
        generation,
        replaces: (!dispatch.redispatch_of.is_empty()).then(|| dispatch.redispatch_of.clone()),
        payload: dispatch.encode_to_vec(),
    }
}

pub(crate) async fn dispatch_agent(
    livekit: &LiveKit,
    call: Admitted<DispatchAgentRequest>,
) -> Result<AgentDispatch, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let created = livekit
        .create_dispatch(
            lk::CreateAgentDispatchRequest {
                agent_name: request.agent_name.clone(),
                room: request.room.clone(),
                metadata: request.metadata,
                attributes: request.attributes,
                ..Default::default()
            },
            deadline,
        )
        .await?;
    let mut dispatch = from_livekit(created);
    dispatch.redispatch_on_failure = request.redispatch_on_failure;
    let detail = json!({
        "dispatchId": dispatch.id,
        "agentName": dispatch.agent_name,
        "redispatchOnFailure": dispatch.redispatch_on_failure,
    });
    audit.record_with(Rpc::DispatchAgent, &request.room, "", detail, Presence::Dispatched(row(&dispatch, 0))).await;
    Ok(dispatch)
}

pub(crate) async fn list_agent_dispatches(
    livekit: &LiveKit,
    timeline: &Timeline,
    call: Admitted<ListAgentDispatchesRequest>,
) -> Result<ListAgentDispatchesResponse, ApiError> {
    let Admitted { deadline, request, .. } = call;
    let dispatches = livekit.list_dispatch(&request.room, "", deadline).await?;
    let known = stored(timeline, &request.room).await?;
    let dispatches = dispatches
        .into_iter()
        .map(|dispatch| {
            let mut dispatch = from_livekit(dispatch);
            if let Some(ours) = known.get(&dispatch.id) {
                dispatch.redispatch_on_failure = ours.redispatch_on_failure;
                dispatch.redispatch_of = ours.redispatch_of.clone();
            }
            dispatch
        })
        .collect();
    Ok(ListAgentDispatchesResponse { dispatches })
}

/// The dispatches RoomControl made in a room, by id.
async fn stored(timeline: &Timeline, room: &str) -> Result<HashMap<String, AgentDispatch>, ApiError> {
    Ok(timeline
        .store()
        .dispatches(room)
        .await?
        .into_iter()
        .filter_map(|row| AgentDispatch::decode(row.payload.as_slice()).ok())
        .map(|dispatch| (dispatch.id.clone(), dispatch))
        .collect())
}

pub(crate) async fn cancel_agent_dispatch(
    livekit: &LiveKit,
    timeline: &Timeline,
    call: Admitted<CancelAgentDispatchRequest>,
) -> Result<AgentDispatch, ApiError> {
    let Admitted { deadline, request, audit, .. } = call;
    let deleted = livekit.delete_dispatch(&request.room, &request.dispatch_id, deadline).await?;
    let mut dispatch = from_livekit(deleted);
    if let Some(ours) = stored(timeline, &request.room).await?.remove(&dispatch.id) {
        dispatch.redispatch_on_failure = ours.redispatch_on_failure;
        dispatch.redispatch_of = ours.redispatch_of;
    }
    let detail = json!({ "dispatchId": dispatch.id, "agentName": dispatch.agent_name });
    let closed = Presence::DispatchClosed { dispatch_id: dispatch.id.clone() };
    audit.record_with(Rpc::CancelAgentDispatch, &request.room, "", detail, closed).await;
    Ok(dispatch)
}

/// After CreateRoom with agents: the dispatches LiveKit made for the agents
/// that asked for redispatch are remembered (LiveKit's CreateRoom reply
/// does not name them, so they are found by name and metadata).
pub(crate) async fn remember_room_agents(
    livekit: &LiveKit,
    timeline: &Timeline,
    room: &str,
    agents: &[AgentToDispatch],
    audit: &super::Audit,
) {
    if !agents.iter().any(|agent| agent.redispatch_on_failure) {
        return;
    }
    let dispatches = match livekit.list_dispatch(room, "", None).await {
        Ok(dispatches) => dispatches,
        Err(error) => {
            tracing::warn!(%error, room, "the room's agents were dispatched, but their dispatches could not be listed: they will not be redispatched on failure");
            return;
        }
    };
    let known = stored(timeline, room).await.unwrap_or_default();
    let mut taken: Vec<&str> = Vec::new();
    for agent in agents.iter().filter(|agent| agent.redispatch_on_failure) {
        let Some(found) = dispatches.iter().find(|dispatch| {
            dispatch.agent_name == agent.agent_name
                && dispatch.metadata == agent.metadata
                && !known.contains_key(&dispatch.id)
                && !taken.contains(&dispatch.id.as_str())
        }) else {
            continue;
        };
        taken.push(&found.id);
        let mut dispatch = from_livekit(found.clone());
        dispatch.redispatch_on_failure = true;
        let detail = json!({
            "dispatchId": dispatch.id,
            "agentName": dispatch.agent_name,
            "redispatchOnFailure": true,
            "withCreateRoom": true,
        });
        audit.record_with(Rpc::DispatchAgent, room, "", detail, Presence::Dispatched(row(&dispatch, 0))).await;
    }
}

/// Why a participant left, as LiveKit's webhook says, when the agent did
/// not mean to: anything but a removal, a room closing, a cancelled
/// dispatch or the agent's own goodbye.
fn left_unexpectedly(reason: &str, job_failed: bool) -> bool {
    job_failed
        || !matches!(
            reason,
            "CLIENT_INITIATED" | "PARTICIPANT_REMOVED" | "ROOM_DELETED" | "ROOM_CLOSED" | "DUPLICATE_IDENTITY"
        )
}

/// An agent left a room: if its dispatch asked for it, and it left
/// unexpectedly while the room is live, dispatch it again. Called by the
/// replica that stored the leave (once, whatever LiveKit's retries).
pub(crate) async fn after_agent_left(
    livekit: &LiveKit,
    timeline: &Timeline,
    max_redispatches: u32,
    room: &str,
    identity: &str,
    reason: &str,
) {
    let rows = match timeline.store().redispatchable(room).await {
        Ok(rows) if !rows.is_empty() => rows,
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(%error, room, identity, "an agent left; its dispatch could not be read to redispatch it");
            return;
        }
    };
    let dispatches = match livekit.list_dispatch(room, "", None).await {
        Ok(dispatches) => dispatches,
        // The room closed: nothing to redispatch into.
        Err(LiveKitError::NotFound(_)) => return,
        Err(error) => {
            tracing::warn!(%error, room, identity, "an agent left; the room's dispatches could not be listed to redispatch it");
            return;
        }
    };
    for stored in rows {
        let Ok(ours) = AgentDispatch::decode(stored.payload.as_slice()) else { continue };
        let Some(live) = dispatches.iter().find(|dispatch| dispatch.id == ours.id) else { continue };
        let job = live.state.as_ref().and_then(|state| {
            state.jobs.iter().find(|job| job.state.as_ref().is_some_and(|s| s.participant_identity == identity))
        });
        let Some(job) = job else { continue };
        let job_failed = job.state.as_ref().is_some_and(|state| state.status == lk::JobStatus::JsFailed as i32);
        if !left_unexpectedly(reason, job_failed) {
            continue;
        }
        if stored.generation >= i32::try_from(max_redispatches).unwrap_or(i32::MAX) {
            tracing::warn!(
                room,
                identity,
                dispatch = ours.id,
                redispatches = stored.generation,
                "an agent left unexpectedly again; not redispatched (agents.max_redispatches)"
            );
            continue;
        }
        redispatch(livekit, timeline, &ours, stored.generation + 1, identity, reason).await;
    }
}

async fn redispatch(
    livekit: &LiveKit,
    timeline: &Timeline,
    old: &AgentDispatch,
    generation: i32,
    identity: &str,
    reason: &str,
) {
    let request = lk::CreateAgentDispatchRequest {
        agent_name: old.agent_name.clone(),
        room: old.room.clone(),
        metadata: old.metadata.clone(),
        attributes: old.attributes.clone(),
        ..Default::default()
    };
    let created = match livekit.create_dispatch(request, None).await {
        Ok(created) => created,
        Err(error) => {
            tracing::warn!(%error, room = old.room, dispatch = old.id, "an agent left unexpectedly and could not be dispatched again");
            return;
        }
    };
    let mut dispatch = from_livekit(created);
    dispatch.redispatch_on_failure = true;
    dispatch.redispatch_of = old.id.clone();
    let detail = json!({
        "dispatchId": dispatch.id,
        "agentName": dispatch.agent_name,
        "redispatchOf": old.id,
        "agentIdentity": identity,
        "disconnectReason": reason,
        "redispatches": generation,
    });
    let event = crate::events::system_event("agent_redispatched", &old.room, identity, detail);
    match timeline.append(event, Presence::Dispatched(row(&dispatch, generation))).await {
        Ok(Appended::Stored(_) | Appended::Duplicate) => {
            tracing::info!(
                room = old.room,
                agent = old.agent_name,
                dispatch = dispatch.id,
                replaces = old.id,
                "an agent left unexpectedly: dispatched again (redispatch_on_failure)"
            );
        }
        Err(error) => {
            tracing::error!(%error, room = old.room, dispatch = dispatch.id, "an agent was dispatched again but the redispatch was not recorded")
        }
    }
    // The old dispatch's job is over; its dispatch would only clutter the list.
    if let Err(error) = livekit.delete_dispatch(&old.room, &old.id, None).await {
        tracing::debug!(%error, room = old.room, dispatch = old.id, "the replaced dispatch could not be deleted");
    }
}
