//! `baseline-server`: the stack's limit. A bare tonic server (HTTP/2, plus
//! grpc-web on HTTP/1.1 through tonic-web, plus grpc.health.v1) that answers
//! RoomControl's CreateToken with a constant token and every other RPC with
//! UNIMPLEMENTED. No validation, no signing, no logging, no middleware: what
//! is left is the cost of tonic, hyper and tokio per call.
//!
//! Prints `listening on ADDR` on stdout once bound.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use livekit_api::access_token::{AccessToken, VideoGrants};
use loadgen::client::create_token_request;
use loadgen::proto::room_control_server::{RoomControl, RoomControlServer};
use loadgen::proto::{CreateTokenRequest, CreateTokenResponse};
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
#[command(version, about = "A bare tonic server answering CreateToken with a constant token")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:50052")]
    listen: SocketAddr,
}

/// Answers CreateToken with the same reply every time.
struct Constant {
    reply: CreateTokenResponse,
}

#[tonic::async_trait]
impl RoomControl for Constant {
    async fn create_token(
        &self,
        _request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }
}

/// A real join token for the request the load generator sends, signed once,
/// so the reply has the size of RoomControl's.
fn constant_reply() -> Result<CreateTokenResponse, String> {
    let request = create_token_request();
    let ttl = Duration::from_secs(6 * 3600);
    let token = AccessToken::with_api_key("devkey", "secret")
        .with_identity(&request.identity)
        .with_name(&request.name)
        .with_ttl(ttl)
        .with_grants(VideoGrants { room_join: true, room: request.room.clone(), ..Default::default() })
        .to_jwt()
        .map_err(|e| format!("cannot sign the constant token: {e}"))?;
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.as_secs() + ttl.as_secs())
        .unwrap_or_default();
    Ok(CreateTokenResponse {
        token,
        server_url: "ws://127.0.0.1:7880".to_owned(),
        identity: request.identity,
        room: request.room,
        expires_at: Some(prost_types::Timestamp { seconds: expires_at as i64, nanos: 0 }),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let reply = constant_reply()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<RoomControlServer<Constant>>().await;

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);

    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health)
        .add_service(RoomControlServer::new(Constant { reply }))
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
