//! The benchmark table: each scenario's RoomControl figure next to its
//! baseline from the same run, the ratio, and the performance target (docs/benchmarks.md, Targets).

use std::fmt::Write as _;
use std::path::Path;

use crate::client::{Protocol, Rpc};
use crate::record::{
    ConnectionsRecord, FanoutRecord, IdleRssRecord, Latency, LoadRecord, Record, Refused, StartupRecord,
    TimelineSample, WebhookRecord,
};

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

/// The targets of an overload row: RoomControl at several times what it
/// can serve (`--refusals`), against the same RoomControl at 1x. They are
/// expectations printed as met or missed, like every other row's.
fn overload_checks(roomcontrol: &LoadRecord, refused: &Refused, baseline: Option<&LoadRecord>) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(target) = roomcontrol.admitted_p99_target_us {
        checks.push(check(roomcontrol.latency_us.p99 <= target, format!("admitted p99 <= {}", duration_us(target))));
    }
    checks.push(if refused.calls == 0 {
        check(false, "refused p99 < 1 ms (none refused)")
    } else {
        check(refused.latency_us.p99 < 1000.0, "refused p99 < 1 ms")
    });
    checks.push(match rss_growth(roomcontrol) {
        Some(growth) => check(growth < 0.10, "RSS growth in the window < 10%"),
        None => check(false, "RSS growth in the window < 10% (not measured)"),
    });
    if let Some(base) = baseline {
        let refused_at_1x = base.refused.as_ref().map_or(0, |r| r.calls);
        checks.push(check(refused_at_1x == 0, "none refused at 1x"));
    }
    checks.push(check(roomcontrol.errors == 0 && baseline.is_none_or(|b| b.errors == 0), "no errors"));
    checks
}

/// The server's RSS growth over the measured window: from its start (after
/// the warm-up) to the most it reached in it, as a fraction.
fn rss_growth(record: &LoadRecord) -> Option<f64> {
    let server = record.server.as_ref()?;
    let start = server.rss_kib_start.filter(|&kib| kib > 0)?;
    let most = server.rss_kib_max.max(server.rss_kib_end);
    Some((most as f64 - start as f64) / start as f64)
}

/// An overload scenario's row: admitted and refused calls apart, the
/// admitted p99 against the uncontended one, the server's memory.
fn overload_row(scenario: &str, rc: &LoadRecord, refused: &Refused, base: Option<&LoadRecord>) -> String {
    let (target, mut verdict) = verdict(&overload_checks(rc, refused, base));
    if let Some(base) = base {
        verdict = format!("{verdict}; admitted p99 {:.2}x the 1x p99", ratio(rc.latency_us.p99, base.latency_us.p99));
    }
    verdict = format!(
        "{verdict}; p99.9 admitted {}, refused {}",
        duration_us(rc.latency_us.p999),
        duration_us(refused.latency_us.p999)
    );
    let offered = rc.calls_per_s + refused.calls_per_s;
    verdict = match rc.rate {
        Some(rate) => format!(
            "{verdict}; offered {}/s (open loop at {}/s, at most {} in flight)",
            thousands(offered),
            thousands(rate),
            rc.concurrency
        ),
        None => format!("{verdict}; offered {}/s (closed loop, c={})", thousands(offered), rc.concurrency),
    };
    if let Some(lag) = &rc.send_lag_us {
        verdict = format!("{verdict}, sent late by {} at p99", duration_us(lag.p99));
    }
    if let (Some(server), Some(growth)) = (rc.server.as_ref(), rss_growth(rc)) {
        verdict = format!(
            "{verdict}; RSS {} before, {} after the warm-up -> {} at the end (max {}, {:+.1}%)",
            server.rss_kib_before.map_or("?".to_owned(), mib),
            mib(server.rss_kib_start.unwrap_or_default()),
            mib(server.rss_kib_end),
            mib(server.rss_kib_max),
            growth * 100.0
        );
    }
    let errors = rc.errors + base.map_or(0, |b| b.errors);
    if errors > 0 {
        verdict = format!("{verdict}; {errors} ERRORS");
    }
    // Server CPU per answered call, admitted or refused.
    let cpu = |r: &LoadRecord| {
        let answered = r.calls + r.refused.as_ref().map_or(0, |refused| refused.calls);
        r.server
            .as_ref()
            .filter(|_| answered > 0)
            .map_or("?".to_owned(), |s| format!("{:.1}", s.cpu_s * 1e6 / answered as f64))
    };
    let latency = |l: &Latency| format!("{} / {}", duration_us(l.p50), duration_us(l.p99));
    format!(
        "| {scenario} | {} admitted/s, {} refused/s | {} | {} | admitted {}; refused {} | {} | {} / {} us | {target} | {verdict} |\n",
        thousands(rc.calls_per_s),
        thousands(refused.calls_per_s),
        base.map_or("-".to_owned(), |b| format!("{} calls/s", thousands(b.calls_per_s))),
        base.map_or("-".to_owned(), |b| format!("{:.2}x", ratio(rc.calls_per_s, b.calls_per_s))),
        latency(&rc.latency_us),
        latency(&refused.latency_us),
        base.map_or("-".to_owned(), |b| latency(&b.latency_us)),
        cpu(rc),
        base.map_or("-".to_owned(), cpu),
    )
}

