//! The HTTP side: livekit-server's middleware chain, its Twirp router and the
//! RoomService handlers, in the order the real server runs them.
//!
//! `pkg/service/server.go`: negroni recovery -> CORS -> RemoveDoubleSlashes
//! -> request body limit (10 MiB) -> API key auth -> mux (`/` health,
//! `/twirp/livekit.RoomService/`, `/twirp/livekit.Egress/` and
//! `/twirp/livekit.AgentDispatchService/` Twirp, anything else
//! `http.NotFound`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use livekit_api::access_token::Claims;
use livekit_protocol as proto;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::auth::{AuthResult, authenticate};
use crate::calls::{
    AuthOutcome, DecodeError, Encoding, JSON_MALFORMED, RecordedResponse, RoomRequest, SERVICES, route,
};
use crate::protojson;
use crate::state::{Departure, State as LiveState};
use crate::twirp::TwirpError;
use crate::{Fault, Inner, RecordedCall};

/// `LimitConfig.MaxAPIRequestBodySize` default.
const MAX_BODY: usize = 10 << 20;
const TIMEOUT_HEADER: &str = "x-twirp-timeout-ms";

/// A reply being built, before the optional delay.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    extra: Vec<(header::HeaderName, HeaderValue)>,
}

impl Reply {
    fn twirp(err: &TwirpError) -> Self {
        Reply { status: err.status(), content_type: "application/json", body: err.body(), extra: Vec::new() }
    }

    /// What Go writes for `w.WriteHeader(status); w.Write(text)`: the
    /// content type is sniffed as plain text.
    fn plain(status: u16, text: &str) -> Self {
        Reply { status, content_type: "text/plain; charset=utf-8", body: text.as_bytes().to_vec(), extra: Vec::new() }
    }

    fn message<M: Message + serde::Serialize>(type_name: &str, msg: &M, encoding: Encoding) -> Self {
        match encoding {
            Encoding::Protobuf => Reply {
                status: 200,
                content_type: "application/protobuf",
                body: msg.encode_to_vec(),
                extra: Vec::new(),
            },
            Encoding::Json => Reply {
                status: 200,
                content_type: "application/json",
                body: protojson::to_json(type_name, msg),
                extra: Vec::new(),
            },
        }
    }

    fn into_response(self, cors: &[(header::HeaderName, HeaderValue)]) -> Response {
        let mut builder =
            Response::builder().status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        if !self.content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, self.content_type);
        }
        for (k, v) in self.extra.into_iter().chain(cors.iter().cloned()) {
            builder = builder.header(k, v);
        }
        builder.body(Body::from(self.body)).unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

/// The outcome of a RoomService handler.
enum Outcome {
    Ok(Reply),
    Err(TwirpError),
    /// The call goes over psrpc to a room or participant no node serves: the
    /// client waits for a claim that never comes (see [`no_route`]).
    NoRoute,
    /// The error comes after this wait (unless the caller's deadline ends
    /// it first: see [`delayed`]).
    Delayed(Duration, TwirpError),
}

