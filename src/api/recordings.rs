//! StartRoomRecording, StartTrackRecording, StartParticipantRecording,
//! StartStream, ListRecordings, StopRecording: LiveKit Egress, with the
//! files' place decided by RoomControl's configuration.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use livekit_protocol as lk;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Admitted, record_room};
use crate::config::{RecordingStorage, RecordingsConfig};
use crate::error::ApiError;
use crate::events::Timeline;
use crate::livekit::{EgressRequest, LiveKit, LiveKitError, Missing};
use crate::proto::v1::recording::{Kind, Status};
use crate::proto::v1::*;
use crate::recordings::{self as convert, has_ended};
use crate::rpc::Rpc;
use crate::store::Presence;
use crate::validate::Violations;

/// Most recordings one ListRecordings answers with.
const LIST_MAX: u32 = 1000;

/// Where recordings go, from the configuration; built once at start-up.
pub struct Recorder {
    template: String,
    /// `None`: a local path on the egress worker.
    s3: Option<S3Target>,
    stream_hosts: Vec<String>,
}

struct S3Target {
    bucket: String,
    region: String,
    endpoint: String,
    force_path_style: bool,
    access_key: String,
    secret: SecretString,
    session_token: Option<SecretString>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("Recorder")
            .field("template", &self.template)
            .field("s3_bucket", &self.s3.as_ref().map(|s3| &s3.bucket))
            .finish_non_exhaustive()
    }
}

/// An AWS shared-credentials file's `[default]` profile (or its only
/// section): access key, secret, session token. Errors never quote a value.
pub fn read_credentials_file(path: &Path) -> Result<(String, SecretString, Option<SecretString>), String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("expected a readable credentials file ({error})"))?;
    let mut values: HashMap<String, String> = HashMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        if (section.is_empty() || section == "default")
            && let Some((key, value)) = line.split_once('=')
        {
            values.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let access_key = values.remove("aws_access_key_id").filter(|key| !key.is_empty());
    let secret = values.remove("aws_secret_access_key").filter(|secret| !secret.is_empty());
    match (access_key, secret) {
        (Some(access_key), Some(secret)) => Ok((
            access_key,
            SecretString::from(secret),
            values.remove("aws_session_token").filter(|token| !token.is_empty()).map(SecretString::from),
        )),
        _ => Err("expected aws_access_key_id and aws_secret_access_key under [default]".to_owned()),
    }
}

