//! The stand-in over real sockets: the livekit-api SDK for the happy paths,
//! raw HTTP/1.1 for everything the SDK hides.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_api::access_token::{AccessToken, Claims, VideoGrants};
use livekit_api::services::room::{CreateRoomOptions, RoomClient, UpdateParticipantOptions};
use livekit_api::services::{ServerError, ServiceError};
use livekit_protocol as proto;
use livekit_standin::{AuthOutcome, Encoding, Fault, RoomRequest, StandIn, StandInConfig, TrackSpec};
use prost::Message;
use serde_json::{Value, json};

/// A plain HTTP/1.1 client. livekit-api turns on reqwest's
/// `rustls-no-provider` feature, so a process-wide rustls provider is needed
/// before any reqwest client is built.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn standin() -> StandIn {
    StandIn::start(StandInConfig::default()).await.expect("stand-in starts")
}

fn sdk(s: &StandIn) -> RoomClient {
    RoomClient::with_api_key(&s.url(), s.api_key(), s.api_secret())
}

fn token(s: &StandIn, grants: VideoGrants) -> String {
    AccessToken::with_api_key(s.api_key(), s.api_secret()).with_grants(grants).to_jwt().unwrap()
}

fn admin(room: &str) -> VideoGrants {
    VideoGrants { room_admin: true, room: room.to_owned(), ..Default::default() }
}

fn create_grant() -> VideoGrants {
    VideoGrants { room_create: true, ..Default::default() }
}

fn list_grant() -> VideoGrants {
    VideoGrants { room_list: true, ..Default::default() }
}