pub(crate) async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let mut stopped = inner.stop_tx.subscribe();
    let (parts, body) = req.into_parts();
    let cors = cors_headers(&parts.method, &parts.headers);

    // rs/cors answers preflights itself, before anything else.
    if parts.method == Method::OPTIONS && parts.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let reply = Reply { status: 204, content_type: "", body: Vec::new(), extra: Vec::new() };
        return finish(&inner, reply, &cors, &mut stopped).await;
    }

    // RemoveDoubleSlashes
    let mut path = parts.uri.path().to_owned();
    if path.starts_with("//") {
        path.remove(0);
    }

    // RequestBodyLimiter: a declared size over the limit is refused up front.
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return finish(&inner, Reply::plain(413, "request body too large"), &cors, &mut stopped).await;
    }

    let auth = authenticate(
        parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        query_param(parts.uri.query().unwrap_or(""), "access_token"),
        |key| (key == inner.api_key).then(|| inner.api_secret.clone()),
        SystemTime::now(),
    );

    let method_name = route(&path).and_then(|(_, method)| method).map(str::to_owned);
    let Some(method_name) = method_name.filter(|_| parts.method == Method::POST) else {
        // Not a routed Twirp call: only the middleware and the mux speak.
        let reply = match auth {
            AuthResult::Rejected(msg) => Reply::plain(401, &msg),
            _ => route_other(&parts.method, &path),
        };
        return finish(&inner, reply, &cors, &mut stopped).await;
    };

    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let encoding = encoding_of(&content_type);
    let decoded = match (&body, encoding) {
        (Ok(bytes), Some(enc)) => Some(RoomRequest::decode(&method_name, enc, bytes)),
        _ => None,
    };
    let timeout_ms =
        parts.headers.get(TIMEOUT_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());

    let (claims, auth_outcome) = match &auth {
        AuthResult::NoToken => (None, AuthOutcome::NoToken),
        AuthResult::Verified { api_key, claims } => {
            (Some((**claims).clone()), AuthOutcome::Verified { api_key: api_key.clone() })
        }
        AuthResult::Rejected(message) => (None, AuthOutcome::Rejected { message: message.clone() }),
    };
    let fault = inner.take_fault(&method_name);
    let index = inner.record(RecordedCall {
        method: method_name.clone(),
        encoding,
        request: decoded.as_ref().and_then(|d| d.as_ref().ok().cloned()),
        claims: claims.clone(),
        auth: auth_outcome,
        timeout_ms,
        fault: fault.clone(),
        response: None,
    });

    let reply = if let Some(fault) = fault {
        match fault_reply(fault, encoding, &mut stopped).await {
            Some(reply) => reply,
            None => return stopped_response(),
        }
    } else if let AuthResult::Rejected(msg) = &auth {
        Reply::plain(401, msg)
    } else {
        match (encoding, decoded) {
            (None, _) => Reply::twirp(&TwirpError::bad_route(
                format!("unexpected Content-Type: {}", go_quote(&content_type)),
                "POST",
                &path,
            )),
            (Some(enc), _) if body.is_err() => Reply::twirp(&TwirpError::malformed(match enc {
                Encoding::Protobuf => "failed to read request body",
                Encoding::Json => JSON_MALFORMED,
            })),
            (Some(_), Some(Err(DecodeError::Malformed(msg)))) => Reply::twirp(&TwirpError::malformed(msg)),
            (Some(enc), Some(Ok(request))) => match serve_call(&inner, request, claims.as_ref(), enc) {
                Outcome::Ok(reply) => reply,
                Outcome::Err(err) => Reply::twirp(&err),
                Outcome::NoRoute => {
                    let (wait, err) = no_route(inner.no_route_delay(), timeout_ms);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => Reply::twirp(&err),
                        _ = stopped.changed() => return stopped_response(),
                    }
                }
                Outcome::Delayed(wait, err) => {
                    let (wait, err) = delayed(wait, err, timeout_ms);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => Reply::twirp(&err),
                        _ = stopped.changed() => return stopped_response(),
                    }
                }
            },
            (Some(_), None) => Reply::twirp(&TwirpError::malformed(JSON_MALFORMED)),
        }
    };

    inner.record_response(index, recorded_response(&reply));
    finish(&inner, reply, &cors, &mut stopped).await
}

fn recorded_response(reply: &Reply) -> RecordedResponse {
    let twirp_code = if reply.status != 200 && reply.content_type == "application/json" {
        serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
    } else {
        None
    };
    RecordedResponse { status: reply.status, twirp_code }
}

/// Applies the configured reply delay, then answers.
async fn finish(
    inner: &Inner,
    reply: Reply,
    cors: &[(header::HeaderName, HeaderValue)],
    stopped: &mut watch::Receiver<u64>,
) -> Response {
    let delay = inner.delay();
    if !delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return stopped_response(),
        }
    }
    reply.into_response(cors)
}

/// What a handler cut short by `stop()` returns; its connection is already
/// shut down, so nobody reads it.
fn stopped_response() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

async fn fault_reply(fault: Fault, encoding: Option<Encoding>, stopped: &mut watch::Receiver<u64>) -> Option<Reply> {
    Some(match fault {
        Fault::Twirp { code, msg } => Reply::twirp(&TwirpError::new(&code, msg)),
        Fault::PlainUnauthorized => Reply::plain(401, "invalid API key"),
        Fault::Http { status, body, content_type } => {
            let mut reply = Reply::plain(status, &body);
            reply.content_type = "";
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                reply.extra.push((header::CONTENT_TYPE, v));
            }
            reply
        }
        Fault::MuteWithoutTrack => Reply::message(
            "MuteRoomTrackResponse",
            &proto::MuteRoomTrackResponse { track: None },
            encoding.unwrap_or(Encoding::Protobuf),
        ),
        Fault::Hang => {
            let _ = stopped.changed().await;
            return None;
        }
    })
}

