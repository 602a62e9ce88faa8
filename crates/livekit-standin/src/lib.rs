//! An in-memory stand-in for a single-node livekit-server's Twirp
//! RoomService, Egress and AgentDispatchService and its webhooks (server
//! v1.13.x, with an egress worker and agent workers emulated), for
//! RoomControl's tests and benchmarks.
//!
//! It speaks the real wire protocol (`livekit-protocol` messages as
//! `application/protobuf` or protobuf JSON), authenticates every request
//! exactly as the server does and answers with the server's status codes,
//! Twirp codes and message texts, quirks included. Where it must differ
//! (no media, no WebRTC clients) the tests put participants and tracks in
//! with [`StandIn::add_participant`] and [`StandIn::add_track`].
//!
//! Behaviours worth knowing when writing tests against it:
//! - Errors the server raises as psrpc errors keep their code but carry a
//!   `"twirp error unknown: "` prefix, e.g. not_found
//!   `"twirp error unknown: requested room does not exist"`.
//! - `MutePublishedTrack` for an unknown track answers 200 with no track.
//! - `MutePublishedTrack` / `UpdateSubscriptions` for a participant who is not
//!   in the room, and `SendData` to a room that does not exist, go to a psrpc
//!   topic nobody serves: after 3 s the server answers unavailable
//!   `"twirp error unknown: no response from servers"` (see
//!   [`StandIn::set_no_route_delay`]).
//! - `ListRooms` and `ListParticipants` come back in no particular order
//!   (Go map order), so the stand-in shuffles them.
//! - Empty rooms close after their `empty_timeout`, and rooms whose last
//!   participant left close after their `departure_timeout` (checked every
//!   second, in whole seconds, as the server does). Both default to the
//!   server's (300 s, 20 s) and can be set for all rooms in
//!   [`StandInConfig`] or per room with CreateRoom. Agents (and egresses)
//!   do not keep a room open: a room left with only its agents closes as an
//!   empty one, its agents leaving with reason ROOM_CLOSED.
//!
//! # Egress (`livekit.Egress`)
//!
//! Every method needs only `video.roomRecord` (any room); without it 401
//! unauthenticated `"permissions denied"`.
//!
//! With an egress worker ([`StandInConfig::egress_worker`], the default):
//! - Start*Egress for a room that is not live: not_found
//!   `"twirp error unknown: requested room does not exist"` (before any
//!   validation). Then the worker validates, as `livekit/egress` does, e.g.
//!   invalid_argument `"twirp error unknown: request has missing or invalid
//!   field: output"` (also `identity`, `track_id`, `audio_track_id or
//!   video_track_id`, `audio_only and video_only`, `web url`, `multiple file
//!   outputs`, `invalid url U: invalid protocol`, ...).
//! - A start answers EgressInfo `EG_...` in EGRESS_STARTING (egress_started):
//!   its request echoed with storage secrets (`{access_key}`, `{secret}`, ...)
//!   and stream keys (`rtmp://host/app/{abc...xyz}`) redacted,
//!   `file_results` already holding the filename (templates `{room_name}`,
//!   `{room_id}`, `{time}`, `{utc}` replaced, `ROOM-TIME.mp4` when empty, the
//!   extension fixed), `stream_results` the redacted URLs (ACTIVE). One
//!   [`StandInConfig::egress_step`] later it is EGRESS_ACTIVE
//!   (egress_updated; `{publisher_identity}`, `{track_*}` replaced then), or
//!   EGRESS_FAILED (egress_ended, error `participant X not found` / `track X
//!   not found`, code 404) if what it records is not in the room (the real
//!   worker waits up to 30 s for it to appear; the stand-in does not).
//! - StopEgress (and the source closing: the room closes, the participant
//!   leaves, the tracks are unpublished): EGRESS_ENDING (egress_updated),
//!   one step later EGRESS_COMPLETE (egress_ended) with `file_results`
//!   timed, sized (at the default bit rates) and located as livekit/storage
//!   reports it (the path; `https://BUCKET.s3.amazonaws.com/KEY`,
//!   `https://BUCKET.ENDPOINT/KEY`, or `ENDPOINT/BUCKET/KEY` with
//!   `force_path_style`; GCS, Azure, OSS URLs), streams FINISHED. Stopped while STARTING:
//!   EGRESS_ABORTED at once ("Stop called before pipeline could start",
//!   412). When a room closes its egresses' egress_updated is raised before
//!   room_finished and their egress_ended a step after it; egress events
//!   queue per egress, so across queues no order is guaranteed.
//! - StopEgress of a finished egress: after one psrpc selection (a third of
//!   [`StandIn::set_no_route_delay`]) failed_precondition `"egress with
//!   status EGRESS_COMPLETE cannot be stopped"`; of an unknown one not_found
//!   `"twirp error unknown: egress does not exist"` (ListEgress by id too).
//! - [`StandIn::kill_egress`]: the worker dies; the egress stays as it was
//!   for ever (StopEgress: deadline_exceeded `"twirp error unknown: request
//!   timed out"`).
//!
//! Without one ([`StandIn::set_egress_worker`]`(false)`, `--no-egress`),
//! as a server without Redis: Start*Egress for a room that is not live 404
//! at once, for a live room unavailable `"twirp error unknown: no response
//! from servers"` after [`StandInConfig::egress_unavailable_delay`] (20 s);
//! ListEgress and UpdateLayout internal `"twirp error unknown: egress not
//! connected (redis required)"` at once, StopEgress and UpdateStream the
//! same after [`StandInConfig::egress_stop_unavailable_delay`] (15 s).
//!
//! Not emulated: the egress's own participant in the room (UpdateLayout
//! only checks that the egress runs and its room is live), StartEgress (the
//! v2 request: unimplemented), image outputs' results, `page_token`.
//!
//! # Agent dispatch (`livekit.AgentDispatchService`)
//!
//! Every method needs `roomAdmin` for the request's room (otherwise 401
//! `"permissions denied"`, an unscoped admin token included).
//! - A room gets its dispatches when it is created: one per CreateRoom
//!   `agents` entry, or else a default one with an empty agent name.
//!   CreateRoom's `agents` for a live room are ignored.
//! - CreateDispatch creates the room if needed (room_started) and returns
//!   the dispatch (`AD_...`, state with no jobs) at once. ListDispatch and
//!   DeleteDispatch for a room that is not live: unavailable `"twirp error
//!   unknown: no response from servers"` after
//!   [`StandInConfig::dispatch_unavailable_delay`] (15 s); an unknown id:
//!   ListDispatch lists nothing, DeleteDispatch is not_found `"twirp error
//!   unknown: dispatch ID not found"`.
//! - A dispatch whose agent name has no worker ([`StandInConfig::agent_workers`])
//!   never gets a job. With one, [`StandInConfig::agent_join_delay`] later
//!   the dispatch gets a JT_ROOM job (`AJ_...`, JS_RUNNING) and an AGENT
//!   participant `agent-AJ_...` (attribute `lk.agent_name`) joins
//!   (participant_joined). DeleteDispatch answers the dispatch as it was;
//!   its agents leave a delay later (participant_left, CLIENT_INITIATED).
//! - [`StandIn::crash_agent`]: participant_left with CONNECTION_TIMEOUT;
//!   as on the real server the room's copy of the job stays JS_RUNNING.
//!
//! # Webhooks
//!
//! With [`StandInConfig::webhook_urls`] (or [`StandIn::set_webhook_urls`])
//! the stand-in POSTs LiveKit's webhooks exactly as a single-node server
//! does, whichever way the state changes (Twirp calls, test APIs, timeouts):
//! - `room_started` when CreateRoom or a join creates a room;
//!   `participant_joined` once a participant is ACTIVE
//!   ([`StandIn::add_participant`], [`StandIn::activate_participant`]);
//!   `track_published` per track ([`StandIn::add_track`]);
//! - when a participant goes ([`StandIn::remove_participant`],
//!   [`StandIn::abort_participant`], RemoveParticipant, a rejoin with its
//!   identity): `track_unpublished` per track, then `participant_left`, or
//!   `participant_connection_aborted` if it never became ACTIVE; revoking a
//!   source with UpdateParticipant unpublishes its tracks too;
//! - `room_finished` when the room times out, or after DeleteRoom has
//!   closed everyone (their events first);
//! - `egress_started`, `egress_updated` (ACTIVE, ENDING, UpdateStream),
//!   `egress_ended` (COMPLETE, FAILED, ABORTED), carrying only the full
//!   `egressInfo`, queued per egress.
//!
//! Room and participant events carry the full Room and ParticipantInfo,
//! track events only `room {sid, name}`, `participant {sid, identity}` and
//! the full TrackInfo. Bodies are Go protojson ([`webhook_body`], random
//! spaces after commas included), signed with the stand-in's own key and
//! secret ([`sign_webhook`]: a bare JWT in `Authorization`, no `Bearer `).
//! Delivery follows LiveKit's queues and retries (see
//! [`StandInConfig::webhook_retry_unit`]); every attempt is recorded
//! ([`StandIn::webhook_deliveries`], [`StandIn::wait_for_webhooks`]) with
//! its exact bytes, and [`StandIn::drop_webhooks`] loses events on purpose.
//!
//! Where webhooks differ from the real server: the Room in an event has
//! fresh participant counts (the server's can lag by seconds); Go adds its
//! comma spaces all or none per server build, the stand-in at random per
//! comma; only `http://` URLs, and a 3xx answer is final (Go follows it).

