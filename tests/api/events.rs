//! The timeline: webhooks in (`POST /livekit/webhook`), RoomControl's own
//! actions, ListEvents and WatchEvents, on SQLite and on PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use roomcontrol::proto::v1::room_control_client::RoomControlClient;
use roomcontrol::proto::v1::watch_events_response::Message;
use roomcontrol::proto::v1::*;
use roomcontrol::store::Store;
use serde_json::json;
use tonic::Code;
use tonic::codec::Streaming;
use tonic_types::StatusExt;

use crate::both_stores;
use crate::support::store::{Kind, TestDatabase};
use crate::support::webhooks::{self, sign};
use crate::support::{TestApp, spawn_app_with, unique};

async fn app_on(database: &TestDatabase, configure: impl FnOnce(&mut roomcontrol::Config)) -> TestApp {
    let url = database.url.clone();
    spawn_app_with(move |config| {
        config.store.url = url;
        config.events.heartbeat_interval = Duration::from_millis(200);
        configure(config);
    })
    .await
}

async fn list(app: &TestApp, request: ListEventsRequest) -> ListEventsResponse {
    app.client.clone().list_events(request).await.expect("ListEvents answers").into_inner()
}

async fn all_events(app: &TestApp) -> Vec<Event> {
    list(app, ListEventsRequest { page_size: 1000, ..Default::default() }).await.events
}

async fn watch(app: &TestApp, request: WatchEventsRequest) -> Streaming<WatchEventsResponse> {
    app.client.clone().watch_events(request).await.expect("WatchEvents starts").into_inner()
}

/// The next message of a watch, within 10 s.
async fn next(stream: &mut Streaming<WatchEventsResponse>) -> Message {
    let reply = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .expect("the stream stays open")
        .expect("the stream has not ended");
    reply.message.expect("every reply carries a message")
}

