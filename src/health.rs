//! Readiness: `roomcontrol.v1.RoomControl` is SERVING only while LiveKit
//! answers with RoomControl's credentials and nothing else keeps the
//! replica from taking calls (see [`Blocker`]). The empty service name
//! reports the process itself and stays SERVING until shutdown, so a
//! liveness probe never restarts a pod for LiveKit's or a load peak's sake.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::proto::SERVICE_NAME;

/// What can keep the replica from taking calls. Readiness is SERVING only
/// while none holds, so a load balancer sends its calls elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// LiveKit does not answer, or refuses RoomControl's credentials.
    LiveKit,
    /// Every call slot for LiveKit-bound calls is held and their wait
    /// queue is full.
    LiveKitCallsFull,
    /// The same for calls that never wait on LiveKit (CreateToken).
    LocalCallsFull,
    /// The main port holds `server.max_connections` connections.
    ConnectionsFull,
}

impl Blocker {
    const ALL: [Blocker; 4] =
        [Blocker::LiveKit, Blocker::LiveKitCallsFull, Blocker::LocalCallsFull, Blocker::ConnectionsFull];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn describe(self) -> &'static str {
        match self {
            Blocker::LiveKit => "LiveKit does not answer with RoomControl's credentials",
            Blocker::LiveKitCallsFull => {
                "every slot for LiveKit calls is held and the wait queue is full (server.max_concurrent_calls, server.max_queued_calls)"
            }
            Blocker::LocalCallsFull => {
                "every slot for local calls is held and the wait queue is full (server.max_concurrent_local_calls, server.max_queued_calls)"
            }
            Blocker::ConnectionsFull => "the main port holds server.max_connections connections",
        }
    }
}

/// The replica's readiness, from every [`Blocker`]. Cheap to clone and to
/// set from any task: setting only flips a bit, and [`Readiness::publish`]
/// tells the health service. Starts blocked by LiveKit, until its first
/// answer.
#[derive(Debug, Clone)]
pub struct Readiness {
    blocked: Arc<watch::Sender<u8>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { blocked: Arc::new(watch::Sender::new(Blocker::LiveKit.bit())) }
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Says whether `blocker` holds now.
    pub fn set(&self, blocker: Blocker, holds: bool) {
        self.blocked.send_if_modified(|mask| {
            let before = *mask;
            if holds {
                *mask |= blocker.bit();
            } else {
                *mask &= !blocker.bit();
            }
            *mask != before
        });
    }

    /// Whether the replica can take calls now.
    pub fn is_ready(&self) -> bool {
        *self.blocked.borrow() == 0
    }

    /// Tells the health service and the `ready` metric each change, with a
    /// log line naming what blocks, until `stop` turns true.
    pub async fn publish(self, reporter: HealthReporter, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.blocked.subscribe();
        let mut published: Option<u8> = None;
        loop {
            let mask = *changes.borrow_and_update();
            if published != Some(mask) {
                let ready = mask == 0;
                let reasons = || {
                    let held = Blocker::ALL.iter().filter(|blocker| mask & blocker.bit() != 0);
                    held.map(|blocker| blocker.describe()).collect::<Vec<_>>().join("; ")
                };
                match published {
                    // The set of reasons changed, not the answer.
                    Some(before) if (before == 0) == ready => {
                        tracing::debug!(service = SERVICE_NAME, because = %reasons(), "still not ready")
                    }
                    _ if ready => tracing::info!(service = SERVICE_NAME, "ready (SERVING)"),
                    _ => tracing::warn!(service = SERVICE_NAME, because = %reasons(), "not ready (NOT_SERVING)"),
                }
                let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                reporter.set_service_status(SERVICE_NAME, status).await;
                metrics.set_ready(ready);
                published = Some(mask);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = crate::shutdown::stopped(&mut stop) => return,
            }
        }
    }
}

/// Asks LiveKit every `interval` and sets [`Blocker::LiveKit`] from each
/// answer, until `stop` turns true.
pub async fn watch_livekit(
    livekit: Arc<LiveKit>,
    readiness: Readiness,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut answered: Option<bool> = None;
    loop {
        let result = tokio::select! {
            result = livekit.check() => result,
            () = crate::shutdown::stopped(&mut stop) => return,
        };
        let now_answers = result.is_ok();
        if answered != Some(now_answers) {
            match &result {
                Ok(()) => tracing::info!("LiveKit answers"),
                Err(error) => tracing::warn!(%error, "LiveKit check failed"),
            }
            readiness.set(Blocker::LiveKit, !now_answers);
            answered = Some(now_answers);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            () = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// Shutdown: both names NOT_SERVING, so probes and load balancers stop
/// sending new calls.
pub async fn set_shutting_down(reporter: &HealthReporter) {
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
}
