//! Webhooks over real sockets: a small HTTP receiver records every POST the
//! stand-in makes, answers with scripted statuses and can hold a room's
//! requests.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use livekit_protocol as proto;
use livekit_standin::{
    StandIn, StandInConfig, TrackSpec, WEBHOOK_CONTENT_TYPE, WebhookDelivery, WebhookOutcome, sign_webhook,
    webhook_body,
};
use serde_json::Value;
use sha2::Digest as _;
use tokio::sync::watch;

/// Fails a test that waits longer than this for something to happen.
const PATIENCE: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------- receiver

/// A POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn event(&self) -> String {
        self.json()["event"].as_str().unwrap().to_owned()
    }

    fn room(&self) -> String {
        self.json()["room"]["name"].as_str().unwrap_or_default().to_owned()
    }

    fn authorization(&self) -> &str {
        self.headers["authorization"].to_str().unwrap()
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    RetryAfter(u16, u32),
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
    /// Answers for the next requests, in order; then 200.
    script: Mutex<VecDeque<Answer>>,
    /// Requests about these rooms wait until their gate opens.
    gates: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

/// Opens a held room's requests when dropped or `open`ed.
struct Gate(watch::Sender<bool>);

impl Gate {
    fn open(&self) {
        self.0.send_replace(true);
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/livekit/webhook", listener.local_addr().unwrap());
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { url, state }
    }

    fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Requests about `room` are recorded on arrival, then wait for the gate.
    fn hold(&self, room: &str) -> Gate {
        let (tx, rx) = watch::channel(false);
        self.state.gates.lock().unwrap().insert(room.to_owned(), rx);
        Gate(tx)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut count = self.state.count.subscribe();
        within(&format!("{n} webhooks at the receiver"), count.wait_for(|c| *c >= n)).await.unwrap();
        self.received()
    }

    /// Waits for a request whose event is `event`, and returns all so far.
    async fn wait_for_event(&self, event: &str) -> Vec<Received> {
        let mut count = self.state.count.subscribe();
        let state = self.state.clone();
        within(
            &format!("{event} at the receiver"),
            count.wait_for(|_| state.received.lock().unwrap().iter().any(|r| r.event() == event)),
        )
        .await
        .unwrap();
        self.received()
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let received = Received { path: parts.uri.path().to_owned(), headers: parts.headers, body };
    let room = received.room();
    state.received.lock().unwrap().push(received);
    state.count.send_modify(|n| *n += 1);
    let gate = state.gates.lock().unwrap().get(&room).cloned();
    if let Some(mut gate) = gate {
        let _ = gate.wait_for(|open| *open).await;
    }
    let answer = state.script.lock().unwrap().pop_front().unwrap_or(Answer::Status(200));
    let mut response = Response::builder();
    let status = match answer {
        Answer::Status(s) => s,
        Answer::RetryAfter(s, secs) => {
            response = response.header("retry-after", secs.to_string());
            s
        }
    };
    response.status(status).body(Body::from("ignored")).unwrap()
}

// ---------------------------------------------------------------- helpers

fn config(receivers: &[&Receiver]) -> StandInConfig {
    StandInConfig { webhook_urls: receivers.iter().map(|r| r.url.clone()).collect(), ..Default::default() }
}

async fn standin_for(receiver: &Receiver) -> StandIn {
    StandIn::start(config(&[receiver])).await.unwrap()
}

fn events(received: &[Received]) -> Vec<String> {
    received.iter().map(Received::event).collect()
}

fn deliveries_of<'a>(deliveries: &'a [WebhookDelivery], event: &str) -> Vec<&'a WebhookDelivery> {
    deliveries.iter().filter(|d| d.event == event).collect()
}

fn sdk(s: &StandIn) -> RoomClient {
    RoomClient::with_api_key(&s.url(), s.api_key(), s.api_secret())
}

// ---------------------------------------------------------------- signature and body