impl Recorder {
    /// Reads the credentials: `recordings.s3.access_key`/`secret`, else
    /// `credentials_file`, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
    /// else none (the egress worker's own).
    pub fn new(config: &RecordingsConfig) -> Result<Self, String> {
        let s3 = match config.storage {
            RecordingStorage::Local => None,
            RecordingStorage::S3 => {
                let s3 = &config.s3;
                let (access_key, secret, session_token) = if let (Some(key), Some(secret)) =
                    (&s3.access_key, &s3.secret)
                {
                    (key.clone(), secret.clone(), s3.session_token.clone())
                } else if let Some(path) = &s3.credentials_file {
                    read_credentials_file(path)
                        .map_err(|why| format!("recordings.s3.credentials_file = {:?}: {why}", path.display()))?
                } else if let (Ok(key), Ok(secret)) =
                    (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY"))
                {
                    (key, SecretString::from(secret), std::env::var("AWS_SESSION_TOKEN").ok().map(SecretString::from))
                } else {
                    (String::new(), SecretString::from(String::new()), None)
                };
                Some(S3Target {
                    bucket: s3.bucket.clone(),
                    region: s3.region.clone(),
                    endpoint: s3.endpoint.clone(),
                    force_path_style: s3.force_path_style,
                    access_key,
                    secret,
                    session_token,
                })
            }
        };
        Ok(Self { template: config.path_template.clone(), s3, stream_hosts: config.stream_hosts.clone() })
    }

    /// The file's path: the template with `{file_name}` filled in.
    fn filepath(&self, file_name: &str, default: &str) -> String {
        self.template.replace("{file_name}", if file_name.is_empty() { default } else { file_name })
    }

    fn s3_upload(&self) -> Option<lk::S3Upload> {
        self.s3.as_ref().map(|s3| lk::S3Upload {
            access_key: s3.access_key.clone(),
            secret: s3.secret.expose_secret().to_owned(),
            session_token: s3.session_token.as_ref().map(|token| token.expose_secret().to_owned()).unwrap_or_default(),
            region: s3.region.clone(),
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket.clone(),
            force_path_style: s3.force_path_style,
            ..Default::default()
        })
    }

    fn encoded_file(&self, filepath: String, audio_only: bool) -> lk::EncodedFileOutput {
        let file_type = if audio_only { lk::EncodedFileType::Ogg } else { lk::EncodedFileType::Mp4 };
        lk::EncodedFileOutput {
            file_type: file_type as i32,
            filepath,
            disable_manifest: false,
            output: self.s3_upload().map(lk::encoded_file_output::Output::S3),
        }
    }

    fn direct_file(&self, filepath: String) -> lk::DirectFileOutput {
        lk::DirectFileOutput {
            filepath,
            disable_manifest: false,
            output: self.s3_upload().map(lk::direct_file_output::Output::S3),
        }
    }

    /// INVALID_ARGUMENT for a URL whose host `recordings.stream_hosts` does
    /// not allow.
    fn check_stream_hosts(&self, urls: &[String]) -> Result<(), ApiError> {
        if self.stream_hosts.is_empty() {
            return Ok(());
        }
        let mut violations = Violations::new();
        for (index, url) in urls.iter().enumerate() {
            let host = url::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_ascii_lowercase));
            if !host.is_some_and(|host| self.stream_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(&host))) {
                violations.add(
                    format!("urls[{index}]"),
                    format!("must stream to a host recordings.stream_hosts allows: {}", self.stream_hosts.join(", ")),
                );
            }
        }
        violations.into_result().map_err(ApiError::from)
    }
}

fn layout(layout: &str) -> String {
    if layout.is_empty() { "grid".to_owned() } else { layout.to_owned() }
}

/// Starts an egress, records the action with the recording it started,
/// and answers with it.
async fn start(
    livekit: &LiveKit,
    call_rpc: Rpc,
    admitted: (Admitted<()>, String, String),
    request: EgressRequest,
    detail: serde_json::Value,
) -> Result<Recording, ApiError> {
    let (Admitted { caller, deadline, audit, .. }, room, identity) = admitted;
    let info = livekit.start_egress(request, deadline).await?;
    let mut recording = convert::from_egress(&info);
    recording.started_by = Some(Actor { caller: caller.to_string(), rpc: call_rpc.name().to_owned() });
    let mut detail = detail;
    if let Some(map) = detail.as_object_mut() {
        map.insert("recordingId".to_owned(), json!(recording.id));
        map.insert("kind".to_owned(), json!(kind_name(recording.kind)));
    }
    let row = convert::row(&recording, info.updated_at);
    audit.record_with(call_rpc, &room, &identity, detail, Presence::Recording(row)).await;
    Ok(recording)
}

fn kind_name(kind: i32) -> &'static str {
    match Kind::try_from(kind) {
        Ok(Kind::Room) => "room",
        Ok(Kind::Track) => "track",
        Ok(Kind::Participant) => "participant",
        Ok(Kind::Stream) => "stream",
        Ok(Kind::Other) => "other",
        _ => "unknown",
    }
}

/// The admitted call without its request, with the room and identity the
/// action is about.
fn split<T>(call: Admitted<T>) -> (Admitted<()>, T) {
    let Admitted { caller, deadline, request, audit } = call;
    (Admitted { caller, deadline, request: (), audit }, request)
}

