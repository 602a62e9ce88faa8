//! `loadgen`: RoomControl's load generator. See `loadgen --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::client::{Plan, PlanOptions, Protocol, Rpc};
use loadgen::record::{FanoutRecord, Labels, LoadRecord, Record, WebhookRecord};
use loadgen::{parse_header, parse_target, report, run, timeline};

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for RoomControl: gRPC, grpc-web and Twirp, every status checked")]
struct Cli {
    /// Runtime worker threads; 1 runs everything on the current thread, the
    /// cheapest way to use the one core the benchmark gives the load
    /// generator.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one RPC at a fixed concurrency (or rate) for a fixed time.
    Run(RunArgs),
    /// POST distinct, pre-signed LiveKit webhooks to RoomControl's intake
    /// at a fixed concurrency, over HTTP/1.1 keep-alive connections.
    Webhooks(WebhookArgs),
    /// Open many WatchEvents streams, then send webhooks at a fixed rate and
    /// time each event's delivery to each stream.
    Watch(WatchArgs),
    /// Open many connections (one call on each) and measure the server's RSS.
    Hold(HoldArgs),
    /// Measure process start to health SERVING for a command, several times.
    Startup(StartupArgs),
    /// Wait until a server reports SERVING.
    Wait(WaitArgs),
    /// Print a process's resident memory as a record.
    Rss(RssArgs),
    /// Turn a results file (JSON lines) into the benchmark table.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The server: RoomControl, the baseline server, or (Twirp) LiveKit.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    #[arg(long, value_enum, default_value_t = Rpc::CreateToken)]
    rpc: Rpc,
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// The room GetRoom asks for.
    #[arg(long, default_value = "room-1")]
    room: String,
    /// An extra header (gRPC metadata) on every call, e.g.
    /// `authorization:Bearer TOKEN`; repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Twirp: the API key the bearer token is signed with.
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    /// Twirp: its secret.
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret", hide_env_values = true)]
    api_secret: String,
}

impl CallArgs {
    fn plan(&self) -> Result<(std::net::SocketAddr, Plan), String> {
        let (addr, authority) = parse_target(&self.target)?;
        let plan = Plan::new(PlanOptions {
            rpc: self.rpc,
            protocol: self.protocol,
            authority,
            room: self.room.clone(),
            headers: self.headers.clone(),
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
        })?;
        Ok((addr, plan))
    }
}