#[tokio::test]
async fn a_webhook_is_a_bare_jwt_over_the_sha256_of_the_exact_body_bytes() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    let room = s.create_room("lobby");
    let got = receiver.wait_for(1).await.remove(0);

    assert_eq!(got.path, "/livekit/webhook");
    assert_eq!(got.headers["content-type"], WEBHOOK_CONTENT_TYPE);
    assert_eq!(got.headers["user-agent"], "LiveKit");
    let authorization = got.authorization();
    assert!(!authorization.starts_with("Bearer"), "{authorization}");

    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["devkey"]);
    validation.set_required_spec_claims(&["exp", "iss", "nbf"]);
    let token =
        jsonwebtoken::decode::<Value>(authorization, &jsonwebtoken::DecodingKey::from_secret(b"secret"), &validation)
            .expect("signed with the stand-in's secret");
    let claims = token.claims.as_object().unwrap();
    let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["exp", "iat", "iss", "nbf", "sha256"], "no sub, no video");
    assert_eq!(claims["iat"], claims["nbf"]);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
    let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&got.body));
    assert_eq!(claims["sha256"], digest.as_str());
    assert!(digest.ends_with('='), "standard base64 keeps its padding: {digest}");

    // the stand-in's record holds the exact bytes and header, for replays
    let deliveries = s.wait_for_webhook_count(1).await;
    assert_eq!(deliveries[0].body, got.body);
    assert_eq!(deliveries[0].authorization, authorization);
    assert_eq!(deliveries[0].decode().room.unwrap().sid, room.sid);
}

#[tokio::test]
async fn the_body_is_protojson_camel_case_with_int64_strings_and_no_zero_values() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    let alice = s.add_participant("lobby", "alice");
    let got = receiver.wait_for(2).await;
    assert_eq!(events(&got), ["room_started", "participant_joined"]);

    let raw = String::from_utf8(got[1].body.to_vec()).unwrap();
    let v = got[1].json();
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("EV_") && id.len() == 15 && id[3..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    assert!(v["createdAt"].is_string(), "{raw}");
    assert!(v["room"]["creationTime"].is_string(), "{raw}");
    assert_eq!(v["room"]["emptyTimeout"], 300);
    assert_eq!(v["participant"]["joinedAt"], alice.joined_at.to_string());
    assert_eq!(v["participant"]["state"], "ACTIVE");
    assert_eq!(v["participant"]["permission"]["canPublish"], true);
    for absent in ["numDropped", "track", "egressInfo", "created_at"] {
        assert!(v.get(absent).is_none(), "{absent} in {raw}");
    }
    assert!(v["participant"].get("isPublisher").is_none(), "false is left out: {raw}");
    assert!(v["participant"].get("disconnectReason").is_none(), "{raw}");
    assert!(!raw.contains(":null") && !raw.contains(":\"\""), "{raw}");

    // Go's random spaces: a receiver that hashes a re-encoding fails
    assert!(raw.contains(", "), "{raw}");
    assert_ne!(serde_json::to_vec(&v).unwrap(), got[1].body);
    let decoded: proto::WebhookEvent = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(decoded.participant.unwrap(), alice);
}

