//! `livekit-standin`: serves the stand-in RoomService, Egress and
//! AgentDispatchService until SIGINT/SIGTERM, and sends webhooks to each
//! `--webhook-url`.
//!
//! Prints `listening on http://ADDR` on stdout once bound.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use livekit_standin::{StandIn, StandInConfig, TrackSpec};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "An in-memory stand-in for livekit-server's Twirp RoomService, Egress and AgentDispatchService"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7880")]
    listen: SocketAddr,
    /// The API key clients sign their tokens with.
    #[arg(long, default_value = "devkey")]
    api_key: String,
    /// Its secret.
    #[arg(long, default_value = "secret")]
    api_secret: String,
    /// Allow MutePublishedTrack with muted=false.
    #[arg(long)]
    remote_unmute: bool,
    /// Create rooms room-1 ... room-N at start, each with one participant
    /// (participant-I), so they do not close after the 300 s empty timeout.
    #[arg(long, default_value_t = 0)]
    seed_rooms: usize,
    /// Give each seeded participant a camera track ("camera") and a
    /// microphone track ("microphone"), so it is a publisher with tracks
    /// to mute.
    #[arg(long)]
    seed_tracks: bool,
    /// Delay every reply by this many milliseconds: a LiveKit that takes a
    /// fixed time per call.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// POST LiveKit's webhooks to this http:// URL (repeat for several),
    /// signed with the API key and secret.
    #[arg(long = "webhook-url", value_name = "URL")]
    webhook_urls: Vec<String>,
    /// Seconds a room nobody joined stays open (`room.empty_timeout`),
    /// unless its CreateRoom sets one.
    #[arg(long, default_value_t = 300)]
    empty_timeout: u32,
    /// Seconds a room stays open after its last participant left
    /// (`room.departure_timeout`), unless its CreateRoom sets one.
    #[arg(long, default_value_t = 20)]
    departure_timeout: u32,
    /// Run without an egress worker, as `livekit-server --dev` without
    /// Redis: Start*Egress fails (404 for a room that is not live, 503 after
    /// 20 s for a live one), ListEgress and UpdateLayout fail at once with
    /// 500 "egress not connected (redis required)", StopEgress and
    /// UpdateStream with the same 500 after 15 s.
    #[arg(long)]
    no_egress: bool,
    /// Milliseconds each step of an egress takes (STARTING -> ACTIVE,
    /// ENDING -> COMPLETE).
    #[arg(long, default_value_t = 1000)]
    egress_step_ms: u64,
    /// Register an agent worker for this agent name (repeat for several;
    /// "" serves every room's default dispatch): each dispatch for it gets a
    /// job, and an AGENT participant "agent-AJ_..." joins the room.
    #[arg(long = "agent", value_name = "NAME")]
    agents: Vec<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let standin = StandIn::start(StandInConfig {
        api_key: args.api_key,
        api_secret: args.api_secret,
        remote_unmute: args.remote_unmute,
        addr: args.listen,
        webhook_urls: args.webhook_urls,
        empty_timeout: args.empty_timeout,
        departure_timeout: args.departure_timeout,
        egress_worker: !args.no_egress,
        egress_step: std::time::Duration::from_millis(args.egress_step_ms),
        agent_workers: args.agents,
        ..StandInConfig::default()
    })
    .await?;
    // nobody can read the calls of the binary: keep memory flat
    standin.set_recording(false);
    standin.set_delay(std::time::Duration::from_millis(args.delay_ms));
    for i in 1..=args.seed_rooms {
        let room = format!("room-{i}");
        standin.create_room(&room);
        let identity = format!("participant-{i}");
        standin.add_participant(&room, &identity);
        if args.seed_tracks {
            standin.add_track(&room, &identity, TrackSpec::camera("camera"));
            standin.add_track(&room, &identity, TrackSpec::microphone("microphone"));
        }
    }

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", standin.url())?;
    stdout.flush()?;
    drop(stdout);

    shutdown_signal().await?;
    standin.stop().await;
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
