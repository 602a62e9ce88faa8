//! History: room and participant sessions and usage, derived from the
//! timeline, through the real gRPC API. A real call through the stand-in
//! and its real webhooks; LiveKit's misbehaviour (duplicates, disorder,
//! lost webhooks) with webhooks the tests send themselves at chosen times;
//! usage in a time zone; scopes and room patterns; bad requests. On SQLite
//! and PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use roomcontrol::proto::v1::*;
use serde_json::{Value, json};
use tonic::Code;

use crate::both_stores;
use crate::support::store::{Kind, TestDatabase};
use crate::support::timeline::{app_with_webhooks, next_of, watch_room};
use crate::support::webhooks;
use crate::support::{TestApp, api_key, as_key, spawn_app_with, unique};

/// 2026-11-27T18:00:00Z, a fixed past instant the tests' sessions start at.
const T0: i64 = 1_795_802_400;

/// The usage cache's buckets, (start, end) in unix seconds, read from the
/// test's own database.
async fn cached_buckets(database: &TestDatabase) -> Vec<(i64, i64)> {
    let mut config = roomcontrol::Config::default();
    config.store.url = database.url.clone();
    let store = roomcontrol::store::Store::open(&config.store).await.unwrap();
    let sql = "SELECT bucket_start / 1000000, bucket_end / 1000000 FROM usage_cache ORDER BY bucket_start, bucket_end";
    let rows: Vec<(i64, i64)> = match &store {
        roomcontrol::store::Store::Sqlite(pool, _) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        roomcontrol::store::Store::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    };
    store.close().await;
    rows
}

/// Each GetUsage bucket as [label, sessions, participant-minutes, peak
/// concurrency, unique identities].
fn bucket_figures(reply: &GetUsageResponse) -> Vec<Value> {
    reply
        .buckets
        .iter()
        .map(|b| json!([b.label, b.sessions, b.participant_minutes, b.peak_concurrency, b.unique_identities]))
        .collect()
}

/// One room's usage by UTC day over [from, to) (unix seconds), as
/// [`bucket_figures`].
async fn daily_usage(app: &TestApp, room: &str, from: i64, to: i64) -> Vec<Value> {
    let request = GetUsageRequest {
        from: Some(prost_types::Timestamp { seconds: from, nanos: 0 }),
        to: Some(prost_types::Timestamp { seconds: to, nanos: 0 }),
        bucket: UsageBucket::Day as i32,
        rooms: vec![room.to_owned()],
        time_zone: String::new(),
    };
    bucket_figures(&app.client.clone().get_usage(request).await.unwrap().into_inner())
}

