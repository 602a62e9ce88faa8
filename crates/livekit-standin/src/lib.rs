//! An in-memory stand-in for a single-node livekit-server's Twirp
//! RoomService (server v1.13.x), for RoomControl's tests and benchmarks.
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
//!   participant left close after their `departure_timeout`.

#![forbid(unsafe_code)]

mod auth;
mod calls;
mod protojson;
mod server;
mod state;
mod twirp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use livekit_protocol as proto;
use tokio::sync::watch;

pub use calls::{AuthOutcome, Encoding, RecordedCall, RecordedResponse, RoomRequest};
pub use state::TrackSpec;

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
}

impl Default for StandInConfig {
    /// `livekit-server --dev`'s key and secret on an ephemeral loopback port.
    fn default() -> Self {
        StandInConfig {
            api_key: "devkey".to_owned(),
            api_secret: "secret".to_owned(),
            remote_unmute: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
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
}

struct Running {
    task: tokio::task::JoinHandle<()>,
    connections: Arc<server::Connections>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
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
        let standin = StandIn {
            inner: Arc::new(Inner {
                api_key: config.api_key,
                api_secret: config.api_secret,
                remote_unmute: config.remote_unmute,
                addr,
                state: Mutex::new(state::State::default()),
                calls: Mutex::new(Vec::new()),
                recording: std::sync::atomic::AtomicBool::new(true),
                call_count: watch::channel(0).0,
                faults: Mutex::new(Vec::new()),
                delay: Mutex::new(Duration::ZERO),
                no_route_delay: Mutex::new(Duration::from_secs(3)),
                stop_tx,
                running: tokio::sync::Mutex::new(None),
            }),
        };
        *standin.inner.running.lock().await = Some(standin.serve(listener));
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
    /// existing room is returned unchanged.
    pub fn create_room(&self, name: &str) -> proto::Room {
        let now = SystemTime::now();
        let mut state = lock(&self.inner.state);
        state.expire(now);
        state.create_room(&proto::CreateRoomRequest { name: name.to_owned(), ..Default::default() }, now)
    }

    /// A participant that has joined `room` (created if missing) and is
    /// connected: state ACTIVE, a fresh `PA_` sid, joined now, the default
    /// token permissions (subscribe, publish, publish data), kind STANDARD.
    /// An existing participant with that identity is replaced, as a rejoin
    /// replaces the previous session.
    pub fn add_participant(&self, room: &str, identity: &str) -> proto::ParticipantInfo {
        let now = SystemTime::now();
        let mut state = lock(&self.inner.state);
        state.expire(now);
        state.add_participant(room, identity, now)
    }

    /// Publishes a track for a participant (`TR_` sid); the participant
    /// becomes a publisher.
    ///
    /// # Panics
    /// If the participant is not in the room: a test bug.
    pub fn add_track(&self, room: &str, identity: &str, track: TrackSpec) -> proto::TrackInfo {
        let now = SystemTime::now();
        let mut state = lock(&self.inner.state);
        state.expire(now);
        state
            .add_track(room, identity, &track)
            .unwrap_or_else(|| panic!("livekit-standin: no participant {identity:?} in room {room:?}"))
    }

    /// Every room, oldest first, with its current counts.
    pub fn rooms(&self) -> Vec<proto::Room> {
        let mut state = lock(&self.inner.state);
        state.expire(SystemTime::now());
        state.rooms_in_creation_order()
    }

    /// A participant as GetParticipant would return it.
    pub fn participant(&self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        let mut state = lock(&self.inner.state);
        state.expire(SystemTime::now());
        state.participant(room, identity)
    }

    /// The participants of a room, in the order they joined.
    pub fn participants(&self, room: &str) -> Vec<proto::ParticipantInfo> {
        let mut state = lock(&self.inner.state);
        state.expire(SystemTime::now());
        let mut list = state.list_participants(room);
        list.sort_by_key(|p| (p.joined_at_ms, p.identity.clone()));
        list
    }

    /// Every call to a RoomService method so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.inner.calls).clone()
    }

    /// Turns call recording on (the default) or off. A long-running stand-in
    /// (benchmarks, the binary) turns it off so memory stays flat; while off,
    /// [`StandIn::calls`] and [`StandIn::wait_for_calls`] see nothing new.
    pub fn set_recording(&self, on: bool) {
        self.inner.recording.store(on, std::sync::atomic::Ordering::Relaxed);
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

    /// Stops listening and shuts down every open connection (clients see
    /// connection errors); in-flight delays and hangs end. State is kept.
    pub async fn stop(&self) {
        let mut running = self.inner.running.lock().await;
        if let Some(Running { task, connections }) = running.take() {
            task.abort();
            let _ = task.await;
            connections.shutdown_all();
        }
        self.inner.stop_tx.send_modify(|generation| *generation += 1);
    }

    /// Listens again on the same address, with the same state. Does nothing
    /// if already running.
    pub async fn restart(&self) -> std::io::Result<()> {
        let mut running = self.inner.running.lock().await;
        if running.is_none() {
            let listener = server::bind(self.inner.addr)?;
            *running = Some(self.serve(listener));
        }
        Ok(())
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
