//! The benchmark table: each scenario's RoomControl figure next to its
//! baseline from the same run, the ratio, and the performance target (docs/benchmarks.md, Targets).

use std::fmt::Write as _;
use std::path::Path;

use crate::client::{Protocol, Rpc};
use crate::record::{ConnectionsRecord, IdleRssRecord, LoadRecord, Record, StartupRecord};

/// Reads a results file: one JSON record per line; blank lines are skipped.
pub fn parse_records(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", index + 1)))
        .collect()
}

/// The criterion figures of `benches/signing.rs`, in nanoseconds per token
/// (criterion's median estimate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signing {
    pub roomcontrol_ns: f64,
    pub bare_hmac_ns: f64,
    /// The whole CreateToken handler: validation, then signing.
    pub handler_ns: Option<f64>,
}

/// The criterion group and benchmark names `benches/signing.rs` uses.
pub const SIGNING_GROUP: &str = "signing";
pub const SIGNING_ROOMCONTROL: &str = "roomcontrol_sign";
pub const SIGNING_BARE_HMAC: &str = "bare_hmac_sha256";
pub const SIGNING_HANDLER: &str = "create_token_handler";

/// Reads criterion's estimates for the signing benchmark, if it ran.
pub fn read_signing(criterion_dir: &Path) -> Result<Option<Signing>, String> {
    let estimate = |name: &str| -> Result<Option<f64>, String> {
        let path = criterion_dir.join(SIGNING_GROUP).join(name).join("new/estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(json.pointer("/median/point_estimate").and_then(|value| value.as_f64()))
    };
    let (Some(roomcontrol_ns), Some(bare_hmac_ns)) = (estimate(SIGNING_ROOMCONTROL)?, estimate(SIGNING_BARE_HMAC)?)
    else {
        return Ok(None);
    };
    Ok(Some(Signing { roomcontrol_ns, bare_hmac_ns, handler_ns: estimate(SIGNING_HANDLER)? }))
}

/// One target check: what it says, and whether it holds.
struct Check {
    what: String,
    met: bool,
}

fn check(met: bool, what: impl Into<String>) -> Check {
    Check { what: what.into(), met }
}

/// "met", or "MISSED: " and the checks that failed.
fn verdict(checks: &[Check]) -> (String, String) {
    let target = checks.iter().map(|c| c.what.as_str()).collect::<Vec<_>>().join(", ");
    let missed: Vec<&str> = checks.iter().filter(|c| !c.met).map(|c| c.what.as_str()).collect();
    let verdict = if checks.is_empty() {
        String::new()
    } else if missed.is_empty() {
        "met".to_owned()
    } else {
        format!("MISSED ({})", missed.join("; "))
    };
    (target, verdict)
}

/// The performance targets for a load scenario, given RoomControl's record and
/// the baseline's.
fn load_checks(roomcontrol: &LoadRecord, baseline: Option<&LoadRecord>) -> Vec<Check> {
    let ratio = baseline.map(|base| ratio(roomcontrol.calls_per_s, base.calls_per_s));
    let ratio_check = |at_least: f64| match ratio {
        Some(ratio) => check(ratio >= at_least, format!(">= {at_least}x baseline")),
        None => check(false, format!(">= {at_least}x baseline (no baseline)")),
    };
    let errors = check(roomcontrol.errors == 0 && baseline.is_none_or(|b| b.errors == 0), "no errors");
    let mut checks = match (roomcontrol.rpc, roomcontrol.protocol, roomcontrol.concurrency) {
        _ if roomcontrol.labels.informational => Vec::new(),
        (Rpc::CreateToken, Protocol::Grpc, 64) => vec![
            check(roomcontrol.calls_per_s >= 40_000.0, ">= 40,000 calls/s"),
            check(roomcontrol.latency_us.p99 <= 2_000.0, "p99 <= 2 ms"),
            ratio_check(0.8),
        ],
        (Rpc::CreateToken, Protocol::GrpcWeb, _) => {
            vec![check(roomcontrol.calls_per_s >= 50_000.0, ">= 50,000 calls/s"), ratio_check(0.8)]
        }
        (Rpc::GetRoom | Rpc::ListRooms, _, 1) => {
            let added = baseline.map(|base| roomcontrol.latency_us.p50 - base.latency_us.p50);
            vec![check(added.is_some_and(|added| added <= 60.0), "adds <= 60 us at p50")]
        }
        (Rpc::GetRoom | Rpc::ListRooms, _, _) => vec![ratio_check(0.7)],
        _ => Vec::new(),
    };
    checks.push(errors);
    checks
}

fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline == 0.0 { 0.0 } else { value / baseline }
}

