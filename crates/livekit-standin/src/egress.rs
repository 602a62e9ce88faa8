//! Egress (`livekit.Egress`): what livekit-server, its IO service and one
//! `livekit/egress` worker do with a recording, as an in-memory state
//! machine on [`State`].
//!
//! From server v1.13 `pkg/service/egress.go` and `ioservice.go`, egress
//! `pkg/server/server_rpc.go`, `pkg/config/pipeline.go`, `output*.go`,
//! `urls.go`, `pkg/pipeline/controller.go`, `pkg/errors/errors.go`, and
//! protocol `livekit/livekit_egress.go`, `egress/redact.go`,
//! `utils/redact.go`:
//! - Start: the worker validates the request (errors are psrpc errors:
//!   `request has missing or invalid field: output`, ...), answers with the
//!   EgressInfo in EGRESS_STARTING, its request echoed with secrets and
//!   stream keys redacted, `file_results` / `stream_results` already holding
//!   the outputs (filename after template substitution, stream URLs
//!   redacted, status ACTIVE); the IO service sends egress_started.
//! - One step later the pipeline runs: EGRESS_ACTIVE (egress_updated); an
//!   SDK egress whose participant or track is not in the room fails instead
//!   (EGRESS_FAILED, `participant X not found` / `track X not found`, error
//!   code 404; egress_ended).
//! - StopEgress or the source closing (room closed, participant left, track
//!   unpublished): EGRESS_ENDING (egress_updated), one step later
//!   EGRESS_COMPLETE with the results filled in (egress_ended). Stopped while
//!   still STARTING it is EGRESS_ABORTED at once ("Stop called before
//!   pipeline could start", 412; egress_ended).

use std::time::SystemTime;

use livekit_protocol as proto;
use proto::egress_info::Request as InfoRequest;
use rand::seq::SliceRandom;

use crate::state::{State, Timer, event, guid};
use crate::twirp::TwirpError;

/// `livekit.MsgStoppedBeforeStarted`.
const MSG_STOPPED_BEFORE_STARTED: &str = "Stop called before pipeline could start";
/// `livekit.EndReason*`.
const END_REASON_API: &str = "StopEgress API";
const END_REASON_SRC_CLOSED: &str = "Source closed";
const END_REASON_FAILURE: &str = "Failure";

/// The bit rates of the default encoding (H264_720P_30: 3000 kbps video,
/// 128 kbps audio), for plausible file sizes.
const VIDEO_BYTES_PER_SEC: i64 = 3_000_000 / 8;
const AUDIO_BYTES_PER_SEC: i64 = 128_000 / 8;

/// The Start* request of a call.
#[derive(Debug, Clone)]
pub(crate) enum StartRequest {
    RoomComposite(proto::RoomCompositeEgressRequest),
    Web(proto::WebEgressRequest),
    Participant(proto::ParticipantEgressRequest),
    TrackComposite(proto::TrackCompositeEgressRequest),
    Track(proto::TrackEgressRequest),
}

impl StartRequest {
    /// The room livekit-server looks up first (`LoadRoom`); empty for web.
    pub(crate) fn room_name(&self) -> &str {
        match self {
            StartRequest::RoomComposite(r) => &r.room_name,
            StartRequest::Web(_) => "",
            StartRequest::Participant(r) => &r.room_name,
            StartRequest::TrackComposite(r) => &r.room_name,
            StartRequest::Track(r) => &r.room_name,
        }
    }
}

/// What an egress records, which decides what ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Room,
    Web,
    Participant(String),
    /// Audio and video track ids (empty: none).
    TrackComposite(String, String),
    Track(String),
}

/// Where a file output is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Storage {
    Local,
    S3 { bucket: String, endpoint: String, path_style: bool },
    Gcp { bucket: String },
    Azure { account: String, container: String },
    AliOss { bucket: String, endpoint: String },
}

impl Storage {
    /// The location livekit/storage reports for an upload (`s3.go`,
    /// `gcp.go`, `azure.go`, `alioss.go`, `local.go`), quirks included: an
    /// S3 endpoint is pasted after the bucket as it is, scheme and all,
    /// unless `force_path_style`.
    fn location(&self, key: &str) -> String {
        match self {
            Storage::Local => key.to_owned(),
            Storage::S3 { bucket, endpoint, path_style } => {
                let endpoint = if endpoint.is_empty() { "s3.amazonaws.com" } else { endpoint };
                if *path_style {
                    let scheme = if endpoint.starts_with("http") { "" } else { "https://" };
                    format!("{scheme}{endpoint}/{bucket}/{key}")
                } else {
                    format!("https://{bucket}.{endpoint}/{key}")
                }
            }
            Storage::Gcp { bucket } => format!("https://{bucket}.storage.googleapis.com/{key}"),
            Storage::Azure { account, container } => {
                format!("https://{account}.blob.core.windows.net/{container}/{key}")
            }
            Storage::AliOss { bucket, endpoint } => format!("https://{bucket}.{endpoint}/{key}"),
        }
    }
}

/// One egress as the IO service stores it, and the worker's view of it.
#[derive(Debug, Clone)]
pub(crate) struct EgressRecord {
    pub(crate) info: proto::EgressInfo,
    /// Its worker died ([`crate::StandIn::kill_egress`]): nothing about it
    /// ever changes again.
    pub(crate) killed: bool,
    source: Source,
    storage: Storage,
    /// The direct file output of a track egress still waits for the track's
    /// codec to get its extension.
    pending_filename: bool,
    streaming: bool,
    /// Bytes per second written to a file output.
    byte_rate: i64,
    /// Unix ns it became ACTIVE (0: never).
    active_at: i64,
}

