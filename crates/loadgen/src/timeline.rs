//! The timeline's measurements: LiveKit's webhooks into RoomControl's
//! intake (`loadgen webhooks`), and the same webhooks fanned out to many
//! WatchEvents streams (`loadgen watch`).
//!
//! Every webhook is a distinct LiveKit event (its own `id`), written as
//! LiveKit's Go protojson and signed as LiveKit signs it
//! ([`livekit_standin::webhook_body`], [`livekit_standin::sign_webhook`]),
//! and counts only when answered 200 "stored": a 200 "already stored" (a
//! duplicate) is an error here, as is any other status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use livekit_protocol as lk;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::client::{CallError, H1Connection, H2Connection};
use crate::procfs;
use crate::record::{ErrorKind, FanoutRecord, Labels, StoreCpu, TimelineSample, WebhookRecord};
use crate::run::{elapsed_nanos, latency, new_histogram, sample};

/// The gRPC path of WatchEvents.
const WATCH_PATH: &str = "/roomcontrol.v1.RoomControl/WatchEvents";

/// Rooms the webhooks are spread over.
const ROOMS: u64 = 100;

/// Where to send webhooks, and with which key.
#[derive(Debug, Clone)]
pub struct Intake {
    pub addr: SocketAddr,
    /// `host:port`, for the Host header.
    pub authority: String,
    /// The webhook path (`events.webhook_path`).
    pub path: String,
    pub api_key: String,
    pub api_secret: String,
}

impl Intake {
    fn request(&self, signed: &Signed) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::new(Full::new(signed.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.parse::<Uri>().map_err(|e| format!("bad webhook path: {e}"))?;
        let headers = request.headers_mut();
        headers.insert(HOST, HeaderValue::from_str(&self.authority).map_err(|e| format!("bad authority: {e}"))?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(livekit_standin::WEBHOOK_CONTENT_TYPE));
        headers.insert(AUTHORIZATION, signed.authorization.clone());
        Ok(request)
    }

    fn sign(&self, event: &lk::WebhookEvent) -> Signed {
        let body = livekit_standin::webhook_body(event);
        let token = livekit_standin::sign_webhook(&self.api_key, &self.api_secret, &body);
        Signed {
            body: Bytes::from(body),
            authorization: HeaderValue::from_str(&token).expect("a JWT is a valid header value"),
        }
    }
}

/// A webhook ready to send: its exact bytes and its `Authorization`.
#[derive(Clone)]
struct Signed {
    body: Bytes,
    authorization: HeaderValue,
}

/// Sends one webhook and checks that it was stored now (not before).
async fn post(connection: &mut H1Connection, request: Request<Full<Bytes>>) -> Result<(), CallError> {
    let (status, _, body) = connection.exchange(request).await?;
    let text = String::from_utf8_lossy(&body);
    match status {
        StatusCode::OK if text.starts_with("stored") => Ok(()),
        StatusCode::OK => Err(CallError::new("duplicate", text.trim())),
        status => Err(CallError::new(format!("http {}", status.as_u16()), text.trim())),
    }
}

/// A tag no other run shares, so that no two runs send the same event id
/// (RoomControl would answer the second "already stored").
fn run_tag() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos % (1 << 40), std::process::id())
}

fn unix_now() -> (i64, i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_secs() as i64, now.as_millis() as i64)
}

/// The room a participant is in, as LiveKit's room events carry it.
fn room(run: &str, participant: u64, participants_now: u32) -> lk::Room {
    let (secs, millis) = unix_now();
    let number = participant % ROOMS;
    lk::Room {
        sid: format!("RM_{run}r{number}"),
        name: format!("bench-room-{number}"),
        empty_timeout: 300,
        departure_timeout: 20,
        creation_time: secs,
        creation_time_ms: millis,
        turn_password: "bench-turn-password".to_owned(),
        enabled_codecs: ["audio/opus", "audio/red", "video/VP8", "video/H264", "video/VP9", "video/AV1"]
            .iter()
            .map(|mime| lk::Codec { mime: (*mime).to_owned(), fmtp_line: String::new() })
            .collect(),
        num_participants: participants_now,
        ..Default::default()
    }
}

