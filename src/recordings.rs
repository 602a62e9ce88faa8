//! Recordings as RoomControl shows them: LiveKit's `EgressInfo` (from a
//! Start or ListEgress reply, or an egress webhook's JSON) turned into a
//! `roomcontrol.v1.Recording`, with every secret LiveKit may echo (stream
//! keys, storage credentials) removed.

use std::time::{Duration, SystemTime};

use livekit_protocol as lk;
use prost::Message;
use prost_types::Timestamp;
use serde_json::{Map, Value as Json};

use crate::proto::v1::recording::{Kind, Status};
use crate::proto::v1::{Actor, Recording, RecordingFile, RecordingStream};
use crate::store::RecordingRow;

/// What replaces a stream key or a credential.
pub const REDACTED: &str = "{redacted}";

/// An RTMP (or SRT) URL with its stream key (the last path segment), any
/// user and password, and any query removed: `rtmp://host/live2/{redacted}`.
pub fn redact_stream_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let path = parsed.path().trim_end_matches('/').to_owned();
            let kept = match path.rfind('/') {
                Some(index) if index > 0 => path[..index].to_owned(),
                _ => String::new(),
            };
            parsed.set_path(&kept);
            format!("{}/{REDACTED}", parsed.as_str().trim_end_matches('/'))
        }
        // Not even a URL: nothing of it is shown.
        Err(_) => REDACTED.to_owned(),
    }
}

/// Keys whose values are credentials wherever they appear in LiveKit's
/// JSON (an egress request echoes its S3, GCP or Azure upload settings).
const SECRET_KEYS: [&str; 7] =
    ["secret", "accessKey", "sessionToken", "credentials", "accountKey", "password", "assumeRoleExternalId"];

/// Removes the secrets from an egress webhook's JSON, in place: credential
/// fields, and the stream keys in any RTMP or SRT URL.
pub fn redact_json(value: &mut Json) {
    match value {
        Json::Object(map) => redact_map(map),
        Json::Array(items) => items.iter_mut().for_each(redact_json),
        Json::String(text) if is_stream_url(text) => *text = redact_stream_url(text),
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Json>) {
    for (key, value) in map.iter_mut() {
        if SECRET_KEYS.iter().any(|secret| key.eq_ignore_ascii_case(secret))
            && matches!(value, Json::String(text) if !text.is_empty())
        {
            *value = Json::String(REDACTED.to_owned());
        } else {
            redact_json(value);
        }
    }
}

fn is_stream_url(text: &str) -> bool {
    ["rtmp://", "rtmps://", "srt://"]
        .iter()
        .any(|scheme| text.len() > scheme.len() && text[..scheme.len()].eq_ignore_ascii_case(scheme))
}

/// LiveKit's egress status as RoomControl's.
pub fn status(livekit: i32) -> Status {
    match lk::EgressStatus::try_from(livekit) {
        Ok(lk::EgressStatus::EgressStarting) => Status::Starting,
        Ok(lk::EgressStatus::EgressActive) => Status::Active,
        Ok(lk::EgressStatus::EgressEnding) => Status::Ending,
        Ok(lk::EgressStatus::EgressComplete) => Status::Complete,
        Ok(lk::EgressStatus::EgressFailed) => Status::Failed,
        Ok(lk::EgressStatus::EgressAborted) => Status::Aborted,
        Ok(lk::EgressStatus::EgressLimitReached) => Status::LimitReached,
        Err(_) => Status::Unspecified,
    }
}

/// Whether a recording in this status has ended.
pub fn has_ended(status: Status) -> bool {
    matches!(status, Status::Complete | Status::Failed | Status::Aborted | Status::LimitReached)
}

/// LiveKit's Unix nanoseconds as a timestamp; `None` for 0 (unset).
pub fn timestamp(nanos: i64) -> Option<Timestamp> {
    (nanos > 0).then_some(Timestamp { seconds: nanos / 1_000_000_000, nanos: (nanos % 1_000_000_000) as i32 })
}

fn duration(nanos: i64) -> Option<prost_types::Duration> {
    (nanos > 0)
        .then_some(prost_types::Duration { seconds: nanos / 1_000_000_000, nanos: (nanos % 1_000_000_000) as i32 })
}

/// A LiveKit egress as a recording.
pub fn from_egress(info: &lk::EgressInfo) -> Recording {
    use lk::egress_info::Request;
    let (kind, identity, track_sid) = match &info.request {
        #[allow(deprecated)] // `output`: the deprecated single output, still sent by older callers.
        Some(Request::RoomComposite(request)) => {
            let streams = !request.stream_outputs.is_empty()
                || matches!(request.output, Some(lk::room_composite_egress_request::Output::Stream(_)));
            let files = !request.file_outputs.is_empty()
                || matches!(request.output, Some(lk::room_composite_egress_request::Output::File(_)));
            (if streams && !files { Kind::Stream } else { Kind::Room }, String::new(), String::new())
        }
        Some(Request::Participant(request)) => (Kind::Participant, request.identity.clone(), String::new()),
        Some(Request::Track(request)) => (Kind::Track, String::new(), request.track_id.clone()),
        Some(_) => (Kind::Other, String::new(), String::new()),
        None => (Kind::Unspecified, String::new(), String::new()),
    };
    let status = status(info.status);
    let files: Vec<RecordingFile> = info
        .file_results
        .iter()
        .map(|file| RecordingFile {
            filename: file.filename.clone(),
            location: file.location.clone(),
            size: file.size,
            duration: duration(file.duration),
        })
        .collect();
    let streams = info
        .stream_results
        .iter()
        .map(|stream| RecordingStream {
            url: redact_stream_url(&stream.url),
            status: lk::stream_info::Status::try_from(stream.status)
                .map_or_else(|_| stream.status.to_string(), |status| status.as_str_name().to_ascii_lowercase()),
            error: stream.error.clone(),
        })
        .collect();
    let recorded = match (info.started_at, info.ended_at) {
        (started, ended) if started > 0 && ended > started => duration(ended - started),
        _ => None,
    };
    Recording {
        id: info.egress_id.clone(),
        room: info.room_name.clone(),
        room_sid: info.room_id.clone(),
        kind: kind as i32,
        status: status as i32,
        started_at: timestamp(info.started_at),
        ended_at: timestamp(info.ended_at),
        duration: files.iter().find_map(|file| file.duration).or(recorded),
        files,
        streams,
        error: info.error.clone(),
        end_inferred: false,
        started_by: None,
        track_sid,
        identity,
    }
}

/// The row that stores a recording: `updated_at` is LiveKit's (Unix
/// nanoseconds), which orders its reports.
pub fn row(recording: &Recording, updated_at: i64) -> RecordingRow {
    let status = Status::try_from(recording.status).unwrap_or(Status::Unspecified);
    let started_at = recording
        .started_at
        .map_or(0, |at| at.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(at.nanos)));
    let mut payload = recording.clone();
    let started_by = payload.started_by.take().map(|actor| actor.encode_to_vec());
    RecordingRow {
        id: recording.id.clone(),
        room: recording.room.clone(),
        status: status as i32,
        ended: has_ended(status),
        end_inferred: recording.end_inferred,
        updated_at,
        started_at,
        started_by,
        payload: payload.encode_to_vec(),
    }
}

