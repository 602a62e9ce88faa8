//! The history's query benchmark (docs/benchmarks.md, "History"):
//! generates room and participant sessions straight into the history's
//! tables of a fresh database, starts RoomControl on it (beside the LiveKit
//! stand-in), and times ListRoomSessions for a day, GetRoomSession and a
//! 30-day GetUsage through the real gRPC client, one call at a time.
//!
//! ```sh
//! cargo run --release --example history_bench -- --store postgres --participants 1000000
//! cargo run --release --example history_bench -- --store sqlite --participants 100000
//! ```
//!
//! The data: `participants / 10` room sessions of 45 minutes, evenly spread
//! over the 30 days before the run, in 1,000 rooms, each with 10
//! participant sessions (joins a minute apart, leaves 30 s apart, one
//! track each) drawn from 20,000 identities; the 30 days end at the
//! midnight (UTC) before the run, or with `--through-now` at its start.
//! PostgreSQL: BENCH_POSTGRES
//! (default postgres://postgres@127.0.0.1:5432); the database is created
//! and dropped by the run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use livekit_standin::{StandIn, StandInConfig};
use roomcontrol::proto::v1::room_control_client::RoomControlClient;
use roomcontrol::proto::v1::*;
use roomcontrol::{Application, Config};
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Postgres,
    Sqlite,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "postgres")]
    store: StoreKind,
    /// Participant sessions to generate (a tenth as many room sessions).
    #[arg(long, default_value_t = 1_000_000)]
    participants: i64,
    /// Calls timed per RPC.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// GetUsage's `from` and `to` in whole seconds, as the first version of
    /// this bench sent them: calls within one second then ask for the same
    /// partial first bucket (and find it cached). Without it, each call asks
    /// up to its own now, to the microsecond, as a client calling at its own
    /// moment does.
    #[arg(long)]
    whole_seconds: bool,
    /// The sessions run up to the start of the run (not to the midnight
    /// UTC before it): "today" is as busy as any day, and each 30-day
    /// GetUsage counts its part of today from the rows, as with live
    /// traffic.
    #[arg(long)]
    through_now: bool,
}

const DAY: i64 = 86_400_000_000;
const MINUTE: i64 = 60_000_000;

/// The generator, in SQL: one statement per table. `{S}` room sessions
/// from `{BASE}` every `{STEP}` microseconds; `{SERIES_S}` and `{SERIES_J}`
/// are each database's way of counting.
const ROOMS: &str = "INSERT INTO room_sessions (room_sid, room, start_at, first_seen_at, end_at, started_at, participant_sessions, peak_participants, unique_identities, participant_micros, open_participants, inferred, first_cursor, last_cursor) \
SELECT 'RM_bench_' || i, 'bench-room-' || {ROOM_NUMBER}, {BASE} + i * {STEP}, {BASE} + i * {STEP}, {BASE} + i * {STEP} + {LENGTH}, {BASE} + i * {STEP}, 10, 10, 10, 22950000000, 0, {FALSE}, 0, 0 FROM {SERIES_S}";

const PARTICIPANTS: &str = "INSERT INTO participant_sessions (participant_sid, room_sid, room, identity, name, kind, join_at, leave_at, leave_type, joined_at, left_at, end_reason, joined_cursor, left_cursor) \
SELECT 'PA_bench_' || i || '_' || j, 'RM_bench_' || i, 'bench-room-' || {ROOM_NUMBER}, 'user-' || ((i * 7 + j * 13) % 20000), 'User ' || ((i * 7 + j * 13) % 20000), 'standard', \
{BASE} + i * {STEP} + j * {MINUTE}, {BASE} + i * {STEP} + {LENGTH} - j * 30000000, 'participant_left', \
{BASE} + i * {STEP} + j * {MINUTE}, {BASE} + i * {STEP} + {LENGTH} - j * 30000000, 'left', 0, 0 FROM {SERIES_S} CROSS JOIN {SERIES_J}";

const TRACKS: &str = "INSERT INTO participant_tracks (participant_sid, track_sid, type, source, name, published_at, unpublished_at) \
SELECT 'PA_bench_' || i || '_' || j, 'TR_bench_' || i || '_' || j, 'audio', 'microphone', 'mic', {BASE} + i * {STEP} + j * {MINUTE} + 1000000, {BASE} + i * {STEP} + {LENGTH} - j * 30000000 FROM {SERIES_S} CROSS JOIN {SERIES_J}";

