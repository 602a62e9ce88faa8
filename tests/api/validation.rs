//! Every input rule, for every RPC: INVALID_ARGUMENT naming the field and
//! the rule, a google.rpc.BadRequest detail, and LiveKit never called.

use std::collections::HashMap;

use roomcontrol::proto::v1::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{Rpc, spawn_app};

fn long(bytes: usize) -> String {
    "x".repeat(bytes)
}

fn attributes_of(bytes: usize) -> HashMap<String, String> {
    HashMap::from([("k".to_owned(), "v".repeat(bytes - 1))])
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

/// (what is wrong, the request, the field the answer must name)
fn invalid_requests() -> Vec<(&'static str, Rpc, &'static str)> {
    let room = || "room".to_owned();
    let identity = || "alice".to_owned();
    let sid = || "TR_abcdef123456".to_owned();
    vec![
        ("empty room name", Rpc::CreateRoom(CreateRoomRequest::default()), "name"),
        (
            "room name over 256 bytes",
            Rpc::CreateRoom(CreateRoomRequest { name: long(257), ..Default::default() }),
            "name",
        ),
        (
            "metadata over 512 KiB",
            Rpc::CreateRoom(CreateRoomRequest { name: room(), metadata: long(512 * 1024 + 1), ..Default::default() }),
            "metadata",
        ),
        (
            "an empty name in the filter",
            Rpc::ListRooms(ListRoomsRequest { names: vec![room(), String::new()] }),
            "names[1]",
        ),
        ("too many names", Rpc::ListRooms(ListRoomsRequest { names: vec![room(); 1001] }), "names"),
        ("empty room name", Rpc::GetRoom(GetRoomRequest::default()), "name"),
        ("room name over 256 bytes", Rpc::GetRoom(GetRoomRequest { name: long(257) }), "name"),
        ("empty room name", Rpc::DeleteRoom(DeleteRoomRequest::default()), "name"),
        (
            "empty room name",
            Rpc::UpdateRoomMetadata(UpdateRoomMetadataRequest { room: String::new(), metadata: "m".into() }),
            "room",
        ),
        (
            "metadata over 512 KiB",
            Rpc::UpdateRoomMetadata(UpdateRoomMetadataRequest { room: room(), metadata: long(512 * 1024 + 1) }),
            "metadata",
        ),
        ("empty room name", Rpc::ListParticipants(ListParticipantsRequest::default()), "room"),
        (
            "empty identity",
            Rpc::GetParticipant(GetParticipantRequest { room: room(), identity: String::new() }),
            "identity",
        ),
        (
            "identity over 256 bytes",
            Rpc::GetParticipant(GetParticipantRequest { room: room(), identity: long(257) }),
            "identity",
        ),
        (
            "empty room name",
            Rpc::RemoveParticipant(RemoveParticipantRequest { room: String::new(), identity: identity() }),
            "room",
        ),
        (
            "empty identity",
            Rpc::RemoveParticipant(RemoveParticipantRequest { room: room(), identity: String::new() }),
            "identity",
        ),
        (
            "nothing to update",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                ..Default::default()
            }),
            "metadata, name, attributes, permission",
        ),
        (
            "empty metadata",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                metadata: Some(String::new()),
                ..Default::default()
            }),
            "metadata",
        ),
        (
            "metadata over 512 KiB",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                metadata: Some(long(512 * 1024 + 1)),
                ..Default::default()
            }),
            "metadata",
        ),
        (
            "empty name",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                name: Some(String::new()),
                ..Default::default()
            }),
            "name",
        ),
        (
            "name over 256 bytes",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                name: Some(long(257)),
                ..Default::default()
            }),
            "name",
        ),
        (
            "attributes over 64 KiB",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                attributes: attributes_of(64 * 1024 + 1),
                ..Default::default()
            }),
            "attributes",
        ),
        (
            "an empty attribute key",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                attributes: HashMap::from([(String::new(), "v".into())]),
                ..Default::default()
            }),
            "attributes",
        ),
        (
            "an unspecified source",
            Rpc::UpdateParticipant(UpdateParticipantRequest {
                room: room(),
                identity: identity(),
                permission: Some(ParticipantPermission { can_publish_sources: vec![0], ..Default::default() }),
                ..Default::default()
            }),
            "permission.can_publish_sources[0]",
        ),
        (
            "empty track sid",
            Rpc::MutePublishedTrack(MutePublishedTrackRequest {
                room: room(),
                identity: identity(),
                track_sid: String::new(),
                muted: true,
            }),
            "track_sid",
        ),
        (
            "a participant sid as track sid",
            Rpc::MutePublishedTrack(MutePublishedTrackRequest {
                room: room(),
                identity: identity(),
                track_sid: "PA_abcdef".into(),
                muted: true,
            }),
            "track_sid",
        ),
        (
            "a track sid with a space",
            Rpc::MutePublishedTrack(MutePublishedTrackRequest {
                room: room(),
                identity: identity(),
                track_sid: "TR_ab cd".into(),
                muted: true,
            }),
            "track_sid",
        ),
        (
            "empty identity",
            Rpc::MutePublishedTrack(MutePublishedTrackRequest {
                room: room(),
                identity: String::new(),
                track_sid: sid(),
                muted: true,
            }),
            "identity",
        ),
        (
            "no track sids",
            Rpc::UpdateSubscriptions(UpdateSubscriptionsRequest {
                room: room(),
                identity: identity(),
                track_sids: vec![],
                subscribe: true,
            }),
            "track_sids",
        ),
        (
            "a bad track sid",
            Rpc::UpdateSubscriptions(UpdateSubscriptionsRequest {
                room: room(),
                identity: identity(),
                track_sids: vec![sid(), "nope".into()],
                subscribe: true,
            }),
            "track_sids[1]",
        ),
        ("empty room name", Rpc::SendData(SendDataRequest { data: b"x".to_vec(), ..Default::default() }), "room"),
        (
            "a 15-byte nonce",
            Rpc::SendData(SendDataRequest { room: room(), nonce: vec![1; 15], ..Default::default() }),
            "nonce",
        ),
        (
            "a 17-byte nonce",
            Rpc::SendData(SendDataRequest { room: room(), nonce: vec![1; 17], ..Default::default() }),
            "nonce",
        ),
        (
            "an empty destination",
            Rpc::SendData(SendDataRequest {
                room: room(),
                destination_identities: vec![String::new()],
                ..Default::default()
            }),
            "destination_identities[0]",
        ),
        (
            "topic over 256 bytes",
            Rpc::SendData(SendDataRequest { room: room(), topic: Some(long(257)), ..Default::default() }),
            "topic",
        ),
        (
            "empty room name",
            Rpc::CreateToken(CreateTokenRequest { identity: identity(), ..Default::default() }),
            "room",
        ),
        ("empty identity", Rpc::CreateToken(CreateTokenRequest { room: room(), ..Default::default() }), "identity"),
        (
            "identity over 256 bytes",
            Rpc::CreateToken(CreateTokenRequest { room: room(), identity: long(257), ..Default::default() }),
            "identity",
        ),
        (
            "name over 256 bytes",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                name: long(257),
                ..Default::default()
            }),
            "name",
        ),
        (
            "metadata over 512 KiB",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                metadata: long(512 * 1024 + 1),
                ..Default::default()
            }),
            "metadata",
        ),
        (
            "attributes over 64 KiB",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                attributes: attributes_of(64 * 1024 + 1),
                ..Default::default()
            }),
            "attributes",
        ),
        (
            "a zero ttl",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                ttl: duration(0, 0),
                ..Default::default()
            }),
            "ttl",
        ),
        (
            "a negative ttl",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                ttl: duration(-60, 0),
                ..Default::default()
            }),
            "ttl",
        ),
        (
            "a ttl over the maximum",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                ttl: duration(24 * 3600 + 1, 0),
                ..Default::default()
            }),
            "ttl",
        ),
        (
            "an unknown source",
            Rpc::CreateToken(CreateTokenRequest {
                room: room(),
                identity: identity(),
                permissions: Some(TokenPermissions { can_publish_sources: vec![1, 42], ..Default::default() }),
                ..Default::default()
            }),
            "permissions.can_publish_sources[1]",
        ),
    ]
}