#![forbid(unsafe_code)]

mod agents;
mod auth;
mod calls;
mod egress;
mod notifier;
mod protojson;
mod server;
mod state;
mod twirp;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use livekit_protocol as proto;
use tokio::sync::watch;

pub use calls::{AuthOutcome, Encoding, RecordedCall, RecordedResponse, RoomRequest};
pub use state::TrackSpec;
pub use webhook::{
    WEBHOOK_CONTENT_TYPE, WEBHOOK_TOKEN_VALIDITY_SECS, WEBHOOK_USER_AGENT, WebhookDelivery, WebhookOutcome,
    sign_webhook, sign_webhook_at, webhook_body,
};

/// Re-exported for matching on [`RecordedCall::claims`].
pub use livekit_api::access_token::Claims;

/// How to run a stand-in.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// The one API key the server knows.
    pub api_key: String,
    /// Its secret.
    pub api_secret: String,
    /// `room.enable_remote_unmute`: when false, MutePublishedTrack with
    /// `muted = false` fails with failed_precondition.
    pub remote_unmute: bool,
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// `webhook.urls`: where to POST webhooks (http:// only), signed with
    /// `api_key` and `api_secret` (`webhook.api_key`). Empty: no webhooks.
    pub webhook_urls: Vec<String>,
    /// `room.empty_timeout` in seconds (300): how long a room nobody joined
    /// stays open, unless its CreateRoom sets one. 0 closes it at the next
    /// check (within a second).
    pub empty_timeout: u32,
    /// `room.departure_timeout` in seconds (20): how long a room stays open
    /// after its last participant left, unless its CreateRoom sets one. 0
    /// closes it at the next check (within a second).
    pub departure_timeout: u32,
    /// `webhook.resource_url_notifier.max_age` (30 s): an event that waited
    /// longer in its queue is dropped (and only logged). Zero means 30 s.
    pub webhook_max_age: Duration,
    /// `webhook.resource_url_notifier.max_depth` (200): a room's queue for
    /// a URL that already holds this many waiting events refuses new ones.
    /// Zero means 200.
    pub webhook_queue_depth: usize,
    /// A test knob with no LiveKit equivalent: the unit of the retry
    /// schedule. LiveKit waits 1, 2, 4 and 8 s before its four retries (and
    /// N s after a 429 or 503 with `Retry-After: N`); the stand-in waits
    /// that many of these units. The default, 1 s, is the real schedule; a
    /// test scales it down (e.g. 10 ms) to see all five attempts quickly.
    pub webhook_retry_unit: Duration,
    /// An egress worker is connected (Redis and `livekit/egress` running).
    /// False: the server of `livekit-server --dev` without Redis (see
    /// [`StandIn::set_egress_worker`]).
    pub egress_worker: bool,
    /// How long the egress worker takes for each step: STARTING -> ACTIVE,
    /// ENDING -> COMPLETE (1 s; a test knob).
    pub egress_step: Duration,
    /// Without an egress worker, how long Start*Egress for a live room
    /// waits before its 503 (20 s on a real server).
    pub egress_unavailable_delay: Duration,
    /// Without an egress worker, how long StopEgress and UpdateStream wait
    /// before their 500 (15 s on a real server).
    pub egress_stop_unavailable_delay: Duration,
    /// How long ListDispatch and DeleteDispatch for a room that is not live
    /// wait before their 503 (15 s on a real server).
    pub dispatch_unavailable_delay: Duration,
    /// The agent names agent workers are registered for (`""` serves every
    /// room's default dispatch). Empty: no agent worker.
    pub agent_workers: Vec<String>,
    /// How long an agent worker takes to accept a job and have its agent
    /// join, and a terminated job's agent to leave (500 ms; a test knob).
    pub agent_join_delay: Duration,
}