fn nanos(now: SystemTime) -> i64 {
    now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// `errors.ErrInvalidInput`.
fn invalid_input(field: &str) -> TwirpError {
    TwirpError::psrpc("invalid_argument", &format!("request has missing or invalid field: {field}"))
}

pub(crate) fn egress_not_found() -> TwirpError {
    TwirpError::psrpc("not_found", "egress does not exist")
}

/// `ErrEgressNotConnected`, what a server without Redis answers.
pub(crate) fn egress_not_connected() -> TwirpError {
    TwirpError::psrpc("internal", "egress not connected (redis required)")
}

fn status_name(status: i32) -> &'static str {
    proto::EgressStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("EGRESS_STARTING")
}

fn is_running(status: i32) -> bool {
    status == proto::EgressStatus::EgressStarting as i32 || status == proto::EgressStatus::EgressActive as i32
}

/// Go's `time.Format` of the two filename templates, in UTC.
fn time_strings(now: SystemTime) -> (String, String) {
    let d = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let time = format!("{year:04}-{month:02}-{day:02}T{h:02}{m:02}{s:02}");
    let utc = format!("{year:04}{month:02}{day:02}{h:02}{m:02}{s:02}{:03}", d.subsec_millis());
    (time, utc)
}

/// `stringReplace`: every template in turn.
fn substitute(template: &str, replacements: &[(&str, String)]) -> String {
    replacements.iter().fold(template.to_owned(), |acc, (k, v)| acc.replace(k, v))
}

