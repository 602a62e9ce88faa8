//! `livekit.AgentDispatchService` over real sockets: dispatches, agent
//! workers and their jobs, a crashing agent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use livekit_api::access_token::VideoGrants;
use livekit_protocol as proto;
use livekit_standin::{StandIn, StandInConfig};

async fn standin() -> StandIn {
    standin_with(StandInConfig::default()).await
}

async fn create(s: &StandIn, room: &str, agent: &str) -> Result<proto::AgentDispatch, Failure> {
    let req = proto::CreateAgentDispatchRequest {
        agent_name: agent.into(),
        room: room.into(),
        metadata: "{\"task\":1}".into(),
        ..Default::default()
    };
    dispatch(s, "CreateDispatch", room, &req).await
}

async fn list(s: &StandIn, room: &str, id: &str) -> Result<Vec<proto::AgentDispatch>, Failure> {
    let req = proto::ListAgentDispatchRequest { room: room.into(), dispatch_id: id.into() };
    dispatch::<proto::ListAgentDispatchResponse>(s, "ListDispatch", room, &req).await.map(|r| r.agent_dispatches)
}

async fn delete(s: &StandIn, room: &str, id: &str) -> Result<proto::AgentDispatch, Failure> {
    let req = proto::DeleteAgentDispatchRequest { room: room.into(), dispatch_id: id.into() };
    dispatch(s, "DeleteDispatch", room, &req).await
}

fn jobs(d: &proto::AgentDispatch) -> &[proto::Job] {
    d.state.as_ref().map(|s| s.jobs.as_slice()).unwrap_or_default()
}

#[tokio::test]
async fn every_live_room_has_a_default_dispatch() {
    let s = standin().await;
    s.create_room("r");
    let list = list(&s, "r", "").await.unwrap();
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert!(d.id.starts_with("AD_") && d.id.len() == 15, "{}", d.id);
    assert_eq!((d.agent_name.as_str(), d.room.as_str()), ("", "r"));
    assert!(d.state.as_ref().unwrap().created_at > 1_000_000_000_000_000_000);
    assert!(jobs(d).is_empty());
    assert_eq!(s.dispatches("r"), list);
}

#[tokio::test]
async fn create_dispatch_creates_the_room_and_returns_at_once_without_jobs() {
    let s = standin().await;
    let d = create(&s, "fresh", "helper").await.unwrap();
    assert!(d.id.starts_with("AD_"));
    assert_eq!((d.agent_name.as_str(), d.room.as_str(), d.metadata.as_str()), ("helper", "fresh", "{\"task\":1}"));
    assert!(jobs(&d).is_empty());
    wait_event(&s, "room_started", |e| e.event == "room_started").await;
    let mut names: Vec<String> = list(&s, "fresh", "").await.unwrap().into_iter().map(|d| d.agent_name).collect();
    names.sort();
    assert_eq!(names, ["", "helper"]);
    assert_eq!(list(&s, "fresh", &d.id).await.unwrap(), [d]);
    assert!(list(&s, "fresh", "AD_unknown").await.unwrap().is_empty());
    // nobody serves "helper": nothing happens, ever
    assert!(s.participants("fresh").is_empty());
}

#[tokio::test]
async fn create_room_agents_apply_only_when_the_call_creates_the_room() {
    let s = standin().await;
    let grant = VideoGrants { room_create: true, ..Default::default() };
    let with = |agent: &str| proto::CreateRoomRequest {
        name: "r".into(),
        agents: vec![proto::RoomAgentDispatch { agent_name: agent.into(), ..Default::default() }],
        ..Default::default()
    };
    let _: proto::Room = call(&s, "livekit.RoomService", "CreateRoom", grant.clone(), &with("first")).await.unwrap();
    let _: proto::Room = call(&s, "livekit.RoomService", "CreateRoom", grant, &with("second")).await.unwrap();
    let names: Vec<String> = list(&s, "r", "").await.unwrap().into_iter().map(|d| d.agent_name).collect();
    // no default dispatch when the room names its agents
    assert_eq!(names, ["first"]);
}

#[tokio::test]
async fn dispatch_calls_need_room_admin_for_that_room() {
    let s = standin().await;
    s.create_room("r");
    let denied = failure(401, "unauthenticated", "permissions denied");
    let req = proto::ListAgentDispatchRequest { room: "r".into(), ..Default::default() };
    let unscoped = VideoGrants { room_admin: true, ..Default::default() };
    let other = VideoGrants { room_admin: true, room: "other".into(), ..Default::default() };
    for grants in [unscoped, other, record_grant()] {
        for method in ["CreateDispatch", "ListDispatch", "DeleteDispatch"] {
            let err = call::<proto::AgentDispatch>(&s, "livekit.AgentDispatchService", method, grants.clone(), &req)
                .await
                .unwrap_err();
            assert_eq!(err, denied, "{method}");
        }
    }
}

