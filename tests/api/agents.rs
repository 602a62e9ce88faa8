//! Agents through LiveKit's AgentDispatchService: dispatched, listed and
//! cancelled; dispatched with the room by CreateRoom; dispatched again
//! when the agent fails (`redispatch_on_failure`).

use std::time::Duration;

use roomcontrol::proto::v1::*;
use tonic::Code;

use crate::both_stores;
use crate::support::store::{Kind, TestDatabase};
use crate::support::timeline::{app_with_webhooks, each_of, next_of, watch_room};
use crate::support::{api_key, as_key, spawn_app_with, unique};

fn dispatch(room: &str, agent: &str, redispatch: bool) -> DispatchAgentRequest {
    DispatchAgentRequest {
        room: room.to_owned(),
        agent_name: agent.to_owned(),
        metadata: r#"{"language":"fr"}"#.to_owned(),
        redispatch_on_failure: redispatch,
        ..Default::default()
    }
}

/// Waits for an AGENT participant to join; returns its identity.
async fn agent_joined(stream: &mut tonic::codec::Streaming<WatchEventsResponse>) -> String {
    loop {
        let event = next_of(stream, &["participant_joined"]).await;
        let participant = event.participant.expect("a participant");
        if participant.kind == "agent" {
            return participant.identity;
        }
    }
}