pub(crate) async fn start_room_recording(
    livekit: &LiveKit,
    recorder: &Recorder,
    call: Admitted<StartRoomRecordingRequest>,
) -> Result<Recording, ApiError> {
    let (call, request) = split(call);
    let filepath = recorder.filepath(&request.file_name, "room");
    let egress = lk::RoomCompositeEgressRequest {
        room_name: request.room.clone(),
        layout: layout(&request.layout),
        audio_only: request.audio_only,
        video_only: request.video_only,
        file_outputs: vec![recorder.encoded_file(filepath, request.audio_only)],
        ..Default::default()
    };
    let detail = json!({
        "layout": egress.layout,
        "audioOnly": request.audio_only,
        "videoOnly": request.video_only,
        "fileName": request.file_name,
    });
    start(
        livekit,
        Rpc::StartRoomRecording,
        (call, request.room, String::new()),
        EgressRequest::RoomComposite(Box::new(egress)),
        detail,
    )
    .await
}

pub(crate) async fn start_track_recording(
    livekit: &LiveKit,
    recorder: &Recorder,
    call: Admitted<StartTrackRecordingRequest>,
) -> Result<Recording, ApiError> {
    let (call, request) = split(call);
    let filepath = recorder.filepath(&request.file_name, "track");
    let egress = lk::TrackEgressRequest {
        room_name: request.room.clone(),
        track_id: request.track_sid.clone(),
        output: Some(lk::track_egress_request::Output::File(recorder.direct_file(filepath))),
        ..Default::default()
    };
    let detail = json!({ "trackSid": request.track_sid, "fileName": request.file_name });
    start(
        livekit,
        Rpc::StartTrackRecording,
        (call, request.room, String::new()),
        EgressRequest::Track(Box::new(egress)),
        detail,
    )
    .await
}

pub(crate) async fn start_participant_recording(
    livekit: &LiveKit,
    recorder: &Recorder,
    call: Admitted<StartParticipantRecordingRequest>,
) -> Result<Recording, ApiError> {
    let (call, request) = split(call);
    let filepath = recorder.filepath(&request.file_name, "participant");
    let egress = lk::ParticipantEgressRequest {
        room_name: request.room.clone(),
        identity: request.identity.clone(),
        screen_share: request.screen_share,
        file_outputs: vec![recorder.encoded_file(filepath, false)],
        ..Default::default()
    };
    let detail = json!({ "screenShare": request.screen_share, "fileName": request.file_name });
    start(
        livekit,
        Rpc::StartParticipantRecording,
        (call, request.room, request.identity),
        EgressRequest::Participant(Box::new(egress)),
        detail,
    )
    .await
}

pub(crate) async fn start_stream(
    livekit: &LiveKit,
    recorder: &Recorder,
    call: Admitted<StartStreamRequest>,
) -> Result<Recording, ApiError> {
    let (call, request) = split(call);
    recorder.check_stream_hosts(&request.urls)?;
    // Hosts only: the URLs carry stream keys.
    let hosts: Vec<String> = request
        .urls
        .iter()
        .filter_map(|url| url::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_owned)))
        .collect();
    let egress = lk::RoomCompositeEgressRequest {
        room_name: request.room.clone(),
        layout: layout(&request.layout),
        audio_only: request.audio_only,
        video_only: request.video_only,
        stream_outputs: vec![lk::StreamOutput { protocol: lk::StreamProtocol::Rtmp as i32, urls: request.urls }],
        ..Default::default()
    };
    let detail = json!({
        "layout": egress.layout,
        "audioOnly": request.audio_only,
        "videoOnly": request.video_only,
        "hosts": hosts,
    });
    start(
        livekit,
        Rpc::StartStream,
        (call, request.room, String::new()),
        EgressRequest::RoomComposite(Box::new(egress)),
        detail,
    )
    .await
}

