//! The same service over grpc-web, from a plain HTTP/1.1 client.

use roomcontrol::proto::v1::*;
use tonic::Code;

use crate::support::{spawn_app, spawn_app_with, unique};

#[tokio::test]
async fn every_room_call_works_over_grpc_web_on_http_1_1() {
    let app = spawn_app().await;
    let web = app.grpc_web();
    let name = unique("web");

    let reply = web.call("CreateRoom", &CreateRoomRequest { name: name.clone(), ..Default::default() }).await;
    assert_eq!(reply.version, http::Version::HTTP_11);
    assert_eq!(reply.http_status, 200);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/grpc-web"));
    let room: Room = reply.decode();
    assert_eq!(room.name, name);

    let rooms: ListRoomsResponse =
        web.call("ListRooms", &ListRoomsRequest { names: vec![name.clone()] }).await.decode();
    assert_eq!(rooms.rooms.len(), 1);
    let room: Room = web.call("GetRoom", &GetRoomRequest { name: name.clone() }).await.decode();
    assert_eq!(room.sid, rooms.rooms[0].sid);
    let room: Room = web
        .call("UpdateRoomMetadata", &UpdateRoomMetadataRequest { room: name.clone(), metadata: "web".into() })
        .await
        .decode();
    assert_eq!(room.metadata, "web");
    let participants: ListParticipantsResponse =
        web.call("ListParticipants", &ListParticipantsRequest { room: name.clone() }).await.decode();
    assert!(participants.participants.is_empty());
    let token: CreateTokenResponse = web
        .call(
            "CreateToken",
            &CreateTokenRequest { room: name.clone(), identity: "browser".into(), ..Default::default() },
        )
        .await
        .decode();
    assert!(!token.token.is_empty());
    let _: DeleteRoomResponse = web.call("DeleteRoom", &DeleteRoomRequest { name: name.clone() }).await.decode();

    let missing = web.call("GetRoom", &GetRoomRequest { name }).await;
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn participant_calls_work_over_grpc_web() {
    let app = spawn_app().await;
    let standin = crate::standin_or_skip!(app);
    let web = app.grpc_web();
    let room = unique("web-participants");
    standin.add_participant(&room, "alice");
    let microphone = crate::support::add_microphone(&standin, &room, "alice");

    let alice: Participant = web
        .call("GetParticipant", &GetParticipantRequest { room: room.clone(), identity: "alice".into() })
        .await
        .decode();
    assert_eq!(alice.tracks.len(), 1);
    let track: Track = web
        .call(
            "MutePublishedTrack",
            &MutePublishedTrackRequest {
                room: room.clone(),
                identity: "alice".into(),
                track_sid: microphone.sid.clone(),
                muted: true,
            },
        )
        .await
        .decode();
    assert!(track.muted);
    let alice: Participant = web
        .call(
            "UpdateParticipant",
            &UpdateParticipantRequest {
                room: room.clone(),
                identity: "alice".into(),
                name: Some("Alice".into()),
                ..Default::default()
            },
        )
        .await
        .decode();
    assert_eq!(alice.name, "Alice");
    let _: UpdateSubscriptionsResponse = web
        .call(
            "UpdateSubscriptions",
            &UpdateSubscriptionsRequest {
                room: room.clone(),
                identity: "alice".into(),
                track_sids: vec![microphone.sid],
                subscribe: true,
            },
        )
        .await
        .decode();
    let _: SendDataResponse = web
        .call("SendData", &SendDataRequest { room: room.clone(), data: b"hi".to_vec(), ..Default::default() })
        .await
        .decode();
    let _: RemoveParticipantResponse =
        web.call("RemoveParticipant", &RemoveParticipantRequest { room, identity: "alice".into() }).await.decode();
}

#[tokio::test]
async fn grpc_web_errors_carry_the_status_and_message() {
    let app = spawn_app().await;
    let reply = app.grpc_web().call("CreateRoom", &CreateRoomRequest::default()).await;
    assert_eq!(reply.http_status, 200);
    assert_eq!(reply.code(), Code::InvalidArgument);
    assert_eq!(reply.grpc_message.as_deref(), Some("invalid request: name: must not be empty: give the room name"));
    assert!(reply.headers.contains_key("grpc-status-details-bin") || reply.messages.is_empty());
}

#[tokio::test]
async fn cors_preflight_allows_configured_origins_and_the_headers_grpc_web_sends() {
    let app =
        spawn_app_with(|config| config.server.cors.allowed_origins = vec!["https://app.example.com".into()]).await;
    let web = app.grpc_web();
    let allowed = web.preflight("https://app.example.com").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    let allow_headers = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for header in ["content-type", "x-grpc-web", "x-user-agent", "authorization"] {
        assert!(allow_headers.contains(header), "{header} in {allow_headers}");
    }
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));

    let refused = web.preflight("https://evil.example.net").await;
    assert!(refused.headers().get("access-control-allow-origin").is_none(), "no CORS grant for other origins");

    let reply = web
        .call_with(
            "/roomcontrol.v1.RoomControl/ListRooms",
            &ListRoomsRequest::default(),
            &[("origin", "https://app.example.com")],
        )
        .await;
    assert_eq!(reply.code(), Code::Ok);
    assert_eq!(reply.headers["access-control-allow-origin"], "https://app.example.com");
    let exposed = reply.headers["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "{exposed}");

    // A caller that sends no Origin (a backend, a probe) is no browser: no
    // CORS headers on its reply.
    let backend = web.call_with("/roomcontrol.v1.RoomControl/ListRooms", &ListRoomsRequest::default(), &[]).await;
    assert_eq!(backend.code(), Code::Ok);
    let cors_headers: Vec<_> =
        backend.headers.keys().filter(|name| name.as_str().starts_with("access-control-") || *name == "vary").collect();
    assert!(cors_headers.is_empty(), "CORS headers without Origin: {cors_headers:?}");
}

#[tokio::test]
async fn health_answers_over_grpc_web_too() {
    let app = spawn_app().await;
    let reply = app
        .grpc_web()
        .call_with(
            "/grpc.health.v1.Health/Check",
            &tonic_health::pb::HealthCheckRequest { service: String::new() },
            &[],
        )
        .await;
    let health: tonic_health::pb::HealthCheckResponse = reply.decode();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn grpc_web_works_over_http_2_too() {
    let app = spawn_app().await;
    let web = crate::support::grpc_web::GrpcWebClient::new_http2(app.http_url());
    let reply = web
        .call("CreateToken", &CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    let token: CreateTokenResponse = reply.decode();
    assert_eq!(token.identity, "i");
    let refused = web.call("GetRoom", &GetRoomRequest { name: String::new() }).await;
    assert_eq!(refused.code(), Code::InvalidArgument);
}