fn sql(template: &str, store: StoreKind, sessions: i64, base: i64, step: i64) -> String {
    let (series_s, series_j, room_number, false_) = match store {
        StoreKind::Postgres => (
            format!("generate_series(0::bigint, {}) AS s(i)", sessions - 1),
            "generate_series(0::bigint, 9) AS p(j)".to_owned(),
            "lpad((i % 1000)::text, 4, '0')",
            "FALSE",
        ),
        StoreKind::Sqlite => (
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s) AS s",
                sessions - 1
            ),
            "(WITH RECURSIVE p(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM p WHERE j < 9) SELECT j FROM p) AS p"
                .to_owned(),
            "printf('%04d', i % 1000)",
            "0",
        ),
    };
    template
        .replace("{SERIES_S}", &series_s)
        .replace("{SERIES_J}", &series_j)
        .replace("{ROOM_NUMBER}", room_number)
        .replace("{FALSE}", false_)
        .replace("{BASE}", &base.to_string())
        .replace("{STEP}", &step.to_string())
        .replace("{MINUTE}", &MINUTE.to_string())
        .replace("{LENGTH}", &(45 * MINUTE).to_string())
}

struct Timing {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Timing {
    fn row(&mut self) -> String {
        self.samples.sort();
        let at = |q: f64| {
            let index = ((self.samples.len() as f64 * q).ceil() as usize).clamp(1, self.samples.len()) - 1;
            self.samples[index].as_secs_f64() * 1000.0
        };
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            self.name,
            self.samples.len(),
            at(0.5),
            at(0.99),
            self.samples.last().map_or(0.0, |max| max.as_secs_f64() * 1000.0)
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sessions = (args.participants / 10).max(1);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    // 30 days ending an hour ago, on a whole day (UTC); or the last
    // session ending now.
    let base = if args.through_now {
        now - 30 * DAY - 45 * MINUTE
    } else {
        (now - 30 * DAY - 3_600_000_000).div_euclid(DAY) * DAY
    };
    let step = 30 * DAY / sessions;

    let server = std::env::var("BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let name = format!("roomcontrol_history_bench_{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let url = match args.store {
        StoreKind::Postgres => {
            let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
            format!("{server}/{name}")
        }
        StoreKind::Sqlite => format!("sqlite://{}", dir.path().join("history.db").display()),
    };
    let result = run(&args, &url, sessions, base, step).await;
    if args.store == StoreKind::Postgres {
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
    }
    result
}

async fn run(args: &Args, url: &str, sessions: i64, base: i64, step: i64) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.store.url = url.to_owned();
    let store = roomcontrol::store::Store::open(&config.store).await?;
    let started = Instant::now();
    // What the projector keeps for GetUsage: the longest participant session.
    const LONGEST: &str = "UPDATE history_state SET longest_micros = {LENGTH}";
    for template in [ROOMS, PARTICIPANTS, TRACKS, LONGEST] {
        let statement = sql(template, args.store, sessions, base, step);
        match &store {
            roomcontrol::store::Store::Postgres(pool) => sqlx::query(&statement).execute(pool).await?.rows_affected(),
            roomcontrol::store::Store::Sqlite(pool, _) => sqlx::query(&statement).execute(pool).await?.rows_affected(),
        };
    }
    match &store {
        roomcontrol::store::Store::Postgres(pool) => sqlx::query("VACUUM ANALYZE").execute(pool).await?.rows_affected(),
        roomcontrol::store::Store::Sqlite(pool, _) => sqlx::query("ANALYZE").execute(pool).await?.rows_affected(),
    };
    store.close().await;
    eprintln!(
        "generated {sessions} room sessions and {} participant sessions in {:.1}s",
        sessions * 10,
        started.elapsed().as_secs_f64()
    );

    let standin = StandIn::start(StandInConfig::default()).await?;
    config.server.port = 0;
    config.admin.port = 0;
    config.livekit.url = standin.url();
    config.livekit.api_key = standin.api_key().to_owned();
    config.livekit.api_secret = standin.api_secret().to_owned().into();
    config.events.reconcile_interval = Duration::ZERO;
    config.log.level = "warn".to_owned();
    let application = Application::build(config).await?;
    let addr = application.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let mut client = RoomControlClient::connect(format!("http://{addr}")).await?;
    let at = |micros: i64| prost_types::Timestamp { seconds: micros.div_euclid(1_000_000), nanos: 0 };
    let exact = |micros: i64| prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    };
    let (mut moved, mut last_from) = (Vec::new(), 0i64);
    let mut random = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: i64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        (random % bound as u64) as i64
    };

