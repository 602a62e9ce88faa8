//! Readiness: `roomcontrol.v1.RoomControl` is SERVING only while LiveKit
//! answers with RoomControl's credentials. The empty service name reports the
//! process itself and stays SERVING until shutdown, so a liveness probe never
//! restarts a pod for LiveKit's sake.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::proto::SERVICE_NAME;

/// Asks LiveKit every `interval` and flips readiness on each change, until
/// `stop` turns true.
pub async fn watch_livekit(
    livekit: Arc<LiveKit>,
    reporter: HealthReporter,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready: Option<bool> = None;
    loop {
        let result = tokio::select! {
            result = livekit.check() => result,
            () = crate::shutdown::stopped(&mut stop) => return,
        };
        let now_ready = result.is_ok();
        if ready != Some(now_ready) {
            match &result {
                Ok(()) => tracing::info!(service = SERVICE_NAME, "LiveKit answers: ready (SERVING)"),
                Err(error) => {
                    tracing::warn!(service = SERVICE_NAME, %error, "LiveKit check failed: not ready (NOT_SERVING)")
                }
            }
            let status = if now_ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(SERVICE_NAME, status).await;
            metrics.set_ready(now_ready);
            ready = Some(now_ready);
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
