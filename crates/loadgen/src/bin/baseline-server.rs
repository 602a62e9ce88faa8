//! `baseline-server`: the stack's limit. A bare tonic server (HTTP/2, plus
//! grpc-web on HTTP/1.1 through tonic-web, plus grpc.health.v1) that answers
//! RoomControl's CreateToken with a constant token. No validation, no
//! signing, no logging, no middleware: what is left is the cost of tonic,
//! hyper and tokio per call.
//!
//! With `--livekit-url` it is also a bare proxy: GetRoom and ListRooms become
//! LiveKit's Twirp ListRooms on a pooled hyper-util client, with a service
//! token signed once and the rooms copied into RoomControl's messages, and
//! nothing else (no validation, no deadline, no error mapping). That is the
//! limit of a tonic server that calls LiveKit per request. Every other RPC
//! answers UNIMPLEMENTED.
//!
//! Prints `listening on ADDR` on stdout once bound.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use livekit_api::access_token::{AccessToken, VideoGrants};
use loadgen::client::create_token_request;
use loadgen::proto::room_control_server::{RoomControl, RoomControlServer};
use loadgen::proto::{
    CreateTokenRequest, CreateTokenResponse, GetRoomRequest, ListRoomsRequest, ListRoomsResponse, Room,
};
use prost::Message;
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
#[command(version, about = "A bare tonic server answering CreateToken with a constant token")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:50052")]
    listen: SocketAddr,
    /// LiveKit (or the stand-in) to proxy GetRoom and ListRooms to, e.g.
    /// http://127.0.0.1:7880; without it they answer UNIMPLEMENTED.
    #[arg(long)]
    livekit_url: Option<String>,
    /// The API key and secret the proxy signs its service token with.
    #[arg(long, default_value = "devkey")]
    api_key: String,
    #[arg(long, default_value = "secret")]
    api_secret: String,
}

/// Answers CreateToken with the same reply every time, and proxies the room
/// reads if told where LiveKit is.
struct Constant {
    reply: CreateTokenResponse,
    proxy: Option<Proxy>,
}

#[tonic::async_trait]
impl RoomControl for Constant {
    async fn create_token(
        &self,
        _request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }

    async fn get_room(&self, request: Request<GetRoomRequest>) -> Result<Response<Room>, Status> {
        let name = request.into_inner().name;
        let rooms = self.proxy()?.list_rooms(vec![name.clone()]).await?;
        match rooms.into_iter().find(|room| room.name == name) {
            Some(room) => Ok(Response::new(room)),
            None => Err(Status::not_found(format!("room {name:?} does not exist"))),
        }
    }

    async fn list_rooms(&self, _request: Request<ListRoomsRequest>) -> Result<Response<ListRoomsResponse>, Status> {
        let rooms = self.proxy()?.list_rooms(Vec::new()).await?;
        Ok(Response::new(ListRoomsResponse { rooms }))
    }
}

impl Constant {
    fn proxy(&self) -> Result<&Proxy, Status> {
        self.proxy.as_ref().ok_or_else(|| Status::unimplemented("start baseline-server with --livekit-url"))
    }
}

/// LiveKit's Twirp ListRooms on a pooled HTTP/1.1 client.
struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    authorization: HeaderValue,
}

impl Proxy {
    fn new(livekit_url: &str, api_key: &str, api_secret: &str) -> Result<Self, String> {
        let uri = format!("{}/twirp/livekit.RoomService/ListRooms", livekit_url.trim_end_matches('/'))
            .parse()
            .map_err(|e| format!("--livekit-url {livekit_url:?}: {e}"))?;
        let token = AccessToken::with_api_key(api_key, api_secret)
            .with_ttl(Duration::from_secs(24 * 3600))
            .with_grants(VideoGrants { room_list: true, ..Default::default() })
            .to_jwt()
            .map_err(|e| format!("cannot sign the service token: {e}"))?;
        let authorization = HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| e.to_string())?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Proxy { client, uri, authorization })
    }

    async fn list_rooms(&self, names: Vec<String>) -> Result<Vec<Room>, Status> {
        let body = livekit_protocol::ListRoomsRequest { names }.encode_to_vec();
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/protobuf"));
        request.headers_mut().insert(AUTHORIZATION, self.authorization.clone());
        let response = self.client.request(request).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| Status::unavailable(e.to_string()))?.to_bytes();
        if !status.is_success() {
            return Err(Status::unknown(format!("LiveKit answered {status}: {}", String::from_utf8_lossy(&body))));
        }
        let reply = livekit_protocol::ListRoomsResponse::decode(body).map_err(|e| Status::internal(e.to_string()))?;
        Ok(reply.rooms.into_iter().map(room).collect())
    }
}

/// The same copy RoomControl makes.
fn room(room: livekit_protocol::Room) -> Room {
    Room {
        sid: room.sid,
        name: room.name,
        empty_timeout: room.empty_timeout,
        departure_timeout: room.departure_timeout,
        max_participants: room.max_participants,
        metadata: room.metadata,
        num_participants: room.num_participants,
        num_publishers: room.num_publishers,
        creation_time: Some(prost_types::Timestamp { seconds: room.creation_time, nanos: 0 }),
        active_recording: room.active_recording,
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

/// The runtime RoomControl would choose here (`server.worker_threads = 0`):
/// single-threaded on one CPU, else one worker per CPU. The stack's limit
/// is measured on the same runtime as RoomControl.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    loadgen::runtime(threads)?.block_on(serve(Args::parse()))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let reply = constant_reply()?;
    let proxy = match &args.livekit_url {
        Some(url) => Some(Proxy::new(url, &args.api_key, &args.api_secret)?),
        None => None,
    };
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
        .add_service(RoomControlServer::new(Constant { reply, proxy }))
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
