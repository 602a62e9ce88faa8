//! A short smoke run, never a timed assertion: the bare baseline server on
//! an ephemeral port, the load generator against it for about a second over
//! gRPC and over grpc-web, closed and open loop, and the output read back as
//! the report does.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use loadgen::record::Record;

/// The baseline server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_baseline() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baseline-server"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the baseline server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its stdout")).read_line(&mut line).expect("a first line");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Server { url: format!("http://{addr}"), child }
}

fn loadgen(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "loadgen {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn run(server: &Server, protocol: &str, side: &str) -> String {
    let pid = server.child.id().to_string();
    let args = [
        "run",
        "--target",
        &server.url,
        "--protocol",
        protocol,
        "--rpc",
        "create-token",
        "--concurrency",
        "4",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "100ms",
        "--header",
        "x-bench:smoke",
        "--server-pid",
        &pid,
        "--scenario",
        &format!("smoke {protocol}"),
        "--side",
        side,
        "--json",
    ];
    loadgen(&args)
}

#[test]
fn the_load_generator_drives_the_baseline_over_grpc_and_grpc_web_without_errors() {
    let server = start_baseline();
    let mut lines = String::new();
    for protocol in ["grpc", "grpc-web"] {
        let line = run(&server, protocol, "baseline");
        let record: Record = serde_json::from_str(line.trim()).expect("one JSON record");
        let Record::Load(load) = record else { panic!("a load record, got {line}") };
        assert_eq!(load.errors, 0, "{line}");
        assert!(load.calls > 0, "{line}");
        assert!(load.latency_us.p50 > 0.0 && load.latency_us.p50 <= load.latency_us.max, "{line}");
        let server_sample = load.server.expect("the server's CPU and RSS were sampled");
        assert!(server_sample.rss_kib_end > 0, "{line}");
        lines.push_str(&line);
        // The same load again, labelled as the other side of the comparison.
        lines.push_str(&run(&server, protocol, "roomcontrol"));
    }
    let records = loadgen::report::parse_records(&lines).expect("the results parse");
    let table = loadgen::report::render(&records, None);
    assert!(table.contains("| smoke grpc |"), "{table}");
    assert!(table.contains("| smoke grpc-web |"), "{table}");
}

#[test]
fn an_open_loop_keeps_its_rate_and_counts_refusals_apart() {
    let server = start_baseline();
    let pid = server.child.id().to_string();
    let line = loadgen(&[
        "run",
        "--target",
        &server.url,
        "--rpc",
        "create-token",
        "--rate",
        "500",
        "--concurrency",
        "50",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "100ms",
        "--refusals",
        "--admitted-p99-target",
        "100ms",
        "--server-pid",
        &pid,
        "--json",
    ]);
    let Record::Load(load) = serde_json::from_str(line.trim()).expect("one JSON record") else {
        panic!("a load record, got {line}")
    };
    assert_eq!(load.errors, 0, "{line}");
    assert_eq!(load.rate, Some(500.0), "{line}");
    // 500 calls due in the measured second; the bare server refuses none.
    assert!((400..=510).contains(&load.calls), "{line}");
    let refused = load.refused.expect("refusals are counted");
    assert_eq!(refused.calls, 0, "{line}");
    assert_eq!(load.admitted_p99_target_us, Some(100_000.0), "{line}");
    let server_sample = load.server.expect("the server was sampled");
    assert!(server_sample.rss_kib_before.is_some_and(|kib| kib > 0), "{line}");
    assert!(server_sample.rss_kib_start.is_some_and(|kib| kib > 0), "{line}");
    assert!(load.send_lag_us.is_some(), "{line}");
    assert!(server_sample.rss_kib_peak.is_some_and(|kib| kib >= server_sample.rss_kib_end), "{line}");
}

#[test]
fn start_up_is_measured_to_health_serving() {
    let line = loadgen(&[
        "startup",
        "--repeat",
        "1",
        "--json",
        "--",
        env!("CARGO_BIN_EXE_baseline-server"),
        "--listen",
        "127.0.0.1:{port}",
    ]);
    let Record::Startup(startup) = serde_json::from_str(line.trim()).expect("one JSON record") else {
        panic!("a start-up record, got {line}")
    };
    assert_eq!(startup.runs_ms.len(), 1);
    assert!(startup.median_ms > 0.0);
}