    let mut list = Timing { name: "ListRoomSessions, one day, first page of 100", samples: Vec::new() };
    let mut get = Timing { name: "GetRoomSession", samples: Vec::new() };
    let mut usage = Timing {
        name: if args.whole_seconds {
            "GetUsage, the last 30 days by DAY, Europe/Paris, in whole seconds"
        } else {
            "GetUsage, the last 30 days by DAY, Europe/Paris"
        },
        samples: Vec::new(),
    };
    let mut cold = Timing { name: "the same, its first call (nothing cached)", samples: Vec::new() };
    let mut usage_room =
        Timing { name: "GetUsage, 30 days by DAY, one room (a new room each call)", samples: Vec::new() };
    // Warm-up: one of each.
    for round in 0..=args.calls {
        let day = base + (1 + next(28)) * DAY;
        let request = ListRoomSessionsRequest { from: Some(at(day)), to: Some(at(day + DAY)), ..Default::default() };
        let started = Instant::now();
        let reply = client.list_room_sessions(request).await?.into_inner();
        let elapsed = started.elapsed();
        assert_eq!(reply.sessions.len(), 100);
        if round > 0 {
            list.samples.push(elapsed);
        }

        let request = GetRoomSessionRequest { session_id: format!("RM_bench_{}", next(sessions)) };
        let started = Instant::now();
        let reply = client.get_room_session(request).await?.into_inner();
        let elapsed = started.elapsed();
        assert_eq!(reply.participants.len(), 10);
        if round > 0 {
            get.samples.push(elapsed);
        }

        // Up to now: the partial first bucket and today's are computed
        // on every call whose `from` moved.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
        let now = if args.whole_seconds { now.div_euclid(1_000_000) * 1_000_000 } else { now };
        let request = GetUsageRequest {
            from: Some(exact(now - 30 * DAY)),
            to: Some(exact(now)),
            bucket: UsageBucket::Day as i32,
            time_zone: "Europe/Paris".to_owned(),
            ..Default::default()
        };
        let started = Instant::now();
        let reply = client.get_usage(request).await?.into_inner();
        let elapsed = started.elapsed();
        assert!(reply.buckets.len() >= 30);
        let minutes: f64 = reply.buckets.iter().map(|bucket| bucket.participant_minutes).sum();
        if round == 0 {
            eprintln!("30 days: {minutes:.0} participant-minutes");
            cold.samples.push(elapsed);
        } else {
            usage.samples.push(elapsed);
            // Whether this call's `from` moved since the last call's.
            moved.push(now != last_from);
        }
        last_from = now;
        let request = GetUsageRequest {
            from: Some(at(base)),
            to: Some(at(base + 30 * DAY)),
            bucket: UsageBucket::Day as i32,
            rooms: vec![format!("bench-room-{:04}", next(1000))],
            ..Default::default()
        };
        let started = Instant::now();
        client.get_usage(request).await?;
        let elapsed = started.elapsed();
        if round > 0 {
            usage_room.samples.push(elapsed);
        }
    }
    let order: Vec<String> = usage
        .samples
        .iter()
        .zip(&moved)
        .map(|(sample, moved)| format!("{}{}", sample.as_millis(), if *moved { "*" } else { "" }))
        .collect();
    eprintln!("GetUsage's calls in order (ms; *: its `from` moved since the last call): {order:?}");
    for (label, pick) in [("moved", true), ("unchanged", false)] {
        let mut picked: Vec<Duration> =
            usage.samples.iter().zip(&moved).filter(|(_, moved)| **moved == pick).map(|(sample, _)| *sample).collect();
        picked.sort();
        if let Some(max) = picked.last() {
            let median = picked[picked.len() / 2];
            eprintln!("  `from` {label}: {} calls, median {median:?}, max {max:?}", picked.len());
        }
    }
    // What the cache holds: the whole days, and the profiles of the days
    // the ranges cut.
    let store = roomcontrol::store::Store::open(&{
        let mut config = Config::default();
        config.store.url = url.to_owned();
        config.store
    })
    .await?;
    let sizes = "SELECT COUNT(*), COUNT(profile), CAST(COALESCE(MAX(LENGTH(profile)), 0) AS BIGINT) FROM usage_cache";
    let (rows, profiles, largest): (i64, i64, i64) = match &store {
        roomcontrol::store::Store::Postgres(pool) => sqlx::query_as(sizes).fetch_one(pool).await?,
        roomcontrol::store::Store::Sqlite(pool, _) => sqlx::query_as(sizes).fetch_one(pool).await?,
    };
    store.close().await;
    eprintln!("usage_cache: {rows} buckets, {profiles} with a profile, the largest {largest} bytes");
    println!("{:?}, {} participant sessions in {} room sessions\n", args.store, sessions * 10, sessions);
    println!("| call | calls | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|");
    for timing in [&mut list, &mut get, &mut usage, &mut cold, &mut usage_room] {
        println!("{}", timing.row());
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}