/// A participant as LiveKit's participant events carry it.
fn participant(run: &str, number: u64, name: String, active: bool) -> lk::ParticipantInfo {
    let (secs, millis) = unix_now();
    let state = if active { lk::participant_info::State::Active } else { lk::participant_info::State::Disconnected };
    lk::ParticipantInfo {
        sid: format!("PA_{run}p{number}"),
        identity: format!("user-{number}"),
        name,
        state: state as i32,
        joined_at: secs,
        joined_at_ms: millis,
        version: if active { 1 } else { 2 },
        permission: Some(lk::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            ..Default::default()
        }),
        kind: lk::participant_info::Kind::Standard as i32,
        disconnect_reason: if active { 0 } else { lk::DisconnectReason::ClientInitiated as i32 },
        ..Default::default()
    }
}

/// The `index`-th webhook of an intake run. Four per participant, as a
/// participant's life goes: participant_joined, track_published,
/// track_unpublished, participant_left (track events carry the room's and
/// participant's ids only, as LiveKit's do).
fn intake_event(run: &str, index: u64) -> lk::WebhookEvent {
    let number = index / 4;
    let minimal_room = || {
        let full = room(run, number, 0);
        lk::Room { sid: full.sid, name: full.name, ..Default::default() }
    };
    let minimal_participant = || {
        let full = participant(run, number, String::new(), true);
        lk::ParticipantInfo { sid: full.sid, identity: full.identity, ..Default::default() }
    };
    let track = || lk::TrackInfo {
        sid: format!("TR_{run}t{number}"),
        r#type: lk::TrackType::Video as i32,
        name: "camera".to_owned(),
        width: 1280,
        height: 720,
        source: lk::TrackSource::Camera as i32,
        mime_type: "video/VP8".to_owned(),
        mid: "1".to_owned(),
        ..Default::default()
    };
    let display = format!("Bench User {number}");
    let (event, room, participant, track) = match index % 4 {
        0 => ("participant_joined", room(run, number, 1), participant(run, number, display, true), None),
        1 => ("track_published", minimal_room(), minimal_participant(), Some(track())),
        2 => ("track_unpublished", minimal_room(), minimal_participant(), Some(track())),
        _ => ("participant_left", room(run, number, 0), participant(run, number, display, false), None),
    };
    lk::WebhookEvent {
        event: event.to_owned(),
        room: Some(room),
        participant: Some(participant),
        track,
        id: format!("EV_{run}i{index}"),
        created_at: unix_now().0,
        ..Default::default()
    }
}

/// The `seq`-th webhook of a fan-out run: participant_joined and
/// participant_left in turn, the participant's name carrying the stamp.
fn fanout_event(run: &str, seq: u64, stamp: String) -> lk::WebhookEvent {
    let number = seq / 2;
    let joined = seq.is_multiple_of(2);
    lk::WebhookEvent {
        event: if joined { "participant_joined" } else { "participant_left" }.to_owned(),
        room: Some(room(run, number, u32::from(joined))),
        participant: Some(participant(run, number, stamp, joined)),
        id: format!("EV_{run}f{seq}"),
        created_at: unix_now().0,
        ..Default::default()
    }
}

/// The stamp a fan-out webhook carries in its participant's name: its
/// sequence number and when it was sent, in nanoseconds since the load
/// generator's epoch.
fn stamp(seq: u64, sent_ns: u64) -> String {
    format!("bench {seq} {sent_ns}")
}

fn parse_stamp(name: &str) -> Option<(u64, u64)> {
    let mut parts = name.strip_prefix("bench ")?.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((seq, sent))
}

/// Failures by kind, with one example each.
#[derive(Default)]
struct Errors(BTreeMap<String, ErrorKind>);

impl Errors {
    fn add(&mut self, error: CallError) {
        self.0.entry(error.kind).or_insert(ErrorKind { count: 0, example: error.detail }).count += 1;
    }

