//! The NestJS app's REST routes under /livekit/ (crate::rest): its requests,
//! replayed over plain HTTP/1.1, get its JSON shapes back; each goes through
//! its RPC's authentication, rules, limits and metrics; errors come in
//! NestJS's shape; their actions reach the timeline as the RPCs' do.

use std::time::Duration;

use livekit_api::access_token::TokenVerifier;
use livekit_standin::Fault;
use reqwest::{Method, StatusCode};
use roomcontrol::auth::hash_api_key;
use roomcontrol::config::ApiKeyConfig;
use roomcontrol::proto::v1::*;
use serde_json::{Value, json};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::standin_or_skip;
use crate::support::{SERVICE_NAME, TestApp, add_camera, spawn_app, spawn_app_with, unique};

/// A REST answer: status, headers, JSON body (Null when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// A plain HTTP/1.1 client, as the NestJS app's clients used.
fn http() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("RoomControl answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    Answer { status, headers, body }
}

async fn rest(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Answer {
    rest_as(app, None, method, path, body).await
}

async fn rest_as(app: &TestApp, key: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut request = http().request(method, format!("{}{path}", app.http_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    send(request).await
}

/// Asserts NestJS's error shape and returns the message.
fn nest_error(answer: &Answer, status: u16, error: &str) -> Value {
    assert_eq!(answer.status.as_u16(), status, "{answer:?}");
    assert_eq!(answer.headers["content-type"], "application/json; charset=utf-8");
    let object = answer.body.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["error", "message", "statusCode"], "{answer:?}");
    assert_eq!(answer.body["statusCode"], status);
    assert_eq!(answer.body["error"], error);
    answer.body["message"].clone()
}

fn is_decimal_string(value: &Value) -> bool {
    value.as_str().is_some_and(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test]
async fn rest_create_room_answers_201_with_the_room_in_the_nestjs_shape() {
    let app = spawn_app().await;
    let name = unique("rest-create");
    let answer = rest(
        &app,
        Method::POST,
        "/livekit/rooms",
        Some(json!({"name": name, "emptyTimeout": 300, "maxParticipants": 10, "metadata": "{\"topic\":\"x\"}"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(answer.headers["content-type"], "application/json; charset=utf-8");
    let room = &answer.body;
    assert!(room["sid"].as_str().unwrap().starts_with("RM_"), "{room}");
    assert_eq!(room["name"], name);
    assert_eq!(room["emptyTimeout"], 300);
    assert_eq!(room["maxParticipants"], 10);
    assert_eq!(room["numParticipants"], 0);
    assert_eq!(room["metadata"], "{\"topic\":\"x\"}");
    assert!(is_decimal_string(&room["creationTime"]), "64-bit integers are strings: {room}");
    assert!(is_decimal_string(&room["creationTimeMs"]), "{room}");

    // The RPC sees the same room.
    let same = app.get_room(GetRoomRequest { name: name.clone() }).await.expect("the room exists");
    assert_eq!(same.sid, room["sid"].as_str().unwrap());
    assert_eq!(same.creation_time.unwrap().seconds.to_string(), room["creationTime"].as_str().unwrap());
}

#[tokio::test]
async fn rest_list_get_and_delete_rooms_as_the_nestjs_app_did() {
    let app = spawn_app().await;
    let name = unique("rest-list");
    let created = rest(&app, Method::POST, "/livekit/rooms", Some(json!({"name": name}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");

    let listed = rest(&app, Method::GET, "/livekit/rooms", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    let rooms = listed.body.as_array().expect("an array of rooms");
    assert!(rooms.iter().any(|room| room["name"] == name), "{listed:?}");

    let path = format!("/livekit/rooms/{name}");
    let one = rest(&app, Method::GET, &path, None).await;
    assert_eq!((one.status, &one.body["sid"]), (StatusCode::OK, &created.body["sid"]));

    let deleted = rest(&app, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_eq!(deleted.body, Value::Null, "no body");

    let gone = rest(&app, Method::DELETE, &path, None).await;
    let message = nest_error(&gone, 404, "Not Found");
    assert!(message.as_str().unwrap().contains("does not exist"), "{message}");
    nest_error(&rest(&app, Method::GET, &path, None).await, 404, "Not Found");
}

#[tokio::test]
async fn rest_room_names_are_percent_decoded_from_the_path() {
    let app = spawn_app().await;
    let name = format!("{} weekly/standup", unique("rest-path"));
    let created = rest(&app, Method::POST, "/livekit/rooms", Some(json!({"name": name}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20");
    let one = rest(&app, Method::GET, &format!("/livekit/rooms/{encoded}"), None).await;
    assert_eq!((one.status, &one.body["name"]), (StatusCode::OK, &json!(name)));
}

#[tokio::test]
async fn rest_update_room_sets_metadata_or_writes_the_old_fields_into_it() {
    let app = spawn_app().await;
    let name = unique("rest-update");
    rest(&app, Method::POST, "/livekit/rooms", Some(json!({"name": name}))).await;
    let path = format!("/livekit/rooms/{name}");

    let updated = rest(&app, Method::PATCH, &path, Some(json!({"metadata": "{\"topic\":\"retro\"}"}))).await;
    assert_eq!((updated.status, &updated.body["metadata"]), (StatusCode::OK, &json!("{\"topic\":\"retro\"}")));

    // The NestJS app's UpdateRoomDto went into the metadata as JSON.
    let legacy = rest(&app, Method::PATCH, &path, Some(json!({"emptyTimeout": 600, "maxParticipants": 20}))).await;
    assert_eq!(legacy.status, StatusCode::OK, "{legacy:?}");
    assert_eq!(legacy.body["metadata"], "{\"emptyTimeout\":600,\"maxParticipants\":20}");

    let both = rest(&app, Method::PATCH, &path, Some(json!({"metadata": "x", "maxParticipants": 2}))).await;
    nest_error(&both, 400, "Bad Request");
    let missing = rest(&app, Method::PATCH, &format!("/livekit/rooms/{}", unique("nope")), Some(json!({}))).await;
    nest_error(&missing, 404, "Not Found");
}

#[tokio::test]
async fn rest_list_participants_shows_tracks_with_livekit_names_and_string_times() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("rest-participants");
    standin.add_participant(&room, "alice");
    let camera = add_camera(&standin, &room, "alice");

    let answer = rest(&app, Method::GET, &format!("/livekit/rooms/{room}/participants"), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let participants = answer.body.as_array().unwrap();
    assert_eq!(participants.len(), 1, "{answer:?}");
    let alice = &participants[0];
    assert_eq!(alice["identity"], "alice");
    assert!(alice["sid"].as_str().unwrap().starts_with("PA_"));
    assert_eq!(alice["state"], "ACTIVE");
    assert_eq!(alice["kind"], "STANDARD");
    assert_eq!(alice["isPublisher"], true);
    assert!(is_decimal_string(&alice["joinedAt"]), "{alice}");
    let track = &alice["tracks"][0];
    assert_eq!(track["sid"], camera.sid.as_str());
    assert_eq!((&track["type"], &track["source"], &track["muted"]), (&json!("VIDEO"), &json!("CAMERA"), &json!(false)));

    // LiveKit answers an empty list for a room that does not exist.
    let empty = rest(&app, Method::GET, &format!("/livekit/rooms/{}/participants", unique("nobody")), None).await;
    assert_eq!((empty.status, empty.body), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn rest_mute_answers_the_nestjs_message_and_mutes_the_track() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("rest-mute");
    standin.add_participant(&room, "alice");
    let camera = add_camera(&standin, &room, "alice");
    let path = format!("/livekit/rooms/{room}/participants/alice/mute?trackSid={}&muted=true", camera.sid);

    let answer = rest(&app, Method::POST, &path, None).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, json!({"message": "Track muted successfully"})));
    let alice = standin.participant(&room, "alice").unwrap();
    assert!(alice.tracks[0].muted, "LiveKit muted the track");

    let unknown = format!("/livekit/rooms/{room}/participants/alice/mute?trackSid=TR_nope&muted=true");
    nest_error(&rest(&app, Method::POST, &unknown, None).await, 404, "Not Found");
    let no_flag = format!("/livekit/rooms/{room}/participants/alice/mute?trackSid={}", camera.sid);
    let message = nest_error(&rest(&app, Method::POST, &no_flag, None).await, 400, "Bad Request");
    assert_eq!(message, json!(["muted: is required: true mutes, false unmutes"]));
}

#[tokio::test]
async fn rest_remove_participant_answers_204() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("rest-remove");
    standin.add_participant(&room, "bob");
    let answer = rest(&app, Method::DELETE, &format!("/livekit/rooms/{room}/participants/bob"), None).await;
    assert_eq!((answer.status, answer.body), (StatusCode::NO_CONTENT, Value::Null));
    assert!(standin.participant(&room, "bob").is_none(), "bob was disconnected");
}

#[tokio::test]
async fn rest_token_answers_201_with_only_the_token_which_carries_the_nestjs_grants() {
    let app = spawn_app().await;
    let room = unique("rest-token");
    // What the NestJS app's test page sends.
    let body = json!({"roomName": room, "participantName": "User", "canPublish": true, "canSubscribe": true});
    let answer = rest(&app, Method::POST, "/livekit/token", Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let keys: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["token"], "exactly the NestJS controller's {{ token }}");
    let claims = TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret)
        .verify(answer.body["token"].as_str().unwrap())
        .expect("LiveKit's own verifier accepts it");
    assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("User", "User"));
    assert_eq!(claims.video.room, room);
    // Unset grants are LiveKit's defaults: true.
    let granted = |grant: Option<bool>| grant.unwrap_or(true);
    assert!(claims.video.room_join && granted(claims.video.can_publish) && granted(claims.video.can_subscribe));
    assert!(granted(claims.video.can_publish_data), "the NestJS app granted data unless told otherwise");
    assert_eq!(claims.exp - claims.nbf, 6 * 3600, "the default ttl");
}

#[tokio::test]
async fn rest_broken_requests_answer_400_with_every_broken_rule_before_livekit_is_called() {
    let app = spawn_app().await;
    let structure = rest(
        &app,
        Method::POST,
        "/livekit/rooms",
        Some(json!({"name": 7, "emptyTimeout": "soon", "maxParticipants": -1, "color": "red"})),
    )
    .await;
    assert_eq!(
        nest_error(&structure, 400, "Bad Request"),
        json!([
            "color: property color should not exist",
            "emptyTimeout: must be an integer number from 0 to 4294967295",
            "maxParticipants: must be an integer number from 0 to 4294967295",
            "name: must be a string"
        ])
    );
    // RoomControl's own rules, in the routes' names.
    let rules = rest(&app, Method::POST, "/livekit/token", Some(json!({"roomName": "", "participantName": ""}))).await;
    let message = nest_error(&rules, 400, "Bad Request");
    let listed: Vec<&str> = message.as_array().unwrap().iter().map(|rule| rule.as_str().unwrap()).collect();
    assert!(listed.iter().any(|rule| rule.starts_with("roomName: must not be empty")), "{listed:?}");
    assert!(listed.iter().any(|rule| rule.starts_with("participantName: must not be empty")), "{listed:?}");
    let long = rest(&app, Method::POST, "/livekit/rooms", Some(json!({"name": "x".repeat(300)}))).await;
    assert_eq!(nest_error(&long, 400, "Bad Request"), json!(["name: must be at most 256 bytes, got 300"]));

    let not_json = send(
        http()
            .post(format!("{}/livekit/rooms", app.http_url()))
            .header("content-type", "application/json")
            .body("{\"name\": "),
    )
    .await;
    let message = nest_error(&not_json, 400, "Bad Request");
    assert!(message[0].as_str().unwrap().contains("not valid JSON"), "{message}");
    let form = send(
        http()
            .post(format!("{}/livekit/rooms", app.http_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=x"),
    )
    .await;
    nest_error(&form, 415, "Unsupported Media Type");

    if let Some(standin) = &app.standin {
        assert!(standin.calls().iter().all(|call| call.method != "CreateRoom"), "LiveKit was never asked");
    }
}

#[tokio::test]
async fn rest_unknown_paths_and_methods_answer_as_nestjs_does() {
    let app = spawn_app().await;
    let missing = rest(&app, Method::GET, "/livekit/nope", None).await;
    assert_eq!(nest_error(&missing, 404, "Not Found"), "Cannot GET /livekit/nope");
    let wrong = rest(&app, Method::PUT, "/livekit/rooms", None).await;
    assert_eq!(nest_error(&wrong, 405, "Method Not Allowed"), "Cannot PUT /livekit/rooms");
    assert_eq!(wrong.headers["allow"], "POST, GET");
}

fn api_key(name: &str, scopes: &[&str]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.to_owned(),
        hash: hash_api_key(&format!("rck_rest_{name}")),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        rooms: vec!["*".to_owned()],
        revoked: false,
    }
}

#[tokio::test]
async fn rest_routes_need_the_same_credentials_and_scopes_as_their_rpcs() {
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![api_key("reader", &["rooms:read"]), api_key("admin", &["rooms:write"])];
    })
    .await;
    let anonymous = rest(&app, Method::GET, "/livekit/rooms", None).await;
    let message = nest_error(&anonymous, 401, "Unauthorized");
    assert!(message.as_str().unwrap().contains("authorization"), "{message}");
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");

    let bad = rest_as(&app, Some("rck_rest_unknown"), Method::GET, "/livekit/rooms", None).await;
    nest_error(&bad, 401, "Unauthorized");

    let reader = Some("rck_rest_reader");
    let listed = rest_as(&app, reader, Method::GET, "/livekit/rooms", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    let refused = rest_as(&app, reader, Method::POST, "/livekit/rooms", Some(json!({"name": "r"}))).await;
    let message = nest_error(&refused, 403, "Forbidden");
    assert!(message.as_str().unwrap().contains("CreateRoom needs scope rooms:write"), "{message}");
    let created =
        rest_as(&app, Some("rck_rest_admin"), Method::POST, "/livekit/rooms", Some(json!({"name": "r"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
}

#[tokio::test]
async fn rest_without_authentication_answers_only_loopback_names() {
    let app = spawn_app().await;
    let answer = send(http().get(format!("{}/livekit/rooms", app.http_url())).header("host", "rebound.example")).await;
    let message = nest_error(&answer, 403, "Forbidden");
    assert!(message.as_str().unwrap().contains("localhost"), "{message}");
}

#[tokio::test]
async fn rest_answers_503_while_livekit_is_down() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    standin.stop().await;
    let answer = rest(&app, Method::GET, "/livekit/rooms", None).await;
    let message = nest_error(&answer, 503, "Service Unavailable");
    assert!(message.as_str().unwrap().contains("unreachable"), "{message}");
    // Minting never needed LiveKit.
    let token =
        rest(&app, Method::POST, "/livekit/token", Some(json!({"roomName": "r", "participantName": "p"}))).await;
    assert_eq!(token.status, StatusCode::CREATED, "{token:?}");
}

#[tokio::test]
async fn rest_calls_share_the_call_slots_and_overflow_answers_429_with_retry_after() {
    let app = spawn_app_with(|config| {
        config.server.max_concurrent_calls = 1;
        config.server.max_queued_calls = 1;
        config.server.max_queue_wait = Duration::from_millis(1500);
        config.livekit.timeout = Duration::from_secs(30);
    })
    .await;
    let standin = standin_or_skip!(app);
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;
    standin.fail_next(Some("ListParticipants"), Fault::Hang, 10);
    // One gRPC call holds the slot, one REST call waits in the queue.
    let client = app.client.clone();
    let holding =
        tokio::spawn(
            async move { client.clone().list_participants(ListParticipantsRequest { room: "hung".into() }).await },
        );
    standin.wait_for_calls("ListParticipants", 1).await;
    let url = format!("{}/livekit/rooms/hung/participants", app.http_url());
    let queued = tokio::spawn(send(http().get(url)));
    let admin = app.admin_addr.unwrap();
    let wait = async {
        loop {
            let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
            if text.contains("roomcontrol_calls_queued{budget=\"livekit\"} 1") {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the REST call waits for a slot");

    let refused = rest(&app, Method::GET, "/livekit/rooms", None).await;
    let message = nest_error(&refused, 429, "Too Many Requests");
    assert!(message.as_str().unwrap().contains("server.max_queued_calls"), "{message}");
    assert_eq!(refused.headers["retry-after"], "2", "RetryInfo's 1.5 s, rounded up");

    let waited = queued.await.unwrap();
    nest_error(&waited, 429, "Too Many Requests");
    standin.stop().await;
    let _ = holding.await;
}

#[tokio::test]
async fn rest_calls_are_counted_and_timed_as_their_rpcs_with_protocol_rest() {
    let app = spawn_app().await;
    rest(&app, Method::POST, "/livekit/rooms", Some(json!({"name": unique("rest-metrics")}))).await;
    rest(&app, Method::DELETE, &format!("/livekit/rooms/{}", unique("rest-none")), None).await;
    let admin = app.admin_addr.unwrap();
    let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    for expected in [
        r#"roomcontrol_calls_total{rpc="roomcontrol.v1.RoomControl/CreateRoom",code="Ok",protocol="rest"} 1"#,
        r#"roomcontrol_calls_total{rpc="roomcontrol.v1.RoomControl/DeleteRoom",code="NotFound",protocol="rest"} 1"#,
        r#"roomcontrol_call_duration_seconds_count{rpc="roomcontrol.v1.RoomControl/CreateRoom"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}");
    }
}

#[tokio::test]
async fn rest_browsers_get_the_configured_cors_and_other_origins_cannot_call() {
    let app =
        spawn_app_with(|config| config.server.cors.allowed_origins = vec!["https://app.example.com".into()]).await;
    let url = format!("{}/livekit/rooms/x", app.http_url());
    let preflight = http()
        .request(Method::OPTIONS, &url)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "DELETE")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("DELETE"));

    let allowed =
        send(http().get(format!("{}/livekit/rooms", app.http_url())).header("origin", "https://app.example.com")).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.headers["access-control-allow-origin"], "https://app.example.com");

    // A plain POST needs no preflight: a page elsewhere could send it.
    let name = unique("rest-csrf");
    let path = format!("{}/livekit/rooms/{name}/participants/x/mute?trackSid=TR_a&muted=true", app.http_url());
    let forged = send(http().post(path).header("origin", "https://evil.example")).await;
    let message = nest_error(&forged, 403, "Forbidden");
    assert!(message.as_str().unwrap().contains("server.cors.allowed_origins"), "{message}");
    if let Some(standin) = &app.standin {
        assert!(standin.calls().iter().all(|call| call.method != "MutePublishedTrack"), "nothing was called");
    }
}

#[tokio::test]
async fn rest_openapi_document_is_served_and_describes_every_route() {
    let app = spawn_app().await;
    let answer = rest(&app, Method::GET, "/livekit/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.body;
    assert_eq!(document["openapi"], "3.1.0");
    for (path, method) in [
        ("/livekit/rooms", "post"),
        ("/livekit/rooms", "get"),
        ("/livekit/rooms/{name}", "get"),
        ("/livekit/rooms/{name}", "patch"),
        ("/livekit/rooms/{name}", "delete"),
        ("/livekit/rooms/{name}/participants", "get"),
        ("/livekit/rooms/{name}/participants/{identity}", "delete"),
        ("/livekit/rooms/{name}/participants/{identity}/mute", "post"),
        ("/livekit/token", "post"),
    ] {
        assert!(document["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(
        document["paths"]["/livekit/token"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/TokenJson"
    );
}

#[tokio::test]
async fn rest_routes_can_be_turned_off_and_leave_the_webhook_path_alone() {
    let app = spawn_app_with(|config| config.rest.enabled = false).await;
    let answer = http().get(format!("{}/livekit/rooms", app.http_url())).send().await.unwrap();
    assert_ne!(answer.status(), StatusCode::OK);
    assert!(answer.headers().get("content-type").is_none_or(|value| value != "application/json; charset=utf-8"));

    let app = spawn_app().await;
    let webhook = http().post(format!("{}/livekit/webhook", app.http_url())).body("{}").send().await.unwrap();
    let text = webhook.text().await.unwrap();
    assert!(!text.contains("Cannot POST"), "the REST routes do not claim /livekit/webhook: {text}");
}

/// One raw HTTP/1.1 exchange: what a generated client never sends.
async fn raw_http(app: &TestApp, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Up to the end of the first answer's JSON body.
    while !answer.ends_with(b"}") {
        let read = stream.read(&mut buffer).await.unwrap();
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn rest_bodies_over_the_size_limit_or_too_slow_answer_413_and_408() {
    let app = spawn_app_with(|config| {
        config.server.max_message_bytes = 1024;
        config.server.request_body_timeout = Duration::from_millis(200);
    })
    .await;
    let announced = send(
        http()
            .post(format!("{}/livekit/rooms", app.http_url()))
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"{}\"}}", "x".repeat(2000))),
    )
    .await;
    let message = nest_error(&announced, 413, "Payload Too Large");
    assert!(message.as_str().unwrap().contains("server.max_message_bytes"), "{message}");

    // Chunked: the size shows only while the body is read.
    let chunk = format!("{{\"name\":\"{}\"}}", "x".repeat(2000));
    let head = "POST /livekit/rooms HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let body = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    let answer = raw_http(&app, head, body.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""statusCode":413"#), "{answer}");

    // A body that promises more than it sends.
    let head = "POST /livekit/token HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let answer = raw_http(&app, head, b"{\"roomName\":").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.request_body_timeout"), "{answer}");
}

#[tokio::test]
async fn rest_actions_land_in_the_timeline_as_their_rpcs_do() {
    let app = spawn_app().await;
    let room = unique("rest-timeline");
    let created = rest(&app, Method::POST, "/livekit/rooms", Some(json!({"name": room}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let body = json!({"roomName": room, "participantName": "alice"});
    let minted = rest(&app, Method::POST, "/livekit/token", Some(body)).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{minted:?}");

    let events = app
        .client
        .clone()
        .list_events(ListEventsRequest { rooms: vec![room.clone()], ..Default::default() })
        .await
        .expect("ListEvents answers")
        .into_inner()
        .events;
    let types: Vec<&str> = events.iter().map(|event| event.r#type.as_str()).collect();
    assert_eq!(types, ["room_created", "token_minted"]);
    let actor = events[1].actor.as_ref().expect("RoomControl's action has an actor");
    assert_eq!(actor.rpc, "CreateToken");
    assert!(!format!("{events:?}").contains(minted.body["token"].as_str().unwrap()), "never the token");
}
