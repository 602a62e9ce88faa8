//! `livekit.Egress` over real sockets: the lifecycle and its webhooks, the
//! errors with and without an egress worker, a dying worker.

mod common;

use std::time::{Duration, Instant};

use common::*;
use livekit_api::access_token::VideoGrants;
use livekit_protocol as proto;
use livekit_standin::{StandIn, StandInConfig, TrackSpec};
use proto::EgressStatus as St;

async fn standin() -> StandIn {
    standin_with(StandInConfig::default()).await
}

fn s3_file(filepath: &str) -> proto::EncodedFileOutput {
    proto::EncodedFileOutput {
        filepath: filepath.to_owned(),
        output: Some(proto::encoded_file_output::Output::S3(proto::S3Upload {
            access_key: "AKIA-secret".into(),
            secret: "very-secret".into(),
            region: "eu-west-1".into(),
            bucket: "recordings".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn room_composite(room: &str, file: proto::EncodedFileOutput) -> proto::RoomCompositeEgressRequest {
    proto::RoomCompositeEgressRequest { room_name: room.to_owned(), file_outputs: vec![file], ..Default::default() }
}

async fn start_room(s: &StandIn, req: &proto::RoomCompositeEgressRequest) -> Result<proto::EgressInfo, Failure> {
    egress(s, "StartRoomCompositeEgress", req).await
}

async fn stop(s: &StandIn, id: &str) -> Result<proto::EgressInfo, Failure> {
    egress(s, "StopEgress", &proto::StopEgressRequest { egress_id: id.to_owned() }).await
}

async fn list(s: &StandIn, req: proto::ListEgressRequest) -> Result<Vec<proto::EgressInfo>, Failure> {
    egress::<proto::ListEgressResponse>(s, "ListEgress", &req).await.map(|r| r.items)
}

fn egress_events(s: &StandIn, id: &str) -> Vec<(String, i32)> {
    events(&s.webhook_deliveries())
        .into_iter()
        .filter_map(|e| e.egress_info.filter(|i| i.egress_id == id).map(|i| (e.event, i.status)))
        .collect()
}

#[tokio::test]
async fn a_room_composite_starts_runs_stops_and_completes_with_its_webhooks() {
    let s = standin().await;
    let room = s.create_room("lobby");
    s.add_participant("lobby", "alice");

    let info = start_room(&s, &room_composite("lobby", s3_file("{room_name}/{time}"))).await.unwrap();
    assert!(info.egress_id.starts_with("EG_") && info.egress_id.len() == 15, "{}", info.egress_id);
    assert_eq!((info.room_name.as_str(), info.room_id.as_str()), ("lobby", room.sid.as_str()));
    assert_eq!(info.status, St::EgressStarting as i32);
    assert_eq!(info.source_type, proto::EgressSourceType::Web as i32);
    assert!(info.started_at > 1_000_000_000_000_000_000 && info.updated_at == info.started_at);
    // the request is echoed with its secrets redacted
    let Some(proto::egress_info::Request::RoomComposite(echo)) = &info.request else { panic!("{info:?}") };
    let Some(proto::encoded_file_output::Output::S3(s3)) = &echo.file_outputs[0].output else { panic!() };
    assert_eq!(
        (s3.access_key.as_str(), s3.secret.as_str(), s3.bucket.as_str()),
        ("{access_key}", "{secret}", "recordings")
    );
    // the filename is known from the start
    let filename = info.file_results[0].filename.clone();
    assert!(
        filename.starts_with("lobby/")
            && filename.ends_with(".mp4")
            && filename.len() == "lobby/2025-01-01T000000.mp4".len(),
        "{filename}"
    );
    assert_eq!(info.file_results[0].size, 0);

    let started = wait_egress(&s, "egress_started", &info.egress_id).await;
    assert_eq!(started, info);
    let active = wait_egress(&s, "egress_updated", &info.egress_id).await;
    assert_eq!(active.status, St::EgressActive as i32);

    let ending = stop(&s, &info.egress_id).await.unwrap();
    assert_eq!(ending.status, St::EgressEnding as i32);
    assert_eq!(ending.details, "End reason: StopEgress API");
    let ended = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!(ended.status, St::EgressComplete as i32);
    let file = &ended.file_results[0];
    assert_eq!(file.filename, filename);
    // livekit/storage's location: no region in it
    assert_eq!(file.location, format!("https://recordings.s3.amazonaws.com/{filename}"));
    assert!(file.duration > 0 && file.ended_at == ended.ended_at && file.ended_at - file.started_at == file.duration);
    assert!(file.size > 0);
    let statuses: Vec<i32> = egress_events(&s, &info.egress_id).into_iter().map(|(_, st)| st).collect();
    assert_eq!(
        statuses,
        [St::EgressStarting, St::EgressActive, St::EgressEnding, St::EgressComplete].map(|st| st as i32)
    );

    // the store keeps it; a second stop is refused
    assert_eq!(
        list(&s, proto::ListEgressRequest { room_name: "lobby".into(), ..Default::default() }).await.unwrap(),
        std::slice::from_ref(&ended)
    );
    assert!(list(&s, proto::ListEgressRequest { active: true, ..Default::default() }).await.unwrap().is_empty());
    assert_eq!(
        stop(&s, &info.egress_id).await.unwrap_err(),
        failure(412, "failed_precondition", "egress with status EGRESS_COMPLETE cannot be stopped")
    );
    assert_eq!(
        stop(&s, "EG_nope").await.unwrap_err(),
        failure(404, "not_found", "twirp error unknown: egress does not exist")
    );
    assert_eq!(
        list(&s, proto::ListEgressRequest { egress_id: "EG_nope".into(), ..Default::default() }).await.unwrap_err(),
        failure(404, "not_found", "twirp error unknown: egress does not exist")
    );
    assert_eq!(s.egresses(), [ended]);
}

#[tokio::test]
async fn the_json_reply_is_snake_case_with_defaults() {
    let s = standin().await;
    s.create_room("r");
    let body = serde_json::json!({"room_name": "r", "file_outputs": [{"filepath": "out.mp4"}]});
    let resp = http()
        .post(format!("{}/twirp/livekit.Egress/StartRoomCompositeEgress", s.url()))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", token(&s, record_grant())))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "EGRESS_STARTING");
    assert_eq!(v["ended_at"], "0");
    assert_eq!(v["file_results"][0]["filename"], "out.mp4");
    assert_eq!(v["room_composite"]["room_name"], "r");
}

#[tokio::test]
async fn every_egress_call_needs_room_record_and_nothing_else() {
    let s = standin().await;
    s.create_room("r");
    let req = room_composite("r", s3_file(""));
    let admin_only = VideoGrants { room_admin: true, room: "r".into(), room_create: true, ..Default::default() };
    let denied = failure(401, "unauthenticated", "permissions denied");
    for method in ["StartRoomCompositeEgress", "ListEgress", "StopEgress", "UpdateLayout", "UpdateStream"] {
        let err = call::<proto::EgressInfo>(&s, "livekit.Egress", method, admin_only.clone(), &req).await.unwrap_err();
        assert_eq!(err, denied, "{method}");
    }
    // no room scoping
    start_room(&s, &req).await.unwrap();
}

#[tokio::test]
async fn requests_are_validated_by_the_worker_after_the_room_lookup() {
    let s = standin().await;
    let missing = start_room(&s, &room_composite("nowhere", s3_file(""))).await.unwrap_err();
    assert_eq!(missing, failure(404, "not_found", "twirp error unknown: requested room does not exist"));
    s.create_room("r");
    let no_output = proto::RoomCompositeEgressRequest { room_name: "r".into(), ..Default::default() };
    assert_eq!(
        start_room(&s, &no_output).await.unwrap_err(),
        failure(400, "invalid_argument", "twirp error unknown: request has missing or invalid field: output")
    );
    let neither =
        proto::RoomCompositeEgressRequest { audio_only: true, video_only: true, ..room_composite("r", s3_file("")) };
    assert_eq!(
        start_room(&s, &neither).await.unwrap_err().2,
        "twirp error unknown: request has missing or invalid field: audio_only and video_only"
    );
    let bad_stream = proto::RoomCompositeEgressRequest {
        room_name: "r".into(),
        stream_outputs: vec![proto::StreamOutput { urls: vec!["http://x/y".into()], ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(
        start_room(&s, &bad_stream).await.unwrap_err(),
        failure(400, "invalid_argument", "twirp error unknown: invalid url http://x/y: invalid protocol")
    );
    let no_identity = proto::ParticipantEgressRequest {
        room_name: "r".into(),
        file_outputs: vec![s3_file("")],
        ..Default::default()
    };
    assert_eq!(
        egress::<proto::EgressInfo>(&s, "StartParticipantEgress", &no_identity).await.unwrap_err().2,
        "twirp error unknown: request has missing or invalid field: identity"
    );
    assert!(s.egresses().is_empty());
}

#[tokio::test]
async fn without_a_worker_the_server_answers_as_without_redis() {
    let s = standin().await;
    s.set_egress_worker(false);
    s.set_egress_unavailable_delay(Duration::from_millis(300), Duration::from_millis(200));
    let req = room_composite("r", s3_file(""));

    let t = Instant::now();
    let err = start_room(&s, &req).await.unwrap_err();
    assert_eq!(err, failure(404, "not_found", "twirp error unknown: requested room does not exist"));
    assert!(t.elapsed() < Duration::from_millis(250));

    s.create_room("r");
    let t = Instant::now();
    let err = start_room(&s, &req).await.unwrap_err();
    assert_eq!(err, failure(503, "unavailable", "twirp error unknown: no response from servers"));
    assert!(t.elapsed() >= Duration::from_millis(300));

    let not_connected = failure(500, "internal", "twirp error unknown: egress not connected (redis required)");
    let t = Instant::now();
    assert_eq!(list(&s, proto::ListEgressRequest::default()).await.unwrap_err(), not_connected);
    let layout = proto::UpdateLayoutRequest { egress_id: "EG_x".into(), layout: "grid".into() };
    assert_eq!(egress::<proto::EgressInfo>(&s, "UpdateLayout", &layout).await.unwrap_err(), not_connected);
    assert!(t.elapsed() < Duration::from_millis(150));

    let t = Instant::now();
    assert_eq!(stop(&s, "EG_x").await.unwrap_err(), not_connected);
    let update = proto::UpdateStreamRequest { egress_id: "EG_x".into(), ..Default::default() };
    assert_eq!(egress::<proto::EgressInfo>(&s, "UpdateStream", &update).await.unwrap_err(), not_connected);
    assert!(t.elapsed() >= Duration::from_millis(400));
    assert!(s.egresses().is_empty());
}

#[tokio::test]
async fn deleting_the_room_ends_its_egress_and_the_room_finishes() {
    let s = standin().await;
    s.create_room("r");
    let info = start_room(&s, &room_composite("r", proto::EncodedFileOutput::default())).await.unwrap();
    wait_egress(&s, "egress_updated", &info.egress_id).await;
    s.clear_webhook_deliveries();
    egress_delete_room(&s, "r").await;
    let ending = wait_egress(&s, "egress_updated", &info.egress_id).await;
    assert_eq!((ending.status, ending.details.as_str()), (St::EgressEnding as i32, "End reason: Source closed"));
    let ended = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!(ended.status, St::EgressComplete as i32);
    // a local file: the default name, and the path as its location
    let file = &ended.file_results[0];
    assert!(file.filename.starts_with("r-") && file.filename.ends_with(".mp4"), "{}", file.filename);
    assert_eq!(file.location, file.filename);
    wait_event(&s, "room_finished", |e| e.event == "room_finished").await;
}

async fn egress_delete_room(s: &StandIn, room: &str) {
    let grant = VideoGrants { room_create: true, ..Default::default() };
    let _: proto::DeleteRoomResponse =
        call(s, "livekit.RoomService", "DeleteRoom", grant, &proto::DeleteRoomRequest { room: room.into() })
            .await
            .unwrap();
}

#[tokio::test]
async fn stopping_an_egress_that_has_not_started_aborts_it() {
    let s = standin().await;
    s.set_egress_step(Duration::from_secs(30));
    s.create_room("r");
    let info = start_room(&s, &room_composite("r", s3_file(""))).await.unwrap();
    let aborted = stop(&s, &info.egress_id).await.unwrap();
    assert_eq!(aborted.status, St::EgressAborted as i32);
    assert_eq!((aborted.error.as_str(), aborted.error_code), ("Stop called before pipeline could start", 412));
    let ended = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!(ended, aborted);
}

#[tokio::test]
async fn a_participant_egress_for_someone_absent_fails() {
    let s = standin().await;
    s.create_room("r");
    let req = proto::ParticipantEgressRequest {
        room_name: "r".into(),
        identity: "bob".into(),
        file_outputs: vec![proto::EncodedFileOutput {
            filepath: "{publisher_identity}.mp4".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let info: proto::EgressInfo = egress(&s, "StartParticipantEgress", &req).await.unwrap();
    let ended = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!(ended.status, St::EgressFailed as i32);
    assert_eq!((ended.error.as_str(), ended.error_code), ("participant bob not found", 404));
    assert_eq!(ended.details, "End reason: Failure");
    let names: Vec<String> = egress_events(&s, &info.egress_id).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, ["egress_started", "egress_ended"]);
}

#[tokio::test]
async fn a_participant_egress_ends_when_the_participant_leaves() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let req = proto::ParticipantEgressRequest {
        room_name: "r".into(),
        identity: "alice".into(),
        file_outputs: vec![proto::EncodedFileOutput {
            filepath: "{publisher_identity}-{room_name}".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let info: proto::EgressInfo = egress(&s, "StartParticipantEgress", &req).await.unwrap();
    // {publisher_identity} waits for the participant
    assert_eq!(info.file_results[0].filename, "{publisher_identity}-r.mp4");
    let active = wait_egress(&s, "egress_updated", &info.egress_id).await;
    assert_eq!(active.file_results[0].filename, "alice-r.mp4");
    s.remove_participant("r", "alice");
    let ended = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!(ended.status, St::EgressComplete as i32);
    assert_eq!(ended.details, "End reason: Source closed");
}

#[tokio::test]
async fn a_track_egress_names_its_file_after_the_track_and_ends_with_it() {
    let s = standin().await;
    s.add_participant("r", "alice");
    let track = s.add_track("r", "alice", TrackSpec::microphone("mic"));
    let req = proto::TrackEgressRequest {
        room_name: "r".into(),
        track_id: track.sid.clone(),
        output: Some(proto::track_egress_request::Output::File(proto::DirectFileOutput {
            filepath: "{track_type}-{track_source}-{track_id}".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let info: proto::EgressInfo = egress(&s, "StartTrackEgress", &req).await.unwrap();
    assert_eq!(info.source_type, proto::EgressSourceType::Sdk as i32);
    let active = wait_egress(&s, "egress_updated", &info.egress_id).await;
    assert_eq!(active.file_results[0].filename, format!("audio-microphone-{}.ogg", track.sid));
    s.remove_participant("r", "alice");
    let ended = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!(ended.status, St::EgressComplete as i32);

    let missing = proto::TrackEgressRequest { track_id: "TR_gone".into(), ..req };
    let info: proto::EgressInfo = egress(&s, "StartTrackEgress", &missing).await.unwrap();
    let failed = wait_egress(&s, "egress_ended", &info.egress_id).await;
    assert_eq!((failed.status, failed.error.as_str()), (St::EgressFailed as i32, "track TR_gone not found"));
}

#[tokio::test]
async fn stream_keys_are_redacted_and_streams_can_be_updated() {
    let s = standin().await;
    s.create_room("r");
    let req = proto::RoomCompositeEgressRequest {
        room_name: "r".into(),
        stream_outputs: vec![proto::StreamOutput {
            protocol: proto::StreamProtocol::Rtmp as i32,
            urls: vec!["rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl".into()],
        }],
        ..Default::default()
    };
    let info = start_room(&s, &req).await.unwrap();
    let redacted = "rtmp://a.rtmp.youtube.com/live2/{abc...jkl}";
    assert_eq!(info.stream_results[0].url, redacted);
    assert_eq!(info.stream_results[0].status, proto::stream_info::Status::Active as i32);
    let Some(proto::egress_info::Request::RoomComposite(echo)) = &info.request else { panic!() };
    assert_eq!(echo.stream_outputs[0].urls, [redacted]);
    wait_egress(&s, "egress_updated", &info.egress_id).await;

    let update = proto::UpdateStreamRequest {
        egress_id: info.egress_id.clone(),
        add_output_urls: vec!["rtmps://live.twitch.tv/app/live_123456".into()],
        remove_output_urls: vec!["rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl".into()],
    };
    let updated: proto::EgressInfo = egress(&s, "UpdateStream", &update).await.unwrap();
    let streams: Vec<(&str, i32)> = updated.stream_results.iter().map(|st| (st.url.as_str(), st.status)).collect();
    assert_eq!(
        streams,
        [
            (redacted, proto::stream_info::Status::Finished as i32),
            ("rtmps://live.twitch.tv/app/{liv...456}", proto::stream_info::Status::Active as i32)
        ]
    );

    let file_only = start_room(&s, &room_composite("r", s3_file(""))).await.unwrap();
    let update = proto::UpdateStreamRequest { egress_id: file_only.egress_id, ..Default::default() };
    assert_eq!(
        egress::<proto::EgressInfo>(&s, "UpdateStream", &update).await.unwrap_err(),
        failure(400, "invalid_argument", "twirp error unknown: UpdateStream called on non-streaming egress")
    );
}

#[tokio::test]
async fn a_killed_egress_stays_active_for_ever() {
    let s = standin().await;
    s.create_room("r");
    let info = start_room(&s, &room_composite("r", s3_file(""))).await.unwrap();
    wait_egress(&s, "egress_updated", &info.egress_id).await;
    assert!(s.kill_egress(&info.egress_id));
    assert!(!s.kill_egress("EG_nope"));
    // the room goes, the egress webhooks do not come
    egress_delete_room(&s, "r").await;
    wait_event(&s, "room_finished", |e| e.event == "room_finished").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let names: Vec<String> = egress_events(&s, &info.egress_id).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, ["egress_started", "egress_updated"]);
    let active = list(&s, proto::ListEgressRequest { active: true, ..Default::default() }).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].status, St::EgressActive as i32);
    assert_eq!(
        stop(&s, &info.egress_id).await.unwrap_err(),
        failure(408, "deadline_exceeded", "twirp error unknown: request timed out")
    );
}
