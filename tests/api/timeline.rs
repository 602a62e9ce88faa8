//! The whole path: the LiveKit stand-in sends its webhooks as LiveKit does,
//! RoomControl stores them, watchers see them; and reconciliation infers
//! what LiveKit never sent. On SQLite and PostgreSQL.

use std::time::Duration;

use livekit_standin::{StandIn, TrackSpec};
use roomcontrol::proto::v1::*;

use crate::both_stores;
use crate::support::store::{Kind, TestDatabase};
use crate::support::timeline::{app_with_webhooks, next_event, next_of, watch_room};
use crate::support::webhooks;
use crate::support::{TestApp, unique};

async fn livekits_webhooks_reach_watchers_in_order(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    let room = unique("live");
    let mut stream = watch_room(&app, &room).await;
    let alice = standin.add_participant(&room, "alice");
    standin.add_track(&room, "alice", TrackSpec::microphone("mic"));
    standin.remove_participant(&room, "alice");
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = next_event(&mut stream).await;
        assert_eq!(event.source, EventSource::Livekit as i32, "{event:?}");
        seen.push(event);
    }
    let types: Vec<&str> = seen.iter().map(|event| event.r#type.as_str()).collect();
    assert_eq!(
        types,
        ["room_started", "participant_joined", "track_published", "track_unpublished", "participant_left"]
    );
    assert_eq!(seen[1].participant.as_ref().unwrap().sid, alice.sid);
    assert_eq!(seen[1].participant.as_ref().unwrap().kind, "standard");
    // LiveKit puts the room's TURN password in every webhook's room: it is
    // not kept (nor shown to whoever may watch the room).
    let detail = format!("{:?}", seen[1].detail);
    assert!(detail.contains("turnPassword") && detail.contains("{redacted}"), "{detail}");
    let turn_password = standin.rooms().into_iter().find(|live| live.name == room).unwrap().turn_password;
    assert!(!turn_password.is_empty() && !detail.contains(&turn_password), "{detail}");
    let track = seen[2].track.as_ref().unwrap();
    assert_eq!((track.r#type.as_str(), track.source.as_str(), track.name.as_str()), ("audio", "microphone", "mic"));

    // DeleteRoom: RoomControl's action and LiveKit's room_finished.
    app.client.clone().delete_room(DeleteRoomRequest { name: room.clone() }).await.unwrap();
    let finished = next_of(&mut stream, &["room_finished"]).await;
    assert!(!finished.inferred);
    let events = app
        .client
        .clone()
        .list_events(ListEventsRequest { rooms: vec![room.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.iter().any(|event| event.r#type == "room_deleted" && event.actor.is_some()));

    // Every webhook the stand-in sent was answered 200, each stored once
    // (LiveKit's retries carry the same id).
    let deliveries = standin.webhook_deliveries();
    assert!(deliveries.iter().all(|delivery| delivery.outcome.is_success()), "{deliveries:#?}");
    let ids: std::collections::HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids.len(), events.len());
}
both_stores!(livekits_webhooks_reach_watchers_on, livekits_webhooks_reach_watchers_in_order);

/// Waits until reconciliation has made `passes` more passes: each pass
/// lists every room (`names` empty), which the health check never does.
async fn wait_for_passes(standin: &StandIn, passes: usize) {
    let count = || {
        standin
            .calls()
            .iter()
            .filter(|call| call.method == "ListRooms")
            .filter(|call| call.decode::<livekit_protocol::ListRoomsRequest>().names.is_empty())
            .count()
    };
    let target = count() + passes;
    let wait = async {
        loop {
            let all = standin.calls().iter().filter(|call| call.method == "ListRooms").count();
            if count() >= target {
                return;
            }
            standin.wait_for_calls("ListRooms", all + 1).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.expect("reconciliation passes");
}

async fn events_of(app: &TestApp, room: &str) -> Vec<Event> {
    app.client
        .clone()
        .list_events(ListEventsRequest { rooms: vec![room.to_owned()], page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events
}

fn count(events: &[Event], kind: &str, sid: &str) -> usize {
    events
        .iter()
        .filter(|event| event.r#type == kind)
        .filter(|event| {
            event.participant.as_ref().is_some_and(|participant| participant.sid == sid)
                || event.room.as_ref().is_some_and(|room| room.sid == sid)
        })
        .count()
}

async fn a_dropped_leave_and_a_dropped_finish_are_inferred_once(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::from_millis(100)).await else { return };
    let room = unique("lossy");
    let mut stream = watch_room(&app, &room).await;
    let alice = standin.add_participant(&room, "alice");
    let joined = next_of(&mut stream, &["participant_joined"]).await;
    assert_eq!(joined.participant.unwrap().sid, alice.sid);

    // LiveKit loses alice's participant_left.
    standin.drop_webhooks(Some("participant_left"), 1);
    standin.remove_participant(&room, "alice");
    let left = next_of(&mut stream, &["participant_left"]).await;
    assert!(left.inferred, "RoomControl inferred it: {left:?}");
    assert_eq!(left.source, EventSource::Roomcontrol as i32);
    assert_eq!(left.participant.as_ref().unwrap().sid, alice.sid);

    // LiveKit loses the room's room_finished.
    let room_sid = standin.rooms().into_iter().find(|r| r.name == room).expect("the room is live").sid;
    standin.drop_webhooks(Some("room_finished"), 1);
    app.client.clone().delete_room(DeleteRoomRequest { name: room.clone() }).await.unwrap();
    let finished = next_of(&mut stream, &["room_finished"]).await;
    assert!(finished.inferred, "{finished:?}");
    assert_eq!(finished.room.as_ref().unwrap().sid, room_sid);

    // Later passes infer nothing more: one end per join, one finish per room.
    wait_for_passes(&standin, 3).await;
    let events = events_of(&app, &room).await;
    assert_eq!(count(&events, "participant_left", &alice.sid), 1, "{events:#?}");
    assert_eq!(count(&events, "room_finished", &room_sid), 1, "{events:#?}");
}
both_stores!(a_dropped_leave_and_finish_on, a_dropped_leave_and_a_dropped_finish_are_inferred_once);

#[tokio::test]
async fn a_leave_before_its_join_and_a_duplicate_infer_nothing() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::from_millis(100)).await else { return };
    // Webhooks sent by the test alone: nobody here is live in the stand-in.
    standin.set_webhook_urls(Vec::<String>::new());
    let room = unique("disorder");
    let late = webhooks::event("participant_joined", "EV_late_join", (&room, "RM_disorder"), Some(("bob", "PA_bob")));
    let early = webhooks::event("participant_left", "EV_early_leave", (&room, "RM_disorder"), Some(("bob", "PA_bob")));
    // The leave arrives first, then its join.
    assert_eq!(app.post_webhook(&early).await.status, 200);
    assert_eq!(app.post_webhook(&late).await.status, 200);
    // A join delivered twice (a retry): stored once.
    let carol = webhooks::event("participant_joined", "EV_carol", (&room, "RM_disorder"), Some(("carol", "PA_carol")));
    assert_eq!(app.post_webhook(&carol).await.status, 200);
    assert_eq!(app.post_webhook(&carol).await.status, 200);
    let carol_left =
        webhooks::event("participant_left", "EV_carol_left", (&room, "RM_disorder"), Some(("carol", "PA_carol")));
    assert_eq!(app.post_webhook(&carol_left).await.status, 200);

    wait_for_passes(&standin, 3).await;
    let events = events_of(&app, &room).await;
    assert!(events.iter().all(|event| !event.inferred), "nothing to infer: {events:#?}");
    assert_eq!(count(&events, "participant_left", "PA_bob"), 1);
    assert_eq!(count(&events, "participant_joined", "PA_carol"), 1);
    assert_eq!(count(&events, "participant_left", "PA_carol"), 1);
}

#[tokio::test]
async fn a_participant_whose_join_was_lost_gets_an_inferred_join() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::from_millis(100)).await else { return };
    let room = unique("unseen");
    let mut stream = watch_room(&app, &room).await;
    standin.drop_webhooks(Some("participant_joined"), 1);
    let dave = standin.add_participant(&room, "dave");
    let joined = next_of(&mut stream, &["participant_joined"]).await;
    assert!(joined.inferred);
    assert_eq!(joined.participant.as_ref().unwrap().sid, dave.sid);
    // Its real leave closes it: nothing inferred for it afterwards.
    standin.remove_participant(&room, "dave");
    let left = next_of(&mut stream, &["participant_left"]).await;
    assert!(!left.inferred);
    wait_for_passes(&standin, 3).await;
    assert_eq!(count(&events_of(&app, &room).await, "participant_left", &dave.sid), 1);
}
