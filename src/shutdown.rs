//! Stop signals: SIGTERM because Kubernetes sends it, SIGINT so Ctrl-C
//! behaves the same.

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed
/// when this is called, not when the future is first polled, so a signal
/// that arrives while the server is still starting is not lost (nor does it
/// kill the process with the default action). Call it inside the runtime.
pub fn signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("received SIGINT, starting shutdown"),
                    _ = terminate.recv() => tracing::info!("received SIGTERM, starting shutdown"),
                },
                (interrupt, terminate) => {
                    let error = interrupt.err().or(terminate.err()).map(|error| error.to_string()).unwrap_or_default();
                    tracing::warn!(%error, "cannot listen for SIGTERM or SIGINT; falling back to Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    tracing::info!("received SIGINT, starting shutdown");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("received Ctrl-C, starting shutdown");
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