/// The next event of a watch, skipping heartbeats.
async fn next_event(stream: &mut Streaming<WatchEventsResponse>) -> Event {
    loop {
        match next(stream).await {
            Message::Event(event) => return event,
            Message::Heartbeat(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn participant_joined(room: &str, identity: &str) -> (serde_json::Value, String) {
    let id = format!("EV_{}", unique("j").replace('-', ""));
    let sid = format!("PA_{}", unique("p").replace('-', ""));
    (webhooks::event("participant_joined", &id, (room, "RM_test"), Some((identity, &sid))), id)
}

async fn webhooks_are_stored_once_and_listed(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let app = app_on(&database, |_| {}).await;
    let room = unique("standup");
    let (mut event, id) = participant_joined(&room, "alice");
    // LiveKit adds fields and enum values; they are kept, never refused.
    event["participant"]["kind"] = json!("SOMETHING_NEW");
    event["aFieldFromTheFuture"] = json!({"nested": "1234567890123"});
    let first = app.post_webhook(&event).await;
    assert_eq!(first.status, 200, "{}", first.text);
    // LiveKit retries with the same id: answered 200, stored once.
    let again = app.post_webhook(&event).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert!(again.text.contains("already stored"), "{}", again.text);

    let events = all_events(&app).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let stored = &events[0];
    assert_eq!(stored.id, id);
    assert_eq!(stored.r#type, "participant_joined");
    assert_eq!(stored.source, EventSource::Livekit as i32);
    assert!(stored.cursor > 0);
    assert_eq!(stored.room.as_ref().unwrap().name, room);
    assert_eq!(stored.room.as_ref().unwrap().sid, "RM_test");
    let participant = stored.participant.as_ref().unwrap();
    assert_eq!(participant.identity, "alice");
    assert_eq!(participant.kind, "something_new");
    let detail = stored.detail.as_ref().unwrap();
    assert!(detail.fields.contains_key("aFieldFromTheFuture"), "unknown fields are kept: {detail:?}");
    assert!(stored.occurred_at.is_some() && stored.received_at.is_some());

    // A restart finds it again (a file or a server, not memory).
    drop(app);
    let app = app_on(&database, |_| {}).await;
    assert_eq!(all_events(&app).await.len(), 1);
}
both_stores!(webhooks_are_stored_once_and_listed_on, webhooks_are_stored_once_and_listed);

#[tokio::test]
async fn webhooks_without_a_valid_signature_are_refused_and_not_stored() {
    let app = spawn_app_with(|config| {
        config.events.webhook_max_body_bytes = 4096;
        config.events.webhook_keys = vec![roomcontrol::config::WebhookKeyConfig {
            api_key: "nextkey".to_owned(),
            api_secret: "next-secret".to_owned().into(),
        }];
    })
    .await;
    let (event, _) = participant_joined(&unique("room"), "mallory");
    let body = webhooks::body(&event);
    let key = app.livekit.api_key.clone();
    let secret = app.livekit.api_secret.clone();
    // (case, body, Authorization, status, words in the answer)
    type Case<'a> = (&'a str, Vec<u8>, Option<String>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no Authorization", body.clone(), None, 401, "no Authorization header"),
        ("wrong secret", body.clone(), Some(sign(&key, "not-the-secret", &body)), 401, "signature does not hold"),
        ("unknown key", body.clone(), Some(sign("otherkey", &secret, &body)), 401, "does not know"),
        ("not a JWT", body.clone(), Some("hello".to_owned()), 401, "not a JWT"),
        (
            "a body other than the signed one",
            webhooks::body(&json!({"event": "room_finished", "id": "EV_forged"})),
            Some(sign(&key, &secret, &body)),
            401,
            "SHA-256 differs",
        ),
        ("not JSON", b"{not json".to_vec(), Some(sign(&key, &secret, b"{not json")), 400, "not JSON"),
        (
            "no event name",
            b"{\"id\":\"EV_x\"}".to_vec(),
            Some(sign(&key, &secret, b"{\"id\":\"EV_x\"}")),
            400,
            "no \"event\"",
        ),
        ("too large", vec![b' '; 5000], Some(sign(&key, &secret, &[b' '; 5000])), 413, "webhook_max_body_bytes"),
    ];
    for (case, body, authorization, status, words) in cases {
        let answer = app.post_webhook_raw(body, authorization).await;
        assert_eq!(answer.status, status, "{case}: {}", answer.text);
        assert!(answer.text.contains(words), "{case}: {:?} lacks {words:?}", answer.text);
    }
    assert!(all_events(&app).await.is_empty(), "nothing refused is stored");

    // Accepted: a `Bearer ` prefix, and the rotation key.
    let bearer = format!("Bearer {}", sign(&key, &secret, &body));
    assert_eq!(app.post_webhook_raw(body.clone(), Some(bearer)).await.status, 200);
    let (event, _) = participant_joined(&unique("room"), "bob");
    let body = webhooks::body(&event);
    assert_eq!(app.post_webhook_raw(body.clone(), Some(sign("nextkey", "next-secret", &body))).await.status, 200);
    assert_eq!(all_events(&app).await.len(), 2);
}

#[tokio::test]
async fn an_expired_webhook_signature_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    let (event, _) = participant_joined(&unique("room"), "alice");
    let body = webhooks::body(&event);
    let long_ago = 1_600_000_000u64;
    let claims = json!({
        "iss": app.livekit.api_key, "iat": long_ago, "nbf": long_ago, "exp": long_ago + 300,
        "sha256": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, <sha2::Sha256 as sha2::Digest>::digest(&body)),
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(app.livekit.api_secret.as_bytes()),
    )
    .unwrap();
    let answer = app.post_webhook_raw(body, Some(token)).await;
    assert_eq!(answer.status, 401, "{}", answer.text);
    assert!(answer.text.contains("Expired"), "{}", answer.text);
}

async fn actions_are_recorded_with_their_caller_and_never_the_token(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let app = app_on(&database, |_| {}).await;
    let room = unique("audit");
    app.client.clone().create_room(CreateRoomRequest { name: room.clone(), ..Default::default() }).await.unwrap();
    let token = app
        .client
        .clone()
        .create_token(CreateTokenRequest {
            room: room.clone(),
            identity: "alice".to_owned(),
            permissions: Some(TokenPermissions { can_publish: Some(false), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let events = list(&app, ListEventsRequest { rooms: vec![room.clone()], ..Default::default() }).await.events;
    let types: Vec<&str> = events.iter().map(|event| event.r#type.as_str()).collect();
    assert_eq!(types, ["room_created", "token_minted"]);
    let minted = &events[1];
    assert_eq!(minted.source, EventSource::Roomcontrol as i32);
    assert_eq!(minted.participant.as_ref().unwrap().identity, "alice");
    let actor = minted.actor.as_ref().unwrap();
    assert_eq!(actor.rpc, "CreateToken");
    assert_eq!(actor.caller, "the anonymous caller");
    let detail = minted.detail.as_ref().unwrap();
    assert_eq!(
        detail.fields["canPublish"].kind,
        Some(prost_types::value::Kind::BoolValue(false)),
        "the permissions asked: {detail:?}"
    );
    let everything = format!("{events:?}");
    assert!(!everything.contains(&token), "the token never reaches the timeline");
    // A filter on types.
    let only = list(&app, ListEventsRequest { types: vec!["token_minted".to_owned()], ..Default::default() }).await;
    assert_eq!(only.events.len(), 1);
}
both_stores!(actions_are_recorded_on, actions_are_recorded_with_their_caller_and_never_the_token);

async fn watchers_replay_then_follow_live_and_resume_without_gaps(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let app = app_on(&database, |_| {}).await;
    let room = unique("watched");
    for n in 0..3 {
        let (event, _) = participant_joined(&room, &format!("early-{n}"));
        assert_eq!(app.post_webhook(&event).await.status, 200);
    }
    let mut stream = watch(&app, WatchEventsRequest { since_cursor: Some(0), ..Default::default() }).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut stream).await);
    }
    // Live from here.
    for n in 0..3 {
        let (event, _) = participant_joined(&room, &format!("late-{n}"));
        assert_eq!(app.post_webhook(&event).await.status, 200);
        seen.push(next_event(&mut stream).await);
    }
    let identities: Vec<String> =
        seen.iter().map(|event| event.participant.as_ref().unwrap().identity.clone()).collect();
    assert_eq!(identities, ["early-0", "early-1", "early-2", "late-0", "late-1", "late-2"]);
    let cursors: Vec<u64> = seen.iter().map(|event| event.cursor).collect();
    assert!(cursors.windows(2).all(|pair| pair[0] < pair[1]), "in cursor order: {cursors:?}");
    // A heartbeat carries the last cursor.
    let heartbeat = loop {
        if let Message::Heartbeat(heartbeat) = next(&mut stream).await {
            break heartbeat;
        }
    };
    assert_eq!(heartbeat.cursor, cursors[5]);
    drop(stream);

    // Resume after the fourth: exactly the fifth and sixth, then live.
    let mut resumed = watch(&app, WatchEventsRequest { since_cursor: Some(cursors[3]), ..Default::default() }).await;
    assert_eq!(next_event(&mut resumed).await.cursor, cursors[4]);
    assert_eq!(next_event(&mut resumed).await.cursor, cursors[5]);
    let (event, id) = participant_joined(&room, "later");
    assert_eq!(app.post_webhook(&event).await.status, 200);
    assert_eq!(next_event(&mut resumed).await.id, id);

    // Unset since_cursor: only what is stored from now on.
    let mut fresh = watch(&app, WatchEventsRequest::default()).await;
    let (event, id) = participant_joined(&room, "newest");
    assert_eq!(app.post_webhook(&event).await.status, 200);
    assert_eq!(next_event(&mut fresh).await.id, id);
}
both_stores!(watchers_replay_then_follow_live_on, watchers_replay_then_follow_live_and_resume_without_gaps);

#[tokio::test]
async fn a_watch_can_start_with_the_rooms_and_participants_live_now() {
    let app = spawn_app_with(|_| {}).await;
    let standin = crate::standin_or_skip!(app);
    let room = unique("snapshot");
    standin.create_room(&room);
    standin.add_participant(&room, "alice");
    let mut stream = watch(
        &app,
        WatchEventsRequest { rooms: vec![room.clone()], include_current_state: true, ..Default::default() },
    )
    .await;
    let Message::Snapshot(snapshot) = next(&mut stream).await else { panic!("the snapshot comes first") };
    assert_eq!(snapshot.room.unwrap().name, room);
    assert_eq!(snapshot.participants.len(), 1);
    assert_eq!(snapshot.participants[0].identity, "alice");
    let Message::SnapshotEnd(_) = next(&mut stream).await else { panic!("then the marker") };
    let (event, id) = participant_joined(&room, "bob");
    assert_eq!(app.post_webhook(&event).await.status, 200);
    assert_eq!(next_event(&mut stream).await.id, id);
    // Other rooms' events are not this watch's.
    let (other, _) = participant_joined(&unique("elsewhere"), "carol");
    assert_eq!(app.post_webhook(&other).await.status, 200);
    let (event, id) = participant_joined(&room, "dave");
    assert_eq!(app.post_webhook(&event).await.status, 200);
    assert_eq!(next_event(&mut stream).await.id, id);
}

#[tokio::test]
async fn events_requests_with_broken_rules_are_refused() {
    let app = spawn_app_with(|_| {}).await;
    let cases = [
        (ListEventsRequest { page_size: -1, ..Default::default() }, "page_size"),
        (ListEventsRequest { page_size: 1001, ..Default::default() }, "page_size"),
        (ListEventsRequest { page_token: "garbage".to_owned(), ..Default::default() }, "page_token"),
        (ListEventsRequest { types: vec!["Participant Joined".to_owned()], ..Default::default() }, "types[0]"),
        (ListEventsRequest { rooms: vec![String::new()], ..Default::default() }, "rooms[0]"),
    ];
    for (request, field) in cases {
        let status = app.client.clone().list_events(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let status = app
        .client
        .clone()
        .watch_events(WatchEventsRequest { since_cursor: Some(1), include_current_state: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("since_cursor"), "{}", status.message());
}

async fn a_cursor_older_than_retention_is_out_of_range(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let app = app_on(&database, |_| {}).await;
    let room = unique("pruned");
    for identity in ["a", "b", "c"] {
        let (event, _) = participant_joined(&room, identity);
        assert_eq!(app.post_webhook(&event).await.status, 200);
    }
    let events = all_events(&app).await;
    // The pruner's work, done now: everything received before the third.
    let store = Store::open(&roomcontrol::config::StoreConfig {
        url: database.url.clone(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let third = events[2].received_at.unwrap();
    let before = third.seconds * 1_000_000 + i64::from(third.nanos) / 1000;
    assert_eq!(store.prune(before, 100).await.unwrap(), 2);
    store.close().await;

    let status = app.client.clone().list_events(ListEventsRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(info.metadata["oldest_cursor"], events[1].cursor.to_string());
    let status = app
        .client
        .clone()
        .watch_events(WatchEventsRequest { since_cursor: Some(0), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    // A cursor this store never gave: OUT_OF_RANGE too, not a silent wait.
    let newest = events[2].cursor;
    let status = app
        .client
        .clone()
        .watch_events(WatchEventsRequest { since_cursor: Some(newest + 100), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("beyond the newest"), "{}", status.message());
    assert_eq!(status.get_details_error_info().unwrap().metadata["newest_cursor"], newest.to_string());
    // From the oldest cursor kept, all is well.
    let rest = list(&app, ListEventsRequest { since_cursor: events[1].cursor, ..Default::default() }).await.events;
    assert_eq!(rest.iter().map(|event| event.cursor).collect::<Vec<_>>(), [events[2].cursor]);
}
both_stores!(a_cursor_older_than_retention_is_out_of_range_on, a_cursor_older_than_retention_is_out_of_range);

#[tokio::test]
async fn list_events_pages_with_a_token() {
    let app = spawn_app_with(|_| {}).await;
    let room = unique("paged");
    for n in 0..5 {
        let (event, _) = participant_joined(&room, &format!("p{n}"));
        assert_eq!(app.post_webhook(&event).await.status, 200);
    }
    let mut cursors = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&app, ListEventsRequest { page_size: 2, page_token: token, ..Default::default() }).await;
        cursors.extend(page.events.iter().map(|event| event.cursor));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(cursors.len(), 5);
    assert_eq!(cursors.iter().collect::<HashSet<_>>().len(), 5);
}

#[tokio::test]
async fn a_watcher_that_cannot_keep_up_is_cut_off_and_resumes_without_a_gap() {
    let app = spawn_app_with(|config| config.events.watch_buffer = 16).await;
    let room = unique("flood");
    // One watcher reads nothing while the flood arrives, on a connection of
    // its own whose flow-control windows fill after a kilobyte (a client
    // that stopped reading); another reads all.
    let stalled_channel = tonic::transport::Endpoint::from_shared(app.http_url())
        .unwrap()
        .initial_stream_window_size(1024)
        .initial_connection_window_size(1024)
        .connect()
        .await
        .unwrap();
    let mut stalled = RoomControlClient::new(stalled_channel)
        .watch_events(WatchEventsRequest::default())
        .await
        .expect("WatchEvents starts")
        .into_inner();
    let mut reader = watch(&app, WatchEventsRequest::default()).await;
    let total = 600;
    let flood = async {
        for n in 0..total {
            let (event, _) = participant_joined(&room, &format!("f{n}"));
            let answer = app.post_webhook(&event).await;
            assert_eq!(answer.status, 200, "the intake never waits for watchers: {}", answer.text);
        }
    };
    let read_all = async {
        let mut ids = Vec::new();
        while ids.len() < total {
            ids.push(next_event(&mut reader).await.id);
        }
        ids
    };
    let ((), read) = tokio::join!(flood, read_all);
    assert_eq!(read.len(), total);

    // The stalled watcher: what it got, then ABORTED with where to resume.
    let mut got = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.message()).await.expect("answers") {
            Ok(Some(WatchEventsResponse { message: Some(Message::Event(event)) })) => got.push(event),
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("resume with since_cursor"), "{}", status.message());
    let resume: u64 = status.get_details_error_info().unwrap().metadata["resume_cursor"].parse().unwrap();
    assert!(got.len() < total, "it was cut off before the end");
    assert_eq!(got.last().map_or(0, |event| event.cursor), resume, "it resumes after the last event it got");
    let mut resumed = watch(&app, WatchEventsRequest { since_cursor: Some(resume), ..Default::default() }).await;
    while got.len() < total {
        got.push(next_event(&mut resumed).await);
    }
    let ids: Vec<String> = got.into_iter().map(|event| event.id).collect();
    assert_eq!(ids, read, "nothing lost, nothing twice, same order");
}

/// Room patterns limit what a caller sees.
#[tokio::test]
async fn callers_see_only_the_events_of_their_rooms() {
    let api_key_config = |name: &str, key: &str, scopes: &[&str], rooms: &[&str]| roomcontrol::config::ApiKeyConfig {
        name: name.to_owned(),
        hash: roomcontrol::auth::hash_api_key(key),
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
        revoked: false,
    };
    let bearer = |key: &str| format!("Bearer {key}").parse::<tonic::metadata::MetadataValue<_>>().unwrap();
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![api_key_config(
            "team-a",
            "rck_team_a_key_0123456789abcdef",
            &["events:read", "rooms:read"],
            &["team-a-*"],
        )];
    })
    .await;
    let (theirs, _) = participant_joined("team-a-standup", "alice");
    let (others, _) = participant_joined("team-b-standup", "bob");
    assert_eq!(app.post_webhook(&theirs).await.status, 200);
    assert_eq!(app.post_webhook(&others).await.status, 200);
    let mut request = tonic::Request::new(ListEventsRequest::default());
    request.metadata_mut().insert("authorization", bearer("rck_team_a_key_0123456789abcdef"));
    let events = app.client.clone().list_events(request).await.unwrap().into_inner().events;
    let rooms: Vec<String> = events.iter().map(|event| event.room.as_ref().unwrap().name.clone()).collect();
    assert_eq!(rooms, ["team-a-standup"]);
    // Without events:read: PERMISSION_DENIED naming the scope.
    let app_key = "rck_rooms_only_key_0123456789abcdef";
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![api_key_config("rooms-only", app_key, &["rooms:read"], &["*"])];
    })
    .await;
    let mut request = tonic::Request::new(WatchEventsRequest::default());
    request.metadata_mut().insert("authorization", bearer(app_key));
    let status = app.client.clone().watch_events(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("events:read"), "{}", status.message());
}

async fn the_schema_is_migrated_once_and_a_newer_database_is_refused(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let config = roomcontrol::config::StoreConfig {
        url: database.url.clone(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
    };
    // Applied on the first start, nothing to do on the second.
    Store::open(&config).await.expect("migrates an empty database").close().await;
    let store = Store::open(&config).await.expect("opens a migrated database");
    // As a newer RoomControl would leave it: a version this binary lacks.
    let newer = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'from the future', true, x'00', 0)";
    match &store {
        Store::Sqlite(pool, _) => sqlx::query(newer).execute(pool).await.map(drop),
        Store::Postgres(pool) => sqlx::query(&newer.replace("x'00'", "'\\x00'::bytea")).execute(pool).await.map(drop),
    }
    .unwrap();
    store.close().await;
    let refused = Store::open(&config).await.unwrap_err().to_string();
    assert!(refused.contains("migrated by a newer RoomControl"), "{refused}");
    assert!(refused.contains("9999"), "{refused}");
    // The binary refuses to start on it, with the same words.
    let url = database.url.clone();
    let mut app_config = roomcontrol::Config::default();
    app_config.livekit.url = "http://127.0.0.1:9".to_owned();
    app_config.server.port = 0;
    app_config.admin.enabled = false;
    app_config.store.url = url;
    let error = roomcontrol::Application::build(app_config).await.err().expect("refuses to start").to_string();
    assert!(error.contains("newer RoomControl"), "{error}");
}
both_stores!(migrations_on, the_schema_is_migrated_once_and_a_newer_database_is_refused);

/// Browsers follow the timeline over grpc-web on HTTP/1.1: the stream's
/// frames arrive as they are sent, not when the call ends.
#[tokio::test]
async fn watch_events_streams_over_grpc_web_on_http1() {
    use bytes::{Buf, BufMut, BytesMut};
    use prost::Message as _;
    let app = spawn_app_with(|config| config.events.heartbeat_interval = Duration::from_millis(100)).await;
    let room = unique("browser");
    let (event, id) = participant_joined(&room, "alice");
    assert_eq!(app.post_webhook(&event).await.status, 200);

    let request = WatchEventsRequest { since_cursor: Some(0), ..Default::default() }.encode_to_vec();
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(request.len() as u32);
    body.put_slice(&request);
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let mut response = http
        .post(format!("{}/roomcontrol.v1.RoomControl/WatchEvents", app.http_url()))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body.freeze())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    // Frames until the event and a heartbeat have come, the call still open.
    let mut buffer = BytesMut::new();
    let (mut event_seen, mut heartbeat_seen) = (None, false);
    while event_seen.is_none() || !heartbeat_seen {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .expect("the stream stays open");
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= 5 {
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() < 5 + length {
                break;
            }
            let flag = buffer.get_u8();
            assert_eq!(flag & 0x80, 0, "no trailers while the stream is open");
            buffer.advance(4);
            let frame = buffer.split_to(length);
            match WatchEventsResponse::decode(frame.freeze()).unwrap().message {
                Some(Message::Event(event)) => event_seen = Some(event.id),
                Some(Message::Heartbeat(_)) => heartbeat_seen = true,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(event_seen.as_deref(), Some(id.as_str()));
}