/// 12345.6 -> "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Microseconds, in the unit that reads best.
fn duration_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The scenarios in the order they first appear.
fn scenarios(records: &[Record]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for record in records {
        let name = match record {
            Record::Load(r) => &r.labels.scenario,
            Record::Startup(r) => &r.labels.scenario,
            Record::Connections(r) => &r.labels.scenario,
            Record::IdleRss(r) => &r.labels.scenario,
        };
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Every record of a scenario and side matching `pick`, in the order they ran.
fn runs<'a, T>(
    records: &'a [Record],
    scenario: &str,
    side: &str,
    pick: impl Fn(&'a Record) -> Option<&'a T>,
    labels: impl Fn(&T) -> (&str, &str),
) -> Vec<&'a T> {
    records.iter().filter_map(pick).filter(|r| labels(r) == (scenario, side)).collect()
}

/// The last record of a scenario and side matching `pick`.
fn find<'a, T>(
    records: &'a [Record],
    scenario: &str,
    side: &str,
    pick: impl Fn(&'a Record) -> Option<&'a T>,
    labels: impl Fn(&T) -> (&str, &str),
) -> Option<&'a T> {
    runs(records, scenario, side, pick, labels).pop()
}

/// Every load record of a scenario and side, in the order they ran.
fn loads<'a>(records: &'a [Record], scenario: &str, side: &str) -> Vec<&'a LoadRecord> {
    runs(
        records,
        scenario,
        side,
        |r| if let Record::Load(r) = r { Some(r) } else { None },
        |r: &LoadRecord| (r.labels.scenario.as_str(), r.labels.side.as_str()),
    )
}

/// For a scenario measured in rounds (its baseline, then RoomControl, run
/// back to back, several times): the round whose RoomControl/baseline
/// calls/s ratio is the median. The two sides of a round ran within seconds
/// of each other, so its ratio is what a drifting host disturbs least.
fn median_round(roomcontrol: &[&LoadRecord], baseline: &[&LoadRecord]) -> usize {
    let mut rounds: Vec<usize> = (0..roomcontrol.len().min(baseline.len())).collect();
    rounds.sort_by(|&a, &b| {
        ratio(roomcontrol[a].calls_per_s, baseline[a].calls_per_s)
            .total_cmp(&ratio(roomcontrol[b].calls_per_s, baseline[b].calls_per_s))
    });
    rounds.get(rounds.len() / 2).copied().unwrap_or(roomcontrol.len() - 1)
}

const ROOMCONTROL: &str = "roomcontrol";
const BASELINE: &str = "baseline";
/// The bare tonic proxy of `baseline-server --livekit-url`: for the calls
/// that reach LiveKit, the limit of the stack RoomControl is built on.
const PROXY: &str = "proxy";