/// The newest cursor of the timeline.
async fn newest_cursor(app: &TestApp) -> u64 {
    let mut since = 0;
    loop {
        let reply = app
            .client
            .clone()
            .list_events(ListEventsRequest { since_cursor: since, page_size: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        since = reply.cursor;
        if reply.next_page_token.is_empty() {
            return since;
        }
    }
}

/// Waits until the history holds every event stored so far: the projector
/// runs beside the intake, moments behind it.
async fn caught_up(app: &TestApp) {
    let cursor = newest_cursor(app).await;
    let wait = async {
        loop {
            let reply = app
                .client
                .clone()
                .list_room_sessions(ListRoomSessionsRequest { page_size: 1, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            if reply.history_cursor >= cursor {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait).await.expect("the history catches up with the timeline");
}

async fn session(app: &TestApp, id: &str) -> GetRoomSessionResponse {
    app.client
        .clone()
        .get_room_session(GetRoomSessionRequest { session_id: id.to_owned() })
        .await
        .unwrap_or_else(|status| panic!("GetRoomSession({id}): {status:?}"))
        .into_inner()
}

fn seconds(at: &Option<prost_types::Timestamp>) -> i64 {
    at.as_ref().expect("a time").seconds
}

/// A room or participant webhook at `at` (unix seconds).
fn hook(name: &str, id: &str, room: (&str, &str), participant: Option<(&str, &str)>, at: i64) -> Value {
    let mut event = webhooks::event(name, id, room, participant);
    event["createdAt"] = json!(at.to_string());
    if let Some(participant) = event.get_mut("participant") {
        participant["joinedAt"] = json!((at - 1).to_string());
    }
    event
}

/// A track webhook: only the room's and participant's sids, and the track.
fn track_hook(name: &str, id: &str, room: (&str, &str), participant: (&str, &str), track: &str, at: i64) -> Value {
    json!({
        "event": name,
        "id": id,
        "createdAt": at.to_string(),
        "room": { "sid": room.1, "name": room.0 },
        "participant": { "sid": participant.1, "identity": participant.0 },
        "track": { "sid": track, "source": "MICROPHONE", "name": "mic" },
    })
}

async fn post_all(app: &TestApp, hooks: &[&Value]) {
    for hook in hooks {
        let answer = app.post_webhook(hook).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
}

/// RoomControl with the tests' own webhooks only (the stand-in's go nowhere).
async fn app_with_own_webhooks(database: &TestDatabase) -> Option<TestApp> {
    let (app, standin) = app_with_webhooks(database, Duration::ZERO).await?;
    standin.set_webhook_urls(Vec::<String>::new());
    Some(app)
}

async fn a_real_call_becomes_a_room_session(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    let room = unique("standup");
    let mut stream = watch_room(&app, &room).await;
    let mut client = app.client.clone();
    client.create_room(CreateRoomRequest { name: room.clone(), ..Default::default() }).await.unwrap();
    let alice = standin.add_participant(&room, "alice");
    standin.add_track(&room, "alice", livekit_standin::TrackSpec::microphone("mic"));
    let bob = standin.add_participant(&room, "bob");
    client
        .remove_participant(RemoveParticipantRequest { room: room.clone(), identity: "bob".to_owned() })
        .await
        .unwrap();
    next_of(&mut stream, &["participant_left"]).await;
    standin.remove_participant(&room, "alice");
    next_of(&mut stream, &["participant_left"]).await;
    let room_sid = standin.rooms().into_iter().find(|r| r.name == room).expect("the room is live").sid;
    client.delete_room(DeleteRoomRequest { name: room.clone() }).await.unwrap();
    next_of(&mut stream, &["room_finished"]).await;
    caught_up(&app).await;

    let listed = client
        .list_room_sessions(ListRoomSessionsRequest { rooms: vec![room.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 1, "{listed:#?}");
    let reply = session(&app, &room_sid).await;
    let found = reply.session.clone().unwrap();
    assert_eq!(listed.sessions[0].session_id, found.session_id);
    assert_eq!((found.room.as_str(), found.active), (room.as_str(), false));
    assert!(found.ended_at.is_some());
    assert_eq!((found.participant_sessions, found.peak_participants, found.unique_identities), (2, 2, 2));
    assert!(!found.inferred && !found.start_inferred && !found.end_inferred, "{found:#?}");
    assert_eq!(found.actions.get("room_created"), Some(&1), "{:?}", found.actions);
    assert_eq!(found.actions.get("participant_removed"), Some(&1), "{:?}", found.actions);
    assert_eq!(found.actions.get("room_deleted"), Some(&1), "{:?}", found.actions);

    let by_identity: HashMap<&str, &ParticipantSession> =
        reply.participants.iter().map(|participant| (participant.identity.as_str(), participant)).collect();
    let (a, b) = (by_identity["alice"], by_identity["bob"]);
    assert_eq!((a.participant_sid.as_str(), b.participant_sid.as_str()), (alice.sid.as_str(), bob.sid.as_str()));
    assert_eq!(a.end_reason, EndReason::Left as i32);
    assert_eq!(b.end_reason, EndReason::Removed as i32);
    assert_eq!(b.removed_by, "the anonymous caller");
    assert_eq!(a.kind, "standard");
    assert!(!a.active && !b.active);
    assert_eq!(a.tracks.len(), 1, "{a:#?}");
    assert_eq!((a.tracks[0].source.as_str(), a.tracks[0].r#type.as_str()), ("microphone", "audio"));
    assert!(a.tracks[0].unpublished_at.is_some());
    // The minutes are the participant sessions' durations summed.
    let total: f64 = reply
        .participants
        .iter()
        .map(|p| p.duration.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9))
        .sum();
    assert!(
        (found.participant_minutes - total / 60.0).abs() < 1e-6,
        "{} vs {}",
        found.participant_minutes,
        total / 60.0
    );
    // Its timeline: LiveKit's events and RoomControl's actions, in order.
    let types: Vec<&str> = reply.timeline.iter().map(|event| event.r#type.as_str()).collect();
    for expected in [
        "room_created",
        "room_started",
        "participant_joined",
        "track_published",
        "participant_removed",
        "room_finished",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    assert!(reply.timeline.windows(2).all(|pair| pair[0].cursor < pair[1].cursor));
}
both_stores!(a_real_call_becomes_a_room_session_on, a_real_call_becomes_a_room_session);

/// One session's webhooks: alice 10..130 with a track at 15, bob 20..80,
/// the room 0..200 (seconds after T0).
fn meeting(room: &str, sid: &str, prefix: &str) -> Vec<Value> {
    let r = (room, sid);
    let (alice, bob) = (("alice", &*format!("PA_{prefix}_alice")), ("bob", &*format!("PA_{prefix}_bob")));
    vec![
        hook("room_started", &format!("EV_{prefix}_1"), r, None, T0),
        hook("participant_joined", &format!("EV_{prefix}_2"), r, Some(alice), T0 + 10),
        track_hook("track_published", &format!("EV_{prefix}_3"), r, alice, &format!("TR_{prefix}"), T0 + 15),
        hook("participant_joined", &format!("EV_{prefix}_4"), r, Some(bob), T0 + 20),
        hook("participant_left", &format!("EV_{prefix}_5"), r, Some(bob), T0 + 80),
        hook("participant_left", &format!("EV_{prefix}_6"), r, Some(alice), T0 + 130),
        hook("room_finished", &format!("EV_{prefix}_7"), r, None, T0 + 200),
    ]
}

/// What a session says, without its ids.
fn figures_of(reply: &GetRoomSessionResponse) -> (Value, Vec<Value>) {
    let s = reply.session.as_ref().unwrap();
    let session = json!({
        "started": seconds(&s.started_at), "ended": seconds(&s.ended_at), "sessions": s.participant_sessions,
        "peak": s.peak_participants, "unique": s.unique_identities, "minutes": s.participant_minutes,
        "inferred": s.inferred, "duration": s.duration.as_ref().unwrap().seconds,
    });
    let participants = reply
        .participants
        .iter()
        .map(|p| {
            json!({
                "identity": p.identity, "joined": seconds(&p.joined_at), "left": seconds(&p.left_at),
                "reason": p.end_reason, "inferred": p.inferred,
                "tracks": p.tracks.iter().map(|t| json!([t.source, seconds(&t.published_at)])).collect::<Vec<_>>(),
            })
        })
        .collect();
    (session, participants)
}

async fn duplicates_and_disorder_change_nothing(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let (in_order, scrambled) = (unique("ordered"), unique("scrambled"));
    let ordered = meeting(&in_order, "RM_ordered", "o");
    post_all(&app, &ordered.iter().collect::<Vec<_>>()).await;
    // The same meeting with every webhook late, early or twice: bob's leave
    // before his join, alice's track before her join, room_started late.
    let m = meeting(&scrambled, "RM_scrambled", "s");
    post_all(&app, &[&m[4], &m[2], &m[1], &m[4], &m[0], &m[3], &m[3], &m[6], &m[5], &m[6], &m[1]]).await;
    caught_up(&app).await;

    let (ordered, participants) = figures_of(&session(&app, "RM_ordered").await);
    assert_eq!(
        ordered,
        json!({
            "started": T0, "ended": T0 + 200, "sessions": 2, "peak": 2, "unique": 2,
            // alice 120 s, bob 60 s.
            "minutes": 3.0, "inferred": false, "duration": 200,
        })
    );
    assert_eq!(participants[0]["tracks"], json!([["microphone", T0 + 15]]));
    assert_eq!(participants[1]["joined"], json!(T0 + 20));
    assert_eq!(participants[1]["reason"], json!(EndReason::Left as i32));
    assert_eq!(figures_of(&session(&app, "RM_scrambled").await), (ordered, participants));
}
both_stores!(duplicates_and_disorder_change_nothing_on, duplicates_and_disorder_change_nothing);

async fn lost_webhooks_are_closed_by_reconciliation_and_marked_inferred(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::from_millis(100)).await else { return };
    let room = unique("lossy");
    let mut stream = watch_room(&app, &room).await;
    let alice = standin.add_participant(&room, "alice");
    let bob = standin.add_participant(&room, "bob");
    next_of(&mut stream, &["participant_joined"]).await;
    next_of(&mut stream, &["participant_joined"]).await;
    // LiveKit loses alice's participant_left; bob's comes.
    standin.drop_webhooks(Some("participant_left"), 1);
    standin.remove_participant(&room, "alice");
    assert!(next_of(&mut stream, &["participant_left"]).await.inferred);
    standin.remove_participant(&room, "bob");
    assert!(!next_of(&mut stream, &["participant_left"]).await.inferred);
    // And the room's room_finished.
    let room_sid = standin.rooms().into_iter().find(|r| r.name == room).expect("the room is live").sid;
    standin.drop_webhooks(Some("room_finished"), 1);
    app.client.clone().delete_room(DeleteRoomRequest { name: room.clone() }).await.unwrap();
    assert!(next_of(&mut stream, &["room_finished"]).await.inferred);
    caught_up(&app).await;

    let reply = session(&app, &room_sid).await;
    let found = reply.session.unwrap();
    assert!(!found.active && found.end_inferred && found.inferred && !found.start_inferred, "{found:#?}");
    let reasons: HashMap<&str, (i32, bool)> =
        reply.participants.iter().map(|p| (p.participant_sid.as_str(), (p.end_reason, p.inferred))).collect();
    assert_eq!(reasons[alice.sid.as_str()], (EndReason::Inferred as i32, true), "{:#?}", reply.timeline);
    assert_eq!(reasons[bob.sid.as_str()], (EndReason::Left as i32, false));
    assert_eq!(found.participant_sessions, 2);
}
both_stores!(
    lost_webhooks_are_closed_and_marked_inferred_on,
    lost_webhooks_are_closed_by_reconciliation_and_marked_inferred
);

async fn a_room_that_ends_without_its_leaves_closes_them_as_inferred(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("abrupt");
    let r = (room.as_str(), "RM_abrupt");
    let carol = Some(("carol", "PA_carol"));
    let started = hook("room_started", "EV_a1", r, None, T0);
    let joined = hook("participant_joined", "EV_a2", r, carol, T0 + 60);
    post_all(&app, &[&started, &joined]).await;
    caught_up(&app).await;
    let live = session(&app, "RM_abrupt").await;
    assert!(live.session.as_ref().unwrap().active && live.participants[0].active);
    let listed = app
        .client
        .clone()
        .list_room_sessions(ListRoomSessionsRequest { active_only: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), ["RM_abrupt"]);
    // carol's leave never comes; the room's end does.
    post_all(&app, &[&hook("room_finished", "EV_a3", r, None, T0 + 360)]).await;
    caught_up(&app).await;
    let reply = session(&app, "RM_abrupt").await;
    let (found, carol) = (reply.session.unwrap(), &reply.participants[0]);
    assert_eq!(
        (carol.end_reason, carol.inferred, seconds(&carol.left_at)),
        (EndReason::Inferred as i32, true, T0 + 360)
    );
    assert_eq!((found.participant_minutes, found.inferred, found.active), (5.0, true, false));
}
both_stores!(a_room_that_ends_without_its_leaves_on, a_room_that_ends_without_its_leaves_closes_them_as_inferred);

/// A join whose room_started has not come: the session starts at the join,
/// marked start_inferred; the late room_started puts the real start back.
#[tokio::test]
async fn a_session_without_its_room_started_has_an_inferred_start_until_it_comes() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("no-start");
    let r = (room.as_str(), "RM_nostart");
    post_all(&app, &[&hook("participant_joined", "EV_n1", r, Some(("dana", "PA_dana")), T0 + 30)]).await;
    caught_up(&app).await;
    let found = session(&app, "RM_nostart").await.session.unwrap();
    assert!(found.start_inferred && found.inferred, "{found:#?}");
    assert_eq!(seconds(&found.started_at), T0 + 30);
    post_all(&app, &[&hook("room_started", "EV_n0", r, None, T0)]).await;
    caught_up(&app).await;
    let found = session(&app, "RM_nostart").await.session.unwrap();
    assert!(!found.start_inferred, "the real start came: {found:#?}");
    assert_eq!(seconds(&found.started_at), T0);
}

async fn usage_buckets_follow_the_time_zones_calendar(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("usage");
    let r = (room.as_str(), "RM_usage");
    let (alice, bob) = (Some(("alice", "PA_u_alice")), Some(("bob", "PA_u_bob")));
    // 18:00Z to 19:00Z; Kolkata's midnight (UTC+05:30) falls at 18:30Z.
    post_all(
        &app,
        &[
            &hook("room_started", "EV_u1", r, None, T0),
            &hook("participant_joined", "EV_u2", r, alice, T0 + 600),
            &hook("participant_joined", "EV_u3", r, bob, T0 + 1200),
            &hook("participant_left", "EV_u4", r, alice, T0 + 3000),
            &hook("participant_left", "EV_u5", r, bob, T0 + 3600),
            &hook("room_finished", "EV_u6", r, None, T0 + 3600),
        ],
    )
    .await;
    caught_up(&app).await;
    let usage = |bucket: UsageBucket, zone: &str| {
        let mut client = app.client.clone();
        let request = GetUsageRequest {
            // 2026-11-27T00:00+05:30 to 2026-11-29T00:00+05:30.
            from: Some(prost_types::Timestamp { seconds: T0 + 30 * 60 - 86_400, nanos: 0 }),
            to: Some(prost_types::Timestamp { seconds: T0 + 30 * 60 + 86_400, nanos: 0 }),
            bucket: bucket as i32,
            rooms: vec![room.clone()],
            time_zone: zone.to_owned(),
        };
        async move { client.get_usage(request).await.unwrap().into_inner() }
    };
    let figures = bucket_figures;
    let kolkata = usage(UsageBucket::Day, "Asia/Kolkata").await;
    assert_eq!(kolkata.time_zone, "Asia/Kolkata");
    assert_eq!(
        figures(&kolkata),
        [
            // alice 18:10-18:30 and bob 18:20-18:30 (UTC) on the 27th...
            json!(["2026-11-27", 1, 30.0, 2, 2]),
            // ...the rest on the 28th, Kolkata time.
            json!(["2026-11-28", 0, 50.0, 2, 2]),
        ]
    );
    assert_eq!(seconds(&kolkata.buckets[1].start), T0 + 30 * 60);
    let utc = usage(UsageBucket::Day, "").await;
    assert_eq!(utc.time_zone, "UTC");
    assert_eq!(
        figures(&utc),
        [
            json!(["2026-11-26", 0, 0.0, 0, 0]),
            json!(["2026-11-27", 1, 80.0, 2, 2]),
            json!(["2026-11-28", 0, 0.0, 0, 0])
        ]
    );
    // The cache keeps the whole UTC day, not the two the range cuts (their
    // bounds are the request's, and only a request with the same range
    // would find them again).
    let (from, to, midnight) = (T0 + 30 * 60 - 86_400, T0 + 30 * 60 + 86_400, T0 - 18 * 3600);
    let cached = cached_buckets(&database).await;
    assert!(cached.contains(&(midnight, midnight + 86_400)), "{cached:?}");
    assert!(!cached.contains(&(from, midnight)) && !cached.contains(&(midnight + 86_400, to)), "{cached:?}");
    let by_room = usage(UsageBucket::Room, "").await;
    assert_eq!(figures(&by_room), [json!([room, 1, 80.0, 2, 2])]);
    let hours = usage(UsageBucket::Hour, "Asia/Kolkata").await;
    assert_eq!(hours.buckets.len(), 48);
    let busy: Vec<Value> = figures(&hours).into_iter().filter(|b| b[2] != json!(0.0)).collect();
    assert_eq!(busy, [json!(["2026-11-27T23+05:30", 1, 30.0, 2, 2]), json!(["2026-11-28T00+05:30", 0, 50.0, 2, 2])]);

    // A late participant in a day already answered (and cached): counted.
    let carol = Some(("carol", "PA_u_carol"));
    post_all(
        &app,
        &[
            &hook("participant_left", "EV_u8", r, carol, T0 + 900),
            &hook("participant_joined", "EV_u7", r, carol, T0 + 300),
        ],
    )
    .await;
    caught_up(&app).await;
    assert_eq!(
        figures(&usage(UsageBucket::Day, "Asia/Kolkata").await),
        [json!(["2026-11-27", 1, 40.0, 2, 3]), json!(["2026-11-28", 0, 50.0, 2, 2])]
    );
}
both_stores!(usage_buckets_follow_the_time_zone_on, usage_buckets_follow_the_time_zones_calendar);

/// The usage cache's rows whose profile is kept: (start, end) in unix
/// seconds.
async fn profiled_buckets(database: &TestDatabase) -> Vec<(i64, i64)> {
    let mut config = roomcontrol::Config::default();
    config.store.url = database.url.clone();
    let store = roomcontrol::store::Store::open(&config.store).await.unwrap();
    let sql = "SELECT bucket_start / 1000000, bucket_end / 1000000 FROM usage_cache WHERE profile IS NOT NULL ORDER BY bucket_start";
    let rows: Vec<(i64, i64)> = match &store {
        roomcontrol::store::Store::Sqlite(pool, _) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        roomcontrol::store::Store::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    };
    store.close().await;
    rows
}

/// A range that starts or ends inside a day that has ended (the first day
/// of "the last 30 days"): its part of the day is counted exactly, from
/// the whole day's profile kept in the cache for every later range that
/// cuts the day elsewhere; a late event in that day changes the answer.
async fn a_day_cut_by_the_range_is_counted_exactly_and_follows_late_events(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("cut");
    let (r1, r2) = ((room.as_str(), "RM_cut1"), (room.as_str(), "RM_cut2"));
    let p = |identity: &'static str, sid: &'static str| Some((identity, sid));
    // (seconds after T0, 18:00Z on the 27th): alice 16:10-18:20, bob
    // 17:00-17:30, carol 23:50-00:10 across midnight; a second room
    // session 20:00-20:05 with nobody in it.
    post_all(
        &app,
        &[
            &hook("room_started", "EV_c1", r1, None, T0 - 7200),
            &hook("participant_joined", "EV_c2", r1, p("alice", "PA_c_alice"), T0 - 6600),
            &hook("participant_joined", "EV_c3", r1, p("bob", "PA_c_bob"), T0 - 3600),
            &hook("participant_left", "EV_c4", r1, p("bob", "PA_c_bob"), T0 - 1800),
            &hook("participant_left", "EV_c5", r1, p("alice", "PA_c_alice"), T0 + 1200),
            &hook("participant_joined", "EV_c6", r1, p("carol", "PA_c_carol"), T0 + 21_000),
            &hook("participant_left", "EV_c7", r1, p("carol", "PA_c_carol"), T0 + 22_200),
            &hook("room_finished", "EV_c8", r1, None, T0 + 22_200),
            &hook("room_started", "EV_c9", r2, None, T0 + 7200),
            &hook("room_finished", "EV_c10", r2, None, T0 + 7500),
        ],
    )
    .await;
    caught_up(&app).await;
    let usage = |from: i64, to: i64| daily_usage(&app, &room, from, to);
    let midnight = T0 - 18 * 3600;
    // From 18:00 on the 27th to noon on the 28th: both days cut.
    let expected = [json!(["2026-11-27", 1, 30.0, 1, 2]), json!(["2026-11-28", 0, 10.0, 1, 1])];
    assert_eq!(usage(T0, T0 + 18 * 3600).await, expected);
    // The cut days are kept whole, with their profiles; never under the
    // range's bounds.
    let days = [(midnight, midnight + 86_400), (midnight + 86_400, midnight + 2 * 86_400)];
    assert_eq!(profiled_buckets(&database).await, days);
    assert_eq!(cached_buckets(&database).await, days);
    // The same again, and other cuts of the same days: alice 17:10-18:20
    // and bob 17:10-17:30 at once; the 28th's first ten minutes only.
    assert_eq!(usage(T0, T0 + 18 * 3600).await, expected);
    assert_eq!(
        usage(T0 - 3000, T0 + 6 * 3600 + 300).await,
        [json!(["2026-11-27", 1, 100.0, 2, 3]), json!(["2026-11-28", 0, 5.0, 1, 1])]
    );
    // Cut one microsecond before midnight, and one after: carol alone.
    let mut client = app.client.clone();
    let reply = client
        .get_usage(GetUsageRequest {
            from: Some(prost_types::Timestamp { seconds: midnight + 86_399, nanos: 999_999_000 }),
            to: Some(prost_types::Timestamp { seconds: midnight + 86_400, nanos: 1_000 }),
            bucket: UsageBucket::Day as i32,
            rooms: vec![room.clone()],
            time_zone: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let counted: Vec<(u32, u32, u32)> =
        reply.buckets.iter().map(|b| (b.sessions, b.peak_concurrency, b.unique_identities)).collect();
    assert_eq!(counted, [(0, 1, 1), (0, 1, 1)]);
    assert_eq!(profiled_buckets(&database).await, days);

    // A participant LiveKit reported late, inside the cut part of the 27th:
    // the day's figures and its profile are made again.
    post_all(
        &app,
        &[
            &hook("participant_left", "EV_c12", r1, p("dave", "PA_c_dave"), T0 + 5400),
            &hook("participant_joined", "EV_c11", r1, p("dave", "PA_c_dave"), T0 + 3600),
        ],
    )
    .await;
    caught_up(&app).await;
    assert_eq!(usage(T0, T0 + 18 * 3600).await, [json!(["2026-11-27", 1, 60.0, 1, 3]), expected[1].clone()]);
    assert_eq!(profiled_buckets(&database).await, days);
}
both_stores!(
    a_day_cut_by_the_range_is_counted_exactly_on,
    a_day_cut_by_the_range_is_counted_exactly_and_follows_late_events
);

#[tokio::test]
async fn history_needs_its_scope_and_shows_only_the_callers_rooms() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let url = database.url.clone();
    let app = spawn_app_with(move |config| {
        config.store.url = url;
        config.auth.api_keys = vec![
            api_key("admin", &["history:read", "events:read"], &["*"]),
            api_key("team", &["history:read"], &["team-*"]),
            api_key("rooms", &["rooms:read"], &["*"]),
            // No room patterns: may touch no room.
            api_key("nobody", &["history:read"], &[]),
        ];
    })
    .await;
    let Some(standin) = app.standin.clone() else { return };
    standin.set_webhook_urls(Vec::<String>::new());
    // A room the pattern matches, one it does not, and one that only
    // SQL LIKE would match (`_` is a wildcard there, not here); someone in
    // each.
    for (room, sid) in [("team-a", "RM_team"), ("other-b", "RM_other"), ("teamXa", "RM_like")] {
        let participant = format!("PA_{sid}");
        post_all(
            &app,
            &[
                &hook("room_started", &format!("EV_{sid}"), (room, sid), None, T0),
                &hook("participant_joined", &format!("EV_{sid}_j"), (room, sid), Some(("erin", &participant)), T0 + 60),
            ],
        )
        .await;
    }
    let mut client = app.client.clone();
    let wait = async {
        loop {
            let listed = client
                .list_room_sessions(as_key("admin", ListRoomSessionsRequest::default()))
                .await
                .unwrap()
                .into_inner();
            if listed.sessions.len() == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait).await.expect("three sessions");

    let listed =
        client.list_room_sessions(as_key("team", ListRoomSessionsRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.sessions.iter().map(|s| s.room.as_str()).collect::<Vec<_>>(), ["team-a"]);
    let status = client
        .get_room_session(as_key("team", GetRoomSessionRequest { session_id: "RM_other".to_owned() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    client.get_room_session(as_key("team", GetRoomSessionRequest { session_id: "RM_team".to_owned() })).await.unwrap();
    let usage = GetUsageRequest {
        from: Some(prost_types::Timestamp { seconds: T0 - 3600, nanos: 0 }),
        to: Some(prost_types::Timestamp { seconds: T0 + 3600, nanos: 0 }),
        bucket: UsageBucket::Room as i32,
        ..Default::default()
    };
    let rooms: Vec<String> = client
        .get_usage(as_key("team", usage.clone()))
        .await
        .unwrap()
        .into_inner()
        .buckets
        .into_iter()
        .map(|b| b.label)
        .collect();
    assert_eq!(rooms, ["team-a"]);
    // A caller without room patterns sees no room's usage, by room or by
    // day (two days the range cuts, answered from their profiles).
    let nobody = client.get_usage(as_key("nobody", usage.clone())).await.unwrap().into_inner();
    assert_eq!(nobody.buckets, []);
    let by_day = GetUsageRequest {
        from: Some(prost_types::Timestamp { seconds: T0 - 86_400, nanos: 0 }),
        bucket: UsageBucket::Day as i32,
        ..usage.clone()
    };
    let admin = client.get_usage(as_key("admin", by_day.clone())).await.unwrap().into_inner();
    assert_eq!(admin.buckets.iter().map(|b| b.unique_identities).max(), Some(1), "{admin:?}");
    let nobody = client.get_usage(as_key("nobody", by_day)).await.unwrap().into_inner();
    assert!(!nobody.buckets.is_empty());
    for bucket in &nobody.buckets {
        let figures = (bucket.sessions, bucket.participant_minutes, bucket.peak_concurrency, bucket.unique_identities);
        assert_eq!(figures, (0, 0.0, 0, 0), "{bucket:?}");
    }
    let status = client.get_usage(as_key("rooms", usage)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("history:read"), "{}", status.message());
}

#[tokio::test]
async fn bad_history_requests_say_what_to_fix() {
    let app = spawn_app_with(|_| {}).await;
    let mut client = app.client.clone();
    let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let usage =
        GetUsageRequest { from: at(T0), to: at(T0 + 86_400), bucket: UsageBucket::Day as i32, ..Default::default() };
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            client
                .list_room_sessions(ListRoomSessionsRequest { from: at(T0), to: at(T0 - 1), ..Default::default() })
                .await
                .unwrap_err(),
            "to",
        ),
        (
            client
                .list_room_sessions(ListRoomSessionsRequest { page_token: "nope".to_owned(), ..Default::default() })
                .await
                .unwrap_err(),
            "page_token",
        ),
        (
            client
                .list_room_sessions(ListRoomSessionsRequest { page_size: 5000, ..Default::default() })
                .await
                .unwrap_err(),
            "page_size",
        ),
        (client.get_room_session(GetRoomSessionRequest::default()).await.unwrap_err(), "session_id"),
        (
            client
                .get_usage(GetUsageRequest { time_zone: "Mars/Olympus".to_owned(), ..usage.clone() })
                .await
                .unwrap_err(),
            "time_zone",
        ),
        (client.get_usage(GetUsageRequest { bucket: 0, ..usage.clone() }).await.unwrap_err(), "bucket"),
        (
            client.get_usage(GetUsageRequest { to: at(T0 + 401 * 86_400), ..usage.clone() }).await.unwrap_err(),
            "400 days",
        ),
        (client.get_usage(GetUsageRequest { from: None, ..usage.clone() }).await.unwrap_err(), "from"),
    ];
    for (status, words) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(words), "{words:?} in {}", status.message());
    }
    let status =
        client.get_room_session(GetRoomSessionRequest { session_id: "RM_never".to_owned() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("RM_never") && status.message().contains("ListRoomSessions"),
        "{}",
        status.message()
    );
    // A zone on its own is fine, and pages walk every session once.
    client.get_usage(GetUsageRequest { time_zone: "America/New_York".to_owned(), ..usage }).await.unwrap();
}

#[tokio::test]
async fn pages_walk_every_session_once_newest_first() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("paged");
    let mut expected = Vec::new();
    for n in 0..7i64 {
        let sid = format!("RM_page_{n}");
        // Two sessions start in the same second: the sid breaks the tie.
        let at = T0 + n / 2 * 60;
        post_all(&app, &[&hook("room_started", &format!("EV_page_{n}"), (&room, &sid), None, at)]).await;
        expected.push((at, sid));
    }
    expected.sort();
    expected.reverse();
    caught_up(&app).await;
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let reply = app
            .client
            .clone()
            .list_room_sessions(ListRoomSessionsRequest {
                rooms: vec![room.clone()],
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(reply.sessions.into_iter().map(|s| (seconds(&s.started_at), s.session_id)));
        if reply.next_page_token.is_empty() {
            break;
        }
        token = reply.next_page_token;
    }
    assert_eq!(seen, expected);
    // A day's window leaves out what ended before it or started after it.
    let day = app
        .client
        .clone()
        .list_room_sessions(ListRoomSessionsRequest {
            rooms: vec![room.clone()],
            from: Some(prost_types::Timestamp { seconds: T0 + 3600, nanos: 0 }),
            to: Some(prost_types::Timestamp { seconds: T0 + 7200, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Still active: every one of them ran in the window.
    assert_eq!(day.sessions.len(), 7);
}

#[tokio::test]
async fn the_export_command_prints_the_sessions_figures_as_csv_and_json() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("exported");
    let hooks = meeting(&room, "RM_exported", "x");
    post_all(&app, &hooks.iter().collect::<Vec<_>>()).await;
    caught_up(&app).await;
    let figures = session(&app, "RM_exported").await.session.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("ROOMCONTROL_STORE__URL", database.url.as_str())];
    let range = ["--from", "2026-11-27T00:00:00Z", "--to", "2026-11-28T00:00:00+01:00"];
    let export = |format: &str| {
        let mut args = vec!["history", "export", "--format", format];
        args.extend(range);
        crate::process::roomcontrol(dir.path(), &env, &args)
    };

    let output = export("csv");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let csv = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().map(|line| line.split(',').collect()).collect();
    assert_eq!(lines.len(), 3, "a header and one line per participant session:\n{csv}");
    let column = |name: &str| lines[0].iter().position(|header| *header == name).unwrap_or_else(|| panic!("{name}"));
    for line in &lines[1..] {
        assert_eq!(line.len(), lines[0].len(), "{csv}");
        assert_eq!(line[column("session_id")], "RM_exported");
        assert_eq!(line[column("room")], room);
        assert_eq!(line[column("participant_minutes")], format!("{:.3}", figures.participant_minutes));
        assert_eq!(line[column("peak_participants")], figures.peak_participants.to_string());
        assert_eq!(line[column("end_reason")], "left");
    }
    let identities: Vec<&str> = lines[1..].iter().map(|line| line[column("identity")]).collect();
    assert_eq!(identities, ["alice", "bob"]);
    assert_eq!(lines[1][column("participant_duration_seconds")], "120.000");
    assert_eq!(lines[1][column("tracks")], "microphone:audio");

    let output = export("json");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json[0]["sessionId"], "RM_exported");
    assert_eq!(json[0]["participantMinutes"], json!(figures.participant_minutes));
    assert_eq!(json[0]["participants"][1]["endReason"], "END_REASON_LEFT");

    // Outside the range: nothing; a bad time: a message saying what to give.
    let output = crate::process::roomcontrol(
        dir.path(),
        &env,
        &["history", "export", "--from", "2025-01-01T00:00:00Z", "--to", "2025-01-02T00:00:00Z", "--format", "json"],
    );
    assert_eq!(serde_json::from_slice::<Value>(&output.stdout).unwrap(), json!([]));
    let output = crate::process::roomcontrol(
        dir.path(),
        &env,
        &["history", "export", "--from", "yesterday", "--to", "2025-01-02T00:00:00Z"],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("RFC 3339"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_count_each_event_once() {
    let database = TestDatabase::create(Kind::Postgres).await;
    let Some(first) = app_with_own_webhooks(&database).await else { return };
    let Some(second) = app_with_own_webhooks(&database).await else { return };
    let room = unique("replicated");
    let hooks = meeting(&room, "RM_replicated", "r");
    // LiveKit retries reach either replica: every webhook to both, at once.
    for hook in &hooks {
        let (a, b) = tokio::join!(first.post_webhook(hook), second.post_webhook(hook));
        assert_eq!((a.status, b.status), (200, 200));
    }
    caught_up(&first).await;
    caught_up(&second).await;
    for app in [&first, &second] {
        let (session, participants) = figures_of(&session(app, "RM_replicated").await);
        assert_eq!((session["sessions"].clone(), session["minutes"].clone()), (json!(2), json!(3.0)));
        assert_eq!(session["peak"], json!(2));
        assert_eq!(participants.len(), 2);
    }
}

#[tokio::test]
async fn history_is_kept_for_its_own_retention() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let url = database.url.clone();
    let app = spawn_app_with(move |config| {
        config.store.url = url;
        // Sessions that ended more than a day ago go; the timeline stays.
        config.history.retention = Duration::from_secs(86_400);
        config.history.prune_interval = Duration::from_millis(50);
    })
    .await;
    let Some(standin) = app.standin.clone() else { return };
    standin.set_webhook_urls(Vec::<String>::new());
    let room = unique("kept");
    let hooks = meeting(&room, "RM_old", "k");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let recent = hook("room_started", "EV_recent", (&room, "RM_recent"), None, now);
    post_all(&app, &hooks.iter().chain([&recent]).collect::<Vec<_>>()).await;
    caught_up(&app).await;
    let wait = async {
        loop {
            let status =
                app.client.clone().get_room_session(GetRoomSessionRequest { session_id: "RM_old".to_owned() }).await;
            if status.is_err_and(|status| status.code() == Code::NotFound) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait).await.expect("the old session is pruned");
    // The active one stays, and the timeline keeps the old session's events.
    session(&app, "RM_recent").await;
    let events = app
        .client
        .clone()
        .list_events(ListEventsRequest { rooms: vec![room.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), hooks.len() + 1);
}

/// A room open for days (a participant who never leaves): an event in it
/// changes the cached figures only of the days around what it moved, and
/// the days before stay cached; a late leave, and a participant whose
/// identity changes, change exactly the days they touch.
async fn an_open_room_drops_only_the_cached_days_an_event_changes(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let room = unique("long");
    let r = (room.as_str(), "RM_long");
    let p = |identity: &'static str, sid: &'static str| Some((identity, sid));
    const DAY: i64 = 86_400;
    let midnight = T0 - 18 * 3600;
    // From 18:00 on the 25th: alice, who stays.
    post_all(
        &app,
        &[
            &hook("room_started", "EV_l1", r, None, T0 - 2 * DAY),
            &hook("participant_joined", "EV_l2", r, p("alice", "PA_l_alice"), T0 - 2 * DAY + 60),
        ],
    )
    .await;
    caught_up(&app).await;
    let usage = || daily_usage(&app, &room, midnight - 2 * DAY, midnight + DAY);
    let days: Vec<(i64, i64)> = (0..3).map(|day| (midnight + (day - 2) * DAY, midnight + (day - 1) * DAY)).collect();
    assert_eq!(
        usage().await,
        [
            json!(["2026-11-25", 1, 359.0, 1, 1]),
            json!(["2026-11-26", 0, 1440.0, 1, 1]),
            json!(["2026-11-27", 0, 1440.0, 1, 1])
        ]
    );
    assert_eq!(cached_buckets(&database).await, days);

    // bob on the 27th, 18:00-18:10: only the 27th goes.
    post_all(
        &app,
        &[
            &hook("participant_joined", "EV_l3", r, p("bob", "PA_l_bob"), T0),
            &hook("participant_left", "EV_l4", r, p("bob", "PA_l_bob"), T0 + 600),
        ],
    )
    .await;
    caught_up(&app).await;
    assert_eq!(cached_buckets(&database).await, days[..2]);
    let with_bob = [
        json!(["2026-11-25", 1, 359.0, 1, 1]),
        json!(["2026-11-26", 0, 1440.0, 1, 1]),
        json!(["2026-11-27", 0, 1450.0, 2, 2]),
    ];
    assert_eq!(usage().await, with_bob);
    assert_eq!(cached_buckets(&database).await, days);

    // carol on the 27th, 18:20-18:30; then LiveKit names her sid "bob"
    // (a track event): the 27th counts one identity fewer.
    post_all(
        &app,
        &[
            &hook("participant_joined", "EV_l5", r, p("carol", "PA_l_carol"), T0 + 1200),
            &hook("participant_left", "EV_l6", r, p("carol", "PA_l_carol"), T0 + 1800),
        ],
    )
    .await;
    caught_up(&app).await;
    assert_eq!(usage().await[2], json!(["2026-11-27", 0, 1460.0, 2, 3]));
    post_all(&app, &[&track_hook("track_published", "EV_l7", r, ("bob", "PA_l_carol"), "TR_l_mic", T0 + 1300)]).await;
    caught_up(&app).await;
    assert_eq!(cached_buckets(&database).await, days[..2]);
    assert_eq!(usage().await[2], json!(["2026-11-27", 0, 1460.0, 2, 2]));

    // alice's leave, late: she left at 18:00 on the 26th. The 25th stays.
    post_all(&app, &[&hook("participant_left", "EV_l8", r, p("alice", "PA_l_alice"), T0 - DAY)]).await;
    caught_up(&app).await;
    assert_eq!(cached_buckets(&database).await, days[..1]);
    assert_eq!(
        usage().await,
        [
            json!(["2026-11-25", 1, 359.0, 1, 1]),
            json!(["2026-11-26", 0, 1080.0, 1, 1]),
            json!(["2026-11-27", 0, 20.0, 1, 1])
        ]
    );
}
both_stores!(an_open_room_drops_only_the_changed_days_on, an_open_room_drops_only_the_cached_days_an_event_changes);

/// A database RoomControl left at schema version 4 (before usage profiles),
/// with cached usage in it: the next start adds the profile column and
/// empties the cache (figures earlier versions computed), and GetUsage
/// answers and caches again.
async fn a_version_4_database_gains_usage_profiles_and_computes_its_cache_again(kind: Kind) {
    use sqlx::Connection;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let database = TestDatabase::create(kind).await;
    let postgres = kind == Kind::Postgres;
    let sql = |sqlite: &'static str, pg: &'static str| std::borrow::Cow::Borrowed(if postgres { pg } else { sqlite });
    let migrations = [
        (
            1,
            "timeline",
            sql(
                include_str!("../../src/store/migrations/sqlite/0001_timeline.sql"),
                include_str!("../../src/store/migrations/postgres/0001_timeline.sql"),
            ),
        ),
        (
            2,
            "bans",
            sql(
                include_str!("../../src/store/migrations/sqlite/0002_bans.sql"),
                include_str!("../../src/store/migrations/postgres/0002_bans.sql"),
            ),
        ),
        (
            3,
            "recordings_agents",
            sql(
                include_str!("../../src/store/migrations/sqlite/0003_recordings_agents.sql"),
                include_str!("../../src/store/migrations/postgres/0003_recordings_agents.sql"),
            ),
        ),
        (
            4,
            "history",
            sql(
                include_str!("../../src/store/migrations/sqlite/0004_history.sql"),
                include_str!("../../src/store/migrations/postgres/0004_history.sql"),
            ),
        ),
    ];
    let mut migrator = Migrator::DEFAULT;
    migrator.migrations = migrations
        .into_iter()
        .map(|(version, name, sql)| Migration::new(version, name.into(), MigrationType::Simple, sql, false))
        .collect();
    let cached = "INSERT INTO usage_cache (rooms_key, bucket_start, bucket_end, sessions, participant_micros, peak_concurrency, unique_identities, inferred) \
                  VALUES ('key', 0, 86400000000, 3, 7200000000, 2, 2, FALSE)";
    if postgres {
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        migrator.run_direct(&mut connection).await.expect("migrates to version 4");
        sqlx::query(cached).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    } else {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&database.url).unwrap().create_if_missing(true);
        let mut connection = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        migrator.run_direct(&mut connection).await.expect("migrates to version 4");
        sqlx::query(cached).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    }
    let mut config = roomcontrol::Config::default();
    config.store.url = database.url.clone();
    let store = roomcontrol::store::Store::open(&config.store).await.expect("migrates version 4 to the newest");
    assert_eq!(store.usage_cache("key", 0, 86_400_000_000).await.unwrap(), []);
    assert_eq!(store.usage_profile("key", 0, 86_400_000_000).await.unwrap(), None);
    store.close().await;
    assert_eq!(cached_buckets(&database).await, []);
    // RoomControl starts on it and answers GetUsage.
    let Some(app) = app_with_own_webhooks(&database).await else { return };
    let reply = app
        .client
        .clone()
        .get_usage(GetUsageRequest {
            from: Some(prost_types::Timestamp { seconds: T0, nanos: 0 }),
            to: Some(prost_types::Timestamp { seconds: T0 + 86_400, nanos: 0 }),
            bucket: UsageBucket::Day as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.buckets.len(), 2);
    // Both days the range cuts have ended: kept whole, with profiles.
    let midnight = T0 - 18 * 3600;
    let days = [(midnight, midnight + 86_400), (midnight + 86_400, midnight + 2 * 86_400)];
    assert_eq!(profiled_buckets(&database).await, days);
}
both_stores!(
    a_version_4_database_gains_usage_profiles_on,
    a_version_4_database_gains_usage_profiles_and_computes_its_cache_again
);
