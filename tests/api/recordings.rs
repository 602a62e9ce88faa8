//! Recordings through LiveKit Egress: started, followed in the timeline,
//! listed and stopped; LiveKit's refusals mapped to what a user can act on;
//! secrets kept out; a recording whose egress died closed by
//! reconciliation.

use std::time::{Duration, Instant};

use prost::Message;
use roomcontrol::proto::v1::recording::{Kind as RecordingKind, Status};
use roomcontrol::proto::v1::*;
use tonic::Code;

use crate::both_stores;
use crate::support::store::{Kind, TestDatabase};
use crate::support::timeline::{app_with_webhooks, each_of, next_of, watch_room};
use crate::support::{TestApp, api_key, as_key, spawn_app_with, unique};

fn room_recording(room: &str, file_name: &str) -> StartRoomRecordingRequest {
    StartRoomRecordingRequest { room: room.to_owned(), file_name: file_name.to_owned(), ..Default::default() }
}

async fn list(app: &TestApp, room: &str) -> Vec<Recording> {
    app.client
        .clone()
        .list_recordings(ListRecordingsRequest { room: room.to_owned(), active_only: false })
        .await
        .expect("ListRecordings")
        .into_inner()
        .recordings
}

fn status(recording: &Recording) -> Status {
    Status::try_from(recording.status).unwrap()
}