/// A token with arbitrary claims, signed with `secret`.
fn signed(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_secs() -> usize {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as usize
}

struct Raw {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn twirp(&self) -> (String, String) {
        let v = self.json();
        (v["code"].as_str().unwrap().to_owned(), v["msg"].as_str().unwrap().to_owned())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Raw {
    let resp = req.send().await.expect("request reaches the stand-in");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = resp.bytes().await.unwrap().to_vec();
    Raw { status, content_type, body }
}

fn method_url(s: &StandIn, method: &str) -> String {
    format!("{}/twirp/livekit.RoomService/{method}", s.url())
}

/// POSTs a JSON body with `authorization` as the Authorization header.
async fn post_json_auth(s: &StandIn, method: &str, authorization: Option<&str>, body: &str) -> Raw {
    let mut req = http().post(method_url(s, method)).header("content-type", "application/json").body(body.to_owned());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    send(req).await
}

async fn post_json(s: &StandIn, method: &str, grants: VideoGrants, body: &str) -> Raw {
    post_json_auth(s, method, Some(&format!("Bearer {}", token(s, grants))), body).await
}

async fn post_proto(s: &StandIn, method: &str, grants: VideoGrants, msg: &impl Message) -> Raw {
    send(
        http()
            .post(method_url(s, method))
            .header("content-type", "application/protobuf")
            .header("authorization", format!("Bearer {}", token(s, grants)))
            .body(msg.encode_to_vec()),
    )
    .await
}

fn twirp_error(err: ServiceError) -> (String, String) {
    match err {
        ServiceError::Twirp(ServerError::Twirp(e)) => (e.code, e.msg),
        other => panic!("expected a Twirp error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- rooms

#[tokio::test]
async fn create_room_returns_a_room_with_livekit_defaults() {
    let s = standin().await;
    let room = sdk(&s).create_room("lobby", CreateRoomOptions::default()).await.unwrap();
    assert!(room.sid.starts_with("RM_") && room.sid.len() == 15, "{}", room.sid);
    assert_eq!(room.name, "lobby");
    assert_eq!(room.empty_timeout, 300);
    assert_eq!(room.departure_timeout, 20);
    assert_eq!(room.max_participants, 0);
    assert!(room.creation_time > 0);
    assert_eq!(room.creation_time_ms / 1000, room.creation_time);
    assert_eq!(room.num_participants, 0);
    assert!(room.enabled_codecs.iter().any(|c| c.mime == "audio/opus"));
    assert!(!room.turn_password.is_empty());
}

#[tokio::test]
async fn create_room_applies_non_zero_options_to_a_new_room() {
    let s = standin().await;
    let room = sdk(&s)
        .create_room(
            "tuned",
            CreateRoomOptions {
                empty_timeout: 60,
                departure_timeout: 5,
                max_participants: 7,
                metadata: "m".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (room.empty_timeout, room.departure_timeout, room.max_participants, room.metadata.as_str()),
        (60, 5, 7, "m")
    );
}

#[tokio::test]
async fn create_room_is_an_upsert_that_returns_the_running_room_unchanged() {
    let s = standin().await;
    let client = sdk(&s);
    let first = client.create_room("same", CreateRoomOptions::default()).await.unwrap();
    let again = client
        .create_room("same", CreateRoomOptions { empty_timeout: 42, metadata: "new".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(s.rooms().len(), 1);
}

#[tokio::test]
async fn create_room_accepts_an_empty_name_as_the_real_server_does() {
    let s = standin().await;
    let room = sdk(&s).create_room("", CreateRoomOptions::default()).await.unwrap();
    assert_eq!(room.name, "");
    assert_eq!(s.rooms().len(), 1);
}

#[tokio::test]
async fn a_room_name_over_256_bytes_is_refused_with_the_servers_text() {
    let s = standin().await;
    let name = "é".repeat(129); // 258 bytes, 129 characters
    let err = sdk(&s).create_room(&name, CreateRoomOptions::default()).await.unwrap_err();
    assert_eq!(
        twirp_error(err),
        (
            "invalid_argument".to_owned(),
            "twirp error unknown: room name length exceeds limits: max length 256".to_owned()
        )
    );
    let ok = "r".repeat(256);
    sdk(&s).create_room(&ok, CreateRoomOptions::default()).await.unwrap();
}

#[tokio::test]
async fn room_metadata_over_512_kib_is_refused_with_the_argument_in_meta() {
    let s = standin().await;
    let body = json!({"name": "big", "metadata": "x".repeat(512 * 1024 + 1)}).to_string();
    let raw = post_json(&s, "CreateRoom", create_grant(), &body).await;
    assert_eq!(raw.status, 400);
    assert_eq!(
        raw.json(),
        json!({
            "code": "invalid_argument",
            "msg": "metadata size exceeds limits 524288",
            "meta": {"argument": "metadata size exceeds limits"}
        })
    );
}

#[tokio::test]
async fn list_rooms_filters_by_name_and_leaves_unknown_names_out() {
    let s = standin().await;
    let client = sdk(&s);
    for name in ["a", "b", "c"] {
        client.create_room(name, CreateRoomOptions::default()).await.unwrap();
    }
    assert_eq!(client.list_rooms(vec![]).await.unwrap().len(), 3);
    let mut names: Vec<String> = client
        .list_rooms(vec!["a".into(), "c".into(), "nope".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
}

#[tokio::test]
async fn delete_room_removes_it_and_a_second_delete_is_not_found() {
    let s = standin().await;
    let client = sdk(&s);
    s.add_participant("gone", "alice");
    client.delete_room("gone").await.unwrap();
    assert!(s.rooms().is_empty());
    assert_eq!(
        twirp_error(client.delete_room("gone").await.unwrap_err()),
        ("not_found".to_owned(), "twirp error unknown: requested room does not exist".to_owned())
    );
}

#[tokio::test]
async fn update_room_metadata_sets_it_and_a_missing_room_is_not_found() {
    let s = standin().await;
    let client = sdk(&s);
    s.create_room("r");
    let room = client.update_room_metadata("r", "hello").await.unwrap();
    assert_eq!(room.metadata, "hello");
    let (code, msg) = twirp_error(client.update_room_metadata("missing", "x").await.unwrap_err());
    assert_eq!(code, "not_found");
    assert_eq!(msg, "twirp error unknown: requested room does not exist");
}

// ---------------------------------------------------------- participants

#[tokio::test]
async fn participants_added_by_a_test_are_listed_and_counted() {
    let s = standin().await;
    let client = sdk(&s);
    let alice = s.add_participant("r", "alice");
    s.add_participant("r", "bob");
    let track = s.add_track("r", "alice", TrackSpec::camera("cam"));
    assert!(alice.sid.starts_with("PA_"));
    assert!(track.sid.starts_with("TR_"));
    assert_eq!(alice.state, proto::participant_info::State::Active as i32);

    let rooms = client.list_rooms(vec!["r".into()]).await.unwrap();
    assert_eq!((rooms[0].num_participants, rooms[0].num_publishers), (2, 1));

    let mut listed: Vec<String> =
        client.list_participants("r").await.unwrap().into_iter().map(|p| p.identity).collect();
    listed.sort();
    assert_eq!(listed, ["alice", "bob"]);

    let got = client.get_participant("r", "alice").await.unwrap();
    assert_eq!(got.tracks, vec![track]);
    assert!(got.is_publisher);
    let permission = got.permission.unwrap();
    assert!(permission.can_publish && permission.can_subscribe && permission.can_publish_data);
}

#[tokio::test]
async fn listing_the_participants_of_a_missing_room_is_an_empty_list() {
    let s = standin().await;
    assert!(sdk(&s).list_participants("nowhere").await.unwrap().is_empty());
}

#[tokio::test]
async fn participant_calls_for_a_missing_participant_are_not_found() {
    let s = standin().await;
    let client = sdk(&s);
    s.create_room("r");
    let expected = ("not_found".to_owned(), "twirp error unknown: participant does not exist".to_owned());
    assert_eq!(twirp_error(client.get_participant("r", "ghost").await.unwrap_err()), expected);
    assert_eq!(twirp_error(client.remove_participant("r", "ghost").await.unwrap_err()), expected);
    assert_eq!(
        twirp_error(client.update_participant("r", "ghost", UpdateParticipantOptions::default()).await.unwrap_err()),
        expected
    );
    // a missing room is just as missing
    assert_eq!(twirp_error(client.get_participant("nope", "ghost").await.unwrap_err()), expected);
}

#[tokio::test]
async fn remove_participant_removes_it_and_updates_the_counts() {
    let s = standin().await;
    s.add_participant("r", "alice");
    s.add_participant("r", "bob");
    sdk(&s).remove_participant("r", "alice").await.unwrap();
    assert!(s.participant("r", "alice").is_none());
    assert_eq!(s.rooms()[0].num_participants, 1);
}

#[tokio::test]
async fn update_participant_merges_attributes_and_skips_empty_name_and_metadata() {
    let s = standin().await;
    let client = sdk(&s);
    s.add_participant("r", "alice");
    let first = client
        .update_participant(
            "r",
            "alice",
            UpdateParticipantOptions {
                name: "Alice".into(),
                metadata: "m1".into(),
                attributes: HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
                permission: None,
            },
        )
        .await
        .unwrap();
    let second = client
        .update_participant(
            "r",
            "alice",
            UpdateParticipantOptions {
                attributes: HashMap::from([("a".into(), "".into()), ("c".into(), "3".into())]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((second.name.as_str(), second.metadata.as_str()), ("Alice", "m1"));
    assert_eq!(second.attributes, HashMap::from([("b".into(), "2".into()), ("c".into(), "3".into())]));
    assert!(second.version > first.version);
    assert_eq!(s.participant("r", "alice").unwrap(), second);
}

#[tokio::test]
async fn update_participant_replaces_the_permission_and_drops_tracks_it_forbids() {
    let s = standin().await;
    s.add_participant("r", "alice");
    s.add_track("r", "alice", TrackSpec::camera("cam"));
    s.add_track("r", "alice", TrackSpec::microphone("mic"));
    let updated = sdk(&s)
        .update_participant(
            "r",
            "alice",
            UpdateParticipantOptions {
                permission: Some(proto::ParticipantPermission {
                    can_publish: true,
                    can_subscribe: true,
                    can_publish_sources: vec![proto::TrackSource::Microphone as i32],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = updated.tracks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["mic"]);
    assert!(!updated.permission.unwrap().can_publish_data);
}

#[tokio::test]
async fn participant_name_and_attribute_limits_are_checked_before_the_grant() {
    let s = standin().await;
    // no grant at all: the limit check comes first on the real server
    let long_name = json!({"room": "r", "identity": "a", "name": "n".repeat(257)}).to_string();
    let raw = post_json_auth(&s, "UpdateParticipant", None, &long_name).await;
    assert_eq!(
        raw.json(),
        json!({"code": "invalid_argument", "msg": "name length exceeds limits 256",
               "meta": {"argument": "name length exceeds limits"}})
    );
    let big = json!({"room": "r", "identity": "a", "attributes": {"k": "v".repeat(64 * 1024)}}).to_string();
    let raw = post_json_auth(&s, "UpdateParticipant", None, &big).await;
    assert_eq!(raw.twirp().1, "attribute size exceeds limits 65536");
}

// ---------------------------------------------------------------- tracks

#[tokio::test]
async fn mute_published_track_returns_the_updated_track() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let track = s.add_track("r", "alice", TrackSpec::microphone("mic"));
    let muted = sdk(&s).mute_published_track("r", "alice", &track.sid, true).await.unwrap();
    assert!(muted.muted);
    assert_eq!(muted.sid, track.sid);
    assert!(s.participant("r", "alice").unwrap().tracks[0].muted);
}

#[tokio::test]
async fn remote_unmute_is_refused_unless_the_server_enables_it() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let track = s.add_track("r", "alice", TrackSpec::microphone("mic"));
    let err = sdk(&s).mute_published_track("r", "alice", &track.sid, false).await.unwrap_err();
    assert_eq!(
        twirp_error(err),
        ("failed_precondition".to_owned(), "twirp error unknown: remote unmute not enabled".to_owned())
    );

    let lenient = StandIn::start(StandInConfig { remote_unmute: true, ..Default::default() }).await.unwrap();
    lenient.add_participant("r", "alice");
    let track = lenient.add_track("r", "alice", TrackSpec { muted: true, ..TrackSpec::microphone("mic") });
    let unmuted = sdk(&lenient).mute_published_track("r", "alice", &track.sid, false).await.unwrap();
    assert!(!unmuted.muted);
}

#[tokio::test]
async fn muting_an_unknown_track_answers_200_without_a_track() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let req = proto::MuteRoomTrackRequest {
        room: "r".into(),
        identity: "alice".into(),
        track_sid: "TR_unknown".into(),
        muted: true,
    };
    let raw = post_proto(&s, "MutePublishedTrack", admin("r"), &req).await;
    assert_eq!(raw.status, 200);
    assert_eq!(proto::MuteRoomTrackResponse::decode(&raw.body[..]).unwrap().track, None);
    let raw = post_json(&s, "MutePublishedTrack", admin("r"), &json!(req).to_string()).await;
    assert_eq!(raw.json(), json!({"track": null}));
    // whichever the encoding, the recorded request decodes as the message
    let calls = s.calls();
    assert_eq!(calls[1].encoding, Some(Encoding::Json));
    assert_eq!(calls[1].decode::<proto::MuteRoomTrackRequest>(), req);
}

#[tokio::test]
async fn muting_for_a_participant_who_is_not_there_fails_unavailable_once_psrpc_gives_up() {
    let s = standin().await;
    s.set_no_route_delay(Duration::from_millis(30));
    s.create_room("r");
    let req = proto::MuteRoomTrackRequest {
        room: "r".into(),
        identity: "ghost".into(),
        track_sid: "TR_x".into(),
        muted: true,
    };
    let raw = post_proto(&s, "MutePublishedTrack", admin("r"), &req).await;
    assert_eq!(raw.status, 503);
    assert_eq!(raw.twirp(), ("unavailable".to_owned(), "twirp error unknown: no response from servers".to_owned()));
}

// ------------------------------------------------ data and subscriptions

#[tokio::test]
async fn send_data_is_recorded_and_a_nonce_must_be_empty_or_16_bytes() {
    let s = standin().await;
    s.create_room("r");
    let mut req = proto::SendDataRequest {
        room: "r".into(),
        data: b"hi".to_vec(),
        kind: proto::data_packet::Kind::Reliable as i32,
        topic: Some("chat".into()),
        nonce: vec![7; 16],
        ..Default::default()
    };
    assert_eq!(post_proto(&s, "SendData", admin("r"), &req).await.status, 200);
    assert_eq!(s.data_sent(), vec![req.clone()]);

    req.nonce = vec![1; 5];
    let raw = post_proto(&s, "SendData", admin("r"), &req).await;
    assert_eq!(raw.status, 400);
    assert_eq!(
        raw.twirp(),
        ("invalid_argument".to_owned(), "nonce should be 16-bytes or not present, got: 5 bytes".to_owned())
    );
    assert_eq!(s.data_sent().len(), 1);
}

#[tokio::test]
async fn update_subscriptions_is_recorded_and_answers_empty() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let req = proto::UpdateSubscriptionsRequest {
        room: "r".into(),
        identity: "alice".into(),
        track_sids: vec!["TR_a".into()],
        subscribe: true,
        ..Default::default()
    };
    let raw = post_proto(&s, "UpdateSubscriptions", admin("r"), &req).await;
    assert_eq!((raw.status, raw.body.len()), (200, 0));
    assert_eq!(s.subscription_updates(), vec![req.clone()]);
    let recorded: proto::UpdateSubscriptionsRequest = s.calls()[0].decode();
    assert_eq!(recorded, req);
}

// ------------------------------------------------------------------ JSON

#[tokio::test]
async fn json_requests_are_read_in_either_casing_ignoring_unknown_fields() {
    let s = standin().await;
    let raw = post_json(&s, "CreateRoom", create_grant(), r#"{"name":"snake","empty_timeout":61,"whatever":1}"#).await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let raw = post_json(&s, "CreateRoom", create_grant(), r#"{"name":"camel","emptyTimeout":62}"#).await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    let timeouts: HashMap<String, u32> = s.rooms().into_iter().map(|r| (r.name, r.empty_timeout)).collect();
    assert_eq!(timeouts, HashMap::from([("snake".into(), 61), ("camel".into(), 62)]));
}

#[tokio::test]
async fn json_replies_use_proto_names_int64_strings_and_every_default() {
    let s = standin().await;
    let raw = post_json(&s, "CreateRoom", create_grant(), r#"{"name":"j"}"#).await;
    assert_eq!(raw.content_type, "application/json");
    let room = raw.json();
    assert!(room["creation_time"].is_string(), "{room}");
    assert!(room["creation_time_ms"].is_string());
    assert_eq!(room["empty_timeout"], 300);
    assert_eq!(room["metadata"], "");
    assert_eq!(room["num_participants"], 0);
    assert_eq!(room["active_recording"], false);
    assert_eq!(room["version"], Value::Null);
    assert_eq!(room["enabled_codecs"][0], json!({"mime": "audio/PCMU", "fmtp_line": ""}));
    assert!(room.get("creationTime").is_none());

    s.add_participant("j", "alice");
    s.add_track("j", "alice", TrackSpec::camera("cam"));
    let body = json!({"room": "j", "identity": "alice", "attributes": {"camelKey": "1", "snake_key": "2"}});
    let raw = post_json(&s, "UpdateParticipant", admin("j"), &body.to_string()).await;
    let p = raw.json();
    assert_eq!(p["attributes"], json!({"camelKey": "1", "snake_key": "2"}));
    assert_eq!(p["state"], "ACTIVE");
    assert!(p["joined_at"].is_string());
    assert_eq!(p["permission"]["can_publish_data"], true);
    assert_eq!(p["tracks"][0]["type"], "VIDEO");
    assert_eq!(p["tracks"][0]["source"], "CAMERA");
    assert_eq!(p["tracks"][0]["mime_type"], "video/VP8");
}

#[tokio::test]
async fn an_undecodable_body_is_malformed() {
    let s = standin().await;
    let raw = post_json(&s, "CreateRoom", create_grant(), "{not json").await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.json(), json!({"code": "malformed", "msg": "the json request could not be decoded"}));
    let raw = send(
        http()
            .post(method_url(&s, "CreateRoom"))
            .header("content-type", "application/protobuf")
            .body(vec![0xff, 0xff, 0xff]),
    )
    .await;
    assert_eq!(raw.json(), json!({"code": "malformed", "msg": "the protobuf request could not be decoded"}));
}

// ---------------------------------------------------------------- routes

#[tokio::test]
async fn an_unknown_method_is_a_twirp_bad_route() {
    let s = standin().await;
    let raw = post_json(&s, "Nope", create_grant(), "{}").await;
    assert_eq!(raw.status, 404);
    assert_eq!(
        raw.json(),
        json!({
            "code": "bad_route",
            "msg": "no handler for path \"/twirp/livekit.RoomService/Nope\"",
            "meta": {"twirp_invalid_route": "POST /twirp/livekit.RoomService/Nope"}
        })
    );
}

#[tokio::test]
async fn a_get_is_a_twirp_bad_route() {
    let s = standin().await;
    let raw = send(http().get(method_url(&s, "ListRooms"))).await;
    assert_eq!(raw.status, 404);
    assert_eq!(raw.twirp(), ("bad_route".to_owned(), "unsupported method \"GET\" (only POST is allowed)".to_owned()));
}

#[tokio::test]
async fn paths_outside_the_twirp_service_get_gos_plain_404() {
    let s = standin().await;
    let raw = send(http().post(format!("{}/x", s.url()))).await;
    assert_eq!((raw.status, raw.text().as_str()), (404, "404 page not found\n"));
    assert!(raw.content_type.starts_with("text/plain"));
    let health = send(http().get(format!("{}/", s.url()))).await;
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
}

#[tokio::test]
async fn an_unsupported_content_type_is_a_bad_route() {
    let s = standin().await;
    let raw = send(
        http()
            .post(method_url(&s, "ListRooms"))
            .header("content-type", "text/plain")
            .header("authorization", format!("Bearer {}", token(&s, list_grant())))
            .body("{}"),
    )
    .await;
    assert_eq!(raw.status, 404);
    assert_eq!(raw.twirp(), ("bad_route".to_owned(), "unexpected Content-Type: \"text/plain\"".to_owned()));
}

#[tokio::test]
async fn a_browser_preflight_is_answered_by_cors() {
    let s = standin().await;
    let resp = http()
        .request(reqwest::Method::OPTIONS, method_url(&s, "ListRooms"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "http://localhost:5173");
    assert_eq!(resp.headers()["access-control-allow-headers"], "authorization,content-type");
}

// ------------------------------------------------------------------ auth

async fn plain_401(s: &StandIn, authorization: &str) -> String {
    let raw = post_json_auth(s, "ListRooms", Some(authorization), "{}").await;
    assert_eq!(raw.status, 401, "{}", raw.text());
    assert!(raw.content_type.starts_with("text/plain"), "{}", raw.content_type);
    raw.text()
}

fn claims(s: &StandIn, exp: usize) -> Claims {
    Claims { iss: s.api_key().to_owned(), exp, nbf: 0, video: list_grant(), ..Default::default() }
}

#[tokio::test]
async fn a_bad_signature_is_a_plain_text_401() {
    let s = standin().await;
    let t = signed(&claims(&s, now_secs() + 600), "not-the-secret");
    assert_eq!(
        plain_401(&s, &format!("Bearer {t}")).await,
        "invalid authorization token: token signature is invalid: signature is invalid"
    );
}

#[tokio::test]
async fn an_expired_token_is_a_plain_text_401_after_a_minute_of_leeway() {
    let s = standin().await;
    let t = signed(&claims(&s, now_secs() - 120), s.api_secret());
    assert_eq!(
        plain_401(&s, &format!("Bearer {t}")).await,
        "invalid authorization token: token has invalid claims: token is expired"
    );
    let recent = signed(&claims(&s, now_secs() - 10), s.api_secret());
    let raw = post_json_auth(&s, "ListRooms", Some(&format!("Bearer {recent}")), "{}").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
}

#[tokio::test]
async fn an_unknown_key_is_a_plain_text_401() {
    let s = standin().await;
    let t = AccessToken::with_api_key("otherkey", s.api_secret()).with_grants(list_grant()).to_jwt().unwrap();
    assert_eq!(plain_401(&s, &format!("Bearer {t}")).await, "invalid API key");
}

#[tokio::test]
async fn an_authorization_header_without_bearer_is_a_plain_text_401() {
    let s = standin().await;
    let t = token(&s, list_grant());
    assert_eq!(plain_401(&s, &t).await, "invalid authorization header. Must start with Bearer ");
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let s = standin().await;
    let raw = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": s.api_key(), "video": {"roomList": true}}),
        &jsonwebtoken::EncodingKey::from_secret(s.api_secret().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        plain_401(&s, &format!("Bearer {raw}")).await,
        "invalid authorization token: token has invalid claims: token is missing required claim: exp claim is required"
    );
}

#[tokio::test]
async fn the_sdk_sees_a_request_error_for_a_plain_text_401() {
    let s = StandIn::start(StandInConfig { api_key: "realkey".into(), ..Default::default() }).await.unwrap();
    let err = RoomClient::with_api_key(&s.url(), "devkey", "secret").list_rooms(vec![]).await.unwrap_err();
    assert!(matches!(err, ServiceError::Twirp(ServerError::Request(_))), "{err:?}");
}

#[tokio::test]
async fn no_token_at_all_runs_the_call_without_grants_and_is_denied() {
    let s = standin().await;
    let raw = post_json_auth(&s, "ListRooms", None, "{}").await;
    assert_eq!(raw.status, 401);
    assert_eq!(raw.json(), json!({"code": "unauthenticated", "msg": "permissions denied"}));
    assert_eq!(s.calls()[0].auth, AuthOutcome::NoToken);
}

#[tokio::test]
async fn a_missing_grant_or_a_grant_for_another_room_is_permissions_denied() {
    let s = standin().await;
    s.add_participant("mine", "alice");
    let denied = json!({"code": "unauthenticated", "msg": "permissions denied"});

    // roomAdmin does not allow DeleteRoom; roomCreate does
    let raw = post_json(&s, "DeleteRoom", admin("mine"), r#"{"room":"mine"}"#).await;
    assert_eq!((raw.status, raw.json()), (401, denied.clone()));

    // an admin grant for another room
    let raw = post_json(&s, "ListParticipants", admin("other"), r#"{"room":"mine"}"#).await;
    assert_eq!((raw.status, raw.json()), (401, denied.clone()));

    // list needs roomList, create needs roomCreate
    let raw = post_json(&s, "ListRooms", create_grant(), "{}").await;
    assert_eq!(raw.json(), denied);
    let raw = post_json(&s, "CreateRoom", list_grant(), r#"{"name":"x"}"#).await;
    assert_eq!(raw.json(), denied);
}

#[tokio::test]
async fn a_token_in_the_access_token_query_parameter_is_accepted() {
    let s = standin().await;
    let raw = send(
        http()
            .post(format!("{}?access_token={}", method_url(&s, "ListRooms"), token(&s, list_grant())))
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
}

// --------------------------------------------------------------- records

#[tokio::test]
async fn calls_are_recorded_with_their_request_claims_and_reply() {
    let s = standin().await;
    sdk(&s).create_room("rec", CreateRoomOptions::default()).await.unwrap();
    post_json_auth(&s, "ListRooms", Some("Basic abc"), "{}").await;
    let calls = s.calls();
    assert_eq!(calls.len(), 2);

    let first = &calls[0];
    assert_eq!(first.method, "CreateRoom");
    assert_eq!(first.encoding, Some(Encoding::Protobuf));
    assert!(matches!(&first.request, Some(RoomRequest::CreateRoom(r)) if r.name == "rec"));
    assert_eq!(first.auth, AuthOutcome::Verified { api_key: "devkey".into() });
    assert!(first.claims.as_ref().unwrap().video.room_create);
    assert_eq!(first.response.as_ref().unwrap().status, 200);

    let second = &calls[1];
    assert!(matches!(second.auth, AuthOutcome::Rejected { .. }));
    assert_eq!(second.response.as_ref().unwrap().status, 401);

    s.clear_calls();
    assert!(s.calls().is_empty());
}

#[tokio::test]
async fn waiting_for_calls_also_sees_calls_the_auth_middleware_refuses() {
    let s = standin().await;
    let wrong = RoomClient::with_api_key(&s.url(), s.api_key(), "wrong-secret");
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for_calls("ListRooms", 2).await })
    };
    for _ in 0..2 {
        wrong.list_rooms(vec![]).await.unwrap_err();
    }
    waiter.await.unwrap();
    assert!(s.calls().iter().all(|c| matches!(c.auth, AuthOutcome::Rejected { .. })));
}

// ------------------------------------------------------------- lifecycle

#[tokio::test]
async fn stop_makes_a_pooled_client_fail_and_restart_serves_it_again_on_the_same_port() {
    let s = standin().await;
    let addr = s.addr();
    let pooled = http();
    let list = || {
        pooled
            .post(method_url(&s, "ListRooms"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", token(&s, list_grant())))
            .body("{}")
            .send()
    };
    s.create_room("kept");
    assert_eq!(list().await.unwrap().status().as_u16(), 200);

    s.stop().await;
    let err = list().await.unwrap_err();
    assert!(err.is_connect(), "expected a connection error, got {err:?}");

    s.restart().await.unwrap();
    assert_eq!(s.addr(), addr);
    let resp = list().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["rooms"][0]["name"], "kept");
}

#[tokio::test]
async fn stop_ends_a_call_that_was_hanging() {
    let s = standin().await;
    s.fail_next(Some("ListRooms"), Fault::Hang, 1);
    let client = sdk(&s);
    let call = tokio::spawn(async move { client.list_rooms(vec![]).await });
    // the stand-in records the call before it starts hanging
    s.wait_for_calls("ListRooms", 1).await;
    s.stop().await;
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, ServiceError::Twirp(ServerError::Request(_))), "{err:?}");
}

// ------------------------------------------------------- fault injection

#[tokio::test]
async fn an_injected_twirp_fault_answers_the_next_calls_to_that_method_only() {
    let s = standin().await;
    let client = sdk(&s);
    s.fail_next(Some("ListRooms"), Fault::Twirp { code: "unavailable".into(), msg: "try later".into() }, 2);
    client.create_room("r", CreateRoomOptions::default()).await.unwrap();
    for _ in 0..2 {
        let (code, msg) = twirp_error(client.list_rooms(vec![]).await.unwrap_err());
        assert_eq!((code.as_str(), msg.as_str()), ("unavailable", "try later"));
    }
    assert_eq!(client.list_rooms(vec![]).await.unwrap().len(), 1);
    assert!(s.calls()[1].fault.is_some());
}

#[tokio::test]
async fn injected_http_and_auth_faults_reach_the_client_as_sent() {
    let s = standin().await;
    s.fail_next(
        None,
        Fault::Http { status: 502, body: "<html>bad gateway</html>".into(), content_type: "text/html".into() },
        1,
    );
    s.fail_next(None, Fault::PlainUnauthorized, 1);
    let raw = post_json(&s, "ListRooms", list_grant(), "{}").await;
    assert_eq!((raw.status, raw.content_type.as_str()), (502, "text/html"));
    assert_eq!(raw.text(), "<html>bad gateway</html>");
    let raw = post_json(&s, "ListRooms", list_grant(), "{}").await;
    assert_eq!((raw.status, raw.text().as_str()), (401, "invalid API key"));
    assert_eq!(post_json(&s, "ListRooms", list_grant(), "{}").await.status, 200);
}

#[tokio::test]
async fn an_injected_mute_without_track_is_a_200_with_no_track() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let track = s.add_track("r", "alice", TrackSpec::microphone("mic"));
    s.fail_next(Some("MutePublishedTrack"), Fault::MuteWithoutTrack, 1);
    let req =
        proto::MuteRoomTrackRequest { room: "r".into(), identity: "alice".into(), track_sid: track.sid, muted: true };
    let raw = post_proto(&s, "MutePublishedTrack", admin("r"), &req).await;
    assert_eq!(raw.status, 200);
    assert_eq!(proto::MuteRoomTrackResponse::decode(&raw.body[..]).unwrap().track, None);
    // the fault replaced the call: the track is still unmuted
    assert!(!s.participant("r", "alice").unwrap().tracks[0].muted);
}

#[tokio::test]
async fn a_delay_makes_a_client_with_a_short_timeout_time_out() {
    let s = standin().await;
    s.set_delay(Duration::from_secs(30));
    let err = http()
        .post(method_url(&s, "ListRooms"))
        .header("content-type", "application/json")
        .body("{}")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    s.set_delay(Duration::ZERO);
    assert_eq!(post_json(&s, "ListRooms", list_grant(), "{}").await.status, 200);
}

// ---------------------------------------------------------------- binary

#[tokio::test]
async fn the_binary_prints_its_url_once_it_listens() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_livekit-standin"))
        .args(["--listen", "127.0.0.1:0", "--seed-rooms", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let url = line.trim().strip_prefix("listening on ").expect(&line).to_owned();
    let rooms = RoomClient::with_api_key(&url, "devkey", "secret").list_rooms(vec![]).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(rooms.unwrap().len(), 2);
}