/// Renders the table (Markdown) and, below it, every run's details.
pub fn render(records: &[Record], signing: Option<&Signing>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| Scenario | RoomControl | Baseline | Ratio | p50 / p99 RoomControl | p50 / p99 baseline | Server CPU per call, RC / baseline (per-core ratio) | Target | Verdict |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|---|");
    for scenario in scenarios(records) {
        let startup = |side| {
            find(
                records,
                &scenario,
                side,
                |r| if let Record::Startup(r) = r { Some(r) } else { None },
                |r: &StartupRecord| (r.labels.scenario.as_str(), r.labels.side.as_str()),
            )
        };
        let idle = |side| {
            find(
                records,
                &scenario,
                side,
                |r| if let Record::IdleRss(r) = r { Some(r) } else { None },
                |r: &IdleRssRecord| (r.labels.scenario.as_str(), r.labels.side.as_str()),
            )
        };
        let held = |side| {
            find(
                records,
                &scenario,
                side,
                |r| if let Record::Connections(r) = r { Some(r) } else { None },
                |r: &ConnectionsRecord| (r.labels.scenario.as_str(), r.labels.side.as_str()),
            )
        };
        let roomcontrol = loads(records, &scenario, ROOMCONTROL);
        if !roomcontrol.is_empty() {
            let baseline = loads(records, &scenario, BASELINE);
            let proxy = loads(records, &scenario, PROXY);
            let rounds = roomcontrol.len();
            // Measured in rounds: one baseline run per RoomControl run.
            let in_rounds = rounds > 1 && baseline.len() == rounds;
            let round = if in_rounds { median_round(&roomcontrol, &baseline) } else { rounds - 1 };
            let rc = roomcontrol[round];
            let base = baseline.get(round).or(baseline.last()).copied();
            let proxy_run = proxy.get(round).or(proxy.last()).copied();
            let (target, verdict) = verdict(&load_checks(rc, base));
            let cpu =
                |r: &LoadRecord| r.server.as_ref().map_or("?".to_owned(), |s| format!("{:.1}", s.cpu_us_per_call));
            // Calls per second of CPU, RoomControl's over the baseline's:
            // unlike calls/s, it holds when the run did not get a whole core.
            // Not against Twirp: that baseline's server is LiveKit, whose work
            // RoomControl does not do.
            let same_work = base.is_some_and(|b| b.protocol != Protocol::Twirp);
            let per_core = match (rc.server.as_ref(), base.and_then(|b| b.server.as_ref()).filter(|_| same_work)) {
                (Some(rc), Some(base)) if rc.cpu_us_per_call > 0.0 => {
                    format!(" ({:.2}x)", base.cpu_us_per_call / rc.cpu_us_per_call)
                }
                _ => String::new(),
            };
            let latency =
                |r: &LoadRecord| format!("{} / {}", duration_us(r.latency_us.p50), duration_us(r.latency_us.p99));
            let mut verdict = verdict;
            if let Some(base) = base {
                let added = rc.latency_us.p50 - base.latency_us.p50;
                verdict = format!("{verdict}; p50 {added:+.0} us");
                if let Some(proxy) = proxy_run {
                    verdict = format!(
                        "{verdict}; a bare tonic proxy: p50 {:+.0} us, {:.2}x",
                        proxy.latency_us.p50 - base.latency_us.p50,
                        ratio(proxy.calls_per_s, base.calls_per_s),
                    );
                }
            }
            if in_rounds {
                let ratios: Vec<String> = (0..rounds)
                    .map(|i| format!("{:.2}x", ratio(roomcontrol[i].calls_per_s, baseline[i].calls_per_s)))
                    .collect();
                verdict = format!("{verdict}; the median of {rounds} rounds ({})", ratios.join(", "));
            }
            let errors: u64 =
                [&roomcontrol, &baseline, &proxy].iter().flat_map(|side| side.iter()).map(|r| r.errors).sum();
            if errors > 0 {
                verdict = format!("{verdict}; {errors} ERRORS");
            }
            let _ = writeln!(
                out,
                "| {scenario} | {} calls/s | {} | {} | {} | {} | {} / {} us{per_core} | {target} | {verdict} |",
                thousands(rc.calls_per_s),
                base.map_or("-".to_owned(), |b| format!("{} calls/s", thousands(b.calls_per_s))),
                base.map_or("-".to_owned(), |b| format!("{:.2}x", ratio(rc.calls_per_s, b.calls_per_s))),
                latency(rc),
                base.map_or("-".to_owned(), latency),
                cpu(rc),
                base.map_or("-".to_owned(), cpu),
            );
        } else if let Some(rc) = startup(ROOMCONTROL) {
            let base = startup(BASELINE);
            let (target, verdict) = verdict(&[check(rc.median_ms <= 50.0, "<= 50 ms")]);
            let _ = writeln!(
                out,
                "| {scenario} | {:.1} ms | {} | {} | - | - | - | {target} | {verdict} (runs {:.1}-{:.1} ms) |",
                rc.median_ms,
                base.map_or("-".to_owned(), |b| format!("{:.1} ms", b.median_ms)),
                base.map_or("-".to_owned(), |b| format!("{:.2}x", ratio(rc.median_ms, b.median_ms))),
                rc.min_ms,
                rc.max_ms,
            );
        } else if let Some(rc) = idle(ROOMCONTROL) {
            let base = idle(BASELINE);
            let (target, verdict) = verdict(&[check(rc.rss_kib <= 16 * 1024, "<= 16 MiB")]);
            let _ = writeln!(
                out,
                "| {scenario} | {} | {} | {} | - | - | - | {target} | {verdict} |",
                mib(rc.rss_kib),
                base.map_or("-".to_owned(), |b| mib(b.rss_kib)),
                base.map_or("-".to_owned(), |b| format!("{:.2}x", ratio(rc.rss_kib as f64, b.rss_kib as f64))),
            );
        } else if let Some(rc) = held(ROOMCONTROL) {
            let base = held(BASELINE);
            let (target, verdict) = verdict(&[check(rc.rss_kib_after <= 48 * 1024, "<= 48 MiB")]);
            let _ = writeln!(
                out,
                "| {scenario} | {} ({:.1} KiB/conn) | {} | {} | - | - | - | {target} | {verdict} |",
                mib(rc.rss_kib_after),
                rc.kib_per_connection,
                base.map_or("-".to_owned(), |b| format!(
                    "{} ({:.1} KiB/conn)",
                    mib(b.rss_kib_after),
                    b.kib_per_connection
                )),
                base.map_or("-".to_owned(), |b| format!(
                    "{:.2}x",
                    ratio(rc.rss_kib_after as f64, b.rss_kib_after as f64)
                )),
            );
        }
    }
    if let Some(signing) = signing {
        let factor = ratio(signing.roomcontrol_ns, signing.bare_hmac_ns);
        let (target, verdict) = verdict(&[check(factor <= 4.0, "<= 4x bare HMAC")]);
        let handler = signing.handler_ns.map_or(String::new(), |ns| format!("; whole CreateToken handler {ns:.0} ns"));
        let _ = writeln!(
            out,
            "| Token signing, in-process (criterion) | {:.0} ns | {:.0} ns (bare HMAC-SHA256) | {factor:.2}x | - | - | - | {target} | {verdict}{handler} |",
            signing.roomcontrol_ns, signing.bare_hmac_ns,
        );
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Run | Side | Connections | calls/s | p50 | p90 | p99 | p99.9 | max | Errors | Server CPU | Server RSS max | loadgen CPU |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for record in records {
        let Record::Load(r) = record else { continue };
        let l = &r.latency_us;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.labels.scenario,
            r.labels.side,
            r.connections,
            thousands(r.calls_per_s),
            duration_us(l.p50),
            duration_us(l.p90),
            duration_us(l.p99),
            duration_us(l.p999),
            duration_us(l.max),
            r.errors,
            r.server.as_ref().map_or("-".to_owned(), |s| format!("{:.0}%", s.cpu_util * 100.0)),
            r.server.as_ref().map_or("-".to_owned(), |s| mib(s.rss_kib_max)),
            r.client_cpu_util.map_or("-".to_owned(), |c| format!("{:.0}%", c * 100.0)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn a_report_pairs_each_scenario_with_its_baseline() {
        let line = |side: &str, calls_per_s: f64| {
            format!(
                r#"{{"kind":"load","scenario":"CreateToken gRPC c=64","side":"{side}","rpc":"create-token","protocol":"grpc","target":"http://x","concurrency":64,"connections":4,"duration_s":5.0,"warmup_s":1.0,"calls":10,"errors":0,"error_kinds":{{}},"calls_per_s":{calls_per_s},"latency_us":{{"p50":900.0,"p90":1000.0,"p99":1500.0,"p999":2000.0,"max":3000.0,"mean":950.0}},"client_cpu_util":0.5,"server":null}}"#
            )
        };
        let text = format!("{}\n{}\n", line("roomcontrol", 45_000.0), line("baseline", 50_000.0));
        let records = parse_records(&text).unwrap();
        let table = render(&records, None);
        assert!(table.contains("| CreateToken gRPC c=64 | 45,000 calls/s | 50,000 calls/s | 0.90x |"), "{table}");
        assert!(table.contains("| met; p50 +0 us |"), "{table}");
    }

    #[test]
    fn a_room_read_shows_the_bare_proxy_beside_roomcontrol() {
        let line = |side: &str, protocol: &str, calls_per_s: f64, p50: f64| {
            format!(
                r#"{{"kind":"load","scenario":"GetRoom, c=1","side":"{side}","rpc":"get-room","protocol":"{protocol}","target":"http://x","concurrency":1,"connections":1,"duration_s":5.0,"warmup_s":1.0,"calls":10,"errors":0,"error_kinds":{{}},"calls_per_s":{calls_per_s},"latency_us":{{"p50":{p50},"p90":1000.0,"p99":1500.0,"p999":2000.0,"max":3000.0,"mean":950.0}},"client_cpu_util":0.5,"server":null}}"#
            )
        };
        let text = [
            line("baseline", "twirp", 10_000.0, 90.0),
            line("proxy", "grpc", 5_000.0, 190.0),
            line("roomcontrol", "grpc", 4_000.0, 200.0),
        ]
        .join("\n");
        let table = render(&parse_records(&text).unwrap(), None);
        assert!(
            table.contains("| MISSED (adds <= 60 us at p50); p50 +110 us; a bare tonic proxy: p50 +100 us, 0.50x |"),
            "{table}"
        );
        assert!(table.contains("| GetRoom, c=1 | proxy | 1 | 5,000 |"), "{table}");
    }

    #[test]
    fn a_scenario_run_in_rounds_shows_its_median_round_and_counts_every_error() {
        let line = |side: &str, calls_per_s: f64, p50: f64, errors: u64| {
            format!(
                r#"{{"kind":"load","scenario":"grpc-web c=64","side":"{side}","rpc":"create-token","protocol":"grpc-web","target":"http://x","concurrency":64,"connections":64,"duration_s":5.0,"warmup_s":1.0,"calls":10,"errors":{errors},"error_kinds":{{}},"calls_per_s":{calls_per_s},"latency_us":{{"p50":{p50},"p90":1000.0,"p99":1500.0,"p999":2000.0,"max":3000.0,"mean":950.0}},"client_cpu_util":0.5,"server":null}}"#
            )
        };
        // Rounds with ratios 0.90x, 0.50x and 0.80x: the median is the third.
        let text = [
            line("baseline", 100_000.0, 400.0, 0),
            line("roomcontrol", 90_000.0, 410.0, 0),
            line("baseline", 100_000.0, 400.0, 0),
            line("roomcontrol", 50_000.0, 900.0, 1),
            line("baseline", 110_000.0, 420.0, 0),
            line("roomcontrol", 88_000.0, 500.0, 0),
        ]
        .join("\n");
        let table = render(&parse_records(&text).unwrap(), None);
        assert!(table.contains("| grpc-web c=64 | 88,000 calls/s | 110,000 calls/s | 0.80x |"), "{table}");
        assert!(table.contains("; p50 +80 us; the median of 3 rounds (0.90x, 0.50x, 0.80x); 1 ERRORS |"), "{table}");
        assert_eq!(table.matches("| grpc-web c=64 | roomcontrol |").count(), 3, "{table}");
    }
}