    fn merge(&mut self, other: Errors) {
        for (kind, error) in other.0 {
            self.0.entry(kind).or_insert(ErrorKind { count: 0, example: error.example }).count += error.count;
        }
    }

    fn total(&self) -> u64 {
        self.0.values().map(|error| error.count).sum()
    }
}

/// The processes whose command line contains `pattern` (PostgreSQL's
/// backends show their database's name there), with their CPU seconds.
fn matching_processes(pattern: &str) -> BTreeMap<u32, f64> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return BTreeMap::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(pattern))
        })
        .filter_map(|pid| Some((pid, procfs::cpu_seconds(&pid.to_string())?)))
        .collect()
}

/// The store's processes' CPU time (those matching `store_match`) and
/// RoomControl's timeline metrics over the window `from..until`.
pub(crate) async fn sample_store(
    store_match: Option<String>,
    metrics_url: Option<String>,
    from: Instant,
    until: Instant,
) -> (Option<StoreCpu>, Option<TimelineSample>) {
    tokio::time::sleep_until(from.into()).await;
    let started = Instant::now();
    let cpu_start = store_match.as_deref().map(matching_processes);
    let metrics_start = match &metrics_url {
        Some(url) => scrape(url).await.ok(),
        None => None,
    };
    tokio::time::sleep_until(until.into()).await;
    let window = started.elapsed().as_secs_f64();
    let store = match (store_match.as_deref(), cpu_start) {
        (Some(pattern), Some(start)) => {
            // A process that started in the window counts from zero.
            let end = matching_processes(pattern);
            let cpu_s = end.iter().map(|(pid, cpu)| cpu - start.get(pid).copied().unwrap_or(0.0)).sum::<f64>();
            Some(StoreCpu { pids: end.keys().copied().collect(), cpu_s, cpu_util: cpu_s / window })
        }
        _ => None,
    };
    let timeline = match (&metrics_url, metrics_start) {
        (Some(url), Some(start)) => scrape(url).await.ok().map(|end| timeline_delta(&start, &end)),
        _ => None,
    };
    (store, timeline)
}