/// A stored recording, decoded; `None` if it cannot be (logged).
pub fn from_row(started_by: Option<&[u8]>, payload: &[u8]) -> Option<Recording> {
    match Recording::decode(payload) {
        Ok(mut recording) => {
            recording.started_by = started_by.and_then(|bytes| Actor::decode(bytes).ok());
            Some(recording)
        }
        Err(error) => {
            tracing::error!(%error, "a stored recording cannot be decoded; it is left out");
            None
        }
    }
}

/// An egress webhook's `egressInfo`, read leniently: the fields
/// RoomControl shows, whatever else LiveKit adds (unknown fields and enum
/// values never fail it).
pub fn egress_from_json(info: &Json) -> Option<lk::EgressInfo> {
    let text = |value: Option<&Json>| value.and_then(Json::as_str).unwrap_or_default().to_owned();
    let integer = |value: Option<&Json>| match value {
        Some(Json::String(text)) => text.parse().unwrap_or(0),
        Some(Json::Number(number)) => number.as_i64().unwrap_or(0),
        _ => 0,
    };
    let egress_id = text(info.get("egressId"));
    if egress_id.is_empty() {
        return None;
    }
    let status = match info.get("status") {
        Some(Json::String(name)) => lk::EgressStatus::from_str_name(name).map_or(-1, |status| status as i32),
        Some(Json::Number(number)) => number.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(-1),
        // protojson omits the zero value: STARTING.
        _ => lk::EgressStatus::EgressStarting as i32,
    };
    let list = |name: &str| info.get(name).and_then(Json::as_array).cloned().unwrap_or_default();
    let file_results = list("fileResults")
        .iter()
        .map(|file| lk::FileInfo {
            filename: text(file.get("filename")),
            started_at: integer(file.get("startedAt")),
            ended_at: integer(file.get("endedAt")),
            duration: integer(file.get("duration")),
            size: integer(file.get("size")),
            location: text(file.get("location")),
        })
        .collect();
    let stream_results = list("streamResults")
        .iter()
        .map(|stream| lk::StreamInfo {
            url: text(stream.get("url")),
            status: match stream.get("status") {
                Some(Json::String(name)) => lk::stream_info::Status::from_str_name(name).map_or(-1, |s| s as i32),
                _ => 0,
            },
            error: text(stream.get("error")),
            ..Default::default()
        })
        .collect();
    use lk::egress_info::Request;
    let request = if let Some(room) = info.get("roomComposite") {
        let streams = room.get("streamOutputs").and_then(Json::as_array).is_some_and(|outputs| !outputs.is_empty())
            || room.get("stream").is_some();
        let files = room.get("fileOutputs").and_then(Json::as_array).is_some_and(|outputs| !outputs.is_empty())
            || room.get("file").is_some();
        let mut request = lk::RoomCompositeEgressRequest::default();
        if streams {
            request.stream_outputs.push(lk::StreamOutput::default());
        }
        if files || !streams {
            request.file_outputs.push(lk::EncodedFileOutput::default());
        }
        Some(Request::RoomComposite(request))
    } else if let Some(participant) = info.get("participant") {
        Some(Request::Participant(lk::ParticipantEgressRequest {
            identity: text(participant.get("identity")),
            ..Default::default()
        }))
    } else if let Some(track) = info.get("track") {
        Some(Request::Track(lk::TrackEgressRequest { track_id: text(track.get("trackId")), ..Default::default() }))
    } else if info.get("web").is_some() || info.get("trackComposite").is_some() || info.get("egress").is_some() {
        Some(Request::Web(lk::WebEgressRequest::default()))
    } else {
        None
    };
    Some(lk::EgressInfo {
        egress_id,
        room_id: text(info.get("roomId")),
        room_name: text(info.get("roomName")),
        status,
        started_at: integer(info.get("startedAt")),
        ended_at: integer(info.get("endedAt")),
        updated_at: integer(info.get("updatedAt")),
        error: text(info.get("error")),
        file_results,
        stream_results,
        request,
        ..Default::default()
    })
}