/// The mux for everything that is not a POST to a routed Twirp method.
fn route_other(method: &Method, path: &str) -> Reply {
    if path == "/" {
        // the health check of a node whose stats are fresh
        return Reply::plain(200, "OK");
    }
    if let Some((prefix, _)) = SERVICES.iter().find(|(prefix, _)| path == prefix.trim_end_matches('/')) {
        // ServeMux redirects a subtree root named without its trailing slash
        let mut reply = Reply::plain(301, "");
        reply.content_type = "";
        reply.extra.push((header::LOCATION, HeaderValue::from_static(prefix)));
        return reply;
    }
    if route(path).is_some() {
        let err = if *method != Method::POST {
            TwirpError::bad_route(
                format!("unsupported method {} (only POST is allowed)", go_quote(method.as_str())),
                method.as_str(),
                path,
            )
        } else {
            TwirpError::bad_route(format!("no handler for path {}", go_quote(path)), method.as_str(), path)
        };
        return Reply::twirp(&err);
    }
    // http.NotFound
    let mut reply = Reply::plain(404, "404 page not found\n");
    reply.extra.push((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
    reply
}

/// The generated server's Content-Type switch: the part before `;`,
/// trimmed and lower-cased.
fn encoding_of(content_type: &str) -> Option<Encoding> {
    let base = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match base.as_str() {
        "application/json" => Some(Encoding::Json),
        "application/protobuf" => Some(Encoding::Protobuf),
        _ => None,
    }
}

/// Go's `%q` for the strings that appear in these messages.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// rs/cors as livekit-server configures it: any origin, methods OPTIONS
/// HEAD GET POST PATCH DELETE, any header, everything exposed, max age a day.
fn cors_headers(method: &Method, headers: &HeaderMap) -> Vec<(header::HeaderName, HeaderValue)> {
    const ALLOWED: &[&str] = &["OPTIONS", "HEAD", "GET", "POST", "PATCH", "DELETE"];
    let origin = headers.get(header::ORIGIN).cloned();
    let mut out = Vec::new();
    if *method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        out.push((
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ));
        let requested = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_uppercase();
        let Some(origin) = origin.filter(|o| !o.is_empty()) else {
            return out;
        };
        if !ALLOWED.contains(&requested.as_str()) {
            return out;
        }
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
        if let Ok(v) = HeaderValue::from_str(&requested) {
            out.push((header::ACCESS_CONTROL_ALLOW_METHODS, v));
        }
        if let Some(h) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        out.push((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400")));
        return out;
    }
    out.push((header::VARY, HeaderValue::from_static("Origin")));
    if let Some(origin) = origin.filter(|o| !o.is_empty())
        && ALLOWED.contains(&method.as_str())
    {
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
        out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*")));
    }
    out
}

/// The first value of a query parameter, form-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split(['&', ';']).find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k)? == name).then(|| form_decode(v)).flatten()
    })
}

fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The psrpc client's answer when no node serves a room or participant topic:
/// three attempts, each waiting one second (`DefaultAffinityTimeout`) for a
/// claim, then `ErrNoResponse`. A caller deadline (`X-Twirp-Timeout-Ms`) that
/// ends before the third attempt starts turns into `ErrRequestCanceled`.
/// `delay` is the total of the three attempts (3 s on a real server).
fn no_route(delay: Duration, timeout_ms: Option<i64>) -> (Duration, TwirpError) {
    let unavailable = TwirpError::psrpc("unavailable", "no response from servers");
    let canceled = TwirpError::psrpc("canceled", "request canceled");
    let attempt = delay / 3;
    match timeout_ms {
        None => (delay, unavailable),
        Some(ms) if ms <= 0 => (Duration::ZERO, canceled),
        Some(ms) => {
            let t = Duration::from_millis(ms as u64);
            if t <= attempt * 2 { (t, canceled) } else { (t.min(delay), unavailable) }
        }
    }
}

