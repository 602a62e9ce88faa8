//! The measurements: a fixed-concurrency run, many idle connections, and
//! start-up to SERVING.

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
    ConnectionsRecord, ErrorKind, IdleRssRecord, Labels, Latency, LoadRecord, ServerSample, StartupRecord,
};

/// Latencies are recorded in nanoseconds, up to a minute, to three
/// significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A fixed-concurrency run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub addr: SocketAddr,
    pub target: String,
    pub plan: Plan,
    /// Calls in flight at any time: each of these workers sends its next
    /// call as soon as the previous one is answered.
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_pid: Option<u32>,
    pub labels: Labels,
}

/// What one worker saw.
struct Tally {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, ErrorKind>,
}

impl Tally {
    fn error(&mut self, error: CallError) {
        self.errors.entry(error.kind).or_insert(ErrorKind { count: 0, example: error.detail }).count += 1;
    }
}

/// Drives the plan's RPC with `concurrency` workers spread over
/// `connections` connections for `warmup + duration`, and measures the
/// `duration` window.
pub async fn run(options: RunOptions) -> Result<LoadRecord, String> {
    let RunOptions { addr, target, plan, concurrency, connections, duration, warmup, server_pid, labels } = options;
    if concurrency == 0 || connections == 0 {
        return Err("concurrency and connections must be at least 1".to_owned());
    }
    let plan = Arc::new(plan);
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        pool.push(Connection::open(&plan, addr).await.map_err(|e| format!("cannot connect to {target}: {e}"))?);
    }

    let measure_from = Instant::now() + warmup;
    let measure_until = measure_from + duration;
    let mut workers = JoinSet::new();
    for index in 0..concurrency {
        let mut connection = pool[index % connections].clone();
        let plan = plan.clone();
        workers.spawn(async move {
            let mut tally = Tally { histogram: new_histogram(), errors: BTreeMap::new() };
            loop {
                let started = Instant::now();
                if started >= measure_until {
                    break;
                }
                let result = connection.call(&plan).await;
                match result {
                    Ok(()) if started >= measure_from => {
                        let nanos = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                        tally.histogram.saturating_record(nanos.max(1));
                    }
                    Ok(()) => {}
                    Err(error) => tally.error(error),
                }
            }
            tally
        });
    }
    let sampler = tokio::spawn(sample(server_pid, measure_from, measure_until));

    let mut histogram = new_histogram();
    let mut errors: BTreeMap<String, ErrorKind> = BTreeMap::new();
    while let Some(tally) = workers.join_next().await {
        let tally = tally.map_err(|e| format!("a worker failed: {e}"))?;
        histogram.add(&tally.histogram).map_err(|e| format!("cannot merge histograms: {e}"))?;
        for (kind, error) in tally.errors {
            errors.entry(kind).or_insert(ErrorKind { count: 0, example: error.example }).count += error.count;
        }
    }
    let (client_cpu_util, server) = sampler.await.map_err(|e| format!("the sampler failed: {e}"))?;
    drop(pool);

    let calls = histogram.len();
    let seconds = duration.as_secs_f64();
    let server = server.map(|mut server| {
        server.cpu_us_per_call = if calls == 0 { 0.0 } else { server.cpu_s * 1e6 / calls as f64 };
        server
    });
    Ok(LoadRecord {
        labels,
        rpc: plan.rpc,
        protocol: plan.protocol,
        target,
        concurrency,
        connections,
        duration_s: seconds,
        warmup_s: warmup.as_secs_f64(),
        calls,
        errors: errors.values().map(|error| error.count).sum(),
        error_kinds: errors,
        calls_per_s: calls as f64 / seconds,
        latency_us: latency(&histogram),
        client_cpu_util,
        server,
    })
}

fn latency(histogram: &Histogram<u64>) -> Latency {
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
async fn sample(server_pid: Option<u32>, from: Instant, until: Instant) -> (Option<f64>, Option<ServerSample>) {
    let pid = server_pid.map(|pid| pid.to_string());
    tokio::time::sleep_until(from.into()).await;
    let started = Instant::now();
    let client_start = procfs::cpu_seconds("self");
    let server_start = pid.as_deref().and_then(procfs::cpu_seconds);
    let mut rss_max = pid.as_deref().and_then(procfs::rss_kib).unwrap_or(0);
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
