//! Prometheus metrics, on a registry of the application's own (no process
//! globals, so several servers in one test process keep separate counts),
//! served on the admin port (`server::admin`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::middleware::Protocol;
use crate::rpc::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc: &'static str,
    code: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    budget: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 100 µs to 10 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// RoomControl's metrics. Cheap to share: every field is an `Arc` inside.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    in_flight: Gauge,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_duration: HistogramFamily<MethodLabels>,
    ready: Gauge,
    queued: Family<BudgetLabels, Gauge>,
    shed: Family<ShedLabels, Counter>,
    /// The series every call touches, by [`Route::index`],
    /// resolved once: counting a call takes no lock and hashes nothing.
    per_rpc: Vec<RpcSeries>,
    /// `tokens_minted_total` for kind "any" and "self".
    tokens_any: Counter,
    tokens_self: Counter,
    connections: ConnectionMetrics,
    events: EventMetrics,
    rate_limited: Family<LimitLabels, Counter>,
    rate_limit_store_errors: Counter,
}

/// The timeline's series.
#[derive(Debug)]
struct EventMetrics {
    webhooks: Family<OutcomeLabels, Counter>,
    appended: Counter,
    append_duration: Histogram,
    position: Gauge,
    watchers: Gauge,
}

impl EventMetrics {
    fn register(registry: &mut Registry) -> Self {
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhooks_received",
            "LiveKit webhooks received, by outcome: stored, duplicate (a retry, stored before), unauthorized, bad_request, too_large, store_failed",
            webhooks.clone(),
        );
        for outcome in ["stored", "duplicate", "unauthorized", "bad_request", "too_large", "store_failed"] {
            let _ = webhooks.get_or_create(&OutcomeLabels { outcome });
        }
        let appended = Counter::default();
        registry.register(
            "events_appended",
            "Events stored in the timeline (webhooks, actions, inferred)",
            appended.clone(),
        );
        let append_duration = latency_histogram();
        registry.register(
            "event_append_batch_duration_seconds",
            "Time to store one batch of events (one transaction)",
            append_duration.clone(),
        );
        let position = Gauge::default();
        registry.register(
            "timeline_cursor",
            "The newest cursor this replica has read from the store",
            position.clone(),
        );
        let watchers = Gauge::default();
        registry.register("event_watchers", "WatchEvents streams open on this replica", watchers.clone());
        Self { webhooks, appended, append_duration, position, watchers }
    }
}

