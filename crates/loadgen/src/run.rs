//! The measurements: a fixed-concurrency run (closed loop, or open loop at
//! a fixed rate), many idle connections, and start-up to SERVING.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::Uri;
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::{CallError, Connection, H2Connection, Plan};
use crate::procfs;
use crate::record::{
    ConnectionsRecord, ErrorKind, IdleRssRecord, Labels, Latency, LoadRecord, Refused, ServerSample, StartupRecord,
};

/// Latencies are recorded in nanoseconds, up to a minute, to three
/// significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A fixed-concurrency run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub addr: SocketAddr,
    pub target: String,
    pub plan: Plan,
    /// Calls in flight at any time: each of these workers sends its next
    /// call as soon as the previous one is answered. With `rate`, the most
    /// calls in flight at once.
    pub concurrency: usize,
    /// Open loop: calls start on a fixed schedule of this many per second,
    /// whatever the answers take (as long as fewer than `concurrency` are
    /// in flight), instead of each worker's next call after its last.
    pub rate: Option<f64>,
    /// RESOURCE_EXHAUSTED answers are the server shedding load: counted
    /// and timed apart from the successful calls, not as errors.
    pub refusals: bool,
    /// For the report: the admitted (successful) calls' p99 target.
    pub admitted_p99_target: Option<Duration>,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Closed loop: stop after this many calls in all (warm-up included).
    pub calls: Option<u64>,
    pub server_pid: Option<u32>,
    /// RoomControl's admin metrics (`http://host:port/metrics`), scraped at
    /// the window's start and end for what the timeline did.
    pub metrics_url: Option<String>,
    pub labels: Labels,
}

/// What one worker (or the open loop) saw.
struct Tally {
    histogram: Histogram<u64>,
    /// Refused calls (RESOURCE_EXHAUSTED) started in the measured window.
    refused: Histogram<u64>,
    /// Open loop: how late each call in the window was sent.
    lag: Histogram<u64>,
    refused_example: Option<String>,
    errors: BTreeMap<String, ErrorKind>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            histogram: new_histogram(),
            refused: new_histogram(),
            lag: new_histogram(),
            refused_example: None,
            errors: BTreeMap::new(),
        }
    }

    /// One answered call, sent at `started`; `measured` if it belongs to
    /// the measured window. With `refusals`, RESOURCE_EXHAUSTED is a
    /// refusal, not an error.
    fn record(&mut self, started: Instant, measured: bool, result: Result<(), CallError>, refusals: bool) {
        match result {
            Ok(()) if measured => self.histogram.saturating_record(elapsed_nanos(started)),
            Ok(()) => {}
            Err(error) if refusals && error.code == Some(tonic::Code::ResourceExhausted) => {
                if measured {
                    self.refused.saturating_record(elapsed_nanos(started));
                }
                self.refused_example.get_or_insert(error.detail);
            }
            Err(error) => self.error(error),
        }
    }

    fn error(&mut self, error: CallError) {
        self.errors.entry(error.kind).or_insert(ErrorKind { count: 0, example: error.detail }).count += 1;
    }

    fn merge(&mut self, other: Tally) -> Result<(), String> {
        let merge_error = |e| format!("cannot merge histograms: {e}");
        self.histogram.add(&other.histogram).map_err(merge_error)?;
        self.refused.add(&other.refused).map_err(merge_error)?;
        self.lag.add(&other.lag).map_err(merge_error)?;
        self.refused_example = self.refused_example.take().or(other.refused_example);
        for (kind, error) in other.errors {
            self.errors.entry(kind).or_insert(ErrorKind { count: 0, example: error.example }).count += error.count;
        }
        Ok(())
    }
}

pub(crate) fn elapsed_nanos(started: Instant) -> u64 {
    (started.elapsed().as_nanos().min(u64::MAX as u128) as u64).max(1)
}