/// Reads RoomControl's metrics (Prometheus text) into name{labels} -> value.
pub async fn scrape(url: &str) -> Result<BTreeMap<String, f64>, String> {
    let (addr, authority) = crate::parse_target(url)?;
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let path = uri.path_and_query().map_or("/metrics", |path| path.as_str()).to_owned();
    let mut connection = H1Connection::connect(addr).await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = path.parse().map_err(|e| format!("{e}"))?;
    request.headers_mut().insert(HOST, HeaderValue::from_str(&authority).map_err(|e| e.to_string())?);
    let (status, _, body) = connection.exchange(request).await.map_err(|e| format!("{url}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("{url} answered {status}"));
    }
    Ok(parse_metrics(&String::from_utf8_lossy(&body)))
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn timeline_delta(start: &BTreeMap<String, f64>, end: &BTreeMap<String, f64>) -> TimelineSample {
    let delta = |name: &str| end.get(name).copied().unwrap_or(0.0) - start.get(name).copied().unwrap_or(0.0);
    const WEBHOOKS: &str = "roomcontrol_webhooks_received_total{outcome=\"";
    let webhooks = end
        .keys()
        .filter_map(|name| {
            let outcome = name.strip_prefix(WEBHOOKS)?.strip_suffix("\"}")?;
            let moved = delta(name).round() as u64;
            (moved > 0).then(|| (outcome.to_owned(), moved))
        })
        .collect();
    TimelineSample {
        appended: delta("roomcontrol_events_appended_total").round() as u64,
        batches: delta("roomcontrol_event_append_batch_duration_seconds_count").round() as u64,
        batch_seconds: delta("roomcontrol_event_append_batch_duration_seconds_sum"),
        webhooks,
    }
}

/// A webhook intake run: `concurrency` connections, each sending its next
/// pre-signed webhook as soon as the last is answered.
#[derive(Debug, Clone)]
pub struct IntakeOptions {
    pub intake: Intake,
    pub target: String,
    pub store: String,
    pub concurrency: usize,
    /// Webhooks to sign before the run: enough for warm-up and window.
    pub events: u64,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_pid: Option<u32>,
    /// The store's processes: those whose command line contains this.
    pub store_match: Option<String>,
    pub metrics_url: Option<String>,
    pub labels: Labels,
}

pub async fn intake(options: IntakeOptions) -> Result<WebhookRecord, String> {
    let IntakeOptions {
        intake,
        target,
        store,
        concurrency,
        events,
        duration,
        warmup,
        server_pid,
        store_match,
        metrics_url,
        labels,
    } = options;
    if concurrency == 0 || events == 0 {
        return Err("concurrency and events must be at least 1".to_owned());
    }
    let run = run_tag();
    let signed: Vec<Signed> = (0..events).map(|index| intake.sign(&intake_event(&run, index))).collect();
    let body_bytes_mean = signed.iter().map(|s| s.body.len()).sum::<usize>() as f64 / signed.len() as f64;
    let signed = Arc::new(signed);
    let rss_before = server_pid.and_then(|pid| procfs::rss_kib(&pid.to_string()));
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections
            .push(H1Connection::connect(intake.addr).await.map_err(|e| format!("cannot connect to {target}: {e}"))?);
    }
    let intake = Arc::new(intake);
    let next = Arc::new(AtomicUsize::new(0));

    let started_at = Instant::now();
    let (from, until) = (started_at + warmup, started_at + warmup + duration);
    let sampler = tokio::spawn(sample(server_pid, from, until));
    let store_sampler = tokio::spawn(sample_store(store_match, metrics_url, from, until));
    let mut workers = JoinSet::new();
    for mut connection in connections {
        let (signed, next, intake) = (signed.clone(), next.clone(), intake.clone());
        workers.spawn(async move {
            let mut histogram = new_histogram();
            let mut errors = Errors::default();
            let mut ran_out = None;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let Some(webhook) = signed.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    ran_out = Some(started);
                    break;
                };
                let result = match intake.request(webhook) {
                    Ok(request) => post(&mut connection, request).await,
                    Err(error) => Err(CallError::new("request", error)),
                };
                match result {
                    Ok(()) if started >= from => histogram.saturating_record(elapsed_nanos(started)),
                    Ok(()) => {}
                    Err(error) => errors.add(error),
                }
            }
            (histogram, errors, ran_out)
        });
    }
    let mut histogram = new_histogram();
    let mut errors = Errors::default();
    let mut ran_out: Option<Instant> = None;
    while let Some(worker) = workers.join_next().await {
        let (h, e, out) = worker.map_err(|e| format!("a worker failed: {e}"))?;
        histogram.add(&h).map_err(|e| format!("cannot merge histograms: {e}"))?;
        errors.merge(e);
        ran_out = match (ran_out, out) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if ran_out.is_some_and(|at| at <= from) {
        return Err(format!("the {events} pre-signed webhooks ran out during the warm-up: sign more (--events)"));
    }
    // Out of webhooks early: the window ends there (the samplers still
    // cover the whole window; the server was idle after).
    let window = ran_out.map_or(duration, |at| at.min(until) - from).as_secs_f64();
    let (client_cpu_util, server) = sampler.await.map_err(|e| format!("the sampler failed: {e}"))?;
    let (store_cpu, timeline) = store_sampler.await.map_err(|e| format!("the sampler failed: {e}"))?;
    let stored = histogram.len();
    let server = server.map(|mut server| {
        server.cpu_us_per_call = if stored == 0 { 0.0 } else { server.cpu_s * 1e6 / stored as f64 };
        server.rss_kib_before = rss_before;
        server.rss_kib_peak = procfs::peak_rss_kib(&server.pid.to_string()).map(|peak| peak.max(server.rss_kib_max));
        server
    });
    Ok(WebhookRecord {
        labels,
        target,
        store,
        concurrency,
        duration_s: window,
        warmup_s: warmup.as_secs_f64(),
        presigned: events,
        ran_out: ran_out.is_some_and(|at| at < until),
        body_bytes_mean,
        events: stored,
        events_per_s: stored as f64 / window,
        errors: errors.total(),
        error_kinds: errors.0,
        latency_us: latency(&histogram),
        client_cpu_util,
        server,
        store_cpu,
        timeline,
    })
}