/// A psrpc call that fails after `wait`: a caller deadline that ends first
/// turns it into `ErrRequestCanceled` at the deadline.
fn delayed(wait: Duration, err: TwirpError, timeout_ms: Option<i64>) -> (Duration, TwirpError) {
    let canceled = TwirpError::psrpc("canceled", "request canceled");
    match timeout_ms {
        Some(ms) if ms <= 0 => (Duration::ZERO, canceled),
        Some(ms) if Duration::from_millis(ms as u64) < wait => (Duration::from_millis(ms as u64), canceled),
        _ => (wait, err),
    }
}

/// `EnsureRecordPermission`: roomRecord, any room.
fn require_record(claims: Option<&Claims>) -> Result<(), TwirpError> {
    match claims {
        Some(c) if c.video.room_record => Ok(()),
        _ => Err(TwirpError::permission_denied()),
    }
}

fn require_create(claims: Option<&Claims>) -> Result<(), TwirpError> {
    match claims {
        Some(c) if c.video.room_create => Ok(()),
        _ => Err(TwirpError::permission_denied()),
    }
}

fn require_list(claims: Option<&Claims>) -> Result<(), TwirpError> {
    match claims {
        Some(c) if c.video.room_list => Ok(()),
        _ => Err(TwirpError::permission_denied()),
    }
}

/// `EnsureAdminPermission`: roomAdmin, and the grant's room is the request's.
fn require_admin(claims: Option<&Claims>, room: &str) -> Result<(), TwirpError> {
    match claims {
        Some(c) if c.video.room_admin && c.video.room == room => Ok(()),
        _ => Err(TwirpError::permission_denied()),
    }
}

fn require_destination(claims: Option<&Claims>, room: &str, destination: &str) -> Result<(), TwirpError> {
    match claims {
        Some(c) if c.video.room_admin && c.video.room == room && c.video.destination_room == destination => Ok(()),
        _ => Err(TwirpError::permission_denied()),
    }
}

/// `LimitConfig` defaults.
const MAX_NAME_LENGTH: usize = 256;
const MAX_METADATA_SIZE: usize = 512 * 1024;
const MAX_ATTRIBUTES_SIZE: usize = 64 * 1024;

fn metadata_too_large() -> TwirpError {
    TwirpError::invalid_argument("metadata size exceeds limits", &MAX_METADATA_SIZE.to_string())
}

fn attributes_too_large() -> TwirpError {
    TwirpError::invalid_argument("attribute size exceeds limits", &MAX_ATTRIBUTES_SIZE.to_string())
}

fn attributes_size(attributes: &HashMap<String, String>) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The RoomService handlers (`pkg/service/roomservice.go`), checks in the
/// real order, with the room manager's behaviour behind psrpc
/// (`pkg/service/roommanager.go`).
fn serve_call(inner: &Inner, request: RoomRequest, claims: Option<&Claims>, enc: Encoding) -> Outcome {
    use crate::egress::StartRequest as S;
    // under the state lock, which also queues the webhooks the call raises
    inner.with_state(|state, now| {
        let start = |state: &mut LiveState, req: S| start_egress(inner, state, now, req, claims, enc);
        match request {
            RoomRequest::StartRoomCompositeEgress(r) => start(state, S::RoomComposite(r)),
            RoomRequest::StartWebEgress(r) => start(state, S::Web(r)),
            RoomRequest::StartParticipantEgress(r) => start(state, S::Participant(r)),
            RoomRequest::StartTrackCompositeEgress(r) => start(state, S::TrackComposite(r)),
            RoomRequest::StartTrackEgress(r) => start(state, S::Track(r)),
            request @ (RoomRequest::StartEgress(_)
            | RoomRequest::UpdateLayout(_)
            | RoomRequest::UpdateStream(_)
            | RoomRequest::ListEgress(_)
            | RoomRequest::StopEgress(_)
            | RoomRequest::CreateDispatch(_)
            | RoomRequest::DeleteDispatch(_)
            | RoomRequest::ListDispatch(_)) => {
                other_service(inner, state, now, request, claims, enc).unwrap_or_else(Outcome::Err)
            }
            request => match run_locked(inner, state, now, request, claims, enc) {
                Ok(Some(reply)) => Outcome::Ok(reply),
                Ok(None) => Outcome::NoRoute,
                Err(e) => Outcome::Err(e),
            },
        }
    })
}