/// The window a run measures, after its warm-up.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// Drives the plan's RPC with `concurrency` workers spread over
/// `connections` connections for `warmup + duration`, and measures the
/// `duration` window.
pub async fn run(options: RunOptions) -> Result<LoadRecord, String> {
    let RunOptions {
        addr,
        target,
        plan,
        concurrency,
        rate,
        refusals,
        admitted_p99_target,
        connections,
        duration,
        warmup,
        calls: budget,
        server_pid,
        metrics_url,
        labels,
    } = options;
    if concurrency == 0 || connections == 0 {
        return Err("concurrency and connections must be at least 1".to_owned());
    }
    if rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        return Err("the rate must be a positive number of calls per second".to_owned());
    }
    // The server's memory before this run opens its connections.
    let rss_before = server_pid.and_then(|pid| procfs::rss_kib(&pid.to_string()));
    let plan = Arc::new(plan);
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        pool.push(Connection::open(&plan, addr).await.map_err(|e| format!("cannot connect to {target}: {e}"))?);
    }

    let started_at = Instant::now();
    let window = Window { from: started_at + warmup, until: started_at + warmup + duration };
    let sampler = tokio::spawn(sample(server_pid, window.from, window.until));
    let timeline = tokio::spawn(crate::timeline::sample_store(None, metrics_url, window.from, window.until));
    let tally = match rate {
        None => closed_loop(&pool, &plan, concurrency, window, refusals, budget).await?,
        Some(rate) => {
            let open = OpenLoop { start: started_at, interval_ns: 1e9 / rate, concurrency, window, refusals };
            open.run(&pool, &plan).await?
        }
    };
    if budget.is_some() {
        // The calls are done before the window's end: nothing to sample.
        sampler.abort();
        timeline.abort();
    }
    let (client_cpu_util, server) = match sampler.await {
        Ok(sampled) => sampled,
        Err(e) if e.is_cancelled() => (None, None),
        Err(e) => return Err(format!("the sampler failed: {e}")),
    };
    let timeline = match timeline.await {
        Ok((_, timeline)) => timeline,
        Err(e) if e.is_cancelled() => None,
        Err(e) => return Err(format!("the sampler failed: {e}")),
    };
    drop(pool);
    let Tally { histogram, refused, lag, refused_example, errors } = tally;

    let calls = histogram.len();
    // A fixed number of calls ends the window when the last is answered.
    let seconds = match budget {
        Some(_) => started_at.elapsed().saturating_sub(warmup).min(duration).as_secs_f64(),
        None => duration.as_secs_f64(),
    };
    let server = server.map(|mut server| {
        server.cpu_us_per_call = if calls == 0 { 0.0 } else { server.cpu_s * 1e6 / calls as f64 };
        server.rss_kib_before = rss_before;
        // The kernel updates VmHWM lazily: it can read below a sample.
        server.rss_kib_peak = procfs::peak_rss_kib(&server.pid.to_string()).map(|peak| peak.max(server.rss_kib_max));
        server
    });
    Ok(LoadRecord {
        labels,
        rpc: plan.rpc,
        protocol: plan.protocol,
        target,
        concurrency,
        connections,
        rate,
        duration_s: seconds,
        warmup_s: warmup.as_secs_f64(),
        calls,
        errors: errors.values().map(|error| error.count).sum(),
        error_kinds: errors,
        calls_per_s: calls as f64 / seconds,
        latency_us: latency(&histogram),
        refused: refusals.then(|| Refused {
            calls: refused.len(),
            calls_per_s: refused.len() as f64 / seconds,
            latency_us: latency(&refused),
            example: refused_example.unwrap_or_default(),
        }),
        admitted_p99_target_us: admitted_p99_target.map(|target| target.as_secs_f64() * 1e6),
        send_lag_us: rate.map(|_| latency(&lag)),
        client_cpu_util,
        server,
        timeline,
    })
}

/// The closed loop: `concurrency` workers, each sending its next call as
/// soon as the previous one is answered.
async fn closed_loop(
    pool: &[Connection],
    plan: &Arc<Plan>,
    concurrency: usize,
    window: Window,
    refusals: bool,
    budget: Option<u64>,
) -> Result<Tally, String> {
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for index in 0..concurrency {
        let mut connection = pool[index % pool.len()].clone();
        let plan = plan.clone();
        let sent = sent.clone();
        workers.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let started = Instant::now();
                if started >= window.until {
                    break;
                }
                if budget.is_some_and(|budget| sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= budget) {
                    break;
                }
                let result = connection.call(&plan).await;
                tally.record(started, started >= window.from, result, refusals);
            }
            tally
        });
    }
    let mut tally = Tally::new();
    while let Some(worker) = workers.join_next().await {
        tally.merge(worker.map_err(|e| format!("a worker failed: {e}"))?)?;
    }
    Ok(tally)
}

/// The open loop: call `i` is due `i / rate` after the start, whatever the
/// answers take, with at most `concurrency` in flight (a call due while
/// that many are in flight is sent late, and its lag recorded). One task
/// sends every call on time and collects the answers, so the load
/// generator does not keep a sleeping task per possible call in flight.
struct OpenLoop {
    start: Instant,
    interval_ns: f64,
    concurrency: usize,
    window: Window,
    refusals: bool,
}