impl Default for StandInConfig {
    /// `livekit-server --dev`'s key and secret on an ephemeral loopback port,
    /// the server's room timeouts, no webhooks.
    fn default() -> Self {
        StandInConfig {
            api_key: "devkey".to_owned(),
            api_secret: "secret".to_owned(),
            remote_unmute: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook_urls: Vec::new(),
            empty_timeout: state::DEFAULT_EMPTY_TIMEOUT,
            departure_timeout: state::DEFAULT_DEPARTURE_TIMEOUT,
            webhook_max_age: notifier::DEFAULT_MAX_AGE,
            webhook_queue_depth: notifier::DEFAULT_MAX_DEPTH,
            webhook_retry_unit: Duration::from_secs(1),
            egress_worker: true,
            egress_step: Duration::from_secs(1),
            egress_unavailable_delay: Duration::from_secs(20),
            egress_stop_unavailable_delay: Duration::from_secs(15),
            dispatch_unavailable_delay: Duration::from_secs(15),
            agent_workers: Vec::new(),
            agent_join_delay: Duration::from_millis(500),
        }
    }
}

/// The delays of the egress and agent emulation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) egress_step: Duration,
    pub(crate) egress_start_unavailable: Duration,
    pub(crate) egress_stop_unavailable: Duration,
    pub(crate) dispatch_unavailable: Duration,
    pub(crate) agent_join: Duration,
}

