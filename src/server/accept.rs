//! The main port: accepting connections, serving each, draining them.
//!
//! A loop of its own over hyper-util's `auto` connection builder rather
//! than tonic's `Server`, which cannot do what this needs: one port that
//! serves HTTP/1.1 (grpc-web from browsers) and HTTP/2 side by side with
//! the console's plain HTTP routes beside the gRPC services; a TLS
//! certificate reloaded from disk without a restart; a per-connection
//! maximum age with jitter; and a drain that stops accepting, sends GOAWAY
//! and waits a grace period for in-flight calls, in the order the health
//! probes need (see `Application::run_until_stopped`).
//!
//! Nothing a client does, or fails to do, holds a connection (and the file
//! descriptor under it) for ever, and no number of connections takes the
//! descriptors the rest of the process needs:
//!
//! - the handshake deadline (`server.handshake_timeout`), from accept until
//!   the first request reaches the service: the TLS handshake, the HTTP/2
//!   preface and SETTINGS, the request's headers. hyper-util's protocol
//!   detection has no timeout of its own, and an HTTP/2 client may complete
//!   its preface and never open a stream;
//! - HTTP/1.1's header read timeout (the same setting) for every later
//!   request, which also ends a keep-alive connection left idle;
//! - the idle deadline (`server.idle_timeout`): a connection with no call
//!   in flight for that long is closed gracefully. A call counts from the
//!   service being called until its response body ends ([`TrackCalls`]), so
//!   a health Watch keeps its connection open;
//! - HTTP/2 keepalive pings, so a peer that vanished without a FIN or a
//!   RST (a half-open connection) is noticed;
//! - a hard close once a connection told to close has carried no call for
//!   `server.http2_keepalive_timeout`: a peer may ignore GOAWAY;
//! - the connection cap (`server.max_connections`, lowered to what the
//!   open-file limit allows): a slot is taken before `accept`, so beyond
//!   the cap new connections wait in the kernel's listen backlog and cost
//!   no descriptor.
//!
//! The admin port is served by the same code, with a small cap of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tower::ServiceExt;

use super::HttpService;
use crate::config::ServerConfig;
use crate::health::{Blocker, Readiness};
use crate::metrics::{ConnectionClose, Metrics};
use crate::tls::Tls;

/// The time limits of every connection, from `server.*`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    /// `server.handshake_timeout`.
    pub handshake: Duration,
    /// `server.idle_timeout`.
    pub idle: Duration,
    /// `server.http2_keepalive_interval`.
    pub keepalive_interval: Duration,
    /// `server.http2_keepalive_timeout`; also how long a connection told to
    /// close may stay without a call before it is closed hard.
    pub keepalive_timeout: Duration,
}

impl Deadlines {
    pub fn of(server: &ServerConfig) -> Self {
        Self {
            handshake: server.handshake_timeout,
            idle: server.idle_timeout,
            keepalive_interval: server.http2_keepalive_interval,
            keepalive_timeout: server.http2_keepalive_timeout,
        }
    }

    /// hyper's connection builder, HTTP/1.1 and HTTP/2, with these limits.
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Every request's headers must arrive within the handshake timeout.
        // hyper starts this timer whenever it waits for a request, so it
        // also closes a keep-alive connection that sends no next request.
        builder.http1().timer(TokioTimer::new()).keep_alive(true).header_read_timeout(self.handshake);
        // Pings, even on a connection without streams: a peer that vanished
        // never answers, and its connection closes after interval + timeout
        // instead of holding its descriptor until the kernel gives up.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        builder
    }
}

/// What every connection of a port is served with.
pub(super) struct Serving {
    pub service: HttpService,
    pub tls: Option<Tls>,
    pub deadlines: Deadlines,
    /// `server.max_connection_age`.
    pub max_age: Option<Duration>,
    /// Turns true when the drain closes connections.
    pub closing: watch::Receiver<bool>,
    /// Connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Where `max_connections` comes from, for the log.
    pub limit_name: &'static str,
    /// "main" or "admin", for the log.
    pub port: &'static str,
    /// Told when the cap is reached and when it is not anymore.
    pub readiness: Option<Readiness>,
    /// The connection metrics (the main port's).
    pub metrics: Option<Arc<Metrics>>,
}

