//! What a measurement produces: one JSON object per line (`--json`), read
//! back by `loadgen report` to build the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::{Protocol, Rpc};

/// One line of a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant, reason = "one record per measurement, written or read once")]
pub enum Record {
    Load(LoadRecord),
    Startup(StartupRecord),
    Connections(ConnectionsRecord),
    IdleRss(IdleRssRecord),
    Webhooks(WebhookRecord),
    Fanout(FanoutRecord),
}

impl Record {
    /// The record as one JSON line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("records always serialize")
    }
}

/// Which scenario a measurement belongs to and on which side of the
/// comparison it stands: `roomcontrol` or `baseline`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub side: String,
    /// Measured for information (sizing), not against the performance targets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub informational: bool,
}

/// A fixed-concurrency, fixed-duration run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadRecord {
    #[serde(flatten)]
    pub labels: Labels,
    pub rpc: Rpc,
    pub protocol: Protocol,
    pub target: String,
    pub concurrency: usize,
    pub connections: usize,
    /// An open loop's schedule, in calls per second (`concurrency` is then
    /// the most in flight); none for a closed loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// The measured window; calls started during the warm-up before it are
    /// not counted.
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Successful calls started in the measured window (in an overload run,
    /// the admitted calls).
    pub calls: u64,
    /// Failed calls, warm-up included: every one is a problem.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, ErrorKind>,
    pub calls_per_s: f64,
    pub latency_us: Latency,
    /// In an overload run (`loadgen run --refusals`): the calls the server
    /// refused with RESOURCE_EXHAUSTED, which are not errors there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// In an overload run: the target for the admitted calls' p99, in
    /// microseconds (the backend's time plus the longest queue wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_p99_target_us: Option<f64>,
    /// In an open loop: how late calls were sent against their schedule
    /// (a generator that cannot keep up sends late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Latency>,
    /// Share of one core the load generator used in the window.
    pub client_cpu_util: Option<f64>,
    /// The server's own figures, when its pid was given.
    pub server: Option<ServerSample>,
    /// RoomControl's timeline over the measured window, from its metrics
    /// (`--metrics-url`): what the calls appended, in how many batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineSample>,
}

/// RoomControl's timeline metrics over a measured window (differences of
/// the counters scraped from the admin port at its start and end).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelineSample {
    /// `roomcontrol_events_appended_total`: events stored.
    pub appended: u64,
    /// `roomcontrol_event_append_batch_duration_seconds_count`: append
    /// transactions (group commits).
    pub batches: u64,
    /// `..._sum`: seconds spent in them.
    pub batch_seconds: f64,
    /// `roomcontrol_webhooks_received_total`, by outcome (only those that moved).
    #[serde(default)]
    pub webhooks: BTreeMap<String, u64>,
}

impl TimelineSample {
    /// Events per append transaction.
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.appended as f64 / self.batches as f64 }
    }

    /// Time per append transaction, in microseconds.
    pub fn mean_batch_us(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.batch_seconds * 1e6 / self.batches as f64 }
    }
}

/// Processes of the store (PostgreSQL's backends serving RoomControl's
/// database) over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreCpu {
    pub pids: Vec<u32>,
    /// CPU seconds, every pid together.
    pub cpu_s: f64,
    /// `cpu_s` over the window: 1.0 is one core fully busy.
    pub cpu_util: f64,
}

/// Webhooks POSTed to RoomControl's intake (`loadgen webhooks`): each a
/// distinct event, pre-signed, over HTTP/1.1 keep-alive connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookRecord {
    #[serde(flatten)]
    pub labels: Labels,
    pub target: String,
    /// What stores the events, for the report ("SQLite file", "PostgreSQL").
    pub store: String,
    /// Webhooks in flight at any time, one per connection.
    pub concurrency: usize,
    /// The measured window (shorter than asked if the pre-signed events ran out).
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Webhooks signed before the run, and whether the run used them all.
    pub presigned: u64,
    pub ran_out: bool,
    pub body_bytes_mean: f64,
    /// Webhooks answered 200 "stored" that were sent in the measured window.
    pub events: u64,
    pub events_per_s: f64,
    /// Any other answer (a duplicate too), warm-up included.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, ErrorKind>,
    /// From the POST to its 200, in microseconds.
    pub latency_us: Latency,
    pub client_cpu_util: Option<f64>,
    /// RoomControl; `cpu_us_per_call` is per stored event.
    pub server: Option<ServerSample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_cpu: Option<StoreCpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineSample>,
}