/// Counts a WatchEvents stream as open until dropped.
#[derive(Debug)]
pub struct Watcher(Gauge);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug)]
struct RpcSeries {
    duration: Histogram,
    /// `calls_total` with code "Ok", over gRPC, grpc-web and REST.
    ok_grpc: Counter,
    ok_grpc_web: Counter,
    ok_rest: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("roomcontrol");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Calls answered, by RPC, gRPC status code and protocol", calls.clone());
        let call_duration = HistogramFamily::<RpcLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("call_duration_seconds", "Time to answer a call, by RPC", call_duration.clone());
        let in_flight = Gauge::default();
        registry.register("calls_in_flight", "Calls being served now", in_flight.clone());
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "livekit_requests",
            "Requests to LiveKit, by method and outcome (ok, a Twirp code, unreachable, timeout, credentials_rejected, not_twirp, bad_reply)",
            upstream.clone(),
        );
        let upstream_duration =
            HistogramFamily::<MethodLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "livekit_request_duration_seconds",
            "Time LiveKit took to answer, by method",
            upstream_duration.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while LiveKit accepts RoomControl's credentials (readiness SERVING), else 0",
            ready.clone(),
        );
        let queued = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "calls_queued",
            "Calls waiting for a slot, by budget (livekit: calls that wait on LiveKit; local: CreateToken)",
            queued.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "calls_shed",
            "Calls refused with RESOURCE_EXHAUSTED for want of a slot, by budget and reason (queue_full: server.max_queued_calls waited already; queue_wait: no slot within server.max_queue_wait)",
            shed.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens_minted",
            "Join tokens minted, by kind (any: tokens:create; self: tokens:create:self)",
            tokens.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "RoomControl's version, as a label; always 1", build);
        // Every RPC's latency histogram and success counters exist from the
        // start (at zero), as Prometheus advises for known label values.
        let per_rpc = Route::all()
            .map(|route| {
                let rpc = route.label();
                let ok = |protocol| calls.get_or_create(&CallLabels { rpc, code: "Ok", protocol }).clone();
                RpcSeries {
                    duration: call_duration.get_or_create(&RpcLabels { rpc }).clone(),
                    ok_grpc: ok("grpc"),
                    ok_grpc_web: ok("grpc-web"),
                    ok_rest: ok("rest"),
                }
            })
            .collect();
        let tokens_any = tokens.get_or_create(&TokenLabels { kind: "any" }).clone();
        let tokens_self = tokens.get_or_create(&TokenLabels { kind: "self" }).clone();
        let connections = ConnectionMetrics::register(&mut registry);
        let events = EventMetrics::register(&mut registry);
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED by their caller's rate limit, by limit (self_service_tokens, tokens, writes, reads: the limits.* settings)",
            rate_limited.clone(),
        );
        let rate_limit_store_errors = Counter::default();
        registry.register(
            "rate_limit_store_errors",
            "Calls whose rate limit Redis could not check (unreachable, slower than redis.timeout, failing, or failed moments ago); each went on as limits.on_redis_error says",
            rate_limit_store_errors.clone(),
        );
        Arc::new(Self {
            registry,
            calls,
            in_flight,
            upstream,
            upstream_duration,
            ready,
            queued,
            shed,
            per_rpc,
            tokens_any,
            tokens_self,
            connections,
            events,
            rate_limited,
            rate_limit_store_errors,
        })
    }

    /// The rate limits' series, each there from the start (at zero) once
    /// asked for.
    pub fn rate_limits(&self) -> RateLimitMetrics {
        RateLimitMetrics { limited: self.rate_limited.clone(), store_errors: self.rate_limit_store_errors.clone() }
    }

    /// The main port's connections.
    pub fn connections(&self) -> &ConnectionMetrics {
        &self.connections
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Counts a call as in flight until the guard drops.
    pub fn call_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Counts a finished call.
    pub fn call_finished(&self, route: Route, protocol: Protocol, code: tonic::Code, duration: Duration) {
        let series = &self.per_rpc[route.index()];
        match (code, protocol) {
            (tonic::Code::Ok, Protocol::Grpc) => series.ok_grpc.inc(),
            (tonic::Code::Ok, Protocol::GrpcWeb) => series.ok_grpc_web.inc(),
            (tonic::Code::Ok, Protocol::Rest) => series.ok_rest.inc(),
            _ => self
                .calls
                .get_or_create(&CallLabels { rpc: route.label(), code: code_label(code), protocol: protocol.label() })
                .inc(),
        };
        series.duration.observe(duration.as_secs_f64());
    }

    pub fn livekit_request(&self, method: &'static str, outcome: &'static str, duration: Duration) {
        self.upstream.get_or_create(&UpstreamLabels { method, outcome }).inc();
        self.upstream_duration.get_or_create(&MethodLabels { method }).observe(duration.as_secs_f64());
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The series of one call budget, resolved once (they exist, at zero,
    /// from then on).
    pub fn budget(&self, budget: &'static str) -> BudgetMetrics {
        let shed = |reason| self.shed.get_or_create(&ShedLabels { budget, reason }).clone();
        BudgetMetrics {
            queued: self.queued.get_or_create(&BudgetLabels { budget }).clone(),
            queue_full: shed("queue_full"),
            queue_wait: shed("queue_wait"),
        }
    }

    pub fn webhook_received(&self, outcome: &'static str) {
        self.events.webhooks.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn events_appended(&self, stored: usize, duration: Duration) {
        self.events.appended.inc_by(stored as u64);
        self.events.append_duration.observe(duration.as_secs_f64());
    }

    pub fn set_timeline_position(&self, cursor: u64) {
        self.events.position.set(i64::try_from(cursor).unwrap_or(i64::MAX));
    }

    pub fn watcher_started(&self) -> Watcher {
        self.events.watchers.inc();
        Watcher(self.events.watchers.clone())
    }

    pub fn token_minted(&self, self_service: bool) {
        if self_service {
            self.tokens_self.inc()
        } else {
            self.tokens_any.inc()
        };
    }
}

/// One call budget's series: `calls_queued` and `calls_shed_total`.
#[derive(Debug, Clone)]
pub struct BudgetMetrics {
    pub queued: Gauge,
    /// Refused because `server.max_queued_calls` calls waited already.
    pub queue_full: Counter,
    /// Refused because no slot freed within `server.max_queue_wait`.
    pub queue_wait: Counter,
}

/// `rate_limited_total` and `rate_limit_store_errors_total`.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    limited: Family<LimitLabels, Counter>,
    /// Calls Redis could not check.
    pub store_errors: Counter,
}

impl RateLimitMetrics {
    /// The refusals of one limit, resolved once (the series exists, at
    /// zero, from then on).
    pub fn limited(&self, limit: &'static str) -> Counter {
        self.limited.get_or_create(&LimitLabels { limit }).clone()
    }
}

/// Decrements the in-flight gauge when dropped, even if the call is
/// cancelled.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Why RoomControl closed a connection of the main port: the `reason` label
/// of `roomcontrol_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// No first request within `server.handshake_timeout` (TLS handshake,
    /// HTTP/2 preface, request headers).
    HandshakeTimeout,
    /// HTTP/1.1: the next request's headers did not arrive within
    /// `server.handshake_timeout`; an idle keep-alive connection ends so.
    HeaderTimeout,
    /// No call in flight for `server.idle_timeout`.
    IdleTimeout,
    /// HTTP/2: a keepalive ping went unanswered (the peer is gone).
    KeepaliveTimeout,
    /// `server.max_connection_age` reached.
    MaxAge,
    /// Shutdown.
    Drain,
    /// The client closed it, or it broke (reset, a TLS or protocol error).
    Peer,
}

impl ConnectionClose {
    pub const ALL: [ConnectionClose; 7] = [
        ConnectionClose::HandshakeTimeout,
        ConnectionClose::HeaderTimeout,
        ConnectionClose::IdleTimeout,
        ConnectionClose::KeepaliveTimeout,
        ConnectionClose::MaxAge,
        ConnectionClose::Drain,
        ConnectionClose::Peer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionClose::HandshakeTimeout => "handshake_timeout",
            ConnectionClose::HeaderTimeout => "header_timeout",
            ConnectionClose::IdleTimeout => "idle_timeout",
            ConnectionClose::KeepaliveTimeout => "keepalive_timeout",
            ConnectionClose::MaxAge => "max_age",
            ConnectionClose::Drain => "drain",
            ConnectionClose::Peer => "peer",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    reason: &'static str,
}

/// `roomcontrol_connections` and `roomcontrol_connections_closed_total`:
/// the main port's connections (the admin port's are not counted).
#[derive(Debug)]
pub struct ConnectionMetrics {
    open: Gauge,
    /// By [`ConnectionClose`], in the order of [`ConnectionClose::ALL`],
    /// every series there from the start (at zero).
    closed: Vec<Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let open = Gauge::default();
        registry.register("connections", "Connections open on the main port", open.clone());
        let closed = Family::<CloseLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections of the main port closed, by reason: handshake_timeout (no first request within server.handshake_timeout), header_timeout (HTTP/1.1: no next request headers within server.handshake_timeout), idle_timeout (no call for server.idle_timeout), keepalive_timeout (HTTP/2 ping unanswered), max_age (server.max_connection_age), drain (shutdown), peer (closed or broken by the client)",
            closed.clone(),
        );
        let closed = ConnectionClose::ALL
            .iter()
            .map(|reason| closed.get_or_create(&CloseLabels { reason: reason.label() }).clone())
            .collect();
        Self { open, closed }
    }

    /// Counts a connection as open until the guard drops.
    pub fn opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// Counts a connection closed, once, for the reason it was closed.
    pub fn closed(&self, reason: ConnectionClose) {
        self.closed[reason as usize].inc();
    }
}