fn no_response() -> TwirpError {
    TwirpError::psrpc("unavailable", "no response from servers")
}

/// `EgressService.startEgress` and the launcher: the grant, the room
/// (`LoadRoom`, when the request names one), then the worker.
fn start_egress(
    inner: &Inner,
    state: &mut LiveState,
    now: SystemTime,
    request: crate::egress::StartRequest,
    claims: Option<&Claims>,
    enc: Encoding,
) -> Outcome {
    if let Err(e) = require_record(claims) {
        return Outcome::Err(e);
    }
    let room = request.room_name();
    if !room.is_empty() && !state.room_exists(room) {
        return Outcome::Err(TwirpError::room_not_found());
    }
    if !state.egress_worker {
        // the StartEgress retries find no worker to claim it
        return Outcome::Delayed(inner.timing().egress_start_unavailable, no_response());
    }
    match state.start_egress(request, now) {
        Ok(info) => Outcome::Ok(Reply::message("EgressInfo", &info, enc)),
        Err(e) => Outcome::Err(e),
    }
}

/// The rest of `livekit.Egress` and `livekit.AgentDispatchService`.
fn other_service(
    inner: &Inner,
    state: &mut LiveState,
    now: SystemTime,
    request: RoomRequest,
    claims: Option<&Claims>,
    enc: Encoding,
) -> Result<Outcome, TwirpError> {
    use crate::egress::{egress_not_connected, egress_not_found};
    let timing = inner.timing();
    // one psrpc selection (`DefaultAffinityTimeout`, 1 s) for a handler
    // that is not there
    let selection = inner.no_route_delay() / 3;
    let later = |r: Result<proto::EgressInfo, (bool, TwirpError)>| match r {
        Ok(info) => Ok(Outcome::Ok(Reply::message("EgressInfo", &info, enc))),
        Err((true, e)) => Ok(Outcome::Delayed(selection, e)),
        Err((false, e)) => Err(e),
    };
    Ok(Outcome::Ok(match request {
        RoomRequest::StartEgress(_) => {
            require_record(claims)?;
            return Err(unimplemented("StartEgress"));
        }
        RoomRequest::ListEgress(req) => {
            require_record(claims)?;
            if !state.egress_worker {
                return Err(egress_not_connected());
            }
            let items = state.list_egress(&req)?;
            Reply::message("ListEgressResponse", &proto::ListEgressResponse { items, next_page_token: None }, enc)
        }
        RoomRequest::UpdateLayout(req) => {
            require_record(claims)?;
            if !state.egress_worker {
                return Err(egress_not_connected());
            }
            let Some(e) = state.egress(&req.egress_id) else {
                return Err(egress_not_found());
            };
            let info = e.info.clone();
            // UpdateParticipant of the egress's participant (identity = id)
            let running = info.status <= proto::EgressStatus::EgressEnding as i32 && !e.killed;
            if !running || !state.room_exists(&info.room_name) {
                return Err(TwirpError::participant_not_found());
            }
            Reply::message("EgressInfo", &info, enc)
        }
        RoomRequest::UpdateStream(req) => {
            require_record(claims)?;
            if !state.egress_worker {
                return Ok(Outcome::Delayed(timing.egress_stop_unavailable, egress_not_connected()));
            }
            return later(state.update_stream(&req, now));
        }
        RoomRequest::StopEgress(req) => {
            require_record(claims)?;
            if !state.egress_worker {
                return Ok(Outcome::Delayed(timing.egress_stop_unavailable, egress_not_connected()));
            }
            return later(state.stop_egress(&req.egress_id, now));
        }
        RoomRequest::CreateDispatch(req) => {
            require_admin(claims, &req.room)?;
            if req.metadata.len() > MAX_METADATA_SIZE {
                return Err(metadata_too_large());
            }
            if attributes_size(&req.attributes) > MAX_ATTRIBUTES_SIZE {
                return Err(attributes_too_large());
            }
            Reply::message("AgentDispatch", &state.create_dispatch(&req, now), enc)
        }
        RoomRequest::ListDispatch(req) => {
            require_admin(claims, &req.room)?;
            match state.list_dispatch(&req.room, &req.dispatch_id) {
                Some(agent_dispatches) => Reply::message(
                    "ListAgentDispatchResponse",
                    &proto::ListAgentDispatchResponse { agent_dispatches },
                    enc,
                ),
                None => return Ok(Outcome::Delayed(timing.dispatch_unavailable, no_response())),
            }
        }
        RoomRequest::DeleteDispatch(req) => {
            require_admin(claims, &req.room)?;
            match state.delete_dispatch(&req.room, &req.dispatch_id) {
                Some(Ok(dispatch)) => Reply::message("AgentDispatch", &dispatch, enc),
                Some(Err(e)) => return Err(e),
                None => return Ok(Outcome::Delayed(timing.dispatch_unavailable, no_response())),
            }
        }
        _ => return Err(unimplemented(request.method())),
    }))
}