/// Webhooks at a fixed rate fanned out to many WatchEvents streams
/// (`loadgen watch`): how long each event took to reach each watcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutRecord {
    #[serde(flatten)]
    pub labels: Labels,
    pub target: String,
    pub watchers: usize,
    /// HTTP/2 connections the streams share.
    pub watch_connections: usize,
    /// Webhooks per second (open loop), over this many HTTP/1.1 connections.
    pub rate: f64,
    pub webhook_connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Webhooks due in the measured window that were answered 200.
    pub events: u64,
    /// Webhooks not answered 200, warm-up included.
    pub webhook_errors: u64,
    pub error_kinds: BTreeMap<String, ErrorKind>,
    /// From the POST to its 200.
    pub webhook_latency_us: Latency,
    /// How late the open loop sent, against its schedule.
    pub send_lag_us: Latency,
    /// The measured events delivered to watchers, and how many deliveries
    /// that should have been (`events` times the watchers).
    pub deliveries: u64,
    pub expected_deliveries: u64,
    /// Deliveries that had not come when the run ended (the watcher was
    /// cut off, or still behind after the drain): they are in the latency
    /// figures as arriving then, which makes those lower bounds.
    #[serde(default)]
    pub undelivered: u64,
    /// Per delivery of a measured event: from the moment its webhook was
    /// sent (stamped in the participant's name) to its arrival at the watcher.
    pub latency_us: Latency,
    /// The same from the moment the 200 reached the load generator;
    /// deliveries that arrived before it count as 0.
    pub from_answer_us: Latency,
    pub delivered_before_answer: u64,
    /// Deliveries (of any event) that arrived in the measured window, per
    /// second: the rate the server kept up.
    pub deliveries_per_s: f64,
    /// Streams the server ended, by gRPC code (ABORTED: a watcher too slow).
    pub streams_ended: BTreeMap<String, u64>,
    /// After the window, how long the last measured delivery took to come.
    pub drain_s: f64,
    /// Time to open every stream.
    pub setup_s: f64,
    pub client_cpu_util: Option<f64>,
    /// RoomControl; `cpu_us_per_call` is per delivery that arrived in the window.
    pub server: Option<ServerSample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineSample>,
}

/// Calls the server refused (RESOURCE_EXHAUSTED) that were started in the
/// measured window, and how fast the refusals came.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    pub calls: u64,
    pub calls_per_s: f64,
    pub latency_us: Latency,
    /// One refusal's message.
    pub example: String,
}

/// Failures of one kind: how many, and one message as an example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorKind {
    pub count: u64,
    pub example: String,
}

/// Latency of the successful calls, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The server process during the measured window, from `/proc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSample {
    pub pid: u32,
    /// CPU seconds (user + system, every thread) spent in the window.
    pub cpu_s: f64,
    /// `cpu_s` over the window's length: 1.0 is one core fully busy.
    pub cpu_util: f64,
    /// CPU time per successful call; its inverse is calls/s per core.
    pub cpu_us_per_call: f64,
    pub rss_kib_end: u64,
    /// The most of the 100 ms samples in the window, and the end.
    pub rss_kib_max: u64,
    /// Before the run opened its connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib_before: Option<u64>,
    /// At the start of the measured window, after the warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib_start: Option<u64>,
    /// The process's peak RSS since it started, at the end: `VmHWM`, or
    /// the highest sample if the kernel has not caught up with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib_peak: Option<u64>,
}

/// Process start to health SERVING, over several starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupRecord {
    #[serde(flatten)]
    pub labels: Labels,
    pub command: Vec<String>,
    pub service: String,
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// RSS the moment health answered SERVING, on the median run.
    pub rss_kib_at_serving: Option<u64>,
}

/// Server memory with many client connections open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionsRecord {
    #[serde(flatten)]
    pub labels: Labels,
    pub protocol: Protocol,
    pub connections: usize,
    pub rss_kib_before: u64,
    pub rss_kib_after: u64,
    pub kib_per_connection: f64,
}

/// Server memory at rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleRssRecord {
    #[serde(flatten)]
    pub labels: Labels,
    pub pid: u32,
    pub rss_kib: u64,
}
