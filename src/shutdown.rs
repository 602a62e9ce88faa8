//! Stop signals: SIGTERM because Kubernetes sends it, SIGINT so Ctrl-C
//! behaves the same.

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = ctrl_c => tracing::info!("received SIGINT, starting shutdown"),
                _ = terminate.recv() => tracing::info!("received SIGTERM, starting shutdown"),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops RoomControl");
                let _ = ctrl_c.await;
                tracing::info!("received SIGINT, starting shutdown");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        tracing::info!("received Ctrl-C, starting shutdown");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