fn run_locked(
    inner: &Inner,
    state: &mut LiveState,
    now: SystemTime,
    request: RoomRequest,
    claims: Option<&Claims>,
    enc: Encoding,
) -> Result<Option<Reply>, TwirpError> {
    Ok(Some(match request {
        RoomRequest::CreateRoom(req) => {
            require_create(claims)?;
            if req.name.len() > MAX_NAME_LENGTH {
                return Err(TwirpError::psrpc(
                    "invalid_argument",
                    &format!("room name length exceeds limits: max length {MAX_NAME_LENGTH}"),
                ));
            }
            if req.metadata.len() > MAX_METADATA_SIZE {
                return Err(metadata_too_large());
            }
            for agent in &req.agents {
                if agent.metadata.len() > MAX_METADATA_SIZE {
                    return Err(metadata_too_large());
                }
                if attributes_size(&agent.attributes) > MAX_ATTRIBUTES_SIZE {
                    return Err(attributes_too_large());
                }
            }
            Reply::message("Room", &state.create_room(&req, now), enc)
        }
        RoomRequest::ListRooms(req) => {
            require_list(claims)?;
            let rooms = state.list_rooms(&req.names);
            Reply::message("ListRoomsResponse", &proto::ListRoomsResponse { rooms }, enc)
        }
        RoomRequest::DeleteRoom(req) => {
            require_create(claims)?;
            if !state.delete_room(&req.room, now) {
                return Err(TwirpError::room_not_found());
            }
            Reply::message("DeleteRoomResponse", &proto::DeleteRoomResponse {}, enc)
        }
        RoomRequest::ListParticipants(req) => {
            require_admin(claims, &req.room)?;
            let participants = state.list_participants(&req.room);
            Reply::message("ListParticipantsResponse", &proto::ListParticipantsResponse { participants }, enc)
        }
        RoomRequest::GetParticipant(req) => {
            require_admin(claims, &req.room)?;
            match state.participant(&req.room, &req.identity) {
                Some(p) => Reply::message("ParticipantInfo", &p, enc),
                None => return Err(TwirpError::participant_not_found()),
            }
        }
        RoomRequest::RemoveParticipant(req) => {
            require_admin(claims, &req.room)?;
            if state.remove_participant(&req.room, &req.identity, Departure::Removed, now).is_none() {
                return Err(TwirpError::participant_not_found());
            }
            Reply::message("RemoveParticipantResponse", &proto::RemoveParticipantResponse {}, enc)
        }
        RoomRequest::MutePublishedTrack(req) => {
            require_admin(claims, &req.room)?;
            if !state.has_participant(&req.room, &req.identity) {
                return Ok(None);
            }
            if !req.muted && !inner.remote_unmute {
                return Err(TwirpError::psrpc("failed_precondition", "remote unmute not enabled"));
            }
            let track = state.mute_track(&req.room, &req.identity, &req.track_sid, req.muted);
            Reply::message("MuteRoomTrackResponse", &proto::MuteRoomTrackResponse { track }, enc)
        }
        RoomRequest::UpdateParticipant(req) => {
            if req.name.len() > MAX_NAME_LENGTH {
                return Err(TwirpError::invalid_argument("name length exceeds limits", &MAX_NAME_LENGTH.to_string()));
            }
            if req.metadata.len() > MAX_METADATA_SIZE {
                return Err(metadata_too_large());
            }
            if attributes_size(&req.attributes) > MAX_ATTRIBUTES_SIZE {
                return Err(attributes_too_large());
            }
            require_admin(claims, &req.room)?;
            match state.update_participant(&req, now) {
                Some(p) => Reply::message("ParticipantInfo", &p, enc),
                None => return Err(TwirpError::participant_not_found()),
            }
        }
        RoomRequest::UpdateSubscriptions(req) => {
            require_admin(claims, &req.room)?;
            if !state.has_participant(&req.room, &req.identity) {
                return Ok(None);
            }
            Reply::message("UpdateSubscriptionsResponse", &proto::UpdateSubscriptionsResponse {}, enc)
        }
        RoomRequest::SendData(req) => {
            require_admin(claims, &req.room)?;
            if !req.nonce.is_empty() && req.nonce.len() != 16 {
                return Err(TwirpError::new(
                    "invalid_argument",
                    format!("nonce should be 16-bytes or not present, got: {} bytes", req.nonce.len()),
                ));
            }
            if !state.room_exists(&req.room) {
                return Ok(None);
            }
            Reply::message("SendDataResponse", &proto::SendDataResponse {}, enc)
        }
        RoomRequest::UpdateRoomMetadata(req) => {
            if req.metadata.len() > MAX_METADATA_SIZE {
                return Err(metadata_too_large());
            }
            require_admin(claims, &req.room)?;
            match state.update_room_metadata(&req.room, &req.metadata) {
                Some(room) => Reply::message("Room", &room, enc),
                None => return Err(TwirpError::room_not_found()),
            }
        }
        RoomRequest::ForwardParticipant(req) => {
            require_destination(claims, &req.room, &req.destination_room)?;
            return Err(unimplemented("ForwardParticipant"));
        }
        RoomRequest::MoveParticipant(req) => {
            require_destination(claims, &req.room, &req.destination_room)?;
            return Err(unimplemented("MoveParticipant"));
        }
        RoomRequest::PerformRpc(req) => {
            require_admin(claims, &req.room)?;
            return Err(unimplemented("PerformRpc"));
        }
        other => return Err(unimplemented(other.method())),
    }))
}