/// What a watcher decodes of each WatchEvents reply: the event's cursor
/// and its participant's name, the rest skipped unread (the load generator
/// decodes every reply of a thousand streams on one core).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LightWatchReply {
    #[prost(message, optional, tag = "1")]
    pub event: Option<LightEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LightEvent {
    #[prost(uint64, tag = "1")]
    pub cursor: u64,
    #[prost(message, optional, tag = "8")]
    pub participant: Option<LightParticipant>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LightParticipant {
    #[prost(string, tag = "3")]
    pub name: String,
}

/// A fan-out run: `watchers` WatchEvents streams on `watch_connections`
/// HTTP/2 connections, then webhooks at `rate` per second.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub intake: Intake,
    pub target: String,
    pub watchers: usize,
    pub watch_connections: usize,
    pub rate: f64,
    pub webhook_connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// After the window, the longest wait for the last deliveries.
    pub drain: Duration,
    pub server_pid: Option<u32>,
    pub metrics_url: Option<String>,
    pub labels: Labels,
}

/// What every watcher records, shared (one thread: the lock is never
/// contended).
struct Deliveries {
    from_send: Histogram<u64>,
    from_answer: Histogram<u64>,
    /// Deliveries of measured events.
    measured: u64,
    before_answer: u64,
    /// Deliveries of any event that arrived in the window.
    in_window: u64,
    /// When the last measured delivery arrived, in ns since the epoch.
    last_ns: u64,
    /// Streams that ended, by why.
    ended: BTreeMap<String, u64>,
}

struct Shared {
    epoch: Instant,
    /// When each webhook's 200 arrived, in ns since `epoch` (0: not yet).
    answered: Vec<AtomicU64>,
    /// When each webhook was sent (its stamp), and how many watchers it
    /// reached.
    sent: Vec<AtomicU64>,
    reached: Vec<AtomicU64>,
    /// The sequence numbers due in the measured window.
    measured: std::ops::Range<u64>,
    /// The measured window in ns since `epoch`; empty until the webhooks start.
    window_from: AtomicU64,
    window_until: AtomicU64,
    deliveries: Mutex<Deliveries>,
}

impl Shared {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    fn delivered(&self, name: &str) {
        let Some((seq, sent_ns)) = parse_stamp(name) else { return };
        let now_ns = self.now_ns();
        let answered = self.answered.get(seq as usize).map_or(0, |at| at.load(Ordering::Acquire));
        if let Some(reached) = self.reached.get(seq as usize) {
            reached.fetch_add(1, Ordering::Relaxed);
        }
        let window = self.window_from.load(Ordering::Acquire)..self.window_until.load(Ordering::Acquire);
        let mut deliveries = self.deliveries.lock().expect("never poisoned");
        if window.contains(&now_ns) {
            deliveries.in_window += 1;
        }
        if !self.measured.contains(&seq) {
            return;
        }
        deliveries.measured += 1;
        deliveries.last_ns = deliveries.last_ns.max(now_ns);
        deliveries.from_send.saturating_record(now_ns.saturating_sub(sent_ns).max(1));
        if answered == 0 {
            deliveries.before_answer += 1;
            deliveries.from_answer.saturating_record(1);
        } else {
            deliveries.from_answer.saturating_record(now_ns.saturating_sub(answered).max(1));
        }
    }

    fn ended(&self, why: String) {
        *self.deliveries.lock().expect("never poisoned").ended.entry(why).or_default() += 1;
    }
}