#[tokio::test]
async fn an_agent_is_dispatched_listed_and_cancelled() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    standin.set_agent_workers(["helper"]);
    standin.set_agent_join_delay(Duration::from_millis(20));
    let mut client = app.client.clone();
    let room = unique("agents");
    let mut stream = watch_room(&app, &room).await;

    // The room is not live: LiveKit creates it.
    let dispatched = client.dispatch_agent(dispatch(&room, "helper", false)).await.unwrap().into_inner();
    assert!(dispatched.id.starts_with("AD_"), "{dispatched:?}");
    assert_eq!((dispatched.agent_name.as_str(), dispatched.room.as_str()), ("helper", room.as_str()));
    assert!(dispatched.jobs.is_empty(), "LiveKit answers before any worker took it: {dispatched:?}");
    // The room's start (a webhook) and the action may be stored in either order.
    let seen = each_of(&mut stream, &["room_started", "agent_dispatched"]).await;
    assert_eq!(seen[1].actor.as_ref().unwrap().rpc, "DispatchAgent");
    let identity = agent_joined(&mut stream).await;

    let listed = client
        .list_agent_dispatches(ListAgentDispatchesRequest { room: room.clone() })
        .await
        .unwrap()
        .into_inner()
        .dispatches;
    let ours = listed.iter().find(|d| d.id == dispatched.id).expect("listed");
    assert_eq!(ours.jobs.len(), 1, "{ours:?}");
    assert_eq!(ours.jobs[0].participant_identity, identity);
    assert_eq!(ours.jobs[0].status, "running");
    assert_eq!(ours.metadata, r#"{"language":"fr"}"#);

    let cancelled = client
        .cancel_agent_dispatch(CancelAgentDispatchRequest { room: room.clone(), dispatch_id: dispatched.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.id, dispatched.id);
    let seen = each_of(&mut stream, &["agent_dispatch_cancelled", "participant_left"]).await;
    assert_eq!(seen[1].participant.as_ref().unwrap().identity, identity);
    let again = client
        .cancel_agent_dispatch(CancelAgentDispatchRequest { room: room.clone(), dispatch_id: dispatched.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    assert!(again.message().contains(&dispatched.id), "{again:?}");
}

#[tokio::test]
async fn a_room_that_is_not_live_is_not_found_at_once() {
    let app = spawn_app_with(|config| config.livekit.timeout = Duration::from_secs(5)).await;
    let mut client = app.client.clone();
    let room = unique("absent");
    // LiveKit itself answers these only after about 15 s, with UNAVAILABLE.
    let status = client.list_agent_dispatches(ListAgentDispatchesRequest { room: room.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("is not live"), "{status:?}");
    let status = client
        .cancel_agent_dispatch(CancelAgentDispatchRequest { room, dispatch_id: "AD_abcdefabcdef".to_owned() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn a_failed_agent_is_dispatched_again(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    standin.set_agent_workers(["helper", "notetaker"]);
    standin.set_agent_join_delay(Duration::from_millis(20));
    let mut client = app.client.clone();
    let room = unique("redispatch");
    standin.add_participant(&room, "alice");
    let mut stream = watch_room(&app, &room).await;

    // One without redispatch: its crash is left alone.
    client.dispatch_agent(dispatch(&room, "notetaker", false)).await.unwrap();
    let notetaker = agent_joined(&mut stream).await;
    let first = client.dispatch_agent(dispatch(&room, "helper", true)).await.unwrap().into_inner();
    assert!(first.redispatch_on_failure);
    let helper = agent_joined(&mut stream).await;

    standin.crash_agent(&room, &notetaker);
    standin.crash_agent(&room, &helper);
    let redispatched = next_of(&mut stream, &["agent_redispatched"]).await;
    let detail = redispatched.detail.as_ref().expect("detail");
    let field = |name: &str| match detail.fields.get(name).and_then(|value| value.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(text)) => text,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(field("redispatchOf"), first.id);
    assert_eq!(field("agentIdentity"), helper);
    assert_eq!(field("disconnectReason"), "CONNECTION_TIMEOUT");
    let replacement = agent_joined(&mut stream).await;
    assert_ne!(replacement, helper);

    let listed = client
        .list_agent_dispatches(ListAgentDispatchesRequest { room: room.clone() })
        .await
        .unwrap()
        .into_inner()
        .dispatches;
    let new = listed.iter().find(|d| d.redispatch_of == first.id).expect("the redispatch is listed");
    assert!(new.redispatch_on_failure && new.agent_name == "helper", "{new:?}");
    assert_eq!(new.metadata, first.metadata);
    assert!(!listed.iter().any(|d| d.id == first.id), "the failed dispatch is replaced: {listed:?}");
    let events = client
        .list_events(ListEventsRequest {
            rooms: vec![room.clone()],
            types: vec!["agent_redispatched".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events.events.len(), 1, "only the dispatch that asked is redispatched: {events:?}");
}

both_stores!(failed_agents_are_redispatched_on, a_failed_agent_is_dispatched_again);

#[tokio::test]
async fn create_room_dispatches_its_agents_only_when_it_creates_the_room() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    standin.set_agent_workers(["helper"]);
    standin.set_agent_join_delay(Duration::from_millis(20));
    let mut client = app.client.clone();
    let room = unique("with-agents");
    let mut stream = watch_room(&app, &room).await;
    let agents =
        vec![AgentToDispatch { agent_name: "helper".to_owned(), redispatch_on_failure: true, ..Default::default() }];
    client
        .create_room(CreateRoomRequest { name: room.clone(), agents: agents.clone(), ..Default::default() })
        .await
        .unwrap();
    let helper = agent_joined(&mut stream).await;
    let listed = client
        .list_agent_dispatches(ListAgentDispatchesRequest { room: room.clone() })
        .await
        .unwrap()
        .into_inner()
        .dispatches;
    assert_eq!(listed.len(), 1, "no default dispatch beside the room's agents: {listed:?}");
    assert!(listed[0].redispatch_on_failure, "{listed:?}");
    assert_eq!(listed[0].jobs[0].participant_identity, helper);

    // Again, on the live room: LiveKit ignores the agents.
    client.create_room(CreateRoomRequest { name: room.clone(), agents, ..Default::default() }).await.unwrap();
    let listed = client.list_agent_dispatches(ListAgentDispatchesRequest { room }).await.unwrap().into_inner();
    assert_eq!(listed.dispatches.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn agents_need_their_scope_and_valid_requests() {
    let app = spawn_app_with(|config| {
        config.auth.api_keys =
            vec![api_key("rooms", &["rooms:write"], &["*"]), api_key("dispatcher", &["agents:dispatch"], &["team-*"])];
    })
    .await;
    let mut client = app.client.clone();
    let with_agent = CreateRoomRequest {
        name: unique("team"),
        agents: vec![AgentToDispatch { agent_name: "helper".to_owned(), ..Default::default() }],
        ..Default::default()
    };
    let status = client.create_room(as_key("rooms", with_agent)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("agents:dispatch"), "{status:?}");
    let status = client.dispatch_agent(as_key("dispatcher", dispatch("other", "helper", false))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = client.dispatch_agent(as_key("rooms", dispatch("team-a", "helper", false))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("agents:dispatch"), "{status:?}");

    for (request, field) in [
        (dispatch("team-a", "", false), "agent_name"),
        (DispatchAgentRequest { metadata: "x".repeat(70_000), ..dispatch("team-a", "helper", false) }, "metadata"),
        (dispatch("", "helper", false), "room"),
    ] {
        let status = client.dispatch_agent(as_key("dispatcher", request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field:?} not in {:?}", status.message());
    }
    let status = client
        .cancel_agent_dispatch(as_key(
            "dispatcher",
            CancelAgentDispatchRequest { room: "team-a".to_owned(), dispatch_id: "dispatch-1".to_owned() },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("dispatch_id"), "{status:?}");
}