/// The target of the webhook intake: verified, durably stored events per
/// second per core of RoomControl.
const INTAKE_PER_CORE: f64 = 5_000.0;

/// The target of the WatchEvents fan-out: p99 from the webhook's POST to its
/// delivery at each watcher.
const FANOUT_P99_US: f64 = 50_000.0;

/// Events per core-second from CPU microseconds per event.
fn per_core(cpu_us: f64) -> f64 {
    if cpu_us > 0.0 { 1e6 / cpu_us } else { 0.0 }
}

/// What the group commit did: events per append transaction and its time.
fn batches(timeline: &TimelineSample) -> String {
    format!(
        "{:.1} events per append batch, {} each ({} batches)",
        timeline.mean_batch(),
        duration_us(timeline.mean_batch_us()),
        timeline.batches
    )
}

fn webhook_row(scenario: &str, r: &WebhookRecord) -> String {
    let cpu_us = r.server.as_ref().map(|s| s.cpu_us_per_call);
    let checks = [
        match cpu_us {
            Some(cpu_us) => check(per_core(cpu_us) >= INTAKE_PER_CORE, ">= 5,000 events/s per core"),
            None => check(false, ">= 5,000 events/s per core (not measured)"),
        },
        check(r.errors == 0 && r.events > 0, "no errors"),
    ];
    let (target, mut verdict) = verdict(&checks);
    if let Some(server) = &r.server {
        verdict = format!(
            "{verdict}; {} events/s per core of RoomControl (its CPU {:.0}% busy)",
            thousands(per_core(server.cpu_us_per_call)),
            server.cpu_util * 100.0
        );
    }
    if let (Some(store), Some(cpu_us)) = (r.store_cpu.as_ref().filter(|_| r.events > 0), cpu_us) {
        let store_us = store.cpu_s * 1e6 / r.events as f64;
        verdict = format!(
            "{verdict}; the store's backends {store_us:.1} us per event ({:.0}% of a core), {} events/s per core of both together",
            store.cpu_util * 100.0,
            thousands(per_core(cpu_us + store_us))
        );
    }
    if let Some(timeline) = r.timeline.as_ref().filter(|t| t.batches > 0) {
        verdict = format!("{verdict}; {}", batches(timeline));
    }
    verdict = format!("{verdict}; bodies {:.0} bytes", r.body_bytes_mean);
    if r.ran_out {
        verdict = format!("{verdict}; the {} pre-signed webhooks ran out: {:.1} s measured", r.presigned, r.duration_s);
    }
    if r.errors > 0 {
        verdict = format!("{verdict}; {} ERRORS", r.errors);
    }
    format!(
        "| {scenario} | {} events/s | - | - | {} / {} | - | {} us per event | {target} | {verdict} |\n",
        thousands(r.events_per_s),
        duration_us(r.latency_us.p50),
        duration_us(r.latency_us.p99),
        cpu_us.map_or("?".to_owned(), |us| format!("{us:.1}")),
    )
}