/// One watcher: opens its stream (live events only), says so, and records
/// every event until the stream ends or the run does.
async fn watch(connection: H2Connection, origin: Uri, shared: Arc<Shared>, ready: Arc<(AtomicUsize, Notify)>) {
    let mut grpc = tonic::client::Grpc::with_origin(connection, origin);
    let opened = async {
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<crate::proto::WatchEventsRequest, LightWatchReply>::default();
        let request = tonic::Request::new(crate::proto::WatchEventsRequest::default());
        grpc.server_streaming(request, PathAndQuery::from_static(WATCH_PATH), codec).await
    };
    // The response's headers come once the server has subscribed the
    // stream to the live feed.
    let result = opened.await;
    let mut stream = match result {
        Ok(response) => {
            ready.0.fetch_add(1, Ordering::AcqRel);
            ready.1.notify_one();
            response.into_inner()
        }
        Err(status) => {
            shared.ended(format!("not opened: grpc {:?}: {}", status.code(), status.message()));
            ready.1.notify_one();
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(reply)) => {
                if let Some(participant) = reply.event.and_then(|event| event.participant) {
                    shared.delivered(&participant.name);
                }
            }
            Ok(None) => return shared.ended("closed by the server".to_owned()),
            Err(status) => return shared.ended(format!("grpc {:?}", status.code())),
        }
    }
}

/// The webhooks' side of a fan-out run.
struct Sent {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    errors: Errors,
    /// Measured webhooks answered 200 "stored".
    stored: u64,
}