#[test]
fn a_forged_webhook_is_signed_like_a_real_one() {
    let event = proto::WebhookEvent {
        event: "room_started".into(),
        room: Some(proto::Room { sid: "RM_forged".into(), name: "r".into(), ..Default::default() }),
        id: "EV_forged".into(),
        created_at: 1_700_000_000,
        ..Default::default()
    };
    let body = webhook_body(&event);
    assert_eq!(serde_json::from_slice::<proto::WebhookEvent>(&body).unwrap(), event);
    let authorization = sign_webhook("devkey", "secret", &body);
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(authorization.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sha256"], base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body)));
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test]
async fn a_participant_life_arrives_in_livekit_order_and_the_room_finishes_after_its_departure_timeout() {
    let receiver = Receiver::start().await;
    let s = StandIn::start(StandInConfig { departure_timeout: 0, ..config(&[&receiver]) }).await.unwrap();
    let alice = s.add_participant("lobby", "alice");
    let mic = s.add_track("lobby", "alice", TrackSpec::microphone("mic"));
    let cam = s.add_track("lobby", "alice", TrackSpec::camera("cam"));
    let left = s.remove_participant("lobby", "alice");
    let got = receiver.wait_for_event("room_finished").await;

    let names = events(&got);
    assert_eq!(
        names,
        [
            "room_started",
            "participant_joined",
            "track_published",
            "track_published",
            "track_unpublished",
            "track_unpublished",
            "participant_left",
            "room_finished"
        ]
    );
    // track events: the room's and participant's ids only, the full track
    let published = got[2].json();
    let mut room_keys: Vec<&str> = published["room"].as_object().unwrap().keys().map(String::as_str).collect();
    room_keys.sort();
    assert_eq!(room_keys, ["name", "sid"]);
    assert_eq!(published["participant"], serde_json::json!({"sid": alice.sid, "identity": "alice"}));
    assert_eq!(published["track"]["sid"], mic.sid);
    assert_eq!(got[3].json()["track"]["type"], "VIDEO");
    assert!(got[2].json()["track"].get("type").is_none(), "AUDIO is the zero value");
    let mut unpublished: Vec<String> =
        got[4..6].iter().map(|r| r.json()["track"]["sid"].as_str().unwrap().to_owned()).collect();
    unpublished.sort();
    let mut sids = vec![mic.sid, cam.sid];
    sids.sort();
    assert_eq!(unpublished, sids);
    // participant_left carries the full participant as it left
    let gone = got[6].json();
    assert_eq!(gone["participant"]["state"], "DISCONNECTED");
    assert_eq!(gone["participant"]["disconnectReason"], "CLIENT_INITIATED");
    assert!(gone["participant"].get("tracks").is_none());
    assert_eq!(got[6].room(), "lobby");
    assert_eq!(left.sid, alice.sid);
    assert!(s.rooms().is_empty());
    // one id per event
    let mut ids: Vec<String> = got.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len());
}

#[tokio::test]
async fn a_room_created_over_twirp_that_nobody_joins_finishes_after_its_empty_timeout() {
    let receiver = Receiver::start().await;
    let s = StandIn::start(StandInConfig { empty_timeout: 0, ..config(&[&receiver]) }).await.unwrap();
    let room = sdk(&s).create_room("idle", CreateRoomOptions::default()).await.unwrap();
    let got = receiver.wait_for_event("room_finished").await;
    assert_eq!(events(&got), ["room_started", "room_finished"]);
    assert_eq!(got[1].json()["room"]["sid"], room.sid);
    // CreateRoom on a running room is not a new room: no second room_started
    let s2 = StandIn::start(config(&[&receiver])).await.unwrap();
    sdk(&s2).create_room("kept", CreateRoomOptions::default()).await.unwrap();
    sdk(&s2).create_room("kept", CreateRoomOptions::default()).await.unwrap();
    s2.add_participant("kept", "bob");
    let got = receiver.wait_for_event("participant_joined").await;
    assert_eq!(events(&got[2..]), ["room_started", "participant_joined"]);
}

#[tokio::test]
async fn a_participant_that_never_becomes_active_is_aborted_and_never_joined() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    let aborted = s.abort_participant("lobby", "ghost");
    s.add_joining_participant("lobby", "slow");
    let slow = s.activate_participant("lobby", "slow");
    let got = receiver.wait_for(3).await;
    assert_eq!(events(&got), ["room_started", "participant_connection_aborted", "participant_joined"]);
    assert_eq!(got[1].json()["participant"]["identity"], "ghost");
    assert_eq!(got[1].json()["participant"]["disconnectReason"], "JOIN_FAILURE");
    assert_eq!(aborted.state, proto::participant_info::State::Disconnected as i32);
    assert_eq!(got[2].json()["participant"]["sid"], slow.sid);
}