/// A fault the next calls answer with instead of doing their work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A Twirp error; the HTTP status follows from the code (500 if unknown).
    Twirp { code: String, msg: String },
    /// The plain-text 401 the server gives a token signed with an unknown key
    /// (`invalid API key`).
    PlainUnauthorized,
    /// An arbitrary HTTP reply, e.g. a proxy's 502 page.
    Http { status: u16, body: String, content_type: String },
    /// A 200 `MuteRoomTrackResponse` without a track (what the server sends
    /// for an unknown track; the livekit-api crate panics on it).
    MuteWithoutTrack,
    /// Never answer (until [`StandIn::stop`]).
    Hang,
}

#[derive(Debug)]
struct QueuedFault {
    method: Option<String>,
    fault: Fault,
    remaining: usize,
}

pub(crate) struct Inner {
    api_key: String,
    api_secret: String,
    remote_unmute: bool,
    addr: SocketAddr,
    state: Mutex<state::State>,
    calls: Mutex<Vec<RecordedCall>>,
    recording: std::sync::atomic::AtomicBool,
    /// Bumped on every recorded call, for [`StandIn::wait_for_calls`].
    call_count: watch::Sender<u64>,
    faults: Mutex<Vec<QueuedFault>>,
    delay: Mutex<Duration>,
    no_route_delay: Mutex<Duration>,
    /// Bumped by `stop()`: in-flight delays and hangs end.
    stop_tx: watch::Sender<u64>,
    running: tokio::sync::Mutex<Option<Running>>,
    webhooks: Arc<notifier::Notifier>,
    timing: Mutex<Timing>,
    /// Itself, for the tasks its timers spawn.
    me: std::sync::Weak<Inner>,
    runtime: tokio::runtime::Handle,
}

struct Running {
    task: tokio::task::JoinHandle<()>,
    connections: Arc<server::Connections>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Runs `f` on the state after closing idle rooms, then queues the
    /// webhooks the changes raised, still under the state lock so that they
    /// queue in the order the changes happened.
    fn with_state<R>(&self, f: impl FnOnce(&mut state::State, SystemTime) -> R) -> R {
        let now = SystemTime::now();
        let mut state = lock(&self.state);
        state.expire(now);
        let result = f(&mut state, now);
        self.webhooks.notify(state.take_events());
        for timer in state.take_timers() {
            self.schedule(timer);
        }
        result
    }