/// `getFilenameInfo`: the default file's identifier and the templates a
/// request can use before the source is connected.
fn filename_info(info: &proto::EgressInfo, now: SystemTime) -> (String, Vec<(&'static str, String)>) {
    let (time, utc) = time_strings(now);
    if info.room_name.is_empty() {
        return ("web".to_owned(), vec![("{time}", time), ("{utc}", utc)]);
    }
    (
        info.room_name.clone(),
        vec![
            ("{room_name}", info.room_name.clone()),
            ("{room_id}", info.room_id.clone()),
            ("{time}", time),
            ("{utc}", utc),
        ],
    )
}

/// `clean`: `path.Clean`, leading `../` dropped, a trailing `/` kept.
fn clean(filepath: &str) -> String {
    if filepath.is_empty() {
        return String::new();
    }
    let trailing = filepath.ends_with('/');
    let rooted = filepath.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in filepath.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let mut cleaned = parts.join("/");
    if rooted {
        cleaned.insert(0, '/');
    }
    while let Some(rest) = cleaned.strip_prefix("../") {
        cleaned = rest.to_owned();
    }
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." || cleaned == "/" && !rooted {
        return String::new();
    }
    if trailing && !cleaned.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

/// The file extensions egress knows (`types.FileExtensions`).
const KNOWN_EXTENSIONS: &[&str] = &[".raw", ".ogg", ".mp3", ".ivf", ".mp4", ".ts", ".webm", ".m3u8", ".jpeg"];

/// `FileConfig.updateFilepath`: templates replaced, a generated name for an
/// empty path or a directory, the extension fixed.
fn update_filepath(
    path: &str,
    identifier: &str,
    replacements: &[(&str, String)],
    ext: &str,
    now: SystemTime,
) -> String {
    let mut path = substitute(path, replacements);
    if path.is_empty() || path.ends_with('/') {
        let (time, _) = time_strings(now);
        path = format!("{path}{identifier}-{time}{ext}");
    } else if !path.ends_with(ext) {
        if let Some(i) = path.rfind('.')
            && KNOWN_EXTENSIONS.contains(&&path[i..])
        {
            path.truncate(i);
        }
        path.push_str(ext);
    }
    path
}

/// `utils.RedactIdentifier`.
fn redact_identifier(id: &str) -> String {
    let bytes = id.as_bytes();
    for i in (1..=3).rev() {
        if bytes.len() >= i * 3 {
            let prefix = String::from_utf8_lossy(&bytes[..i]);
            let suffix = String::from_utf8_lossy(&bytes[bytes.len() - i..]);
            return format!("{{{prefix}...{suffix}}}");
        }
    }
    "{...}".to_owned()
}

/// `utils.RedactUrlQueryValues`.
fn redact_query_values(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    if query.is_empty() {
        return url.to_owned();
    }
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !v.is_empty() => format!("{k}={{...}}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// `utils.RedactStreamKey`: `rtmp(s)://host/app/{abc...xyz}`, mux and
/// twitch shorthands, else the query values.
pub(crate) fn redact_stream_key(url: &str) -> String {
    for scheme in ["mux://", "twitch://"] {
        if let Some(rest) = url.strip_prefix(scheme)
            && !rest.is_empty()
            && !rest.contains(char::is_whitespace)
        {
            return format!("{scheme}{}", redact_identifier(rest));
        }
    }
    let scheme = ["rtmp://", "rtmps://"].into_iter().find(|s| url.starts_with(s));
    if let Some(scheme) = scheme {
        let rest = &url[scheme.len()..];
        let (rest, live) = match rest.strip_suffix(" live=1") {
            Some(r) => (r, " live=1"),
            None => (rest, ""),
        };
        // `(.*/)(.*/)(\S*)`: the key is what follows the last slash, and
        // there must be two slashes
        if let Some(last) = rest.rfind('/')
            && rest[..last].contains('/')
            && !rest[last + 1..].contains(char::is_whitespace)
        {
            return format!("{scheme}{}/{}{live}", &rest[..last], redact_identifier(&rest[last + 1..]));
        }
    }
    redact_query_values(url)
}

fn redact_secret(s: &mut String, name: &str) {
    if !s.is_empty() {
        *s = name.to_owned();
    }
}

fn redact_s3(s3: &mut proto::S3Upload) {
    redact_secret(&mut s3.access_key, "{access_key}");
    redact_secret(&mut s3.secret, "{secret}");
    redact_secret(&mut s3.assume_role_external_id, "{external_id}");
    redact_secret(&mut s3.session_token, "{session_token}");
}

fn redact_gcp(gcp: &mut proto::GcpUpload) {
    redact_secret(&mut gcp.credentials, "{credentials}");
}

fn redact_azure(azure: &mut proto::AzureBlobUpload) {
    redact_secret(&mut azure.account_name, "{account_name}");
    redact_secret(&mut azure.account_key, "{account_key}");
}

fn redact_ali(ali: &mut proto::AliOssUpload) {
    redact_secret(&mut ali.access_key, "{access_key}");
    redact_secret(&mut ali.secret, "{secret}");
}

fn redact_encoded_file(f: &mut proto::EncodedFileOutput) {
    use proto::encoded_file_output::Output as O;
    match &mut f.output {
        Some(O::S3(s)) => redact_s3(s),
        Some(O::Gcp(g)) => redact_gcp(g),
        Some(O::Azure(a)) => redact_azure(a),
        Some(O::AliOss(a)) => redact_ali(a),
        None => {}
    }
}

fn redact_segments(f: &mut proto::SegmentedFileOutput) {
    use proto::segmented_file_output::Output as O;
    match &mut f.output {
        Some(O::S3(s)) => redact_s3(s),
        Some(O::Gcp(g)) => redact_gcp(g),
        Some(O::Azure(a)) => redact_azure(a),
        Some(O::AliOss(a)) => redact_ali(a),
        None => {}
    }
}

fn redact_stream(s: &mut proto::StreamOutput) {
    for url in &mut s.urls {
        *url = redact_stream_key(url);
    }
}

fn storage_of_encoded(f: &proto::EncodedFileOutput) -> Storage {
    use proto::encoded_file_output::Output as O;
    match &f.output {
        Some(O::S3(s)) => {
            Storage::S3 { bucket: s.bucket.clone(), endpoint: s.endpoint.clone(), path_style: s.force_path_style }
        }
        Some(O::Gcp(g)) => Storage::Gcp { bucket: g.bucket.clone() },
        Some(O::Azure(a)) => Storage::Azure { account: a.account_name.clone(), container: a.container_name.clone() },
        Some(O::AliOss(a)) => Storage::AliOss { bucket: a.bucket.clone(), endpoint: a.endpoint.clone() },
        None => Storage::Local,
    }
}

fn storage_of_direct(f: &proto::DirectFileOutput) -> Storage {
    use proto::direct_file_output::Output as O;
    match &f.output {
        Some(O::S3(s)) => {
            Storage::S3 { bucket: s.bucket.clone(), endpoint: s.endpoint.clone(), path_style: s.force_path_style }
        }
        Some(O::Gcp(g)) => Storage::Gcp { bucket: g.bucket.clone() },
        Some(O::Azure(a)) => Storage::Azure { account: a.account_name.clone(), container: a.container_name.clone() },
        Some(O::AliOss(a)) => Storage::AliOss { bucket: a.bucket.clone(), endpoint: a.endpoint.clone() },
        None => Storage::Local,
    }
}

/// The encoded outputs of a request, the deprecated single `output`
/// included when the lists are empty.
struct Encoded<'a> {
    files: Vec<&'a proto::EncodedFileOutput>,
    streams: Vec<&'a proto::StreamOutput>,
    segments: Vec<&'a proto::SegmentedFileOutput>,
    images: usize,
}

/// The stream URL schemes egress accepts (`types.StreamOutputTypes`).
fn stream_scheme_ok(url: &str) -> bool {
    ["rtmp://", "rtmps://", "srt://", "mux://", "twitch://"].iter().any(|s| url.starts_with(s))
}

/// What the validated outputs give the EgressInfo.
struct Outputs {
    file: Option<(proto::FileInfo, Storage)>,
    streams: Vec<proto::StreamInfo>,
    segments: Option<proto::SegmentsInfo>,
    /// The deprecated `result` (only one output kind requested).
    single: Option<proto::egress_info::Result>,
}

/// `updateEncodedOutputs`.
#[allow(deprecated)]
fn encoded_outputs(
    out: &Encoded<'_>,
    info: &proto::EgressInfo,
    audio: bool,
    video: bool,
    now: SystemTime,
) -> Result<Outputs, TwirpError> {
    let mut result = Outputs { file: None, streams: Vec::new(), segments: None, single: None };
    let mut count = 0usize;
    if out.files.len() > 1 {
        return Err(invalid_input("multiple file outputs"));
    }
    if let Some(file) = out.files.first() {
        let ext = match proto::EncodedFileType::try_from(file.file_type).unwrap_or_default() {
            proto::EncodedFileType::Mp4 => ".mp4",
            proto::EncodedFileType::Ogg => ".ogg",
            proto::EncodedFileType::Mp3 => ".mp3",
            // updateOutputType: the first type compatible with the codecs
            proto::EncodedFileType::DefaultFiletype => {
                if video {
                    ".mp4"
                } else {
                    ".ogg"
                }
            }
        };
        let (identifier, replacements) = filename_info(info, now);
        let filename = update_filepath(&clean(&file.filepath), &identifier, &replacements, ext, now);
        result.file = Some((proto::FileInfo { filename, ..Default::default() }, storage_of_encoded(file)));
        count += 1;
    }
    if out.streams.len() > 1 {
        return Err(invalid_input("multiple stream outputs"));
    }
    if let Some(stream) = out.streams.first() {
        if stream.protocol == proto::StreamProtocol::DefaultProtocol as i32 {
            let Some(first) = stream.urls.first() else {
                return Err(invalid_input("stream protocol"));
            };
            if !stream_scheme_ok(first) {
                return Err(TwirpError::psrpc("invalid_argument", &format!("invalid url {first}: invalid protocol")));
            }
        }
        for url in &stream.urls {
            if !stream_scheme_ok(url) {
                return Err(TwirpError::psrpc("invalid_argument", &format!("invalid url {url}: invalid protocol")));
            }
            result.streams.push(proto::StreamInfo {
                url: redact_stream_key(url),
                status: proto::stream_info::Status::Active as i32,
                ..Default::default()
            });
        }
        count += stream.urls.len();
        if out.files.len() + out.segments.len() + out.images == 0 && stream.urls.is_empty() {
            return Err(invalid_input("stream url"));
        }
    }
    if out.segments.len() > 1 {
        return Err(invalid_input("multiple segmented file outputs"));
    }
    if let Some(seg) = out.segments.first() {
        let (identifier, replacements) = filename_info(info, now);
        let prefix = substitute(&clean(&seg.filename_prefix), &replacements);
        let playlist = if seg.playlist_name.is_empty() {
            let (time, _) = time_strings(now);
            format!("{}{identifier}-{time}.m3u8", if prefix.is_empty() { "" } else { &prefix })
        } else {
            update_filepath(&substitute(&seg.playlist_name, &replacements), &identifier, &replacements, ".m3u8", now)
        };
        result.segments = Some(proto::SegmentsInfo { playlist_name: playlist, ..Default::default() });
        count += 1;
    }
    if out.images > 0 {
        if !video {
            return Err(invalid_input("audio_only images"));
        }
        count += out.images;
    }
    let _ = audio;
    if count == 0 {
        return Err(invalid_input("output"));
    }
    let kinds = usize::from(result.file.is_some())
        + usize::from(!out.streams.is_empty())
        + usize::from(result.segments.is_some())
        + usize::from(out.images > 0);
    if kinds == 1 {
        result.single = if let Some((f, _)) = &result.file {
            Some(proto::egress_info::Result::File(f.clone()))
        } else if !result.streams.is_empty() {
            Some(proto::egress_info::Result::Stream(proto::StreamInfoList { info: result.streams.clone() }))
        } else {
            result.segments.clone().map(proto::egress_info::Result::Segments)
        };
    }
    Ok(result)
}

impl State {
    /// The worker's StartEgress (livekit-server has checked the grant and
    /// that the room is live): validation, then EGRESS_STARTING,
    /// egress_started, and the first step scheduled.
    #[allow(deprecated)]
    pub(crate) fn start_egress(
        &mut self,
        request: StartRequest,
        now: SystemTime,
    ) -> Result<proto::EgressInfo, TwirpError> {
        let t = nanos(now);
        let room_name = request.room_name().to_owned();
        let room_id = self.rooms.get(&room_name).map(|r| r.room.sid.clone()).unwrap_or_default();
        let mut info = proto::EgressInfo {
            egress_id: guid("EG_"),
            room_id,
            room_name: room_name.clone(),
            status: proto::EgressStatus::EgressStarting as i32,
            started_at: t,
            updated_at: t,
            source_type: proto::EgressSourceType::Sdk as i32,
            ..Default::default()
        };
        let mut pending_filename = false;
        let (source, audio, video, outputs) = match request {
            StartRequest::RoomComposite(req) => {
                use proto::room_composite_egress_request::Output as O;
                let mut echo = req.clone();
                let (audio, video) = (!req.video_only, !req.audio_only);
                if !audio && !video {
                    return Err(invalid_input("audio_only and video_only"));
                }
                let sdk = req.audio_only && req.layout.is_empty() && req.custom_base_url.is_empty();
                if !sdk {
                    info.source_type = proto::EgressSourceType::Web as i32;
                }
                let out = Encoded {
                    files: if req.file_outputs.is_empty() {
                        match &req.output {
                            Some(O::File(f)) => vec![f],
                            _ => vec![],
                        }
                    } else {
                        req.file_outputs.iter().collect()
                    },
                    streams: if req.stream_outputs.is_empty() {
                        match &req.output {
                            Some(O::Stream(s)) if req.file_outputs.is_empty() => vec![s],
                            _ => vec![],
                        }
                    } else {
                        req.stream_outputs.iter().collect()
                    },
                    segments: if req.segment_outputs.is_empty() {
                        match &req.output {
                            Some(O::Segments(s)) if req.file_outputs.is_empty() => vec![s],
                            _ => vec![],
                        }
                    } else {
                        req.segment_outputs.iter().collect()
                    },
                    images: req.image_outputs.len(),
                };
                let outputs = encoded_outputs(&out, &info, audio, video, now)?;
                echo.file_outputs.iter_mut().for_each(redact_encoded_file);
                echo.stream_outputs.iter_mut().for_each(redact_stream);
                echo.segment_outputs.iter_mut().for_each(redact_segments);
                match &mut echo.output {
                    Some(O::File(f)) => redact_encoded_file(f),
                    Some(O::Stream(s)) => redact_stream(s),
                    Some(O::Segments(s)) => redact_segments(s),
                    None => {}
                }
                info.request = Some(InfoRequest::RoomComposite(echo));
                (Source::Room, audio, video, outputs)
            }
            StartRequest::Web(req) => {
                use proto::web_egress_request::Output as O;
                let mut echo = req.clone();
                info.source_type = proto::EgressSourceType::Web as i32;
                if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
                    return Err(invalid_input("web url"));
                }
                let (audio, video) = (!req.video_only, !req.audio_only);
                if !audio && !video {
                    return Err(invalid_input("audio_only and video_only"));
                }
                let out = Encoded {
                    files: if req.file_outputs.is_empty() {
                        match &req.output {
                            Some(O::File(f)) => vec![f],
                            _ => vec![],
                        }
                    } else {
                        req.file_outputs.iter().collect()
                    },
                    streams: if req.stream_outputs.is_empty() {
                        match &req.output {
                            Some(O::Stream(s)) if req.file_outputs.is_empty() => vec![s],
                            _ => vec![],
                        }
                    } else {
                        req.stream_outputs.iter().collect()
                    },
                    segments: if req.segment_outputs.is_empty() {
                        match &req.output {
                            Some(O::Segments(s)) if req.file_outputs.is_empty() => vec![s],
                            _ => vec![],
                        }
                    } else {
                        req.segment_outputs.iter().collect()
                    },
                    images: req.image_outputs.len(),
                };
                let outputs = encoded_outputs(&out, &info, audio, video, now)?;
                echo.file_outputs.iter_mut().for_each(redact_encoded_file);
                echo.stream_outputs.iter_mut().for_each(redact_stream);
                echo.segment_outputs.iter_mut().for_each(redact_segments);
                match &mut echo.output {
                    Some(O::File(f)) => redact_encoded_file(f),
                    Some(O::Stream(s)) => redact_stream(s),
                    Some(O::Segments(s)) => redact_segments(s),
                    None => {}
                }
                info.request = Some(InfoRequest::Web(echo));
                (Source::Web, audio, video, outputs)
            }
            StartRequest::Participant(req) => {
                let mut echo = req.clone();
                if req.identity.is_empty() {
                    return Err(invalid_input("identity"));
                }
                let out = Encoded {
                    files: req.file_outputs.iter().collect(),
                    streams: req.stream_outputs.iter().collect(),
                    segments: req.segment_outputs.iter().collect(),
                    images: req.image_outputs.len(),
                };
                let outputs = encoded_outputs(&out, &info, true, true, now)?;
                echo.file_outputs.iter_mut().for_each(redact_encoded_file);
                echo.stream_outputs.iter_mut().for_each(redact_stream);
                echo.segment_outputs.iter_mut().for_each(redact_segments);
                info.request = Some(InfoRequest::Participant(echo));
                (Source::Participant(req.identity.clone()), true, true, outputs)
            }
            StartRequest::TrackComposite(req) => {
                use proto::track_composite_egress_request::Output as O;
                let mut echo = req.clone();
                let (audio, video) = (!req.audio_track_id.is_empty(), !req.video_track_id.is_empty());
                if !audio && !video {
                    return Err(invalid_input("audio_track_id or video_track_id"));
                }
                let out = Encoded {
                    files: if req.file_outputs.is_empty() {
                        match &req.output {
                            Some(O::File(f)) => vec![f],
                            _ => vec![],
                        }
                    } else {
                        req.file_outputs.iter().collect()
                    },
                    streams: if req.stream_outputs.is_empty() {
                        match &req.output {
                            Some(O::Stream(s)) if req.file_outputs.is_empty() => vec![s],
                            _ => vec![],
                        }
                    } else {
                        req.stream_outputs.iter().collect()
                    },
                    segments: if req.segment_outputs.is_empty() {
                        match &req.output {
                            Some(O::Segments(s)) if req.file_outputs.is_empty() => vec![s],
                            _ => vec![],
                        }
                    } else {
                        req.segment_outputs.iter().collect()
                    },
                    images: req.image_outputs.len(),
                };
                let outputs = encoded_outputs(&out, &info, audio, video, now)?;
                echo.file_outputs.iter_mut().for_each(redact_encoded_file);
                echo.stream_outputs.iter_mut().for_each(redact_stream);
                echo.segment_outputs.iter_mut().for_each(redact_segments);
                match &mut echo.output {
                    Some(O::File(f)) => redact_encoded_file(f),
                    Some(O::Stream(s)) => redact_stream(s),
                    Some(O::Segments(s)) => redact_segments(s),
                    None => {}
                }
                info.request = Some(InfoRequest::TrackComposite(echo));
                (Source::TrackComposite(req.audio_track_id.clone(), req.video_track_id.clone()), audio, video, outputs)
            }
            StartRequest::Track(req) => {
                use proto::track_egress_request::Output as O;
                let mut echo = req.clone();
                if req.track_id.is_empty() {
                    return Err(invalid_input("track_id"));
                }
                let mut outputs = Outputs { file: None, streams: Vec::new(), segments: None, single: None };
                match &req.output {
                    Some(O::File(f)) => {
                        // the extension waits for the track's codec
                        let (_, replacements) = filename_info(&info, now);
                        let filename = substitute(&clean(&f.filepath), &replacements);
                        let file = proto::FileInfo { filename, ..Default::default() };
                        outputs.single = Some(proto::egress_info::Result::File(file.clone()));
                        outputs.file = Some((file, storage_of_direct(f)));
                        pending_filename = true;
                    }
                    Some(O::WebsocketUrl(url)) => {
                        outputs.streams.push(proto::StreamInfo {
                            url: redact_stream_key(url),
                            status: proto::stream_info::Status::Active as i32,
                            ..Default::default()
                        });
                    }
                    None => return Err(invalid_input("output")),
                }
                match &mut echo.output {
                    Some(O::File(f)) => {
                        use proto::direct_file_output::Output as D;
                        match &mut f.output {
                            Some(D::S3(s)) => redact_s3(s),
                            Some(D::Gcp(g)) => redact_gcp(g),
                            Some(D::Azure(a)) => redact_azure(a),
                            Some(D::AliOss(a)) => redact_ali(a),
                            None => {}
                        }
                    }
                    Some(O::WebsocketUrl(url)) => *url = redact_query_values(url),
                    None => {}
                }
                info.request = Some(InfoRequest::Track(echo));
                (Source::Track(req.track_id.clone()), true, true, outputs)
            }
        };
        // connection info: the worker builds a token for the room
        if source != Source::Web && info.room_name.is_empty() {
            return Err(invalid_input("token or api key/secret"));
        }
        let byte_rate = match (audio, video) {
            (true, true) => AUDIO_BYTES_PER_SEC + VIDEO_BYTES_PER_SEC,
            (false, true) => VIDEO_BYTES_PER_SEC,
            _ => AUDIO_BYTES_PER_SEC,
        };
        let streaming = !outputs.streams.is_empty();
        let storage = outputs.file.as_ref().map(|(_, s)| s.clone()).unwrap_or(Storage::Local);
        info.file_results = outputs.file.map(|(f, _)| vec![f]).unwrap_or_default();
        info.stream_results = outputs.streams;
        info.segment_results = outputs.segments.into_iter().collect();
        info.result = outputs.single;
        let record = EgressRecord {
            info: info.clone(),
            killed: false,
            source,
            storage,
            pending_filename,
            streaming,
            byte_rate,
            active_at: 0,
        };
        self.egresses.push(record);
        self.raise_egress(event::EGRESS_STARTED, &info);
        self.timers.push(Timer::Egress(info.egress_id.clone()));
        Ok(info)
    }

    fn raise_egress(&mut self, name: &str, info: &proto::EgressInfo) {
        self.events.push(proto::WebhookEvent {
            event: name.to_owned(),
            egress_info: Some(info.clone()),
            ..Default::default()
        });
    }

    fn egress_index(&self, id: &str) -> Option<usize> {
        self.egresses.iter().position(|e| e.info.egress_id == id)
    }

    pub(crate) fn egress(&self, id: &str) -> Option<&EgressRecord> {
        self.egresses.iter().find(|e| e.info.egress_id == id)
    }

    /// The track `sid` of `room` and who publishes it.
    fn find_track(&self, room: &str, sid: &str) -> Option<(proto::ParticipantInfo, proto::TrackInfo)> {
        let r = self.rooms.get(room)?;
        r.participants.iter().find_map(|p| p.tracks.iter().find(|t| t.sid == sid).map(|t| (p.clone(), t.clone())))
    }

    /// The worker's next step for an egress (see [`Timer::Egress`]).
    pub(crate) fn egress_step(&mut self, id: &str, now: SystemTime) {
        let Some(i) = self.egress_index(id) else { return };
        if self.egresses[i].killed {
            return;
        }
        let status = self.egresses[i].info.status;
        if status == proto::EgressStatus::EgressStarting as i32 {
            self.activate_egress(i, now);
        } else if status == proto::EgressStatus::EgressEnding as i32 {
            self.complete_egress(i, now);
        }
    }

    /// The source is connected: ACTIVE, with the filename templates that
    /// need it filled in; or FAILED if what it records is not there.
    fn activate_egress(&mut self, i: usize, now: SystemTime) {
        let record = self.egresses[i].clone();
        let room = record.info.room_name.clone();
        let room_live = self.rooms.get(&room).is_some_and(|r| r.room.sid == record.info.room_id);
        let mut identifier = None;
        let mut replacements: Vec<(&str, String)> = Vec::new();
        let mut extension = None;
        let missing = match &record.source {
            Source::Web => None,
            Source::Room => (!room_live)
                .then(|| TwirpError::psrpc("unavailable", "recording ended early: connection to room failed")),
            Source::Participant(identity) => {
                match self.participants_of(&room).into_iter().find(|p| &p.identity == identity) {
                    Some(_) if room_live => {
                        identifier = Some(identity.clone());
                        replacements.push(("{publisher_identity}", identity.clone()));
                        None
                    }
                    _ => Some(TwirpError::psrpc("not_found", &format!("participant {identity} not found"))),
                }
            }
            Source::TrackComposite(audio, video) => {
                let mut error = None;
                for sid in [audio, video].into_iter().filter(|s| !s.is_empty()) {
                    match self.find_track(&room, sid) {
                        Some((p, t)) => {
                            if replacements.is_empty() || t.r#type == proto::TrackType::Video as i32 {
                                replacements.retain(|(k, _)| *k != "{publisher_identity}");
                                replacements.push(("{publisher_identity}", p.identity.clone()));
                            }
                        }
                        None => {
                            error = Some(TwirpError::psrpc("not_found", &format!("track {sid} not found")));
                            break;
                        }
                    }
                }
                error
            }
            Source::Track(sid) => match self.find_track(&room, sid) {
                Some((p, t)) => {
                    let kind = if t.r#type == proto::TrackType::Video as i32 { "video" } else { "audio" };
                    let source = proto::TrackSource::try_from(t.source)
                        .map(|s| s.as_str_name().to_ascii_lowercase())
                        .unwrap_or_else(|_| "unknown".to_owned());
                    replacements.push(("{track_id}", sid.clone()));
                    replacements.push(("{track_type}", kind.to_owned()));
                    replacements.push(("{track_source}", source));
                    replacements.push(("{publisher_identity}", p.identity.clone()));
                    extension = Some(match t.mime_type.to_ascii_lowercase().as_str() {
                        "video/h264" => ".mp4",
                        "video/vp8" | "video/vp9" => ".webm",
                        _ => ".ogg",
                    });
                    None
                }
                None => Some(TwirpError::psrpc("not_found", &format!("track {sid} not found"))),
            },
        };
        let t = nanos(now);
        let e = &mut self.egresses[i];
        if let Some(err) = missing {
            fail(&mut e.info, &err, t);
            let info = e.info.clone();
            self.raise_egress(event::EGRESS_ENDED, &info);
            return;
        }
        let (default_identifier, mut base) = filename_info(&e.info, now);
        base.extend(replacements);
        let identifier = identifier.unwrap_or(default_identifier);
        for file in &mut e.info.file_results {
            file.filename = match (e.pending_filename, extension) {
                (true, Some(ext)) => update_filepath(&file.filename, &identifier, &base, ext, now),
                _ => substitute(&file.filename, &base),
            };
        }
        e.pending_filename = false;
        for stream in &mut e.info.stream_results {
            stream.started_at = t;
        }
        for seg in &mut e.info.segment_results {
            seg.started_at = t;
        }
        e.active_at = t;
        e.info.status = proto::EgressStatus::EgressActive as i32;
        e.info.updated_at = t;
        sync_result(&mut e.info);
        let info = e.info.clone();
        self.raise_egress(event::EGRESS_UPDATED, &info);
    }

    fn participants_of(&self, room: &str) -> Vec<proto::ParticipantInfo> {
        self.rooms.get(room).map(|r| r.participants.clone()).unwrap_or_default()
    }

    /// `Controller.SendEOS`: STARTING is aborted at once (egress_ended),
    /// ACTIVE turns ENDING (egress_updated) and completes one step later;
    /// others are left as they are.
    pub(crate) fn end_egress(&mut self, i: usize, reason: &str, now: SystemTime) {
        let t = nanos(now);
        let e = &mut self.egresses[i];
        if e.killed {
            return;
        }
        let status = e.info.status;
        if status == proto::EgressStatus::EgressStarting as i32 {
            e.info.details = format!("End reason: {reason}");
            e.info.status = proto::EgressStatus::EgressAborted as i32;
            e.info.error = MSG_STOPPED_BEFORE_STARTED.to_owned();
            e.info.error_code = 412;
            e.info.updated_at = t;
            e.info.ended_at = t;
            let info = e.info.clone();
            self.raise_egress(event::EGRESS_ENDED, &info);
        } else if status == proto::EgressStatus::EgressActive as i32 {
            e.info.details = format!("End reason: {reason}");
            e.info.status = proto::EgressStatus::EgressEnding as i32;
            e.info.updated_at = t;
            let info = e.info.clone();
            let id = info.egress_id.clone();
            self.raise_egress(event::EGRESS_UPDATED, &info);
            self.timers.push(Timer::Egress(id));
        }
    }

    /// The pipeline has finished and uploaded: COMPLETE with its results.
    fn complete_egress(&mut self, i: usize, now: SystemTime) {
        let t = nanos(now);
        let e = &mut self.egresses[i];
        let started = if e.active_at > 0 { e.active_at } else { e.info.started_at };
        let duration = (t - started).max(0);
        for file in &mut e.info.file_results {
            file.started_at = started;
            file.ended_at = t;
            file.duration = duration;
            file.size = e.byte_rate * duration / 1_000_000_000;
            file.location = e.storage.location(&file.filename);
        }
        for stream in &mut e.info.stream_results {
            if stream.status == proto::stream_info::Status::Active as i32 {
                stream.status = proto::stream_info::Status::Finished as i32;
                stream.ended_at = t;
                stream.duration = (t - stream.started_at).max(0);
            }
        }
        for seg in &mut e.info.segment_results {
            seg.ended_at = t;
            seg.duration = duration;
            seg.segment_count = (duration / 6_000_000_000).max(1);
            seg.size = e.byte_rate * duration / 1_000_000_000;
            seg.playlist_location = e.storage.location(&seg.playlist_name);
        }
        e.info.status = proto::EgressStatus::EgressComplete as i32;
        e.info.updated_at = t;
        e.info.ended_at = t;
        sync_result(&mut e.info);
        let info = e.info.clone();
        self.raise_egress(event::EGRESS_ENDED, &info);
    }

    /// A participant left (or, with an empty identity, only tracks were
    /// unpublished): its participant egresses, and the track egresses of
    /// tracks no longer published, see their source close.
    pub(crate) fn participant_gone_for_egress(
        &mut self,
        room: &str,
        identity: &str,
        tracks: &[String],
        now: SystemTime,
    ) {
        let room_id = self.rooms.get(room).map(|r| r.room.sid.clone()).unwrap_or_default();
        let ending: Vec<usize> = (0..self.egresses.len())
            .filter(|&i| {
                let e = &self.egresses[i];
                if e.killed || !is_running(e.info.status) || e.info.room_name != room || e.info.room_id != room_id {
                    return false;
                }
                match &e.source {
                    Source::Participant(who) => !identity.is_empty() && who == identity,
                    Source::Track(sid) => tracks.contains(sid),
                    Source::TrackComposite(a, v) => {
                        let mine: Vec<&String> = [a, v].into_iter().filter(|s| !s.is_empty()).collect();
                        mine.iter().any(|s| tracks.contains(s))
                            && mine.iter().all(|s| self.find_track(room, s).is_none())
                    }
                    Source::Room | Source::Web => false,
                }
            })
            .collect();
        for i in ending {
            self.end_egress(i, END_REASON_SRC_CLOSED, now);
        }
    }

    /// The room closed: every egress recording it sees its source close.
    pub(crate) fn room_closed_for_egress(&mut self, room: &str, room_id: &str, now: SystemTime) {
        let ending: Vec<usize> = (0..self.egresses.len())
            .filter(|&i| {
                let e = &self.egresses[i];
                !e.killed && is_running(e.info.status) && e.info.room_name == room && e.info.room_id == room_id
            })
            .collect();
        for i in ending {
            self.end_egress(i, END_REASON_SRC_CLOSED, now);
        }
    }

    /// `StopEgress` with a worker: `Ok(info)` for a running egress (ENDING,
    /// or ABORTED if it was still STARTING); `Err((true, e))` when the
    /// server first waits for a handler that never answers (one psrpc
    /// selection), `Err((false, e))` at once.
    pub(crate) fn stop_egress(&mut self, id: &str, now: SystemTime) -> Result<proto::EgressInfo, (bool, TwirpError)> {
        let Some(i) = self.egress_index(id) else {
            return Err((true, egress_not_found()));
        };
        let e = &self.egresses[i];
        let status = e.info.status;
        if e.killed || !(is_running(status) || status == proto::EgressStatus::EgressEnding as i32) {
            if is_running(status) {
                // the handler is gone but the store says it runs: the
                // psrpc error, ErrNoResponse mapped to ErrRequestTimedOut
                return Err((true, TwirpError::psrpc("deadline_exceeded", "request timed out")));
            }
            return Err((
                true,
                TwirpError::new(
                    "failed_precondition",
                    format!("egress with status {} cannot be stopped", status_name(status)),
                ),
            ));
        }
        self.end_egress(i, END_REASON_API, now);
        Ok(self.egresses[i].info.clone())
    }

    /// `UpdateStream` with a worker, answered like [`State::stop_egress`].
    pub(crate) fn update_stream(
        &mut self,
        req: &proto::UpdateStreamRequest,
        now: SystemTime,
    ) -> Result<proto::EgressInfo, (bool, TwirpError)> {
        let Some(i) = self.egress_index(&req.egress_id) else {
            return Err((true, egress_not_found()));
        };
        let e = &self.egresses[i];
        let status = e.info.status;
        if e.killed || !(is_running(status) || status == proto::EgressStatus::EgressEnding as i32) {
            if is_running(status) {
                return Err((true, TwirpError::psrpc("unavailable", "no response from servers")));
            }
            return Err((
                true,
                TwirpError::new(
                    "failed_precondition",
                    format!("egress with status {} cannot be updated", status_name(status)),
                ),
            ));
        }
        if !e.streaming {
            return Err((false, TwirpError::psrpc("invalid_argument", "UpdateStream called on non-streaming egress")));
        }
        for url in &req.add_output_urls {
            if !stream_scheme_ok(url) {
                return Err((
                    false,
                    TwirpError::psrpc("invalid_argument", &format!("invalid url {url}: invalid protocol")),
                ));
            }
        }
        for url in &req.remove_output_urls {
            let redacted = redact_stream_key(url);
            let found = e
                .info
                .stream_results
                .iter()
                .any(|s| s.url == redacted && s.status != proto::stream_info::Status::Finished as i32);
            if !found {
                return Err((false, TwirpError::psrpc("not_found", &format!("stream {url} not found"))));
            }
        }
        let t = nanos(now);
        let active = status == proto::EgressStatus::EgressActive as i32;
        let e = &mut self.egresses[i];
        for url in &req.add_output_urls {
            e.info.stream_results.push(proto::StreamInfo {
                url: redact_stream_key(url),
                status: proto::stream_info::Status::Active as i32,
                started_at: if active { t } else { 0 },
                ..Default::default()
            });
        }
        for url in &req.remove_output_urls {
            let redacted = redact_stream_key(url);
            if let Some(s) = e
                .info
                .stream_results
                .iter_mut()
                .find(|s| s.url == redacted && s.status != proto::stream_info::Status::Finished as i32)
            {
                s.status = proto::stream_info::Status::Finished as i32;
                s.ended_at = t;
                s.duration = if s.started_at > 0 { t - s.started_at } else { 0 };
            }
        }
        e.info.updated_at = t;
        sync_result(&mut e.info);
        let info = e.info.clone();
        self.raise_egress(event::EGRESS_UPDATED, &info);
        Ok(info)
    }

    /// `ListEgress` with Redis: one egress by id (filters ignored; an
    /// unknown id is not_found), else by room and `active` (status below
    /// COMPLETE), in Go map order.
    pub(crate) fn list_egress(&self, req: &proto::ListEgressRequest) -> Result<Vec<proto::EgressInfo>, TwirpError> {
        if !req.egress_id.is_empty() {
            return self.egress(&req.egress_id).map(|e| vec![e.info.clone()]).ok_or_else(egress_not_found);
        }
        let mut items: Vec<proto::EgressInfo> = self
            .egresses
            .iter()
            .filter(|e| req.room_name.is_empty() || e.info.room_name == req.room_name)
            .filter(|e| !req.active || e.info.status < proto::EgressStatus::EgressComplete as i32)
            .map(|e| e.info.clone())
            .collect();
        items.shuffle(&mut rand::rng());
        Ok(items)
    }
}