#[tokio::test]
async fn every_invalid_request_is_refused_before_livekit_is_called() {
    let app = spawn_app().await;
    if let Some(standin) = &app.standin {
        standin.clear_calls();
    }
    for (what, request, field) in invalid_requests() {
        let rpc = request.name();
        let status = app.call(request).await.expect_err(&format!("{rpc} with {what} is refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc} with {what}: {}", status.message());
        assert!(
            status.message().starts_with(&format!("invalid request: {field}: "))
                || status.message().contains(&format!("; {field}: ")),
            "{rpc} with {what}: the message names {field:?}: {}",
            status.message()
        );
        let details = status.get_error_details();
        let violations =
            &details.bad_request().unwrap_or_else(|| panic!("{rpc} with {what}: a BadRequest detail")).field_violations;
        assert!(violations.iter().any(|violation| violation.field == field), "{rpc} with {what}: {violations:?}");
    }
    if let Some(standin) = &app.standin {
        let calls: Vec<_> = standin.calls().into_iter().map(|call| call.method).collect();
        assert!(calls.iter().all(|method| method == "ListRooms"), "only readiness probes reached LiveKit: {calls:?}");
    }
}

#[tokio::test]
async fn every_broken_rule_of_a_request_is_reported_at_once() {
    let app = spawn_app().await;
    let status = app.create_token(CreateTokenRequest { ttl: duration(0, 0), ..Default::default() }).await.unwrap_err();
    let details = status.get_error_details();
    let fields: Vec<_> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["room", "identity", "ttl"]);
    assert_eq!(
        status.message(),
        "invalid request: room: must not be empty: give the room name; identity: must not be empty: give the identity; ttl: must be positive (and at most 24h); leave it unset for the default"
    );
}

#[tokio::test]
async fn limits_are_inclusive() {
    let app = spawn_app().await;
    let name = format!("{:x<256}", crate::support::unique("edge"));
    let room = app
        .create_room(CreateRoomRequest { name: name.clone(), metadata: long(512 * 1024), ..Default::default() })
        .await
        .expect("a 256-byte name and 512 KiB of metadata are accepted");
    assert_eq!(room.name.len(), 256);
    app.create_token(CreateTokenRequest {
        room: name,
        identity: long(256),
        name: long(256),
        attributes: attributes_of(64 * 1024),
        ttl: duration(24 * 3600, 0),
        ..Default::default()
    })
    .await
    .expect("every limit reached exactly is accepted");
}