    /// Runs `timer` after its delay, in a task of its own.
    fn schedule(&self, timer: state::Timer) {
        let timing = self.timing();
        let delay = match timer {
            state::Timer::Egress(_) => timing.egress_step,
            state::Timer::AgentJoin { .. } | state::Timer::AgentLeave { .. } => timing.agent_join,
        };
        let me = self.me.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(inner) = me.upgrade() {
                inner.with_state(|state, now| state.fire(timer, now));
            }
        });
    }

    pub(crate) fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    fn take_fault(&self, method: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|f| f.method.as_deref().is_none_or(|m| m == method))?;
        let fault = faults[i].fault.clone();
        faults[i].remaining -= 1;
        if faults[i].remaining == 0 {
            faults.remove(i);
        }
        Some(fault)
    }

    fn record(&self, call: RecordedCall) -> Option<usize> {
        if !self.recording.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let index = {
            let mut calls = lock(&self.calls);
            calls.push(call);
            calls.len() - 1
        };
        // after releasing `calls`: waiters read it when woken
        self.call_count.send_modify(|n| *n += 1);
        Some(index)
    }

    fn record_response(&self, index: Option<usize>, response: RecordedResponse) {
        let Some(index) = index else { return };
        if let Some(call) = lock(&self.calls).get_mut(index) {
            call.response = Some(response);
        }
    }

    fn delay(&self) -> Duration {
        *lock(&self.delay)
    }

    fn no_route_delay(&self) -> Duration {
        *lock(&self.no_route_delay)
    }
}