/// Accepts and serves connections until `stop` resolves; returns the
/// connections still open.
pub(super) async fn accept_until(
    listener: TcpListener,
    serving: Serving,
    stop: impl Future<Output = ()>,
) -> JoinSet<()> {
    let builder = serving.deadlines.builder();
    let slots = Arc::new(Semaphore::new(serving.max_connections));
    let mut cap = Cap {
        max: serving.max_connections,
        limit_name: serving.limit_name,
        port: serving.port,
        readiness: serving.readiness.clone(),
        reached: false,
    };
    let mut errors = AcceptErrors::default();
    let mut connections = JoinSet::new();
    // The slot the next connection takes. Taken before `accept`: at the
    // cap, nothing is accepted and new connections wait in the backlog.
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut stop = std::pin::pin!(stop);
    loop {
        if slot.is_none() {
            slot = slots.clone().try_acquire_owned().ok();
            if slot.is_none() {
                cap.reached();
            }
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            acquired = slots.clone().acquire_owned(), if slot.is_none() => slot = acquired.ok(),
            accepted = listener.accept(), if slot.is_some() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        errors.report(error, serving.port).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let held = (slot.take(), serving.metrics.as_ref().map(|metrics| metrics.connections().opened()));
                let connection = Connection {
                    service: serving.service.clone(),
                    builder: builder.clone(),
                    closing: serving.closing.clone(),
                    max_age: serving.max_age,
                    deadlines: serving.deadlines,
                    metrics: serving.metrics.clone(),
                    activity: Arc::new(Activity::new()),
                    peer,
                };
                let acceptor = serving.tls.as_ref().map(Tls::acceptor);
                connections.spawn(async move {
                    // The slot and the open-connections gauge, until the
                    // connection ends.
                    let _held = held;
                    connection.run(stream, acceptor).await;
                });
            }
            // Last, so only when nothing above is ready: no connection ended
            // unnoticed, none waiting in the backlog (a burst of connections
            // closing together is not "free" while the backlog refills them).
            () = std::future::ready(()), if cap.is_free(connections.len()) => cap.free(connections.len()),
        }
    }
    connections
}

/// Gives the open connections `grace` to finish their calls (they were
/// told to close), then closes what is left.
pub(super) async fn drain(mut connections: JoinSet<()>, grace: Duration) {
    tracing::info!(
        connections = connections.len(),
        grace_period = %crate::duration::display(grace),
        "stopped accepting; draining in-flight calls"
    );
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => tracing::info!("all calls finished; stopped"),
        Err(_) => tracing::warn!(
            connections = connections.len(),
            "grace period elapsed with calls still in flight; closing their connections"
        ),
    }
    connections.shutdown().await;
}

/// `server.max_connections`, lowered to what the open-file limit allows.
///
/// Kept back from the limit: the admin port's own cap, plus 64 descriptors
/// or a tenth of the limit, whichever is larger, for the listeners,
/// LiveKit's connection pool, the identity providers' key fetches, TLS
/// files and the runtime itself. With a limit of 1,024 that leaves 858
/// connections; with 1,048,576 the configured 10,000 stand.
pub(super) fn effective_max_connections(configured: usize) -> usize {
    let Some(limit) = open_file_limit() else {
        return configured;
    };
    let reserved = super::admin::MAX_CONNECTIONS as u64 + (limit / 10).max(64);
    let allowed = limit.saturating_sub(reserved).max(1);
    if configured as u64 <= allowed {
        return configured;
    }
    tracing::warn!(
        configured,
        max_connections = allowed,
        open_files_limit = limit,
        reserved,
        "server.max_connections lowered to {allowed}: the open-file limit is {limit}, and {reserved} descriptors are kept for the admin port, LiveKit, the listeners and files"
    );
    allowed as usize
}

/// The open-file soft limit, where there is one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _hard)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The cap's two transitions, each logged once and told to readiness:
/// every slot taken, and enough free again.
struct Cap {
    max: usize,
    limit_name: &'static str,
    port: &'static str,
    readiness: Option<Readiness>,
    reached: bool,
}

impl Cap {
    fn reached(&mut self) {
        if self.reached {
            return;
        }
        self.reached = true;
        tracing::warn!(
            port = self.port,
            "connection limit reached: {} connections ({}); new connections wait",
            self.max,
            self.limit_name
        );
        if let Some(readiness) = &self.readiness {
            readiness.set(Blocker::ConnectionsFull, true);
        }
    }