/// LiveKit's egresses merged with the timeline's: a recording LiveKit no
/// longer knows is still listed, and an end RoomControl inferred stands
/// against LiveKit's ACTIVE.
pub(crate) async fn list_recordings(
    livekit: &LiveKit,
    timeline: &Timeline,
    call: Admitted<ListRecordingsRequest>,
) -> Result<ListRecordingsResponse, ApiError> {
    let Admitted { caller, deadline, request, .. } = call;
    if !request.room.is_empty() {
        record_room(&request.room);
        caller.authorize_room(&request.room)?;
    }
    let room = (!request.room.is_empty()).then_some(request.room.as_str());
    let live = livekit.list_egress(&request.room, "", false, deadline).await?;
    let stored = timeline.store().recordings(room, None, false, LIST_MAX).await?;
    let mut recordings: HashMap<String, Recording> = HashMap::new();
    for row in &stored {
        if let Some(recording) = convert::from_row(row.started_by.as_deref(), &row.payload) {
            recordings.insert(recording.id.clone(), recording);
        }
    }
    for info in &live {
        let fresh = convert::from_egress(info);
        match recordings.get_mut(&fresh.id) {
            Some(known) => merge(known, fresh),
            None => {
                recordings.insert(fresh.id.clone(), fresh);
            }
        }
    }
    let mut recordings: Vec<Recording> = recordings
        .into_values()
        .filter(|recording| caller.may_touch(&recording.room))
        .filter(|recording| !request.active_only || !has_ended(status_of(recording)))
        .collect();
    recordings.sort_by(|a, b| {
        let at = |recording: &Recording| recording.started_at.map_or((i64::MAX, 0), |at| (at.seconds, at.nanos));
        at(b).cmp(&at(a)).then_with(|| b.id.cmp(&a.id))
    });
    recordings.truncate(LIST_MAX as usize);
    Ok(ListRecordingsResponse { recordings })
}

fn status_of(recording: &Recording) -> Status {
    Status::try_from(recording.status).unwrap_or(Status::Unspecified)
}

/// What LiveKit says now replaces what the timeline holds, unless the
/// timeline holds an end and LiveKit does not (an inferred end, or a
/// webhook newer than LiveKit's list); who started it is kept.
fn merge(known: &mut Recording, fresh: Recording) {
    if has_ended(status_of(known)) && !has_ended(status_of(&fresh)) {
        return;
    }
    let started_by = known.started_by.take();
    *known = fresh;
    known.started_by = started_by;
}

pub(crate) async fn stop_recording(
    livekit: &LiveKit,
    timeline: &Timeline,
    call: Admitted<StopRecordingRequest>,
) -> Result<Recording, ApiError> {
    let Admitted { caller, deadline, request, audit } = call;
    let id = request.recording_id;
    let stored = timeline.store().recordings(None, Some(&id), false, 1).await?;
    let stored = stored.first().and_then(|row| convert::from_row(row.started_by.as_deref(), &row.payload));
    let listed = livekit.list_egress("", &id, false, deadline).await?;
    let Some(info) = listed.into_iter().find(|info| info.egress_id == id) else {
        return match stored {
            // LiveKit forgot it (a restart): the timeline's account stands.
            Some(recording) if has_ended(status_of(&recording)) => {
                caller.authorize_room(&recording.room)?;
                Ok(recording)
            }
            _ => Err(LiveKitError::NotFound(Missing::Recording { id }).into()),
        };
    };
    record_room(&info.room_name);
    caller.authorize_room(&info.room_name)?;
    let mut current = convert::from_egress(&info);
    if let Some(known) = stored {
        let mut known = known;
        merge(&mut known, current);
        current = known;
    }
    // Ended, or ending: a retried stop is answered with what is.
    if matches!(status_of(&current), Status::Ending) || has_ended(status_of(&current)) {
        return Ok(current);
    }
    let info = livekit.stop_egress(&id, deadline).await?;
    let started_by = current.started_by.take();
    let mut stopped = convert::from_egress(&info);
    stopped.started_by = started_by;
    let row = convert::row(&stopped, info.updated_at);
    let detail = json!({ "recordingId": id, "kind": kind_name(stopped.kind) });
    audit.record_with(Rpc::StopRecording, &stopped.room, &stopped.identity, detail, Presence::Recording(row)).await;
    Ok(stopped)
}