#[derive(Debug, Args)]
struct LabelArgs {
    /// The scenario this measurement belongs to, for the report.
    #[arg(long, default_value = "")]
    scenario: String,
    /// `roomcontrol` or `baseline`, for the report.
    #[arg(long, default_value = "")]
    side: String,
    /// A measurement for information (sizing): the report checks no
    /// target on it, only that no call failed.
    #[arg(long)]
    informational: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

impl LabelArgs {
    fn labels(&self) -> Labels {
        Labels { scenario: self.scenario.clone(), side: self.side.clone(), informational: self.informational }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    call: CallArgs,
    /// Calls in flight at any time (with --rate: at most).
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Open loop: start this many calls per second on a fixed schedule,
    /// however long the answers take, instead of each of the `concurrency`
    /// callers sending its next call when the last is answered.
    #[arg(long)]
    rate: Option<f64>,
    /// An overload run: RESOURCE_EXHAUSTED answers (the server shedding
    /// load) are counted and timed as refusals, apart from the admitted
    /// calls, instead of as errors.
    #[arg(long)]
    refusals: bool,
    /// With --refusals, for the report: the admitted calls' p99 target,
    /// e.g. `120ms` (the backend's time plus the longest queue wait).
    #[arg(long, value_parser = humantime::parse_duration, requires = "refusals")]
    admitted_p99_target: Option<Duration>,
    /// Connections to spread them over. Default: 1 for gRPC (HTTP/2
    /// multiplexes), one per call in flight for HTTP/1.1.
    #[arg(long, short = 'n')]
    connections: Option<usize>,
    /// How long to measure, e.g. `10s`.
    #[arg(long, short = 'd', default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// A fixed amount of work instead of a fixed time: send exactly this
    /// many calls in all (closed loop only; the warm-up's calls count, so
    /// pass `--warmup 0s`), then stop; the window is what they took (or
    /// `--duration`, if that ends first). For instruction counts
    /// (callgrind), which are only comparable per call; the server's CPU
    /// and metrics are not sampled then.
    #[arg(long, conflicts_with = "rate")]
    calls: Option<u64>,
    /// The server's pid, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// RoomControl's metrics (`http://127.0.0.1:9464/metrics`): what its
    /// timeline appended in the window, in how many batches.
    #[arg(long)]
    metrics_url: Option<String>,
    #[command(flatten)]
    labels: LabelArgs,
}

/// Where webhooks go and how they are signed, and what is measured.
#[derive(Debug, Args)]
struct IntakeArgs {
    /// RoomControl's main port.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// `events.webhook_path`.
    #[arg(long, default_value = "/livekit/webhook")]
    path: String,
    /// The LiveKit API key the webhooks are signed with.
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    /// Its secret.
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret", hide_env_values = true)]
    api_secret: String,
    /// How long to measure, e.g. `10s`.
    #[arg(long, short = 'd', default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// RoomControl's pid, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// RoomControl's metrics (`http://127.0.0.1:9464/metrics`).
    #[arg(long)]
    metrics_url: Option<String>,
}

impl IntakeArgs {
    fn intake(&self) -> Result<timeline::Intake, String> {
        let (addr, authority) = parse_target(&self.target)?;
        Ok(timeline::Intake {
            addr,
            authority,
            path: self.path.clone(),
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct WebhookArgs {
    #[command(flatten)]
    intake: IntakeArgs,
    /// Webhooks in flight, each on its own HTTP/1.1 connection.
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Webhooks to sign before the run (each a distinct event): enough for
    /// the warm-up and the window at the fastest rate expected. If they run
    /// out, the window ends there.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// What stores the events, for the report.
    #[arg(long, default_value = "")]
    store: String,
    /// The store's processes, whose CPU time is measured apart: those whose
    /// command line contains this (PostgreSQL's backends show their
    /// database there: `" roomcontrol_bench "`).
    #[arg(long)]
    store_match: Option<String>,
    #[command(flatten)]
    labels: LabelArgs,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    intake: IntakeArgs,
    /// WatchEvents streams.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// HTTP/2 connections the streams share.
    #[arg(long, default_value_t = 10)]
    watch_connections: usize,
    /// Webhooks per second, on a fixed schedule.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// HTTP/1.1 connections the webhooks go over: at most this many in
    /// flight. A webhook due while every one is busy is sent late.
    #[arg(long, default_value_t = 256)]
    webhook_connections: usize,
    /// After the window, the longest wait for the last deliveries.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    #[command(flatten)]
    labels: LabelArgs,
}

#[derive(Debug, Args)]
struct HoldArgs {
    #[command(flatten)]
    call: CallArgs,
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// The server's pid, whose RSS is measured.
    #[arg(long)]
    server_pid: u32,
    /// How long to keep the connections open after measuring.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
    #[command(flatten)]
    labels: LabelArgs,
}

#[derive(Debug, Args)]
struct StartupArgs {
    /// The health service name that must turn SERVING ("" is the process).
    #[arg(long, default_value = "roomcontrol.v1.RoomControl")]
    service: String,
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    labels: LabelArgs,
    /// The command; it gets `PORT` and `{port}` in its arguments replaced.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct WaitArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    #[arg(long, default_value = "roomcontrol.v1.RoomControl")]
    service: String,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct RssArgs {
    #[arg(long)]
    pid: u32,
    #[command(flatten)]
    labels: LabelArgs,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Results, one JSON record per line.
    results: PathBuf,
    /// Criterion's output directory, for the signing benchmark
    /// (`$CARGO_TARGET_DIR/criterion`).
    #[arg(long)]
    criterion: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match loadgen::runtime(cli.threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Run(args) => {
            let (addr, plan) = args.call.plan()?;
            let connections = args.connections.unwrap_or(if args.call.protocol.one_call_per_connection() {
                args.concurrency
            } else {
                1
            });
            let record = run::run(run::RunOptions {
                addr,
                target: args.call.target.clone(),
                plan,
                concurrency: args.concurrency,
                rate: args.rate,
                refusals: args.refusals,
                admitted_p99_target: args.admitted_p99_target,
                connections,
                duration: args.duration,
                warmup: args.warmup,
                calls: args.calls,
                server_pid: args.server_pid,
                metrics_url: args.metrics_url.clone(),
                labels: args.labels.labels(),
            })
            .await?;
            let failed = record.errors > 0 || record.calls == 0;
            if args.labels.json {
                println!("{}", Record::Load(record).to_json_line());
            } else {
                print_load(&record);
            }
            // Errors are reported, and the exit status says so too.
            Ok(if failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        Command::Webhooks(args) => {
            let record = timeline::intake(timeline::IntakeOptions {
                intake: args.intake.intake()?,
                target: args.intake.target.clone(),
                store: args.store.clone(),
                concurrency: args.concurrency,
                events: args.events,
                duration: args.intake.duration,
                warmup: args.intake.warmup,
                server_pid: args.intake.server_pid,
                store_match: args.store_match.clone(),
                metrics_url: args.intake.metrics_url.clone(),
                labels: args.labels.labels(),
            })
            .await?;
            let failed = record.errors > 0 || record.events == 0;
            if args.labels.json {
                println!("{}", Record::Webhooks(record).to_json_line());
            } else {
                print_webhooks(&record);
            }
            Ok(if failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        Command::Watch(args) => {
            let record = timeline::fanout(timeline::FanoutOptions {
                intake: args.intake.intake()?,
                target: args.intake.target.clone(),
                watchers: args.watchers,
                watch_connections: args.watch_connections,
                rate: args.rate,
                webhook_connections: args.webhook_connections,
                duration: args.intake.duration,
                warmup: args.intake.warmup,
                drain: args.drain,
                server_pid: args.intake.server_pid,
                metrics_url: args.intake.metrics_url.clone(),
                labels: args.labels.labels(),
            })
            .await?;
            // Late or missing deliveries are the measurement (the report
            // says whether the target holds); failed webhooks are errors.
            let failed = record.webhook_errors > 0 || record.events == 0;
            if args.labels.json {
                println!("{}", Record::Fanout(record).to_json_line());
            } else {
                print_fanout(&record);
            }
            Ok(if failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        Command::Hold(args) => {
            let (addr, plan) = args.call.plan()?;
            let record =
                run::hold_connections(addr, plan, args.connections, args.server_pid, args.hold, args.labels.labels())
                    .await?;
            if args.labels.json {
                println!("{}", Record::Connections(record).to_json_line());
            } else {
                println!(
                    "{} {} connections: server RSS {:.1} MiB -> {:.1} MiB ({:.1} KiB per connection)",
                    record.connections,
                    record.protocol.name(),
                    record.rss_kib_before as f64 / 1024.0,
                    record.rss_kib_after as f64 / 1024.0,
                    record.kib_per_connection
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Startup(args) => {
            let record = run::startup(run::StartupOptions {
                command: args.command,
                service: args.service,
                repeat: args.repeat,
                timeout: args.timeout,
                labels: args.labels.labels(),
            })
            .await?;
            if args.labels.json {
                println!("{}", Record::Startup(record).to_json_line());
            } else {
                let runs: Vec<String> = record.runs_ms.iter().map(|ms| format!("{ms:.1}")).collect();
                println!(
                    "start-up to SERVING: median {:.1} ms (min {:.1}, max {:.1}; runs {} ms), RSS then {}",
                    record.median_ms,
                    record.min_ms,
                    record.max_ms,
                    runs.join(", "),
                    record
                        .rss_kib_at_serving
                        .map_or("unknown".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait(args) => {
            let (addr, _) = parse_target(&args.target)?;
            let waited = run::wait_serving(addr, &args.service, args.timeout).await?;
            eprintln!("{} reports {:?} SERVING after {waited:?}", args.target, args.service);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rss(args) => {
            let record = run::idle_rss(args.pid, args.labels.labels())?;
            if args.labels.json {
                println!("{}", Record::IdleRss(record).to_json_line());
            } else {
                println!("RSS of {}: {:.1} MiB", record.pid, record.rss_kib as f64 / 1024.0);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let text = std::fs::read_to_string(&args.results)
                .map_err(|e| format!("cannot read {}: {e}", args.results.display()))?;
            let records = report::parse_records(&text)?;
            let signing = match &args.criterion {
                Some(dir) => report::read_signing(dir)?,
                None => None,
            };
            print!("{}", report::render(&records, signing.as_ref()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_load(record: &LoadRecord) {
    let latency = &record.latency_us;
    let load = match record.rate {
        Some(rate) => format!("{rate:.0} calls/s (open loop, at most {} in flight)", record.concurrency),
        None => format!("{} calls in flight", record.concurrency),
    };
    println!(
        "{} over {}: {load} on {} connection(s), {:.1} s measured after {:.1} s of warm-up",
        record.rpc.name(),
        record.protocol.name(),
        record.connections,
        record.duration_s,
        record.warmup_s
    );
    println!("  calls     {} ({:.0}/s), errors {}", record.calls, record.calls_per_s, record.errors);
    if let Some(refused) = &record.refused {
        let latency = &refused.latency_us;
        println!("  refused   {} ({:.0}/s) RESOURCE_EXHAUSTED", refused.calls, refused.calls_per_s);
        println!(
            "            p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
            latency.p50, latency.p90, latency.p99, latency.p999, latency.max
        );
    }
    for (kind, error) in &record.error_kinds {
        println!("    {kind}: {} (e.g. {})", error.count, error.example);
    }
    println!(
        "  latency   p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        latency.p50, latency.p90, latency.p99, latency.p999, latency.max
    );
    if let Some(server) = &record.server {
        println!(
            "  server    CPU {:.0}% of a core, {:.1} us per call; RSS {:.1} MiB (max {:.1})",
            server.cpu_util * 100.0,
            server.cpu_us_per_call,
            server.rss_kib_end as f64 / 1024.0,
            server.rss_kib_max as f64 / 1024.0
        );
        if let (Some(before), Some(start), Some(peak)) =
            (server.rss_kib_before, server.rss_kib_start, server.rss_kib_peak)
        {
            println!(
                "            RSS before the run {:.1} MiB, after the warm-up {:.1} MiB, the process's peak {:.1} MiB",
                before as f64 / 1024.0,
                start as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
    }
    print_timeline(record.timeline.as_ref());
    if let Some(lag) = &record.send_lag_us {
        println!("  sent late p50 {:.1} us, p99 {:.1} us, max {:.1} us (open loop)", lag.p50, lag.p99, lag.max);
    }
    if let Some(client) = record.client_cpu_util {
        println!("  loadgen   CPU {:.0}% of a core", client * 100.0);
    }
}

fn print_timeline(timeline: Option<&loadgen::record::TimelineSample>) {
    if let Some(t) = timeline {
        println!(
            "  timeline  {} events appended in {} batches ({:.1} events, {:.0} us per batch); webhooks {:?}",
            t.appended,
            t.batches,
            t.mean_batch(),
            t.mean_batch_us(),
            t.webhooks
        );
    }
}

fn print_webhooks(record: &WebhookRecord) {
    let latency = &record.latency_us;
    println!(
        "webhooks ({}) on {} connections, {:.1} s measured after {:.1} s of warm-up; {} pre-signed{}, {:.0} bytes each",
        record.store,
        record.concurrency,
        record.duration_s,
        record.warmup_s,
        record.presigned,
        if record.ran_out { " (ALL USED: the window ended there)" } else { "" },
        record.body_bytes_mean
    );
    println!("  stored    {} ({:.0}/s), errors {}", record.events, record.events_per_s, record.errors);
    for (kind, error) in &record.error_kinds {
        println!("    {kind}: {} (e.g. {})", error.count, error.example);
    }
    println!(
        "  latency   p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        latency.p50, latency.p90, latency.p99, latency.p999, latency.max
    );
    if let Some(server) = &record.server {
        println!(
            "  server    CPU {:.0}% of a core, {:.1} us per event ({:.0} events/s per core); RSS {:.1} MiB",
            server.cpu_util * 100.0,
            server.cpu_us_per_call,
            if server.cpu_us_per_call > 0.0 { 1e6 / server.cpu_us_per_call } else { 0.0 },
            server.rss_kib_end as f64 / 1024.0
        );
    }
    if let Some(store) = &record.store_cpu {
        println!(
            "  store     CPU {:.0}% of a core ({} processes), {:.1} us per event",
            store.cpu_util * 100.0,
            store.pids.len(),
            if record.events > 0 { store.cpu_s * 1e6 / record.events as f64 } else { 0.0 }
        );
    }
    print_timeline(record.timeline.as_ref());
    if let Some(client) = record.client_cpu_util {
        println!("  loadgen   CPU {:.0}% of a core", client * 100.0);
    }
}

fn print_fanout(record: &FanoutRecord) {
    println!(
        "{} WatchEvents streams on {} connections (opened in {:.2} s); {:.0} webhooks/s on {} connections, {:.1} s measured after {:.1} s",
        record.watchers,
        record.watch_connections,
        record.setup_s,
        record.rate,
        record.webhook_connections,
        record.duration_s,
        record.warmup_s
    );
    println!(
        "  webhooks  {} stored in the window, errors {}; p50 {:.1} us, p99 {:.1} us; sent late by {:.1} us at p99",
        record.events,
        record.webhook_errors,
        record.webhook_latency_us.p50,
        record.webhook_latency_us.p99,
        record.send_lag_us.p99
    );
    for (kind, error) in &record.error_kinds {
        println!("    {kind}: {} (e.g. {})", error.count, error.example);
    }
    let l = &record.latency_us;
    println!(
        "  delivered {} of {} ({:.0} deliveries/s in the window), the last {:.3} s after it; streams ended: {:?}",
        record.deliveries, record.expected_deliveries, record.deliveries_per_s, record.drain_s, record.streams_ended
    );
    if record.undelivered > 0 {
        println!(
            "  NEVER CAME {} deliveries, counted as arriving at the end: the latencies below are lower bounds",
            record.undelivered
        );
    }
    println!(
        "  from send p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    let a = &record.from_answer_us;
    println!(
        "  from 200  p50 {:.1} us, p99 {:.1} us ({} delivered before the 200 arrived)",
        a.p50, a.p99, record.delivered_before_answer
    );
    if let Some(server) = &record.server {
        println!(
            "  server    CPU {:.0}% of a core, {:.2} us per delivery; RSS {:.1} MiB",
            server.cpu_util * 100.0,
            server.cpu_us_per_call,
            server.rss_kib_end as f64 / 1024.0
        );
    }
    print_timeline(record.timeline.as_ref());
    if let Some(client) = record.client_cpu_util {
        println!("  loadgen   CPU {:.0}% of a core", client * 100.0);
    }
}