impl OpenLoop {
    fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as f64 * self.interval_ns) as u64)
    }

    async fn run(&self, pool: &[Connection], plan: &Arc<Plan>) -> Result<Tally, String> {
        let mut tally = Tally::new();
        let mut calls = JoinSet::new();
        let mut index = 0u64;
        let mut next = self.due(0);
        let timer = tokio::time::sleep_until(next.into());
        tokio::pin!(timer);
        loop {
            let more = next < self.window.until;
            if !more && calls.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(answered) = calls.join_next(), if !calls.is_empty() => {
                    let (started, measured, result) = answered.map_err(|e| format!("a call failed: {e}"))?;
                    tally.record(started, measured, result, self.refusals);
                }
                () = &mut timer, if more && calls.len() < self.concurrency => {
                    // Every call due by now, as far as the bound allows.
                    let now = Instant::now();
                    while next <= now && next < self.window.until && calls.len() < self.concurrency {
                        // A call belongs to the window it was due in.
                        let measured = next >= self.window.from;
                        if measured {
                            let lag = now.saturating_duration_since(next).as_nanos().min(u64::MAX as u128) as u64;
                            tally.lag.saturating_record(lag.max(1));
                        }
                        let mut connection = pool[(index % pool.len() as u64) as usize].clone();
                        let plan = plan.clone();
                        calls.spawn(async move {
                            // Latency counts from the moment the call is sent.
                            let started = Instant::now();
                            let result = connection.call(&plan).await;
                            (started, measured, result)
                        });
                        index += 1;
                        next = self.due(index);
                    }
                    timer.as_mut().reset(next.into());
                }
            }
        }
        Ok(tally)
    }
}

pub(crate) fn latency(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    let micros = |nanos: u64| nanos as f64 / 1000.0;
    Latency {
        p50: micros(histogram.value_at_quantile(0.50)),
        p90: micros(histogram.value_at_quantile(0.90)),
        p99: micros(histogram.value_at_quantile(0.99)),
        p999: micros(histogram.value_at_quantile(0.999)),
        max: micros(histogram.max()),
        mean: histogram.mean() / 1000.0,
    }
}

