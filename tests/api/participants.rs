//! ListParticipants, GetParticipant, RemoveParticipant, UpdateParticipant,
//! MutePublishedTrack, UpdateSubscriptions, SendData. A real LiveKit has no
//! participants without WebRTC clients, so most of these need the stand-in.

use std::collections::HashMap;

use roomcontrol::proto::v1::*;
use tonic::Code;

use crate::standin_or_skip;
use crate::support::{add_camera, add_microphone, spawn_app, unique};

#[tokio::test]
async fn list_participants_shows_each_participant_with_its_tracks() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("participants");
    standin.add_participant(&room, "alice");
    let camera = add_camera(&standin, &room, "alice");
    standin.add_participant(&room, "bob");

    let mut participants = app
        .list_participants(ListParticipantsRequest { room: room.clone() })
        .await
        .expect("ListParticipants succeeds")
        .participants;
    participants.sort_by(|a, b| a.identity.cmp(&b.identity));
    assert_eq!(participants.len(), 2);
    let alice = &participants[0];
    assert_eq!(alice.identity, "alice");
    assert!(alice.sid.starts_with("PA_"));
    assert_eq!(alice.state, ParticipantState::Active as i32);
    assert_eq!(alice.kind, ParticipantKind::Standard as i32);
    assert!(alice.joined_at.is_some());
    let permission = alice.permission.as_ref().expect("a permission");
    assert!(permission.can_publish && permission.can_subscribe);
    assert_eq!(alice.tracks.len(), 1);
    let track = &alice.tracks[0];
    assert_eq!(track.sid, camera.sid);
    assert_eq!(track.r#type, TrackType::Video as i32);
    assert_eq!(track.source, TrackSource::Camera as i32);
    assert_eq!((track.width, track.height), (1280, 720));
    assert_eq!(track.mime_type, "video/vp8");
    assert!(track.simulcast);
    assert!(participants[1].tracks.is_empty());

    let room_info = app.get_room(GetRoomRequest { name: room }).await.unwrap();
    assert_eq!((room_info.num_participants, room_info.num_publishers), (2, 1));
}

#[tokio::test]
async fn list_participants_of_an_empty_room_is_an_empty_list() {
    let app = spawn_app().await;
    let room = unique("empty");
    app.create_room(CreateRoomRequest { name: room.clone(), ..Default::default() }).await.unwrap();
    let participants = app.list_participants(ListParticipantsRequest { room }).await.unwrap().participants;
    assert!(participants.is_empty());
}

#[tokio::test]
async fn get_participant_returns_it_and_not_found_for_an_unknown_identity() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("get-participant");
    let added = standin.add_participant(&room, "alice");
    let alice =
        app.get_participant(GetParticipantRequest { room: room.clone(), identity: "alice".into() }).await.unwrap();
    assert_eq!(alice.sid, added.sid);

    let status = app.get_participant(GetParticipantRequest { room, identity: "nobody".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("participant does not exist"), "{}", status.message());
}

