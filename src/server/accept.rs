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

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body;
use tower::ServiceExt;

use super::HttpService;
use crate::tls::{self, Tls};

/// What every connection of the main port is served with.
pub(super) struct Serving {
    pub service: HttpService,
    pub tls: Option<Tls>,
    /// `server.max_connection_age`.
    pub max_age: Option<Duration>,
    /// Turns true when the drain closes connections.
    pub closing: watch::Receiver<bool>,
}

/// Accepts and serves connections until `stop` resolves; returns the
/// connections still open.
pub(super) async fn accept_until(
    listener: TcpListener,
    serving: Serving,
    stop: impl Future<Output = ()>,
) -> JoinSet<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        accept_error(error).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    service: serving.service.clone(),
                    builder: builder.clone(),
                    closing: serving.closing.clone(),
                    max_age: serving.max_age,
                    peer,
                };
                let acceptor = serving.tls.as_ref().map(Tls::acceptor);
                connections.spawn(async move {
                    match acceptor {
                        None => connection.serve(stream).await,
                        Some(acceptor) => match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => connection.serve(stream).await,
                            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                    }
                });
            }
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

/// One accepted connection and what it needs.
struct Connection {
    service: HttpService,
    builder: auto::Builder<TokioExecutor>,
    closing: watch::Receiver<bool>,
    max_age: Option<Duration>,
    peer: SocketAddr,
}

impl Connection {
    /// Serves HTTP/2 or HTTP/1.1 until the client leaves, or ends it
    /// gracefully on shutdown or at its maximum age.
    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { service, builder, mut closing, max_age, peer } = self;
        let service = service.map_request(|request: http::Request<hyper::body::Incoming>| request.map(Body::new));
        let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let aged = async {
            match max_age {
                // Up to 10% later, so connections opened together do not all
                // close at once.
                Some(age) => tokio::time::sleep(age + age.mul_f64(rand::random::<f64>() * 0.1)).await,
                None => std::future::pending().await,
            }
        };
        let mut aged = std::pin::pin!(aged);
        let mut ending = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = crate::shutdown::stopped(&mut closing), if !ending => {
                    connection.as_mut().graceful_shutdown();
                    ending = true;
                }
                () = &mut aged, if !ending => {
                    tracing::debug!(%peer, "connection reached server.max_connection_age; asking the client to reconnect");
                    connection.as_mut().graceful_shutdown();
                    ending = true;
                }
            }
        }
    }
}

/// Accept errors that concern one connection are skipped; running out of
/// file descriptors pauses accepting briefly instead of spinning.
pub(super) async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(error.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