#[tokio::test]
async fn list_and_delete_for_a_room_that_is_not_live_fail_after_a_wait() {
    let s = standin().await;
    s.set_dispatch_unavailable_delay(Duration::from_millis(200));
    let unavailable = failure(503, "unavailable", "twirp error unknown: no response from servers");
    let t = Instant::now();
    assert_eq!(list(&s, "gone", "").await.unwrap_err(), unavailable);
    assert_eq!(delete(&s, "gone", "AD_x").await.unwrap_err(), unavailable);
    assert!(t.elapsed() >= Duration::from_millis(400));

    s.create_room("r");
    assert_eq!(
        delete(&s, "r", "AD_unknown").await.unwrap_err(),
        failure(404, "not_found", "twirp error unknown: dispatch ID not found")
    );
}

#[tokio::test]
async fn a_worker_takes_the_job_and_its_agent_joins_then_leaves_when_the_dispatch_goes() {
    let s = standin().await;
    s.set_agent_workers(["helper"]);
    let d = create(&s, "r", "helper").await.unwrap();
    let joined = wait_event(&s, "the agent's participant_joined", |e| e.event == "participant_joined").await;
    let agent = joined.participant.unwrap();
    assert_eq!(agent.kind, proto::participant_info::Kind::Agent as i32);
    assert!(agent.identity.starts_with("agent-AJ_"), "{}", agent.identity);
    assert_eq!(agent.attributes.get("lk.agent_name").map(String::as_str), Some("helper"));

    let listed = list(&s, "r", &d.id).await.unwrap();
    let job = &jobs(&listed[0])[0];
    assert_eq!(format!("agent-{}", job.id), agent.identity);
    assert_eq!((job.dispatch_id.as_str(), job.agent_name.as_str()), (d.id.as_str(), "helper"));
    assert_eq!(job.r#type, proto::JobType::JtRoom as i32);
    assert_eq!(job.room.as_ref().unwrap().name, "r");
    let state = job.state.as_ref().unwrap();
    assert_eq!(state.status, proto::JobStatus::JsRunning as i32);
    assert_eq!(state.participant_identity, agent.identity);
    assert!(state.started_at > 0);
    // the default dispatch has no worker
    assert_eq!(s.participants("r").len(), 1);

    let deleted = delete(&s, "r", &d.id).await.unwrap();
    assert_eq!(deleted.id, d.id);
    assert_eq!(jobs(&deleted).len(), 1);
    let left = wait_event(&s, "the agent's participant_left", |e| e.event == "participant_left").await;
    assert_eq!(left.participant.unwrap().identity, agent.identity);
    assert_eq!(list(&s, "r", "").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_for_the_empty_name_serves_every_rooms_default_dispatch() {
    let s = standin_with(StandInConfig { agent_workers: vec![String::new()], ..Default::default() }).await;
    s.add_participant("r", "alice");
    let joined = wait_event(&s, "the agent", |e| {
        e.event == "participant_joined" && e.participant.as_ref().is_some_and(|p| p.identity.starts_with("agent-"))
    })
    .await;
    assert_eq!(joined.room.unwrap().name, "r");
}

#[tokio::test]
async fn a_crashed_agent_leaves_abruptly_and_its_job_is_not_updated() {
    let s = standin().await;
    s.set_agent_workers(["helper"]);
    s.add_participant("r", "alice");
    create(&s, "r", "helper").await.unwrap();
    let joined = wait_event(&s, "the agent", |e| {
        e.event == "participant_joined" && e.participant.as_ref().is_some_and(|p| p.identity.starts_with("agent-"))
    })
    .await;
    let identity = joined.participant.unwrap().identity;
    let gone = s.crash_agent("r", &identity);
    assert_eq!(gone.disconnect_reason, proto::DisconnectReason::ConnectionTimeout as i32);
    let left = wait_event(&s, "participant_left", |e| e.event == "participant_left").await;
    assert_eq!(left.participant.unwrap().identity, identity);
    let d = s.dispatches("r").into_iter().find(|d| d.agent_name == "helper").unwrap();
    assert_eq!(jobs(&d)[0].state.as_ref().unwrap().status, proto::JobStatus::JsRunning as i32);
    assert_eq!(s.participants("r").len(), 1);
}

#[tokio::test]
async fn a_room_left_with_only_its_agent_closes_and_the_agent_goes_with_it() {
    let s = standin_with(StandInConfig { departure_timeout: 0, ..Default::default() }).await;
    s.set_agent_workers(["helper"]);
    s.add_participant("r", "alice");
    create(&s, "r", "helper").await.unwrap();
    wait_event(&s, "the agent", |e| {
        e.event == "participant_joined" && e.participant.as_ref().is_some_and(|p| p.identity.starts_with("agent-"))
    })
    .await;
    s.remove_participant("r", "alice");
    let left = wait_event(&s, "the agent leaving", |e| {
        e.event == "participant_left" && e.participant.as_ref().is_some_and(|p| p.identity.starts_with("agent-"))
    })
    .await;
    assert_eq!(left.participant.unwrap().disconnect_reason, proto::DisconnectReason::RoomClosed as i32);
    wait_event(&s, "room_finished", |e| e.event == "room_finished").await;
}
