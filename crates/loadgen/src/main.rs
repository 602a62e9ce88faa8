//! `loadgen`: RoomControl's load generator. See `loadgen --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::client::{Plan, PlanOptions, Protocol, Rpc};
use loadgen::record::{Labels, LoadRecord, Record};
use loadgen::{parse_header, parse_target, report, run};

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
    /// The server's pid, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
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
                server_pid: args.server_pid,
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
    if let Some(lag) = &record.send_lag_us {
        println!("  sent late p50 {:.1} us, p99 {:.1} us, max {:.1} us (open loop)", lag.p50, lag.p99, lag.max);
    }
    if let Some(client) = record.client_cpu_util {
        println!("  loadgen   CPU {:.0}% of a core", client * 100.0);
    }
}