pub async fn fanout(options: FanoutOptions) -> Result<FanoutRecord, String> {
    let FanoutOptions {
        intake,
        target,
        watchers,
        watch_connections,
        rate,
        webhook_connections,
        duration,
        warmup,
        drain,
        server_pid,
        metrics_url,
        labels,
    } = options;
    if watchers == 0 || watch_connections == 0 || webhook_connections == 0 {
        return Err("watchers and connections must be at least 1".to_owned());
    }
    if !(rate.is_finite() && rate > 0.0) {
        return Err("the rate must be a positive number of webhooks per second".to_owned());
    }
    let run: Arc<str> = run_tag().into();
    let interval_ns = 1e9 / rate;
    let seq_at = |offset: Duration| (offset.as_nanos() as f64 / interval_ns).ceil() as u64;
    let total = seq_at(warmup + duration);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        answered: (0..total).map(|_| AtomicU64::new(0)).collect(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        reached: (0..total).map(|_| AtomicU64::new(0)).collect(),
        measured: seq_at(warmup)..total,
        window_from: AtomicU64::new(u64::MAX),
        window_until: AtomicU64::new(u64::MAX),
        deliveries: Mutex::new(Deliveries {
            from_send: new_histogram(),
            from_answer: new_histogram(),
            measured: 0,
            before_answer: 0,
            in_window: 0,
            last_ns: 0,
            ended: BTreeMap::new(),
        }),
    });

    // Every stream open before the first webhook.
    let setup = Instant::now();
    let origin: Uri = format!("http://{}", intake.addr).parse().map_err(|e| format!("{e}"))?;
    let mut h2 = Vec::with_capacity(watch_connections);
    for _ in 0..watch_connections {
        h2.push(H2Connection::connect(intake.addr).await.map_err(|e| format!("cannot connect to {target}: {e}"))?);
    }
    let ready = Arc::new((AtomicUsize::new(0), Notify::new()));
    let mut streams = JoinSet::new();
    for index in 0..watchers {
        let connection = h2[index % watch_connections].clone();
        streams.spawn(watch(connection, origin.clone(), shared.clone(), ready.clone()));
    }
    let opened_by = setup + Duration::from_secs(60);
    loop {
        let failed: u64 = shared.deliveries.lock().expect("never poisoned").ended.values().sum();
        if failed > 0 {
            let ended = shared.deliveries.lock().expect("never poisoned").ended.clone();
            return Err(format!("{failed} of {watchers} streams did not open or ended at once: {ended:?}"));
        }
        if ready.0.load(Ordering::Acquire) == watchers {
            break;
        }
        tokio::select! {
            () = ready.1.notified() => {}
            () = tokio::time::sleep_until(opened_by.into()) => {
                return Err(format!("only {} of {watchers} streams opened within 60 s", ready.0.load(Ordering::Acquire)));
            }
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();

    // The webhooks: an open loop, each on an idle connection.
    let (idle_tx, mut idle_rx) = mpsc::channel(webhook_connections);
    for _ in 0..webhook_connections {
        let connection =
            H1Connection::connect(intake.addr).await.map_err(|e| format!("cannot connect to {target}: {e}"))?;
        idle_tx.send(connection).await.map_err(|_| "the connection pool closed".to_owned())?;
    }
    let intake = Arc::new(intake);
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + duration);
    shared.window_from.store(shared.ns(from), Ordering::Release);
    shared.window_until.store(shared.ns(until), Ordering::Release);
    let sampler = tokio::spawn(sample(server_pid, from, until));
    let store_sampler = tokio::spawn(sample_store(None, metrics_url, from, until));
    let mut sent = Sent { latency: new_histogram(), lag: new_histogram(), errors: Errors::default(), stored: 0 };
    let mut sends = JoinSet::new();
    // A send gives its seq, how long its answer took (timed in the task:
    // sends are reaped only between sends) and the outcome.
    let reap = |sent: &mut Sent, done: Result<(u64, u64, Result<(), CallError>), tokio::task::JoinError>| match done {
        Ok((seq, took_ns, result)) => match result {
            Ok(()) if shared.measured.contains(&seq) => {
                sent.latency.saturating_record(took_ns);
                sent.stored += 1;
            }
            Ok(()) => {}
            Err(error) => sent.errors.add(error),
        },
        Err(error) => sent.errors.add(CallError::new("panic", error)),
    };
    for seq in 0..total {
        let due = start + Duration::from_nanos((seq as f64 * interval_ns) as u64);
        tokio::time::sleep_until(due.into()).await;
        let mut connection = idle_rx.recv().await.ok_or("the connection pool closed")?;
        if shared.measured.contains(&seq) {
            sent.lag.saturating_record(elapsed_nanos(due));
        }
        let (intake, shared, idle_tx, run) = (intake.clone(), shared.clone(), idle_tx.clone(), run.clone());
        sends.spawn(async move {
            // Stamped, then signed: the signing is in the measured time.
            let sent_ns = shared.now_ns();
            shared.sent[seq as usize].store(sent_ns, Ordering::Release);
            let signed = intake.sign(&fanout_event(&run, seq, stamp(seq, sent_ns)));
            let started = Instant::now();
            let result = match intake.request(&signed) {
                Ok(request) => post(&mut connection, request).await,
                Err(error) => Err(CallError::new("request", error)),
            };
            let took_ns = elapsed_nanos(started);
            if result.is_ok() {
                shared.answered[seq as usize].store(shared.now_ns().max(1), Ordering::Release);
            }
            let _ = idle_tx.send(connection).await;
            (seq, took_ns, result)
        });
        while let Some(done) = sends.try_join_next() {
            reap(&mut sent, done);
        }
    }
    while let Some(done) = sends.join_next().await {
        reap(&mut sent, done);
    }

    // Then every measured event to every watcher still open, or the drain's end.
    let drained_by = Instant::now() + drain;
    loop {
        let (delivered, ended) = {
            let deliveries = shared.deliveries.lock().expect("never poisoned");
            (deliveries.measured, deliveries.ended.values().sum::<u64>())
        };
        let open = watchers as u64 - ended;
        if delivered >= sent.stored * open || Instant::now() >= drained_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    streams.abort_all();
    // What never came (a watcher cut off, or still behind at the drain's
    // end) counts as arriving now: the percentiles are then lower bounds.
    let end_ns = shared.now_ns();
    let mut undelivered = 0;
    {
        let mut deliveries = shared.deliveries.lock().expect("never poisoned");
        for seq in shared.measured.clone() {
            let index = seq as usize;
            let answered = shared.answered[index].load(Ordering::Acquire);
            let missing = (watchers as u64).saturating_sub(shared.reached[index].load(Ordering::Relaxed));
            if answered == 0 || missing == 0 {
                continue;
            }
            undelivered += missing;
            let since_sent = end_ns.saturating_sub(shared.sent[index].load(Ordering::Acquire)).max(1);
            deliveries.from_send.saturating_record_n(since_sent, missing);
            deliveries.from_answer.saturating_record_n(end_ns.saturating_sub(answered).max(1), missing);
        }
    }
    let (client_cpu_util, server) = sampler.await.map_err(|e| format!("the sampler failed: {e}"))?;
    let (_, timeline) = store_sampler.await.map_err(|e| format!("the sampler failed: {e}"))?;
    while streams.join_next().await.is_some() {}
    drop(h2);

    let deliveries = shared.deliveries.lock().expect("never poisoned");
    let in_window = deliveries.in_window;
    let server = server.map(|mut server| {
        server.cpu_us_per_call = if in_window == 0 { 0.0 } else { server.cpu_s * 1e6 / in_window as f64 };
        server.rss_kib_peak = procfs::peak_rss_kib(&server.pid.to_string()).map(|peak| peak.max(server.rss_kib_max));
        server
    });
    let until_ns = shared.ns(until);
    Ok(FanoutRecord {
        labels,
        target,
        watchers,
        watch_connections,
        rate,
        webhook_connections,
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        events: sent.stored,
        webhook_errors: sent.errors.total(),
        error_kinds: sent.errors.0,
        webhook_latency_us: latency(&sent.latency),
        send_lag_us: latency(&sent.lag),
        deliveries: deliveries.measured,
        expected_deliveries: sent.stored * watchers as u64,
        undelivered,
        latency_us: latency(&deliveries.from_send),
        from_answer_us: latency(&deliveries.from_answer),
        delivered_before_answer: deliveries.before_answer,
        deliveries_per_s: in_window as f64 / duration.as_secs_f64(),
        streams_ended: deliveries.ended.clone(),
        drain_s: deliveries.last_ns.saturating_sub(until_ns) as f64 / 1e9,
        setup_s,
        client_cpu_util,
        server,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back() {
        assert_eq!(parse_stamp(&stamp(12, 3_456_789)), Some((12, 3_456_789)));
        assert_eq!(parse_stamp("Bench User 3"), None);
    }

    #[test]
    fn every_intake_event_is_a_distinct_livekit_event() {
        let run = run_tag();
        let events: Vec<lk::WebhookEvent> = (0..8).map(|index| intake_event(&run, index)).collect();
        let kinds: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
        assert_eq!(kinds[..4], ["participant_joined", "track_published", "track_unpublished", "participant_left"]);
        let ids: std::collections::HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
        assert_eq!(ids.len(), 8);
        assert_ne!(events[0].participant.as_ref().unwrap().sid, events[4].participant.as_ref().unwrap().sid);
        assert!(events[1].track.is_some() && events[1].room.as_ref().unwrap().enabled_codecs.is_empty());
    }

    #[test]
    fn the_timeline_metrics_are_read_as_differences() {
        let start = parse_metrics(
            "# HELP x\nroomcontrol_events_appended_total 10\nroomcontrol_event_append_batch_duration_seconds_count 2\nroomcontrol_event_append_batch_duration_seconds_sum 0.5\nroomcontrol_webhooks_received_total{outcome=\"stored\"} 8\nroomcontrol_webhooks_received_total{outcome=\"duplicate\"} 0\n",
        );
        let end = parse_metrics(
            "roomcontrol_events_appended_total 110\nroomcontrol_event_append_batch_duration_seconds_count 6\nroomcontrol_event_append_batch_duration_seconds_sum 0.9\nroomcontrol_webhooks_received_total{outcome=\"stored\"} 108\nroomcontrol_webhooks_received_total{outcome=\"duplicate\"} 0\n",
        );
        let delta = timeline_delta(&start, &end);
        assert_eq!((delta.appended, delta.batches), (100, 4));
        assert!((delta.mean_batch() - 25.0).abs() < 1e-9);
        assert!((delta.mean_batch_us() - 100_000.0).abs() < 1e-6);
        assert_eq!(delta.webhooks, BTreeMap::from([("stored".to_owned(), 100)]));
    }
}