#[tokio::test]
async fn delete_room_closes_everyone_then_finishes_the_room() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    s.add_participant("doomed", "alice");
    s.add_track("doomed", "alice", TrackSpec::microphone("mic"));
    s.add_participant("doomed", "bob");
    receiver.wait_for(4).await;
    sdk(&s).delete_room("doomed").await.unwrap();
    let got = receiver.wait_for_event("room_finished").await;

    let after: Vec<(String, String)> = got[4..]
        .iter()
        .map(|r| (r.event(), r.json()["participant"]["identity"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(after[3].0, "room_finished");
    let alice: Vec<&str> = after.iter().filter(|(_, who)| who == "alice").map(|(e, _)| e.as_str()).collect();
    assert_eq!(alice, ["track_unpublished", "participant_left"]);
    let bob: Vec<&str> = after.iter().filter(|(_, who)| who == "bob").map(|(e, _)| e.as_str()).collect();
    assert_eq!(bob, ["participant_left"]);
    for left in got[4..].iter().filter(|r| r.event() == "participant_left") {
        assert_eq!(left.json()["participant"]["disconnectReason"], "ROOM_DELETED");
    }
}

#[tokio::test]
async fn remove_participant_over_twirp_is_a_participant_left_with_reason_removed() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    s.add_participant("r", "alice");
    sdk(&s).remove_participant("r", "alice").await.unwrap();
    let got = receiver.wait_for_event("participant_left").await;
    assert_eq!(events(&got), ["room_started", "participant_joined", "participant_left"]);
    assert_eq!(got[2].json()["participant"]["disconnectReason"], "PARTICIPANT_REMOVED");
    assert_eq!(got[2].json()["room"]["numParticipants"], Value::Null, "zero: left out");
}

// ---------------------------------------------------------------- delivery

#[tokio::test]
async fn a_rooms_events_wait_for_each_other_while_other_rooms_go_on() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    let gate = receiver.hold("a");
    s.create_room("a");
    receiver.wait_for(1).await;
    // a's room_started is held: a's next events wait behind it
    s.add_participant("a", "alice");
    s.add_participant("a", "bob");
    s.create_room("b");
    s.add_participant("b", "carol");
    let got = receiver.wait_for(3).await;
    assert_eq!(
        got.iter().map(|r| (r.room(), r.event())).collect::<Vec<_>>(),
        [
            ("a".to_owned(), "room_started".to_owned()),
            ("b".to_owned(), "room_started".to_owned()),
            ("b".to_owned(), "participant_joined".to_owned())
        ]
    );
    gate.open();
    let got = receiver.wait_for(5).await;
    let a: Vec<(String, String)> = got
        .iter()
        .filter(|r| r.room() == "a")
        .map(|r| (r.event(), r.json()["participant"]["identity"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        a,
        [
            ("room_started".to_owned(), String::new()),
            ("participant_joined".to_owned(), "alice".to_owned()),
            ("participant_joined".to_owned(), "bob".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_503_is_retried_four_times_after_1_2_4_8_units_with_the_same_bytes() {
    let receiver = Receiver::start().await;
    let unit = Duration::from_millis(25);
    let s = StandIn::start(StandInConfig { webhook_retry_unit: unit, ..config(&[&receiver]) }).await.unwrap();
    receiver.answer([Answer::Status(503); 5]);
    s.create_room("r");
    // the next event of the room goes once the first is given up
    s.add_participant("r", "alice");
    let got = receiver.wait_for(6).await;
    assert_eq!(events(&got), ["room_started"; 5].iter().chain(&["participant_joined"]).copied().collect::<Vec<_>>());
    assert!(got[1..5].iter().all(|r| r.body == got[0].body && r.authorization() == got[0].authorization()));

    let deliveries = s.wait_for_webhook_count(6).await;
    let started = deliveries_of(&deliveries, "room_started");
    assert_eq!(started.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(started.iter().all(|d| d.outcome == WebhookOutcome::Status(503) && d.id == started[0].id));
    for (i, pair) in started.windows(2).enumerate() {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= unit * (1 << i), "retry {} after {waited:?}", i + 1);
    }
    assert_eq!(deliveries[5].event, "participant_joined");
    assert!(deliveries[5].outcome.is_success());
}

#[tokio::test]
async fn a_400_and_a_501_are_final_and_a_429_waits_for_its_retry_after() {
    let receiver = Receiver::start().await;
    let unit = Duration::from_millis(50);
    let s = StandIn::start(StandInConfig { webhook_retry_unit: unit, ..config(&[&receiver]) }).await.unwrap();
    receiver.answer([Answer::Status(400), Answer::Status(501), Answer::RetryAfter(429, 4)]);
    s.create_room("r");
    s.add_participant("r", "alice");
    s.add_track("r", "alice", TrackSpec::microphone("mic"));
    let got = receiver.wait_for(4).await;
    assert_eq!(events(&got), ["room_started", "participant_joined", "track_published", "track_published"]);

    let deliveries = s.wait_for_webhook_count(4).await;
    let outcomes: Vec<(&str, u32, &WebhookOutcome)> =
        deliveries.iter().map(|d| (d.event.as_str(), d.attempt, &d.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("room_started", 1, &WebhookOutcome::Status(400)),
            ("participant_joined", 1, &WebhookOutcome::Status(501)),
            ("track_published", 1, &WebhookOutcome::Status(429)),
            ("track_published", 2, &WebhookOutcome::Status(200)),
        ]
    );
    let waited = deliveries[3].at - deliveries[2].at;
    assert!(waited >= unit * 4, "Retry-After: 4 is 4 units, not 1: {waited:?}");
}

#[tokio::test]
async fn connection_errors_are_retried_then_given_up() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let s = StandIn::start(StandInConfig {
        webhook_urls: vec![url.clone()],
        webhook_retry_unit: Duration::from_millis(1),
        ..Default::default()
    })
    .await
    .unwrap();
    s.create_room("r");
    let deliveries = within("five attempts", s.wait_for_webhook_count(5)).await;
    assert_eq!(deliveries.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    for d in &deliveries {
        assert_eq!(d.url, url);
        assert!(matches!(&d.outcome, WebhookOutcome::ConnectionError(e) if !e.is_empty()), "{:?}", d.outcome);
    }
}

#[tokio::test]
async fn dropped_webhooks_change_the_state_but_are_never_sent() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    s.drop_webhooks(Some("participant_joined"), 1);
    s.add_participant("r", "alice");
    s.add_participant("r", "bob");
    let got = receiver.wait_for(2).await;
    assert_eq!(events(&got), ["room_started", "participant_joined"]);
    assert_eq!(got[1].json()["participant"]["identity"], "bob");
    assert_eq!(s.participants("r").len(), 2, "alice did join");
    let deliveries = s.webhook_deliveries();
    let lost = deliveries.iter().find(|d| d.outcome == WebhookOutcome::Dropped).expect("a dropped record");
    assert_eq!((lost.event.as_str(), lost.attempt), ("participant_joined", 0));
    assert_eq!(lost.decode().participant.unwrap().identity, "alice");
}

#[tokio::test]
async fn every_url_gets_each_event_with_the_same_id_and_bytes() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let s = StandIn::start(StandInConfig::default()).await.unwrap();
    s.create_room("before");
    s.set_webhook_urls([first.url.clone(), second.url.clone()]);
    assert_eq!(s.webhook_urls(), [first.url.clone(), second.url.clone()]);
    s.add_participant("r", "alice");
    let (a, b) = (first.wait_for(2).await, second.wait_for(2).await);
    assert_eq!(events(&a), ["room_started", "participant_joined"], "nothing from before the URLs were set");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.body, y.body);
        assert_eq!(x.json()["id"], y.json()["id"]);
    }
    // without URLs, events go nowhere, not even later
    s.set_webhook_urls(Vec::<String>::new());
    s.add_track("r", "alice", TrackSpec::microphone("mic"));
    s.set_webhook_urls([first.url.clone()]);
    s.remove_participant("r", "alice");
    let a = first.wait_for_event("participant_left").await;
    assert_eq!(events(&a), ["room_started", "participant_joined", "track_unpublished", "participant_left"]);
}

#[tokio::test]
async fn a_full_queue_refuses_the_event_and_later_urls_never_see_it() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let s = StandIn::start(StandInConfig { webhook_queue_depth: 2, ..config(&[&first, &second]) }).await.unwrap();
    let gate = first.hold("r");
    s.create_room("r");
    first.wait_for(1).await;
    // room_started is in flight at the first URL; two events may wait behind it
    s.add_participant("r", "alice");
    s.add_track("r", "alice", TrackSpec::microphone("mic"));
    s.add_track("r", "alice", TrackSpec::camera("cam"));
    gate.open();
    // once the first URL has answered the mic's event, its queue is empty
    within(
        "the first URL's queue to drain",
        s.wait_for_webhooks(|d| {
            d.iter().any(|d| {
                d.url == first.url && d.outcome.is_success() && d.decode().track.is_some_and(|t| t.name == "mic")
            })
        }),
    )
    .await;
    s.add_track("r", "alice", TrackSpec::screen_share("screen"));

    let tracks = |got: Vec<Received>| -> Vec<String> {
        got.iter()
            .map(|r| {
                format!("{} {}", r.event(), r.json()["track"]["name"].as_str().unwrap_or_default()).trim().to_owned()
            })
            .collect()
    };
    let expected = ["room_started", "participant_joined", "track_published mic", "track_published screen"];
    assert_eq!(tracks(second.wait_for(4).await), expected);
    assert_eq!(tracks(first.wait_for(4).await), expected);
    let refused: Vec<(String, String)> = s
        .webhook_deliveries()
        .iter()
        .filter(|d| d.outcome == WebhookOutcome::QueueFull)
        .map(|d| (d.url.clone(), d.decode().track.unwrap().name))
        .collect();
    assert_eq!(refused, [(first.url.clone(), "cam".to_owned())]);
}

#[tokio::test]
async fn an_event_that_waited_too_long_is_dropped() {
    let receiver = Receiver::start().await;
    let max_age = Duration::from_millis(100);
    let s = StandIn::start(StandInConfig { webhook_max_age: max_age, ..config(&[&receiver]) }).await.unwrap();
    let gate = receiver.hold("r");
    s.create_room("r");
    receiver.wait_for(1).await;
    s.add_participant("r", "alice");
    // the age itself is what is tested: let participant_joined grow old
    let queued = Instant::now();
    tokio::time::sleep(max_age * 2).await;
    assert!(queued.elapsed() > max_age);
    gate.open();
    within("the expiry", s.wait_for_webhooks(|d| d.iter().any(|d| d.outcome == WebhookOutcome::Expired))).await;
    // the queue goes on with fresh events
    s.add_track("r", "alice", TrackSpec::microphone("mic"));
    let got = receiver.wait_for_event("track_published").await;
    assert_eq!(events(&got), ["room_started", "track_published"]);
    let deliveries = s.webhook_deliveries();
    let expired = deliveries_of(&deliveries, "participant_joined");
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].attempt, &expired[0].outcome), (0, &WebhookOutcome::Expired));
}

#[tokio::test]
async fn waiting_for_webhooks_sees_a_delivery_that_matches() {
    let receiver = Receiver::start().await;
    let s = standin_for(&receiver).await;
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            s.wait_for_webhooks(|d| d.iter().any(|d| d.event == "participant_joined" && d.outcome.is_success())).await
        })
    };
    s.add_participant("r", "alice");
    let seen = within("the waiter", waiter).await.unwrap();
    assert!(seen.iter().any(|d| d.event == "participant_joined"));
    s.clear_webhook_deliveries();
    assert!(s.webhook_deliveries().is_empty());
}

// ---------------------------------------------------------------- binary

#[tokio::test]
async fn the_binary_sends_webhooks_to_each_webhook_url() {
    let receiver = Receiver::start().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_livekit-standin"))
        .args(["--listen", "127.0.0.1:0", "--seed-rooms", "1", "--webhook-url", &receiver.url])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let got = receiver.wait_for(2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(events(&got), ["room_started", "participant_joined"]);
    assert_eq!(got[1].json()["participant"]["identity"], "participant-1");
}