/// A running (or stopped) stand-in. Clones share the same server and state.
#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.inner.addr)
            .field("api_key", &self.inner.api_key)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Binds `config.addr` and starts serving.
    pub async fn start(config: StandInConfig) -> std::io::Result<StandIn> {
        auth::install_crypto_provider();
        let listener = server::bind(config.addr)?;
        let addr = listener.local_addr()?;
        let (stop_tx, _) = watch::channel(0);
        let webhooks = notifier::Notifier::new(
            notifier::Settings {
                api_key: config.api_key.clone(),
                api_secret: config.api_secret.clone(),
                max_age: config.webhook_max_age,
                max_depth: config.webhook_queue_depth,
                retry_unit: config.webhook_retry_unit,
            },
            config.webhook_urls,
        );
        let timeouts = state::Timeouts { empty: config.empty_timeout, departure: config.departure_timeout };
        let mut state = state::State::new(timeouts);
        state.egress_worker = config.egress_worker;
        state.agent_workers = config.agent_workers;
        let timing = Timing {
            egress_step: config.egress_step,
            egress_start_unavailable: config.egress_unavailable_delay,
            egress_stop_unavailable: config.egress_stop_unavailable_delay,
            dispatch_unavailable: config.dispatch_unavailable_delay,
            agent_join: config.agent_join_delay,
        };
        let standin = StandIn {
            inner: Arc::new_cyclic(|me| Inner {
                api_key: config.api_key,
                api_secret: config.api_secret,
                remote_unmute: config.remote_unmute,
                addr,
                state: Mutex::new(state),
                calls: Mutex::new(Vec::new()),
                recording: std::sync::atomic::AtomicBool::new(true),
                call_count: watch::channel(0).0,
                faults: Mutex::new(Vec::new()),
                delay: Mutex::new(Duration::ZERO),
                no_route_delay: Mutex::new(Duration::from_secs(3)),
                stop_tx,
                running: tokio::sync::Mutex::new(None),
                webhooks,
                timing: Mutex::new(timing),
                me: me.clone(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        *standin.inner.running.lock().await = Some(standin.serve(listener));
        tokio::spawn(close_idle_rooms(Arc::downgrade(&standin.inner)));
        Ok(standin)
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> Running {
        let connections = Arc::new(server::Connections::default());
        let listener = server::TrackedListener { listener, connections: connections.clone() };
        let router = axum::Router::new().fallback(server::handle).with_state(self.inner.clone());
        let task = tokio::spawn(async move {
            // serve only returns when the task is aborted
            let _ = axum::serve(listener, router).await;
        });
        Running { task, connections }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://ADDR`, the URL to give a LiveKit client.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    pub fn api_secret(&self) -> &str {
        &self.inner.api_secret
    }

    /// As if CreateRoom was called for `name` with default options: an
    /// existing room is returned unchanged; a new one raises room_started.
    pub fn create_room(&self, name: &str) -> proto::Room {
        self.create_room_with(proto::CreateRoomRequest { name: name.to_owned(), ..Default::default() })
    }

    /// As if CreateRoom was called with `request` (its non-zero
    /// `empty_timeout`, `departure_timeout`, `max_participants` and
    /// `metadata` apply to a new room), without its checks.
    pub fn create_room_with(&self, request: proto::CreateRoomRequest) -> proto::Room {
        self.inner.with_state(|state, now| state.create_room(&request, now))
    }

    /// A participant that has joined `room` (created if missing:
    /// room_started) and is connected: state ACTIVE (participant_joined), a
    /// fresh `PA_` sid, joined now, the default token permissions
    /// (subscribe, publish, publish data), kind STANDARD. An existing
    /// participant with that identity is closed first (its
    /// track_unpublished and participant_left, reason DUPLICATE_IDENTITY),
    /// as a rejoin replaces the previous session.
    pub fn add_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        self.inner.with_state(|state, now| state.add_participant(room, identity, true, now))
    }

    /// Like [`StandIn::add_participant`], but its media never connects (yet):
    /// state JOINED, no participant_joined. Then
    /// [`StandIn::activate_participant`] or [`StandIn::abort_participant`].
    pub fn add_joining_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        self.inner.with_state(|state, now| state.add_participant(room, identity, false, now))
    }

    /// A JOINED participant's media connects: ACTIVE, participant_joined.
    /// An ACTIVE one is returned unchanged.
    ///
    /// # Panics
    /// If the participant is not in the room: a test bug.
    pub fn activate_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        self.inner
            .with_state(|state, _| state.activate_participant(room, identity))
            .unwrap_or_else(|| panic!("livekit-standin: no participant {identity:?} in room {room:?}"))
    }

    /// Publishes a track for a participant (`TR_` sid; track_published);
    /// the participant becomes a publisher.
    ///
    /// # Panics
    /// If the participant is not in the room: a test bug.
    pub fn add_track(&self, room: &str, identity: &str, track: TrackSpec) -> proto::TrackInfo {
        self.inner
            .with_state(|state, _| state.add_track(room, identity, &track))
            .unwrap_or_else(|| panic!("livekit-standin: no participant {identity:?} in room {room:?}"))
    }

    /// The participant leaves (its client hangs up): track_unpublished per
    /// track, then participant_left (participant_connection_aborted if it
    /// never became ACTIVE), disconnect reason CLIENT_INITIATED. Returns the
    /// participant as that event carries it (DISCONNECTED, no tracks).
    ///
    /// # Panics
    /// If the participant is not in the room: a test bug.
    pub fn remove_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        self.inner
            .with_state(|state, now| state.remove_participant(room, identity, state::Departure::ClientLeft, now))
            .unwrap_or_else(|| panic!("livekit-standin: no participant {identity:?} in room {room:?}"))
    }

    /// The participant's connection fails. One that never became ACTIVE
    /// (unknown here, or added with [`StandIn::add_joining_participant`])
    /// gives participant_connection_aborted (reason JOIN_FAILURE); an
    /// unknown one joins first, creating the room if needed (room_started),
    /// as a join that fails still does. An ACTIVE one gives what LiveKit
    /// sends then: its track_unpublished and participant_left (reason
    /// CONNECTION_TIMEOUT). Returns the participant as the last event
    /// carries it.
    pub fn abort_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        self.inner.with_state(|state, now| {
            if state.participant(room, identity).is_none() {
                state.add_participant(room, identity, false, now);
            }
            state
                .remove_participant(room, identity, state::Departure::ConnectionLost, now)
                .expect("the participant was just added")
        })
    }

    /// Every room, oldest first, with its current counts.
    pub fn rooms(&self) -> Vec<proto::Room> {
        self.inner.with_state(|state, _| state.rooms_in_creation_order())
    }

    /// A participant as GetParticipant would return it.
    pub fn participant(&self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        self.inner.with_state(|state, _| state.participant(room, identity))
    }

    /// The participants of a room, in the order they joined.
    pub fn participants(&self, room: &str) -> Vec<proto::ParticipantInfo> {
        let mut list = self.inner.with_state(|state, _| state.list_participants(room));
        list.sort_by_key(|p| (p.joined_at_ms, p.identity.clone()));
        list
    }

    // ------------------------------------------------------------ egress

    /// Connects (true, the default) or disconnects the egress worker. Without
    /// one the server answers as `livekit-server --dev` without Redis does:
    /// Start*Egress for a room that is not live 404 at once, for a live room
    /// 503 after [`StandInConfig::egress_unavailable_delay`]; ListEgress and
    /// UpdateLayout 500 at once; StopEgress and UpdateStream 500 after
    /// [`StandInConfig::egress_stop_unavailable_delay`]. Egresses already
    /// started are kept and carry on (see [`StandIn::egresses`]).
    pub fn set_egress_worker(&self, connected: bool) {
        self.inner.with_state(|state, _| state.egress_worker = connected);
    }

    /// How long each step of an egress takes from now on
    /// ([`StandInConfig::egress_step`]).
    pub fn set_egress_step(&self, step: Duration) {
        lock(&self.inner.timing).egress_step = step;
    }

    /// Without an egress worker, how long Start*Egress for a live room
    /// (`start`) and StopEgress / UpdateStream (`stop`) wait before failing.
    pub fn set_egress_unavailable_delay(&self, start: Duration, stop: Duration) {
        let mut timing = lock(&self.inner.timing);
        timing.egress_start_unavailable = start;
        timing.egress_stop_unavailable = stop;
    }

    /// Every egress started so far (the server's store), oldest first, as
    /// ListEgress would return it.
    pub fn egresses(&self) -> Vec<proto::EgressInfo> {
        self.inner.with_state(|state, _| state.egresses.iter().map(|e| e.info.clone()).collect())
    }

    /// The worker running `egress_id` dies silently (livekit/livekit#2308,
    /// #1717): no more webhooks, no more steps, and the store keeps the
    /// egress as it was (typically EGRESS_ACTIVE) for ever. StopEgress then
    /// answers deadline_exceeded after the psrpc selection, UpdateStream
    /// unavailable. False if there is no such egress.
    pub fn kill_egress(&self, egress_id: &str) -> bool {
        self.inner.with_state(|state, _| {
            state.egresses.iter_mut().find(|e| e.info.egress_id == egress_id).map(|e| e.killed = true).is_some()
        })
    }

    // ------------------------------------------------------------ agents

    /// The agent names agent workers are registered for from now on (see
    /// [`StandInConfig::agent_workers`]). Dispatches made before are not
    /// retried.
    pub fn set_agent_workers<I, S>(&self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.inner.with_state(|state, _| state.agent_workers = names);
    }

    /// How long an agent worker takes to take a job (and its agent to
    /// join), or a terminated job's agent to leave.
    pub fn set_agent_join_delay(&self, delay: Duration) {
        lock(&self.inner.timing).agent_join = delay;
    }

    /// How long ListDispatch / DeleteDispatch for a room that is not live
    /// wait before their 503.
    pub fn set_dispatch_unavailable_delay(&self, delay: Duration) {
        lock(&self.inner.timing).dispatch_unavailable = delay;
    }

    /// The agent dispatches of a live room, oldest first, jobs included
    /// (empty if the room is not live).
    pub fn dispatches(&self, room: &str) -> Vec<proto::AgentDispatch> {
        self.inner.with_state(|state, _| state.dispatches(room))
    }

    /// An agent's process dies: its participant goes the abrupt way
    /// (track_unpublished per track, participant_left with disconnect reason
    /// CONNECTION_TIMEOUT). As on the real server, the job in the room's
    /// dispatch is not updated: ListDispatch keeps reporting it JS_RUNNING,
    /// and no other job is launched. Returns the participant as
    /// participant_left carries it.
    ///
    /// # Panics
    /// If the participant is not in the room: a test bug.
    pub fn crash_agent(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        self.inner
            .with_state(|state, now| state.crash_agent(room, identity, now))
            .unwrap_or_else(|| panic!("livekit-standin: no participant {identity:?} in room {room:?}"))
    }

    /// Every call to a routed method so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.inner.calls).clone()
    }

    /// Turns call and webhook recording on (the default) or off. A
    /// long-running stand-in (benchmarks, the binary) turns it off so memory
    /// stays flat; while off, [`StandIn::calls`], [`StandIn::wait_for_calls`],
    /// [`StandIn::webhook_deliveries`] and [`StandIn::wait_for_webhooks`] see
    /// nothing new.
    pub fn set_recording(&self, on: bool) {
        self.inner.recording.store(on, std::sync::atomic::Ordering::Relaxed);
        self.inner.webhooks.set_recording(on);
    }

    pub fn clear_calls(&self) {
        lock(&self.inner.calls).clear();
    }

    /// Waits until at least `n` calls to `method` have been recorded since
    /// the last [`StandIn::clear_calls`]. A call is recorded as soon as it is
    /// routed (before authentication refuses it, and before any delay, fault
    /// or work), so this also observes calls that will fail or hang.
    pub async fn wait_for_calls(&self, method: &str, n: usize) {
        let mut bumped = self.inner.call_count.subscribe();
        loop {
            let seen = lock(&self.inner.calls).iter().filter(|c| c.method == method).count();
            if seen >= n || bumped.changed().await.is_err() {
                return;
            }
        }
    }

    /// The requests of the SendData calls that succeeded, in order.
    pub fn data_sent(&self) -> Vec<proto::SendDataRequest> {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.succeeded())
            .filter_map(|c| match &c.request {
                Some(RoomRequest::SendData(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// The requests of the UpdateSubscriptions calls that succeeded, in order.
    pub fn subscription_updates(&self) -> Vec<proto::UpdateSubscriptionsRequest> {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.succeeded())
            .filter_map(|c| match &c.request {
                Some(RoomRequest::UpdateSubscriptions(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Delays every reply by `delay` (zero turns it off).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.inner.delay) = delay;
    }

    /// How long a call to a room or participant that no node serves waits
    /// before failing (3 s on a real server: three psrpc attempts of 1 s).
    pub fn set_no_route_delay(&self, delay: Duration) {
        *lock(&self.inner.no_route_delay) = delay;
    }

    /// The next `count` calls to `method` (or to any method when `None`)
    /// answer with `fault`. Faults queue up: the oldest matching one applies.
    pub fn fail_next(&self, method: Option<&str>, fault: Fault, count: usize) {
        if count == 0 {
            return;
        }
        lock(&self.inner.faults).push(QueuedFault { method: method.map(str::to_owned), fault, remaining: count });
    }

    /// Where webhooks go from now on (events already queued still go to
    /// their URL). Empty: no more webhooks.
    pub fn set_webhook_urls<I, S>(&self, urls: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.webhooks.set_urls(urls.into_iter().map(Into::into).collect());
    }

    pub fn webhook_urls(&self) -> Vec<String> {
        self.inner.webhooks.urls()
    }

    /// Every webhook attempt so far (since the last
    /// [`StandIn::clear_webhook_deliveries`]), in the order they were made:
    /// one record per POST (retries included, each with its exact body and
    /// `Authorization`), and one per event given up without a POST
    /// (attempt 0: dropped on purpose, queue full, too old).
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.inner.webhooks.deliveries()
    }

    pub fn clear_webhook_deliveries(&self) {
        self.inner.webhooks.clear_deliveries();
    }

    /// Waits until `done` holds for [`StandIn::webhook_deliveries`], and
    /// returns them. Wrap it in a timeout: it waits for ever otherwise.
    pub async fn wait_for_webhooks(&self, done: impl Fn(&[WebhookDelivery]) -> bool) -> Vec<WebhookDelivery> {
        self.inner.webhooks.wait_for(done).await
    }

    /// Waits until `n` webhook attempts (records) have been made, and
    /// returns them all.
    pub async fn wait_for_webhook_count(&self, n: usize) -> Vec<WebhookDelivery> {
        self.wait_for_webhooks(|d| d.len() >= n).await
    }

    /// The next `count` events named `event` (or any event when `None`) are
    /// lost: the change happens in the state, but no URL ever gets its
    /// webhook (each URL gets a [`WebhookOutcome::Dropped`] record). Only
    /// events raised while webhook URLs are set count.
    pub fn drop_webhooks(&self, event: Option<&str>, count: usize) {
        self.inner.webhooks.drop_next(event, count);
    }

    /// Stops listening and shuts down every open connection (clients see
    /// connection errors); in-flight delays and hangs end. State is kept,
    /// rooms still time out and webhooks still go out.
    pub async fn stop(&self) {
        let mut running = self.inner.running.lock().await;
        if let Some(Running { task, connections }) = running.take() {
            task.abort();
            let _ = task.await;
            connections.shutdown_all();
        }
        self.inner.stop_tx.send_modify(|generation| *generation += 1);
    }

    /// Listens again on the same address, with the same state (rooms,
    /// egresses and dispatches: a LiveKit with Redis keeps its egresses in
    /// Redis, and its workers are processes of their own). Does nothing if
    /// already running.
    pub async fn restart(&self) -> std::io::Result<()> {
        let mut running = self.inner.running.lock().await;
        if running.is_none() {
            let listener = server::bind(self.inner.addr)?;
            *running = Some(self.serve(listener));
        }
        Ok(())
    }
}

/// The server's background worker: every second, close the rooms that have
/// been idle for long enough (room_finished). Ends with the stand-in.
async fn close_idle_rooms(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.with_state(|_, _| ());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stand_in_can_be_shared_across_tasks_and_threads() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<super::StandIn>();
    }
}