/// Decrements `roomcontrol_connections` when dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `code` label: the status code's name, as tonic spells it.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_labels_are_the_debug_names() {
        for value in 0..=16 {
            let code = tonic::Code::from_i32(value);
            assert_eq!(code_label(code), format!("{code:?}"));
        }
    }

    #[test]
    fn the_text_format_carries_every_family() {
        let metrics = Metrics::new();
        metrics.call_finished(
            Route::of("/roomcontrol.v1.RoomControl/GetRoom"),
            Protocol::Grpc,
            tonic::Code::NotFound,
            Duration::from_millis(3),
        );
        metrics.livekit_request("ListRooms", "ok", Duration::from_millis(2));
        metrics.token_minted(false);
        metrics.set_ready(true);
        let text = metrics.encode();
        for expected in [
            "roomcontrol_calls_total{rpc=\"roomcontrol.v1.RoomControl/GetRoom\",code=\"NotFound\",protocol=\"grpc\"} 1",
            "roomcontrol_call_duration_seconds_count{rpc=\"roomcontrol.v1.RoomControl/GetRoom\"} 1",
            "roomcontrol_livekit_requests_total{method=\"ListRooms\",outcome=\"ok\"} 1",
            "roomcontrol_tokens_minted_total{kind=\"any\"} 1",
            "roomcontrol_ready 1",
            "roomcontrol_calls_in_flight 0",
            "roomcontrol_build_info{version=",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn connection_metrics_count_open_connections_and_every_close_reason() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for reason in ConnectionClose::ALL {
            let series = format!("roomcontrol_connections_closed_total{{reason=\"{}\"}} 0", reason.label());
            assert!(text.contains(&series), "{series} from the start in\n{text}");
        }
        let open = metrics.connections().opened();
        metrics.connections().closed(ConnectionClose::IdleTimeout);
        let text = metrics.encode();
        assert!(text.contains("roomcontrol_connections 1"), "{text}");
        assert!(text.contains("roomcontrol_connections_closed_total{reason=\"idle_timeout\"} 1"), "{text}");
        drop(open);
        assert!(metrics.encode().contains("roomcontrol_connections 0"));
    }
}