fn fanout_row(scenario: &str, r: &FanoutRecord) -> String {
    let ended: u64 = r.streams_ended.values().sum();
    let mut checks = vec![check(r.webhook_errors == 0 && r.events > 0, "no errors")];
    if !r.labels.informational {
        checks.insert(0, check(r.deliveries == r.expected_deliveries && ended == 0, "every event to every watcher"));
        checks.insert(
            0,
            check(r.deliveries > 0 && r.latency_us.p99 <= FANOUT_P99_US, "p99 <= 50 ms from the webhook's POST"),
        );
    }
    let (target, mut verdict) = verdict(&checks);
    verdict = format!(
        "{verdict}; delivered {} of {} ({}/s in the window), the last {} after the window",
        r.deliveries,
        r.expected_deliveries,
        thousands(r.deliveries_per_s),
        duration_us(r.drain_s * 1e6),
    );
    if r.undelivered > 0 {
        verdict = format!(
            "{verdict}; {} never came and count as arriving at the end: the latencies are LOWER BOUNDS",
            r.undelivered
        );
    }
    verdict = format!(
        "{verdict}; p99.9 {}, max {}; from the 200: p50 {}, p99 {} ({} before it); webhooks answered in {} / {}, sent late by {} at p99",
        duration_us(r.latency_us.p999),
        duration_us(r.latency_us.max),
        duration_us(r.from_answer_us.p50),
        duration_us(r.from_answer_us.p99),
        r.delivered_before_answer,
        duration_us(r.webhook_latency_us.p50),
        duration_us(r.webhook_latency_us.p99),
        duration_us(r.send_lag_us.p99),
    );
    if let Some(server) = &r.server {
        let per_event = if r.events > 0 { server.cpu_s * 1e6 / (r.rate * r.duration_s) } else { 0.0 };
        verdict = format!(
            "{verdict}; RoomControl's CPU {:.0}% busy, {} per event, RSS {}",
            server.cpu_util * 100.0,
            duration_us(per_event),
            mib(server.rss_kib_max)
        );
    }
    if ended > 0 {
        verdict = format!("{verdict}; streams ended: {:?}", r.streams_ended);
    }
    if r.webhook_errors > 0 {
        verdict = format!("{verdict}; {} ERRORS", r.webhook_errors);
    }
    format!(
        "| {scenario} | {} deliveries/s | - | - | {} / {} | - | {} us per delivery | {target} | {verdict} |\n",
        thousands(r.deliveries_per_s),
        duration_us(r.latency_us.p50),
        duration_us(r.latency_us.p99),
        r.server.as_ref().map_or("?".to_owned(), |s| format!("{:.2}", s.cpu_us_per_call)),
    )
}