#[tokio::test]
async fn remove_participant_disconnects_it() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("remove");
    standin.add_participant(&room, "alice");
    app.remove_participant(RemoveParticipantRequest { room: room.clone(), identity: "alice".into() })
        .await
        .expect("RemoveParticipant succeeds");
    assert!(standin.participant(&room, "alice").is_none());
    let status = app.remove_participant(RemoveParticipantRequest { room, identity: "alice".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn update_participant_changes_only_what_is_set() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("update");
    standin.add_participant(&room, "alice");

    let updated = app
        .update_participant(UpdateParticipantRequest {
            room: room.clone(),
            identity: "alice".into(),
            metadata: Some(r#"{"role":"host"}"#.into()),
            name: Some("Alice A.".into()),
            attributes: HashMap::from([("hand".to_owned(), "raised".to_owned())]),
            permission: None,
        })
        .await
        .expect("UpdateParticipant succeeds");
    assert_eq!(updated.metadata, r#"{"role":"host"}"#);
    assert_eq!(updated.name, "Alice A.");
    assert_eq!(updated.attributes.get("hand").map(String::as_str), Some("raised"));
    assert!(updated.permission.as_ref().unwrap().can_publish, "permission kept");

    let updated = app
        .update_participant(UpdateParticipantRequest {
            room: room.clone(),
            identity: "alice".into(),
            permission: Some(ParticipantPermission {
                can_subscribe: true,
                can_publish: false,
                can_publish_data: false,
                can_publish_sources: vec![],
                hidden: false,
                can_update_metadata: false,
            }),
            attributes: HashMap::from([("hand".to_owned(), String::new())]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.metadata, r#"{"role":"host"}"#, "metadata kept");
    assert_eq!(updated.name, "Alice A.", "name kept");
    assert!(!updated.attributes.contains_key("hand"), "an empty value removes the key");
    let permission = updated.permission.unwrap();
    assert!(!permission.can_publish && permission.can_subscribe);

    let status = app
        .update_participant(UpdateParticipantRequest {
            room,
            identity: "nobody".into(),
            metadata: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn mute_published_track_mutes_and_returns_the_track() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("mute");
    standin.add_participant(&room, "alice");
    let microphone = add_microphone(&standin, &room, "alice");
    let track = app
        .mute_published_track(MutePublishedTrackRequest {
            room: room.clone(),
            identity: "alice".into(),
            track_sid: microphone.sid.clone(),
            muted: true,
        })
        .await
        .expect("MutePublishedTrack succeeds");
    assert_eq!(track.sid, microphone.sid);
    assert!(track.muted);
    assert_eq!(track.r#type, TrackType::Audio as i32);
    let alice = standin.participant(&room, "alice").unwrap();
    assert!(alice.tracks[0].muted, "LiveKit holds the track muted");
}

#[tokio::test]
async fn unmuting_a_track_is_refused_unless_livekit_enables_remote_unmute() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("unmute");
    standin.add_participant(&room, "alice");
    let microphone = add_microphone(&standin, &room, "alice");
    let status = app
        .mute_published_track(MutePublishedTrackRequest {
            room,
            identity: "alice".into(),
            track_sid: microphone.sid,
            muted: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("remote unmute not enabled"), "{}", status.message());
}

#[tokio::test]
async fn muting_an_unknown_participant_is_not_found() {
    let app = spawn_app().await;
    let room = unique("mute-missing");
    app.create_room(CreateRoomRequest { name: room.clone(), ..Default::default() }).await.unwrap();
    let status = app
        .mute_published_track(MutePublishedTrackRequest {
            room,
            identity: "nobody".into(),
            track_sid: "TR_abcdefABCDEF".into(),
            muted: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
}

#[tokio::test]
async fn muting_a_track_the_participant_does_not_publish_is_not_found() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("mute-unknown-track");
    standin.add_participant(&room, "alice");
    let status = app
        .mute_published_track(MutePublishedTrackRequest {
            room,
            identity: "alice".into(),
            track_sid: "TR_notpublished1".into(),
            muted: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("publishes no track \"TR_notpublished1\""), "{}", status.message());
}

#[tokio::test]
async fn a_mute_reply_without_a_track_is_not_found_not_a_crash() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("mute-no-track");
    standin.add_participant(&room, "alice");
    let microphone = add_microphone(&standin, &room, "alice");
    standin.fail_next(Some("MutePublishedTrack"), livekit_standin::Fault::MuteWithoutTrack, 1);
    let request = MutePublishedTrackRequest {
        room: room.clone(),
        identity: "alice".into(),
        track_sid: microphone.sid,
        muted: true,
    };
    let status = app.mute_published_track(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("publishes no track"), "{}", status.message());
    // The same connection keeps working.
    app.mute_published_track(request).await.expect("the next call succeeds");
}

#[tokio::test]
async fn update_subscriptions_reaches_livekit() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("subscriptions");
    standin.add_participant(&room, "alice");
    let camera = add_camera(&standin, &room, "alice");
    standin.add_participant(&room, "bob");
    app.update_subscriptions(UpdateSubscriptionsRequest {
        room: room.clone(),
        identity: "bob".into(),
        track_sids: vec![camera.sid.clone()],
        subscribe: false,
    })
    .await
    .expect("UpdateSubscriptions succeeds");
    let call = standin
        .calls()
        .into_iter()
        .rev()
        .find(|call| call.method == "UpdateSubscriptions")
        .expect("LiveKit was called");
    let request: livekit_protocol::UpdateSubscriptionsRequest = call.decode();
    assert_eq!((request.room.as_str(), request.identity.as_str()), (room.as_str(), "bob"));
    assert_eq!(request.track_sids, vec![camera.sid]);
    assert!(!request.subscribe);
}

#[tokio::test]
async fn send_data_sends_the_packet_with_the_callers_nonce_or_a_fresh_one() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let room = unique("data");
    standin.add_participant(&room, "alice");
    app.send_data(SendDataRequest {
        room: room.clone(),
        data: b"hello".to_vec(),
        reliable: true,
        destination_identities: vec!["alice".into()],
        topic: Some("chat".into()),
        nonce: vec![7; 16],
    })
    .await
    .expect("SendData succeeds");
    app.send_data(SendDataRequest { room: room.clone(), data: b"bye".to_vec(), ..Default::default() })
        .await
        .expect("SendData without a nonce succeeds");
    let sent: Vec<livekit_protocol::SendDataRequest> =
        standin.calls().into_iter().filter(|call| call.method == "SendData").map(|call| call.decode()).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].data, b"hello");
    assert_eq!(sent[0].kind, livekit_protocol::data_packet::Kind::Reliable as i32);
    assert_eq!(sent[0].destination_identities, vec!["alice".to_owned()]);
    assert_eq!(sent[0].topic.as_deref(), Some("chat"));
    assert_eq!(sent[0].nonce, vec![7; 16]);
    assert_eq!(sent[1].kind, livekit_protocol::data_packet::Kind::Lossy as i32);
    assert_eq!(sent[1].nonce.len(), 16, "RoomControl picks a nonce");
}

#[tokio::test]
async fn update_subscriptions_for_an_unknown_participant_is_not_found_at_once() {
    let app = spawn_app().await;
    let room = unique("subscriptions-missing");
    app.create_room(CreateRoomRequest { name: room.clone(), ..Default::default() }).await.unwrap();
    let status = app
        .update_subscriptions(UpdateSubscriptionsRequest {
            room,
            identity: "nobody".into(),
            track_sids: vec!["TR_abcdefABCDEF".into()],
            subscribe: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
}

#[tokio::test]
async fn send_data_to_a_room_that_does_not_exist_is_not_found() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    // LiveKit's internal routing gives up after about 3 s; shorter here.
    standin.set_no_route_delay(std::time::Duration::from_millis(100));
    let room = unique("no-such-room");
    let status = app
        .send_data(SendDataRequest { room: room.clone(), data: b"x".to_vec(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(status.message().contains(&room), "{}", status.message());
}