/// A recording RoomControl closes itself: LiveKit never reported its end.
pub fn inferred_end(mut recording: Recording, why: &str) -> Recording {
    let now = SystemTime::now();
    recording.status = Status::Failed as i32;
    recording.end_inferred = true;
    recording.ended_at = Some(Timestamp::from(now));
    if recording.duration.is_none()
        && let Some(started) = recording.started_at
        && let Ok(started) = SystemTime::try_from(started)
        && let Ok(elapsed) = now.duration_since(started)
    {
        recording.duration = prost_types::Duration::try_from(elapsed.min(Duration::from_secs(u32::MAX.into()))).ok();
    }
    if recording.error.is_empty() {
        recording.error = why.to_owned();
    }
    recording
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_never_survive() {
        assert_eq!(
            redact_stream_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh"),
            "rtmp://a.rtmp.youtube.com/live2/{redacted}"
        );
        assert_eq!(redact_stream_url("rtmps://user:pw@host:443/app/key?x=1"), "rtmps://host:443/app/{redacted}");
        assert_eq!(redact_stream_url("rtmp://host/key"), "rtmp://host/{redacted}");
        assert_eq!(redact_stream_url("not a url with key"), "{redacted}");
        let mut json = serde_json::json!({
            "egressInfo": {
                "roomComposite": {
                    "streamOutputs": [{"urls": ["rtmp://h/app/SECRETKEY"]}],
                    "fileOutputs": [{"s3": {"accessKey": "AKIA", "secret": "SHH", "bucket": "b"}}]
                },
                "streamResults": [{"url": "rtmp://h/app/SECRETKEY"}]
            }
        });
        redact_json(&mut json);
        let text = json.to_string();
        assert!(!text.contains("SECRETKEY") && !text.contains("SHH") && !text.contains("AKIA"), "{text}");
        assert!(text.contains("\"bucket\":\"b\""), "{text}");
    }

    #[test]
    fn webhook_egress_json_reads_leniently() {
        let json = serde_json::json!({
            "egressId": "EG_abc",
            "roomId": "RM_1",
            "roomName": "standup",
            "status": "EGRESS_SOMETHING_NEW",
            "startedAt": "1700000000000000000",
            "endedAt": "1700000060000000000",
            "fileResults": [{"filename": "a.mp4", "size": "1234", "duration": "60000000000", "location": "/out/a.mp4"}],
            "participant": {"identity": "alice"},
            "unknownField": {"x": 1}
        });
        let info = egress_from_json(&json).unwrap();
        let recording = from_egress(&info);
        assert_eq!(recording.status, Status::Unspecified as i32);
        assert_eq!(recording.kind, Kind::Participant as i32);
        assert_eq!(recording.identity, "alice");
        assert_eq!(recording.files[0].size, 1234);
        assert_eq!(recording.duration.unwrap().seconds, 60);
        assert!(egress_from_json(&serde_json::json!({"roomName": "x"})).is_none());
    }
}