fn unimplemented(method: &str) -> TwirpError {
    TwirpError::new("unimplemented", format!("livekit-standin does not implement {method}"))
}

/// Registry of the open connections, so `stop()` can shut them all down.
#[derive(Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Connections {
    pub(crate) fn shutdown_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, stream) in open {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A TCP listener whose connections can all be shut down at once.
pub(crate) struct TrackedListener {
    pub(crate) listener: TcpListener,
    pub(crate) connections: Arc<Connections>,
}

/// An accepted connection; it leaves the registry when hyper drops it.
pub(crate) struct TrackedStream {
    stream: TcpStream,
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl TrackedListener {
    fn track(&self, stream: TcpStream) -> io::Result<TrackedStream> {
        let _ = stream.set_nodelay(true);
        let std_stream = stream.into_std()?;
        let handle = std_stream.try_clone()?;
        let stream = TcpStream::from_std(std_stream)?;
        let id = self.connections.next.fetch_add(1, Ordering::Relaxed);
        self.connections.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, handle);
        Ok(TrackedStream { stream, id, connections: self.connections.clone() })
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match self.track(stream) {
                    Ok(tracked) => return (tracked, addr),
                    Err(e) => tracing::warn!("livekit-standin: could not track a connection: {e}"),
                },
                Err(e) => {
                    tracing::warn!("livekit-standin: accept failed: {e}");
                    // e.g. out of file descriptors: back off as axum does
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Binds with SO_REUSEADDR, so `restart()` gets the same port back even with
/// the previous server's connections in TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_waits_three_attempts_or_until_the_deadline() {
        let d = Duration::from_secs(3);
        let (wait, err) = no_route(d, None);
        assert_eq!(wait, d);
        assert_eq!(err.code, "unavailable");
        assert_eq!(err.msg, "twirp error unknown: no response from servers");
        let (wait, err) = no_route(d, Some(1500));
        assert_eq!(wait, Duration::from_millis(1500));
        assert_eq!(err.code, "canceled");
        let (wait, err) = no_route(d, Some(2500));
        assert_eq!(wait, Duration::from_millis(2500));
        assert_eq!(err.code, "unavailable");
    }

    #[test]
    fn query_tokens_are_form_decoded() {
        assert_eq!(query_param("a=1&access_token=x%2By+z", "access_token").as_deref(), Some("x+y z"));
        assert_eq!(query_param("a=1", "access_token"), None);
    }
}