/// The deprecated `result` points at the same FileInfo / StreamInfo list
/// as the results in Go: keep it equal.
#[allow(deprecated)]
fn sync_result(info: &mut proto::EgressInfo) {
    use proto::egress_info::Result as R;
    match &mut info.result {
        Some(R::File(f)) => {
            if let Some(file) = info.file_results.first() {
                *f = file.clone();
            }
        }
        Some(R::Stream(list)) => list.info = info.stream_results.clone(),
        Some(R::Segments(s)) => {
            if let Some(seg) = info.segment_results.first() {
                *s = seg.clone();
            }
        }
        None => {}
    }
}

/// `EgressInfo.SetFailed`.
fn fail(info: &mut proto::EgressInfo, err: &TwirpError, t: i64) {
    info.status = proto::EgressStatus::EgressFailed as i32;
    info.updated_at = t;
    info.ended_at = t;
    info.error = err.msg.strip_prefix("twirp error unknown: ").unwrap_or(&err.msg).to_owned();
    if info.details.is_empty() {
        info.details = format!("End reason: {END_REASON_FAILURE}");
    }
    info.error_code = i32::from(err.status());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stream_keys_are_redacted_as_livekit_does() {
        assert_eq!(
            redact_stream_key("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl"),
            "rtmp://a.rtmp.youtube.com/live2/{abc...jkl}"
        );
        assert_eq!(redact_stream_key("rtmps://host/app/key live=1"), "rtmps://host/app/{k...y} live=1");
        assert_eq!(redact_stream_key("twitch://secretkey"), "twitch://{sec...key}");
        assert_eq!(redact_stream_key("srt://host:9000?streamid=abc&x="), "srt://host:9000?streamid={...}&x=");
        assert_eq!(redact_stream_key("rtmp://host/key"), "rtmp://host/key");
    }

    #[test]
    fn times_are_formatted_like_go() {
        let t = UNIX_EPOCH + Duration::from_millis(1_664_846_386_789);
        assert_eq!(time_strings(t), ("2022-10-04T011946".to_owned(), "20221004011946789".to_owned()));
    }

    #[test]
    fn filepaths_follow_egress_rules() {
        let now = UNIX_EPOCH + Duration::from_secs(1_664_846_386);
        let r = vec![("{room_name}", "testroom".to_owned()), ("{time}", "T".to_owned())];
        assert_eq!(update_filepath("", "testroom", &r, ".mp4", now), "testroom-2022-10-04T011946.mp4");
        assert_eq!(update_filepath("rec/", "testroom", &r, ".mp4", now), "rec/testroom-2022-10-04T011946.mp4");
        assert_eq!(update_filepath("{room_name}/{time}", "x", &r, ".mp4", now), "testroom/T.mp4");
        assert_eq!(update_filepath("a.ogg", "x", &r, ".mp4", now), "a.mp4");
        assert_eq!(update_filepath("a.b", "x", &r, ".mp4", now), "a.b.mp4");
        assert_eq!(clean("../../a//b/./c/"), "a/b/c/");
        assert_eq!(clean("."), "");
    }
}