async fn a_recording_starts_runs_and_stops(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    standin.set_egress_step(Duration::from_millis(50));
    let mut client = app.client.clone();
    let room = unique("recorded");
    standin.add_participant(&room, "alice");
    let mut stream = watch_room(&app, &room).await;

    let started = client.start_room_recording(room_recording(&room, "standup-1")).await.unwrap().into_inner();
    assert!(started.id.starts_with("EG_"), "{started:?}");
    assert_eq!(started.room, room);
    assert_eq!(started.kind, RecordingKind::Room as i32);
    assert_eq!(status(&started), Status::Starting);
    let by = started.started_by.as_ref().expect("who started it");
    assert_eq!(by.rpc, "StartRoomRecording");

    // The action, then LiveKit's account of it.
    let seen = each_of(&mut stream, &["recording_started", "egress_started", "egress_updated"]).await;
    assert_eq!(seen[0].actor.as_ref().unwrap().rpc, "StartRoomRecording");
    let listed = list(&app, &room).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(status(&listed[0]), Status::Active);
    assert_eq!(listed[0].started_by.as_ref().map(|actor| actor.rpc.as_str()), Some("StartRoomRecording"));

    let stopped =
        client.stop_recording(StopRecordingRequest { recording_id: started.id.clone() }).await.unwrap().into_inner();
    assert_eq!(status(&stopped), Status::Ending);
    let seen = each_of(&mut stream, &["recording_stopped", "egress_ended"]).await;
    assert!(!seen[1].inferred);

    // From the store (the webhook), with its file.
    let listed = list(&app, &room).await;
    let done = &listed[0];
    assert_eq!(status(done), Status::Complete, "{done:?}");
    assert!(done.ended_at.is_some() && done.duration.is_some(), "{done:?}");
    let file = done.files.first().expect("a file");
    assert!(file.filename.contains("standup-1"), "{file:?}");
    assert!(file.filename.starts_with(&format!("recordings/{room}/")), "the template places it: {file:?}");
    assert!(file.size > 0 && !file.location.is_empty(), "{file:?}");
    assert!(!done.end_inferred);

    // A retried stop is answered with what is.
    let again = client.stop_recording(StopRecordingRequest { recording_id: started.id.clone() }).await.unwrap();
    assert_eq!(status(&again.into_inner()), Status::Complete);

    // Only active ones.
    let active = client
        .list_recordings(ListRecordingsRequest { room: room.clone(), active_only: true })
        .await
        .unwrap()
        .into_inner();
    assert!(active.recordings.is_empty(), "{active:?}");

    // The pruner removes an ended recording with the timeline it belongs to.
    let store = roomcontrol::store::Store::open(&roomcontrol::config::StoreConfig {
        url: database.url.clone(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    assert_eq!(store.recordings(Some(&room), None, false, 10).await.unwrap().len(), 1);
    let later = roomcontrol::events::unix_micros(std::time::SystemTime::now() + Duration::from_secs(60));
    store.prune(later, 10_000).await.unwrap();
    assert!(store.recordings(Some(&room), None, false, 10).await.unwrap().is_empty());
    store.close().await;
}

both_stores!(recordings_run_on, a_recording_starts_runs_and_stops);

#[tokio::test]
async fn track_and_participant_recordings_name_what_they_record() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    standin.set_egress_step(Duration::from_millis(50));
    let mut client = app.client.clone();
    let room = unique("tracks");
    standin.add_participant(&room, "alice");
    let camera = crate::support::add_camera(&standin, &room, "alice");

    let track = client
        .start_track_recording(StartTrackRecordingRequest {
            room: room.clone(),
            track_sid: camera.sid.clone(),
            file_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((track.kind, track.track_sid.as_str()), (RecordingKind::Track as i32, camera.sid.as_str()));
    let participant = client
        .start_participant_recording(StartParticipantRecordingRequest {
            room: room.clone(),
            identity: "alice".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((participant.kind, participant.identity.as_str()), (RecordingKind::Participant as i32, "alice"));
    let listed = list(&app, &room).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[tokio::test]
async fn stream_keys_and_storage_secrets_never_leave() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let url = database.url.clone();
    let app = spawn_app_with(move |config| {
        config.store.url = url;
        config.recordings.storage = roomcontrol::config::RecordingStorage::S3;
        config.recordings.s3.bucket = "meetings".to_owned();
        config.recordings.s3.region = "eu-west-1".to_owned();
        config.recordings.s3.access_key = Some("AKIAEXAMPLEKEY".to_owned());
        config.recordings.s3.secret = Some(secrecy::SecretString::from("S3-SECRET-VALUE"));
        config.recordings.stream_hosts = vec!["live.example.com".to_owned()];
    })
    .await;
    let Some(standin) = app.standin.clone() else { return };
    standin.set_webhook_urls([format!("{}/livekit/webhook", app.http_url())]);
    standin.set_egress_step(Duration::from_millis(50));
    let mut client = app.client.clone();
    let room = unique("streamed");
    standin.add_participant(&room, "alice");
    let mut stream = watch_room(&app, &room).await;

    let refused = client
        .start_stream(StartStreamRequest {
            room: room.clone(),
            urls: vec!["rtmp://elsewhere.example.net/app/KEY".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("urls[0]") && refused.message().contains("recordings.stream_hosts"),
        "{refused:?}"
    );
    assert!(!refused.message().contains("KEY"), "the key is not repeated: {refused:?}");

    let streaming = client
        .start_stream(StartStreamRequest {
            room: room.clone(),
            urls: vec!["rtmp://live.example.com/app/STREAM-KEY-123".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(streaming.kind, RecordingKind::Stream as i32);
    let recorded = client.start_room_recording(room_recording(&room, "")).await.unwrap().into_inner();
    next_of(&mut stream, &["egress_updated"]).await;
    next_of(&mut stream, &["egress_updated"]).await;
    for id in [&streaming.id, &recorded.id] {
        client.stop_recording(StopRecordingRequest { recording_id: id.clone() }).await.unwrap();
    }
    next_of(&mut stream, &["egress_ended"]).await;
    let last = next_of(&mut stream, &["egress_ended"]).await;

    // The S3 file's location is the bucket's; its credentials and the
    // stream key appear nowhere: not in the list, not in the timeline.
    let listed = list(&app, &room).await;
    let file = listed.iter().find(|r| r.id == recorded.id).and_then(|r| r.files.first()).expect("a file");
    assert!(file.location.contains("meetings"), "{file:?}");
    let events = client
        .list_events(ListEventsRequest { rooms: vec![room.clone()], page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(events.events.iter().any(|event| event.id == last.id));
    let mut everything = events.encode_to_vec();
    everything.extend(ListRecordingsResponse { recordings: listed }.encode_to_vec());
    let everything = String::from_utf8_lossy(&everything);
    for secret in ["STREAM-KEY-123", "S3-SECRET-VALUE", "AKIAEXAMPLEKEY"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    assert!(everything.contains("live.example.com"), "the host is shown");
}

#[tokio::test]
async fn livekit_without_egress_answers_failed_precondition_at_once() {
    let app = spawn_app_with(|config| config.livekit.timeout = Duration::from_secs(5)).await;
    let Some(standin) = app.standin.clone() else {
        eprintln!("skipped against a real LiveKit: needs one without egress");
        return;
    };
    standin.set_egress_worker(false);
    let mut client = app.client.clone();
    let room = unique("no-egress");
    standin.add_participant(&room, "alice");

    // LiveKit itself would answer Start for a live room only after 20 s.
    let started = Instant::now();
    let status = client.start_room_recording(room_recording(&room, "")).await.unwrap_err();
    println!("StartRoomRecording without egress answered in {:?}", started.elapsed());
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    for part in ["no egress service", "egress worker", "Redis", "egress not connected"] {
        assert!(status.message().contains(part), "{part:?} not in {:?}", status.message());
    }
    let listed = client.list_recordings(ListRecordingsRequest::default()).await.unwrap_err();
    assert_eq!(listed.code(), Code::FailedPrecondition, "{listed:?}");
    let stop =
        client.stop_recording(StopRecordingRequest { recording_id: "EG_abcdefabcdef".to_owned() }).await.unwrap_err();
    assert_eq!(stop.code(), Code::FailedPrecondition, "{stop:?}");
}

#[tokio::test]
async fn a_room_that_is_not_live_or_an_unknown_recording_is_not_found() {
    let app = spawn_app_with(|_| {}).await;
    let mut client = app.client.clone();
    let room = unique("absent");
    let status = client.start_room_recording(room_recording(&room, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("is not live"), "{status:?}");
    let status =
        client.stop_recording(StopRecordingRequest { recording_id: "EG_abcdefabcdef".to_owned() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("EG_abcdefabcdef"), "{status:?}");
}

#[tokio::test]
async fn livekit_that_does_not_answer_is_cut_at_the_timeout() {
    let app = spawn_app_with(|config| config.livekit.timeout = Duration::from_millis(300)).await;
    let Some(standin) = app.standin.clone() else { return };
    let room = unique("slow");
    standin.add_participant(&room, "alice");
    standin.set_delay(Duration::from_secs(30));
    let status = app.client.clone().start_room_recording(room_recording(&room, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("livekit.timeout"), "{status:?}");
}

async fn a_dead_egress_is_closed_by_reconciliation(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::from_millis(200)).await else { return };
    standin.set_egress_step(Duration::from_millis(50));
    let mut client = app.client.clone();
    let room = unique("dead-egress");
    standin.add_participant(&room, "alice");
    let mut stream = watch_room(&app, &room).await;

    let started = client.start_room_recording(room_recording(&room, "")).await.unwrap().into_inner();
    next_of(&mut stream, &["egress_updated"]).await;
    assert!(standin.kill_egress(&started.id));
    client.delete_room(DeleteRoomRequest { name: room.clone() }).await.unwrap();
    next_of(&mut stream, &["room_finished"]).await;

    let ended = next_of(&mut stream, &["egress_ended"]).await;
    assert!(ended.inferred, "{ended:?}");
    let listed = list(&app, &room).await;
    assert_eq!(status(&listed[0]), Status::Failed, "{listed:?}");
    assert!(listed[0].end_inferred, "{listed:?}");
    assert!(listed[0].error.contains("never reported its end"), "{listed:?}");
    // LiveKit still says it runs.
    let in_livekit = standin.egresses().into_iter().find(|info| info.egress_id == started.id).unwrap();
    assert_eq!(in_livekit.status, livekit_protocol::EgressStatus::EgressActive as i32);
}

both_stores!(dead_egresses_are_closed_on, a_dead_egress_is_closed_by_reconciliation);

#[tokio::test]
async fn a_lost_egress_ended_is_recovered_from_livekit() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::from_millis(200)).await else { return };
    standin.set_egress_step(Duration::from_millis(50));
    let mut client = app.client.clone();
    let room = unique("lost-end");
    standin.add_participant(&room, "alice");
    let mut stream = watch_room(&app, &room).await;
    let started = client.start_room_recording(room_recording(&room, "")).await.unwrap().into_inner();
    next_of(&mut stream, &["egress_updated"]).await;
    standin.drop_webhooks(Some("egress_ended"), 1);
    client.stop_recording(StopRecordingRequest { recording_id: started.id.clone() }).await.unwrap();

    let ended = next_of(&mut stream, &["egress_ended"]).await;
    assert!(ended.inferred, "LiveKit's webhook was dropped: {ended:?}");
    let listed = list(&app, &room).await;
    assert_eq!(status(&listed[0]), Status::Complete, "LiveKit's own end: {listed:?}");
    assert!(!listed[0].end_inferred);
    assert!(!listed[0].files.is_empty());
}

#[tokio::test]
async fn recording_requests_are_validated_before_livekit() {
    let app = spawn_app_with(|_| {}).await;
    let mut client = app.client.clone();
    let room = "r".to_owned();
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            client
                .start_room_recording(StartRoomRecordingRequest {
                    room: room.clone(),
                    layout: "mosaic".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "layout",
        ),
        (
            client
                .start_room_recording(StartRoomRecordingRequest {
                    room: room.clone(),
                    audio_only: true,
                    video_only: true,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "video_only",
        ),
        (client.start_room_recording(room_recording(&room, "../etc/passwd")).await.unwrap_err(), "file_name"),
        (client.start_room_recording(room_recording("", "")).await.unwrap_err(), "room"),
        (
            client
                .start_track_recording(StartTrackRecordingRequest {
                    room: room.clone(),
                    track_sid: "camera".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "track_sid",
        ),
        (
            client
                .start_participant_recording(StartParticipantRecordingRequest {
                    room: room.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "identity",
        ),
        (
            client.start_stream(StartStreamRequest { room: room.clone(), ..Default::default() }).await.unwrap_err(),
            "urls",
        ),
        (
            client
                .start_stream(StartStreamRequest {
                    room: room.clone(),
                    urls: vec!["https://example.com/app/key".into()],
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "urls[0]",
        ),
        (
            client.stop_recording(StopRecordingRequest { recording_id: "recording-1".into() }).await.unwrap_err(),
            "recording_id",
        ),
    ];
    for (status, field) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field:?} not in {:?}", status.message());
    }
    if let Some(standin) = &app.standin {
        assert!(standin.calls().iter().all(|call| !call.method.contains("Egress")), "nothing reached LiveKit's egress");
    }
}

#[tokio::test]
async fn recordings_need_their_scopes_and_the_room() {
    let app = spawn_app_with(|config| {
        config.auth.api_keys =
            vec![api_key("viewer", &["recordings:read"], &["*"]), api_key("team", &["recordings:write"], &["team-*"])];
    })
    .await;
    let Some(standin) = app.standin.clone() else { return };
    let (ours, theirs) = (unique("team"), unique("other"));
    standin.add_participant(&ours, "alice");
    standin.add_participant(&theirs, "bob");
    let mut client = app.client.clone();

    let status = client.start_room_recording(as_key("viewer", room_recording(&ours, ""))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("recordings:write"), "{status:?}");
    let status = client.start_room_recording(as_key("team", room_recording(&theirs, ""))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mine = client.start_room_recording(as_key("team", room_recording(&ours, ""))).await.unwrap().into_inner();
    let listed = client.list_recordings(as_key("viewer", ListRecordingsRequest::default())).await.unwrap().into_inner();
    assert!(listed.recordings.iter().any(|r| r.id == mine.id), "recordings:read lists: {listed:?}");

    // The team's key may not stop what is outside its rooms, nor list them.
    let status = client
        .list_recordings(as_key("team", ListRecordingsRequest { room: theirs.clone(), active_only: false }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let listed = client.list_recordings(as_key("team", ListRecordingsRequest::default())).await.unwrap().into_inner();
    assert!(listed.recordings.iter().all(|r| r.room.starts_with("team-")), "{listed:?}");
}