/// Every webhook and fan-out run, with what the timeline did.
fn timeline_details(out: &mut String, records: &[Record]) {
    let rows: Vec<String> = records
        .iter()
        .filter_map(|record| match record {
            Record::Webhooks(r) => Some(format!(
                "| {} | {} webhooks in flight | {} events/s | {} / {} / {} / {} / {} | - | {} | {} | {} | {} | {} | {} |",
                r.labels.scenario,
                r.concurrency,
                thousands(r.events_per_s),
                duration_us(r.latency_us.p50),
                duration_us(r.latency_us.p90),
                duration_us(r.latency_us.p99),
                duration_us(r.latency_us.p999),
                duration_us(r.latency_us.max),
                r.errors,
                r.server.as_ref().map_or("-".to_owned(), |s| format!("{:.0}%", s.cpu_util * 100.0)),
                r.store_cpu.as_ref().map_or("-".to_owned(), |s| format!("{:.0}%", s.cpu_util * 100.0)),
                r.timeline.as_ref().map_or("-".to_owned(), batches),
                r.server.as_ref().map_or("-".to_owned(), |s| mib(s.rss_kib_max)),
                r.client_cpu_util.map_or("-".to_owned(), |c| format!("{:.0}%", c * 100.0)),
            )),
            Record::Fanout(r) => Some(format!(
                "| {} | {} watchers on {} connections, {}/s webhooks | {} events/s, {} deliveries/s | {} / {} / {} / {} / {} | {} of {} | {} | {} | - | {} | {} | {} |",
                r.labels.scenario,
                r.watchers,
                r.watch_connections,
                thousands(r.rate),
                thousands(r.events as f64 / r.duration_s),
                thousands(r.deliveries_per_s),
                duration_us(r.latency_us.p50),
                duration_us(r.latency_us.p90),
                duration_us(r.latency_us.p99),
                duration_us(r.latency_us.p999),
                duration_us(r.latency_us.max),
                r.deliveries,
                r.expected_deliveries,
                r.webhook_errors,
                r.server.as_ref().map_or("-".to_owned(), |s| format!("{:.0}%", s.cpu_util * 100.0)),
                r.timeline.as_ref().map_or("-".to_owned(), batches),
                r.server.as_ref().map_or("-".to_owned(), |s| mib(s.rss_kib_max)),
                r.client_cpu_util.map_or("-".to_owned(), |c| format!("{:.0}%", c * 100.0)),
            )),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Timeline run | Load | Stored / delivered | p50 / p90 / p99 / p99.9 / max (webhook answered; fan-out: delivered, from the POST) | Deliveries | Errors | Server CPU | Store CPU | Group commit | Server RSS max | loadgen CPU |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
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
            Record::Webhooks(r) => &r.labels.scenario,
            Record::Fanout(r) => &r.labels.scenario,
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
        let webhooks = records.iter().rev().find_map(|r| match r {
            Record::Webhooks(r) if r.labels.scenario == scenario => Some(r),
            _ => None,
        });
        let fanout = records.iter().rev().find_map(|r| match r {
            Record::Fanout(r) if r.labels.scenario == scenario => Some(r),
            _ => None,
        });
        if let Some(record) = webhooks {
            out.push_str(&webhook_row(&scenario, record));
            continue;
        }
        if let Some(record) = fanout {
            out.push_str(&fanout_row(&scenario, record));
            continue;
        }
        let roomcontrol = loads(records, &scenario, ROOMCONTROL);
        let overload = roomcontrol.last().and_then(|rc| rc.refused.as_ref().map(|refused| (*rc, refused)));
        if let Some((rc, refused)) = overload {
            let base = loads(records, &scenario, BASELINE).last().copied();
            out.push_str(&overload_row(&scenario, rc, refused, base));
        } else if !roomcontrol.is_empty() {
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
            if let Some(timeline) = rc.timeline.as_ref().filter(|t| t.batches > 0) {
                verdict = format!("{verdict}; {}", batches(timeline));
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

    timeline_details(&mut out, records);

    // Overload runs: what was refused, and the server's memory over the run.
    let overloads: Vec<(&LoadRecord, &Refused)> = records
        .iter()
        .filter_map(
            |record| if let Record::Load(r) = record { r.refused.as_ref().map(|refused| (r, refused)) } else { None },
        )
        .collect();
    if !overloads.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| Run | Side | Load | Refused | refused/s | p50 | p90 | p99 | p99.9 | max | Server RSS before the run / after the warm-up / end / max in the window / peak |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for (r, refused) in overloads {
            let l = &refused.latency_us;
            let load = match r.rate {
                Some(rate) => format!("{}/s, at most {} in flight", thousands(rate), r.concurrency),
                None => format!("c={}", r.concurrency),
            };
            let rss = r.server.as_ref().map_or("-".to_owned(), |s| {
                let optional = |kib: Option<u64>| kib.map_or("?".to_owned(), mib);
                format!(
                    "{} / {} / {} / {} / {}",
                    optional(s.rss_kib_before),
                    optional(s.rss_kib_start),
                    mib(s.rss_kib_end),
                    mib(s.rss_kib_max),
                    optional(s.rss_kib_peak)
                )
            });
            let _ = writeln!(
                out,
                "| {} | {} | {load} | {} | {} | {} | {} | {} | {} | {} | {rss} |",
                r.labels.scenario,
                r.labels.side,
                refused.calls,
                thousands(refused.calls_per_s),
                duration_us(l.p50),
                duration_us(l.p90),
                duration_us(l.p99),
                duration_us(l.p999),
                duration_us(l.max),
            );
        }
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
    fn an_overload_row_shows_admitted_and_refused_calls_apart() {
        let server = |start: u64, max: u64| {
            format!(
                r#"{{"pid":1,"cpu_s":2.0,"cpu_util":0.4,"cpu_us_per_call":0.0,"rss_kib_end":{max},"rss_kib_max":{max},"rss_kib_before":9000,"rss_kib_start":{start},"rss_kib_peak":{max}}}"#
            )
        };
        let line = |side: &str, extra: &str, calls: u64, p99: f64, server: String| {
            format!(
                r#"{{"kind":"load","scenario":"GetRoom overload","side":"{side}","rpc":"get-room","protocol":"grpc","target":"http://x","concurrency":64,"connections":4,"duration_s":5.0,"warmup_s":1.0,"calls":{calls},"errors":0,"error_kinds":{{}},"calls_per_s":{},"latency_us":{{"p50":21000.0,"p90":21500.0,"p99":{p99},"p999":50000.0,"max":60000.0,"mean":21000.0}},{extra}"client_cpu_util":0.5,"server":{server}}}"#,
                calls / 5
            )
        };
        let refused = |calls: u64, p99: f64| {
            format!(
                r#""refused":{{"calls":{calls},"calls_per_s":{},"latency_us":{{"p50":200.0,"p90":300.0,"p99":{p99},"p999":900.0,"max":2000.0,"mean":220.0}},"example":"at capacity"}},"#,
                calls / 5
            )
        };
        let overload = |refused_p99: f64, rss_max: u64| {
            let extra = format!(
                r#""rate":32000.0,{}"admitted_p99_target_us":120000.0,"send_lag_us":{{"p50":300.0,"p90":800.0,"p99":1100.0,"p999":1500.0,"max":2000.0,"mean":400.0}},"#,
                refused(144_000, refused_p99)
            );
            line("roomcontrol", &extra, 16_000, 42_000.0, server(10_240, rss_max))
        };
        let uncontended = line("baseline", &refused(0, 0.0), 16_000, 21_000.0, server(10_000, 10_100));

        let text = [uncontended.clone(), overload(600.0, 10_752)].join("\n");
        let table = render(&parse_records(&text).unwrap(), None);
        assert!(
            table.contains("| GetRoom overload | 3,200 admitted/s, 28,800 refused/s | 3,200 calls/s | 1.00x | admitted 21.0 ms / 42.0 ms; refused 200 us / 600 us | 21.0 ms / 21.0 ms | 12.5 / 125.0 us |"),
            "{table}"
        );
        assert!(
            table.contains("| met; admitted p99 2.00x the 1x p99; p99.9 admitted 50.0 ms, refused 900 us; offered 32,000/s (open loop at 32,000/s, at most 64 in flight), sent late by 1.10 ms at p99; RSS 8.8 MiB before, 10.0 MiB after the warm-up -> 10.5 MiB at the end (max 10.5 MiB, +5.0%) |"),
            "{table}"
        );
        assert!(
            table.contains("| GetRoom overload | roomcontrol | 32,000/s, at most 64 in flight | 144000 | 28,800 |"),
            "{table}"
        );

        let text = [uncontended, overload(1500.0, 12_000)].join("\n");
        let table = render(&parse_records(&text).unwrap(), None);
        assert!(table.contains("| MISSED (refused p99 < 1 ms; RSS growth in the window < 10%);"), "{table}");
    }

    #[test]
    fn the_timeline_rows_check_their_targets() {
        let server = |cpu_s: f64, per_call: f64| {
            format!(
                r#"{{"pid":1,"cpu_s":{cpu_s},"cpu_util":0.5,"cpu_us_per_call":{per_call},"rss_kib_end":20480,"rss_kib_max":20480}}"#
            )
        };
        let latency = |p50: f64, p99: f64| {
            format!(r#"{{"p50":{p50},"p90":{p99},"p99":{p99},"p999":{p99},"max":{p99},"mean":{p50}}}"#)
        };
        let timeline = r#"{"appended":50000,"batches":1000,"batch_seconds":2.0,"webhooks":{"stored":50000}}"#;
        let intake = |scenario: &str, per_event: f64, store: &str| {
            format!(
                r#"{{"kind":"webhooks","scenario":"{scenario}","side":"roomcontrol","target":"http://x","store":"SQLite file","concurrency":64,"duration_s":5.0,"warmup_s":1.0,"presigned":100000,"ran_out":false,"body_bytes_mean":640.0,"events":50000,"events_per_s":10000.0,"errors":0,"error_kinds":{{}},"latency_us":{},"client_cpu_util":0.5,"server":{},{store}"timeline":{timeline}}}"#,
                latency(6000.0, 12000.0),
                server(2.5, per_event)
            )
        };
        let fanout = |p99: f64, deliveries: u64| {
            format!(
                r#"{{"kind":"fanout","scenario":"fan-out","side":"roomcontrol","target":"http://x","watchers":1000,"watch_connections":10,"rate":500.0,"webhook_connections":16,"duration_s":5.0,"warmup_s":1.0,"events":2500,"webhook_errors":0,"error_kinds":{{}},"webhook_latency_us":{},"send_lag_us":{},"deliveries":{deliveries},"expected_deliveries":2500000,"latency_us":{},"from_answer_us":{},"delivered_before_answer":0,"deliveries_per_s":500000.0,"streams_ended":{{}},"drain_s":0.01,"setup_s":0.5,"client_cpu_util":0.9,"server":{}}}"#,
                latency(2000.0, 4000.0),
                latency(100.0, 900.0),
                latency(9000.0, p99),
                latency(8000.0, p99),
                server(4.0, 1.6)
            )
        };
        let store = r#""store_cpu":{"pids":[7,8],"cpu_s":1.0,"cpu_util":0.2},"#;
        let text = [
            intake("intake sqlite", 50.0, ""),
            intake("intake pg", 250.0, store),
            fanout(40_000.0, 2_500_000),
            fanout(60_000.0, 2_499_000).replace("fan-out", "slow fan-out"),
        ]
        .join("\n");
        let table = render(&parse_records(&text).unwrap(), None);
        assert!(
            table.contains("| intake sqlite | 10,000 events/s | - | - | 6.00 ms / 12.0 ms | - | 50.0 us per event | >= 5,000 events/s per core, no errors | met; 20,000 events/s per core of RoomControl (its CPU 50% busy); 50.0 events per append batch, 2.00 ms each (1000 batches); bodies 640 bytes |"),
            "{table}"
        );
        assert!(
            table.contains("| intake pg | 10,000 events/s | - | - | 6.00 ms / 12.0 ms | - | 250.0 us per event | >= 5,000 events/s per core, no errors | MISSED (>= 5,000 events/s per core); 4,000 events/s per core of RoomControl (its CPU 50% busy); the store's backends 20.0 us per event (20% of a core), 3,704 events/s per core of both together;"),
            "{table}"
        );
        assert!(table.contains("| fan-out | 500,000 deliveries/s | - | - | 9.00 ms / 40.0 ms | - | 1.60 us per delivery | p99 <= 50 ms from the webhook's POST, every event to every watcher, no errors | met; delivered 2500000 of 2500000"), "{table}");
        assert!(
            table.contains("| MISSED (p99 <= 50 ms from the webhook's POST; every event to every watcher); delivered 2499000 of 2500000"),
            "{table}"
        );
        assert_eq!(table.matches("| 1000 watchers on 10 connections, 500/s webhooks |").count(), 2, "{table}");
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
