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