    /// Whether a reached cap is free again with `open` connections: a
    /// twentieth of the cap (at least one) below it, so that readiness does
    /// not flap with every connection under steady pressure.
    fn is_free(&self, open: usize) -> bool {
        self.reached && open <= self.max.saturating_sub((self.max / 20).max(1))
    }

    fn free(&mut self, open: usize) {
        self.reached = false;
        tracing::info!(
            port = self.port,
            "connection limit no longer reached: {open} of {} connections ({})",
            self.max,
            self.limit_name
        );
        if let Some(readiness) = &self.readiness {
            readiness.set(Blocker::ConnectionsFull, false);
        }
    }
}

/// Accept errors that concern one connection are skipped; others (running
/// out of file descriptors) pause accepting for 100 ms instead of spinning,
/// and are logged at most once a minute, with the number left unlogged.
#[derive(Default)]
struct AcceptErrors {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    const LOG_INTERVAL: Duration = Duration::from_secs(60);

    async fn report(&mut self, error: std::io::Error, port: &'static str) {
        use std::io::ErrorKind::*;
        if matches!(error.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
            return;
        }
        let now = Instant::now();
        if self.logged_at.is_none_or(|at| now - at >= Self::LOG_INTERVAL) {
            tracing::error!(
                %error,
                port,
                failures_not_logged = self.unlogged,
                "accepting a connection failed; retrying every 100 ms, logged at most once a minute"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One accepted connection and what it needs.
struct Connection {
    service: HttpService,
    builder: auto::Builder<TokioExecutor>,
    closing: watch::Receiver<bool>,
    max_age: Option<Duration>,
    deadlines: Deadlines,
    metrics: Option<Arc<Metrics>>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl Connection {
    /// The TLS handshake if any, within the handshake deadline, then
    /// [`Connection::serve`].
    async fn run(self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
        let Some(acceptor) = acceptor else {
            return self.serve(stream).await;
        };
        let deadline = self.activity.since + self.deadlines.handshake;
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "TLS handshake failed");
                self.count(ConnectionClose::Peer);
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake not finished within server.handshake_timeout; closed");
                self.count(ConnectionClose::HandshakeTimeout);
            }
        }
    }

    fn count(&self, reason: ConnectionClose) {
        if let Some(metrics) = &self.metrics {
            metrics.connections().closed(reason);
        }
    }

    /// Serves HTTP/2 or HTTP/1.1 until the client leaves, or ends it: at the
    /// handshake or idle deadline, at its maximum age, or on shutdown.
    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service.clone().map_request(|request: http::Request<Incoming>| request.map(Body::new));
        let service = TrackCalls { inner: service, activity: self.activity.clone() };
        let connection = self.builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let max_age = self.max_age;
        let aged = async {
            match max_age {
                // Up to 10% later, so connections opened together do not all
                // close at once.
                Some(age) => tokio::time::sleep(age + age.mul_f64(rand::random::<f64>() * 0.1)).await,
                None => std::future::pending().await,
            }
        };
        let mut aged = std::pin::pin!(aged);
        let mut closing = self.closing.clone();
        let (since, deadlines) = (self.activity.since, self.deadlines);
        // One timer for every deadline: before the first call, the handshake
        // deadline, looked at every idle timeout too so that a first call's
        // idle deadline is not missed; then the idle deadline; once the
        // connection is told to close, the hard close.
        let timer = tokio::time::sleep_until(since + deadlines.handshake.min(deadlines.idle));
        let mut timer = std::pin::pin!(timer);
        // Since when the connection is being closed.
        let mut told_at: Option<Instant> = None;
        loop {
            let reason = tokio::select! {
                result = connection.as_mut() => {
                    if told_at.is_none() {
                        self.count(ended(&result));
                    }
                    if let Err(error) = result {
                        tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = crate::shutdown::stopped(&mut closing), if told_at.is_none() => ConnectionClose::Drain,
                () = &mut aged, if told_at.is_none() => ConnectionClose::MaxAge,
                () = &mut timer => match self.due(told_at, Instant::now()) {
                    Due::At(at) => {
                        timer.as_mut().reset(at);
                        continue;
                    }
                    Due::Close(reason) => reason,
                    Due::HardClose => {
                        tracing::debug!(peer = %self.peer, "connection not closed when asked (GOAWAY ignored or ping unanswered); closed");
                        return;
                    }
                },
            };
            // Gracefully: GOAWAY on HTTP/2 (calls in flight finish), a close
            // after the current response on HTTP/1.1, at once before the
            // protocol is known. The timer now bounds how long that may take.
            tracing::debug!(peer = %self.peer, reason = reason.label(), "closing the connection");
            self.count(reason);
            connection.as_mut().graceful_shutdown();
            let now = Instant::now();
            told_at = Some(now);
            timer.as_mut().reset(now + deadlines.keepalive_timeout);
        }
    }

    /// What is due when the timer fires at `now`.
    fn due(&self, told_at: Option<Instant>, now: Instant) -> Due {
        let (activity, deadlines) = (&*self.activity, &self.deadlines);
        // When the connection will have been quiet (no call in flight) for
        // `wait`, counting from `from` at the earliest; with a call in
        // flight, look again `wait` from now.
        let quiet_for = |from: Instant, wait: Duration| match activity.quiet_since() {
            Some(since) => since.max(from) + wait,
            None => now + wait,
        };
        let (at, then) = match told_at {
            None if !activity.called() => {
                let by = activity.since + deadlines.handshake;
                (by.min(now + deadlines.idle), Due::Close(ConnectionClose::HandshakeTimeout))
            }
            None => (quiet_for(activity.since, deadlines.idle), Due::Close(ConnectionClose::IdleTimeout)),
            // The time a ping may go unanswered: enough for a peer to
            // answer the ping of a graceful HTTP/2 close and go.
            Some(told_at) => (quiet_for(told_at, deadlines.keepalive_timeout), Due::HardClose),
        };
        if at <= now { then } else { Due::At(at) }
    }
}

/// What [`Connection::due`] finds.
enum Due {
    /// Nothing yet: look again then.
    At(Instant),
    /// Close the connection gracefully, for this reason.
    Close(ConnectionClose),
    /// Close it now.
    HardClose,
}

/// Why a connection ended that RoomControl did not decide to close.
fn ended(result: &Result<(), Box<dyn std::error::Error + Send + Sync>>) -> ConnectionClose {
    let timeout =
        result.as_ref().err().and_then(|error| error.downcast_ref::<hyper::Error>()).filter(|error| error.is_timeout());
    match timeout {
        // hyper ends a server connection with a timeout error in two cases:
        // HTTP/1.1 request headers too slow, a timeout of its own with no
        // cause (the first request's headers are bounded by the handshake
        // deadline, which starts earlier); and an HTTP/2 keepalive ping
        // unanswered, whose cause is the ping's.
        Some(error) if std::error::Error::source(error).is_none() => ConnectionClose::HeaderTimeout,
        Some(_) => ConnectionClose::KeepaliveTimeout,
        None => ConnectionClose::Peer,
    }
}

/// What a connection's calls have done, for its deadlines. Written by
/// [`TrackCalls`], read when the connection's timer fires: nothing wakes
/// the connection per call.
struct Activity {
    /// When the connection was accepted; the times below count from it.
    since: Instant,
    /// Whether a request has reached the service.
    called: AtomicBool,
    /// Calls whose response body has not ended.
    in_flight: AtomicUsize,
    /// When the last call ended, in nanoseconds since `since`.
    last_call_end: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            called: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_call_end: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn called(&self) -> bool {
        self.called.load(Ordering::Relaxed)
    }

    /// Since when no call has been in flight; `None` while one is.
    fn quiet_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.since + Duration::from_nanos(self.last_call_end.load(Ordering::Relaxed)))
    }
}

/// One call in flight on its connection, until dropped.
struct Call(Arc<Activity>);

impl Call {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.called.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Call(activity.clone())
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The end time first, so that whoever sees no call in flight sees
        // when the last one ended.
        self.0.last_call_end.fetch_max(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The per-connection service: counts each call in flight from the moment
/// hyper hands over the request until the response body ends or is
/// dropped, so a streaming call (a health Watch) is a call for as long as
/// it streams, and its connection is not idle.
#[derive(Clone)]
struct TrackCalls<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> tower::Service<http::Request<Incoming>> for TrackCalls<S>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        TrackedCall { call: Some(Call::start(&self.activity)), inner: self.inner.call(request) }
    }
}

pin_project_lite::pin_project! {
    /// A call until its response: then the [`Call`] moves into the body.
    struct TrackedCall<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for TrackedCall<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx));
        Poll::Ready(response.map(|response| response.map(|inner| TrackedBody { inner, call: this.call.take() })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its call when it ends or is dropped.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.call.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