/// CPU time of the load generator and the server over the measured window,
/// and the server's RSS every 100 ms within it.
pub(crate) async fn sample(
    server_pid: Option<u32>,
    from: Instant,
    until: Instant,
) -> (Option<f64>, Option<ServerSample>) {
    let pid = server_pid.map(|pid| pid.to_string());
    tokio::time::sleep_until(from.into()).await;
    let started = Instant::now();
    let client_start = procfs::cpu_seconds("self");
    let server_start = pid.as_deref().and_then(procfs::cpu_seconds);
    let rss_start = pid.as_deref().and_then(procfs::rss_kib);
    let mut rss_max = rss_start.unwrap_or(0);
    loop {
        let next = Instant::now() + Duration::from_millis(100);
        if next >= until {
            tokio::time::sleep_until(until.into()).await;
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        if let Some(rss) = pid.as_deref().and_then(procfs::rss_kib) {
            rss_max = rss_max.max(rss);
        }
    }
    let window = started.elapsed().as_secs_f64();
    let client = match (client_start, procfs::cpu_seconds("self")) {
        (Some(start), Some(end)) => Some((end - start) / window),
        _ => None,
    };
    let server = match (server_pid, server_start, pid.as_deref().and_then(procfs::cpu_seconds)) {
        (Some(pid_number), Some(start), Some(end)) => {
            let rss_end = pid.as_deref().and_then(procfs::rss_kib).unwrap_or(0);
            Some(ServerSample {
                pid: pid_number,
                cpu_s: end - start,
                cpu_util: (end - start) / window,
                cpu_us_per_call: 0.0,
                rss_kib_end: rss_end,
                rss_kib_max: rss_max.max(rss_end),
                rss_kib_before: None,
                rss_kib_start: rss_start,
                rss_kib_peak: None,
            })
        }
        _ => None,
    };
    (client, server)
}

/// Opens `connections` connections, makes one call on each so that both
/// sides have set them up completely, and measures the server's RSS before
/// and after. The connections stay open for `hold` more.
pub async fn hold_connections(
    addr: SocketAddr,
    plan: Plan,
    connections: usize,
    server_pid: u32,
    hold: Duration,
    labels: Labels,
) -> Result<ConnectionsRecord, String> {
    let pid = server_pid.to_string();
    let rss = || procfs::rss_kib(&pid).ok_or_else(|| format!("cannot read /proc/{pid}/status"));
    let rss_before = rss()?;
    let plan = Arc::new(plan);
    let mut opened = Vec::with_capacity(connections);
    // A few dozen at a time: a burst of a thousand SYNs can overflow the
    // listen backlog and retry after a second.
    const AT_ONCE: usize = 50;
    let mut remaining = connections;
    while remaining > 0 {
        let batch = remaining.min(AT_ONCE);
        remaining -= batch;
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let plan = plan.clone();
            set.spawn(async move {
                let mut connection =
                    Connection::open(&plan, addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                connection.call(&plan).await.map_err(|e| format!("a call on a new connection failed: {e}"))?;
                Ok::<_, String>(connection)
            });
        }
        while let Some(connection) = set.join_next().await {
            opened.push(connection.map_err(|e| e.to_string())??);
        }
    }
    // Let the server settle: allocator caches, deferred frees.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss()?;
    tokio::time::sleep(hold).await;
    drop(opened);
    Ok(ConnectionsRecord {
        labels,
        protocol: plan.protocol,
        connections,
        rss_kib_before: rss_before,
        rss_kib_after: rss_after,
        kib_per_connection: (rss_after as f64 - rss_before as f64) / connections as f64,
    })
}

/// The server's resident memory now.
pub fn idle_rss(pid: u32, labels: Labels) -> Result<IdleRssRecord, String> {
    let rss_kib = procfs::rss_kib(&pid.to_string()).ok_or_else(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(IdleRssRecord { labels, pid, rss_kib })
}

/// Asks `grpc.health.v1.Health/Check` for `service` until it answers
/// SERVING, reconnecting as needed. Polls every millisecond.
pub async fn wait_serving(addr: SocketAddr, service: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let origin: Uri = format!("http://{addr}").parse().map_err(|e| format!("{e}"))?;
    let mut last = String::from("no answer yet");
    while started.elapsed() < timeout {
        let connection = match H2Connection::connect(addr).await {
            Ok(connection) => connection,
            Err(error) => {
                last = format!("cannot connect: {error}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let mut health = HealthClient::with_origin(connection, origin.clone());
        while started.elapsed() < timeout {
            let request = HealthCheckRequest { service: service.to_owned() };
            match health.check(request).await {
                Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32 => return Ok(started.elapsed()),
                Ok(reply) => last = format!("status {:?}", reply.get_ref().status()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = format!("{status}");
                    break;
                }
                Err(status) => last = format!("{status}"),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Err(format!("{addr} did not report {service:?} SERVING within {timeout:?} (last: {last})"))
}

/// Start-up options: the command is run with `PORT` set to a free port and
/// every `{port}` in its arguments replaced by it.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    pub command: Vec<String>,
    pub service: String,
    pub repeat: usize,
    pub timeout: Duration,
    pub labels: Labels,
}

/// Starts the command `repeat` times and measures each start to health
/// SERVING; each process is killed once measured.
pub async fn startup(options: StartupOptions) -> Result<StartupRecord, String> {
    let StartupOptions { command, service, repeat, timeout, labels } = options;
    let (program, arguments) = command.split_first().ok_or("no command to start")?;
    let mut runs = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let arguments: Vec<String> = arguments.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let started = Instant::now();
        let mut child = std::process::Command::new(program)
            .args(&arguments)
            .env("PORT", port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let result = tokio::select! {
            result = wait_serving(addr, &service, timeout) => result.map(|_| started.elapsed()),
            exit = wait_exit(&mut child) => Err(format!("{program} exited with {exit} before it was SERVING")),
        };
        let rss = procfs::rss_kib(&child.id().to_string());
        let _ = child.kill();
        let _ = child.wait();
        let elapsed = match result {
            Ok(elapsed) => elapsed,
            Err(error) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("{error}\n{stderr}"));
            }
        };
        runs.push((elapsed.as_secs_f64() * 1000.0, rss));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sorted = runs.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = sorted[sorted.len() / 2];
    Ok(StartupRecord {
        labels,
        command,
        service,
        runs_ms: runs.iter().map(|run| run.0).collect(),
        median_ms: median.0,
        min_ms: sorted[0].0,
        max_ms: sorted[sorted.len() - 1].0,
        rss_kib_at_serving: median.1,
    })
}

async fn wait_exit(child: &mut std::process::Child) -> String {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(error) => return error.to_string(),
        }
    }
}

/// A port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|addr| addr.port()).map_err(|e| e.to_string())
}
