//! Connections and calls: gRPC over HTTP/2 with the generated tonic client,
//! grpc-web over HTTP/1.1 and Twirp over HTTP/1.1, each response checked.
//!
//! The transports are deliberately bare (one hyper connection each, no pool,
//! no buffer task, no reconnect) so that the load generator spends as little
//! of its core as possible per call and the server stays the bottleneck.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::net::TcpStream;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

use crate::proto::room_control_client::RoomControlClient;
use crate::proto::{
    CreateTokenRequest, CreateTokenResponse, GetRoomRequest, ListRoomsRequest, ListRoomsResponse, Room,
};

/// The gRPC service path prefix.
const SERVICE_PATH: &str = "/roomcontrol.v1.RoomControl";

/// Which RPC to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rpc {
    /// Sign a join token (never leaves RoomControl).
    CreateToken,
    /// One room by name (LiveKit: ListRooms with a name filter).
    GetRoom,
    /// Every room (LiveKit: ListRooms).
    ListRooms,
}

impl Rpc {
    /// The RPC's name in the proto file.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::CreateToken => "CreateToken",
            Rpc::GetRoom => "GetRoom",
            Rpc::ListRooms => "ListRooms",
        }
    }
}

/// How to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// gRPC over HTTP/2 (prior knowledge, no TLS), with the tonic client.
    Grpc,
    /// grpc-web (`application/grpc-web+proto`) over HTTP/1.1.
    GrpcWeb,
    /// LiveKit's Twirp RoomService over HTTP/1.1, protobuf bodies: the
    /// direct call RoomControl makes, for the GetRoom/ListRooms baseline.
    Twirp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "gRPC",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Twirp => "Twirp",
        }
    }

    /// Whether each connection carries one call at a time (HTTP/1.1).
    pub fn one_call_per_connection(self) -> bool {
        !matches!(self, Protocol::Grpc)
    }
}

/// Why one call failed. `kind` groups failures in the report (a gRPC code,
/// an HTTP status, a transport error); `detail` is one example message;
/// `code` is the gRPC status code when the server answered one (gRPC and
/// grpc-web), so that a run can tell a refusal from a failure.
#[derive(Debug, Clone)]
pub struct CallError {
    pub kind: String,
    pub detail: String,
    pub code: Option<tonic::Code>,
}

impl CallError {
    pub(crate) fn new(kind: impl Into<String>, detail: impl fmt::Display) -> Self {
        CallError { kind: kind.into(), detail: detail.to_string(), code: None }
    }

    /// A non-OK gRPC status the server answered.
    fn grpc(code: tonic::Code, message: impl fmt::Display) -> Self {
        CallError { code: Some(code), ..CallError::new(format!("grpc {code:?}"), message) }
    }

    fn status(status: tonic::Status) -> Self {
        CallError::grpc(status.code(), status.message())
    }

    fn transport(error: impl std::error::Error) -> Self {
        let mut detail = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        CallError::new("transport", detail)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Opens a TCP connection with Nagle off, as every RPC client should.
async fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One HTTP/2 connection as a tonic transport: calls go straight to hyper's
/// connection task, with no pool, buffer or reconnect layer in between.
#[derive(Clone)]
pub struct H2Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl H2Connection {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tcp(addr).await?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or every handle is
            // dropped; calls in flight then fail and are counted.
            let _ = connection.await;
        });
        Ok(H2Connection { send })
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}

/// The generated RoomControl client over one HTTP/2 connection.
pub type GrpcClient = RoomControlClient<H2Connection>;

/// One HTTP/1.1 connection: one call at a time.
pub struct H1Connection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1Connection {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tcp(addr).await?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(H1Connection { send })
    }

    /// Sends one request and reads the whole reply.
    pub async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), CallError> {
        self.send.ready().await.map_err(CallError::transport)?;
        let response = self.send.send_request(request).await.map_err(CallError::transport)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(CallError::transport)?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// What each call sends, prepared once: the typed requests for gRPC, the
/// encoded bodies for HTTP/1.1.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rpc: Rpc,
    pub protocol: Protocol,
    /// The room GetRoom asks for.
    pub room: String,
    grpc_metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    create_token: CreateTokenRequest,
    http1_uri: Uri,
    http1_headers: http::HeaderMap,
    http1_body: Bytes,
}

/// The CreateToken request every call sends: a typical join token.
pub fn create_token_request() -> CreateTokenRequest {
    CreateTokenRequest {
        room: "bench-room".to_owned(),
        identity: "bench-user".to_owned(),
        name: "Bench User".to_owned(),
        ..Default::default()
    }
}

/// Options for [`Plan::new`].
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub rpc: Rpc,
    pub protocol: Protocol,
    /// `host:port` for the Host header.
    pub authority: String,
    /// The room GetRoom asks for.
    pub room: String,
    /// Extra headers on every call (`authorization: Bearer ...`).
    pub headers: Vec<(String, String)>,
    /// Twirp only: the API key and secret the bearer token is signed with.
    pub api_key: String,
    pub api_secret: String,
}

impl Plan {
    pub fn new(options: PlanOptions) -> Result<Plan, String> {
        let PlanOptions { rpc, protocol, authority, room, headers, api_key, api_secret } = options;
        let mut grpc_metadata = Vec::new();
        let mut http1_headers = http::HeaderMap::new();
        http1_headers.insert(HOST, HeaderValue::from_str(&authority).map_err(|e| format!("bad authority: {e}"))?);
        let mut user_headers = http::HeaderMap::new();
        for (name, value) in &headers {
            let bad = |e: &dyn fmt::Display| format!("bad header {name:?}: {e}");
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?;
            let header_value = HeaderValue::from_str(value).map_err(|e| bad(&e))?;
            grpc_metadata.push((
                AsciiMetadataKey::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?,
                AsciiMetadataValue::try_from(value.as_str()).map_err(|e| bad(&e))?,
            ));
            user_headers.append(header_name, header_value);
        }

        let (path, body, content_type) = match protocol {
            Protocol::Grpc => (String::new(), Bytes::new(), None),
            Protocol::GrpcWeb => {
                let message = match rpc {
                    Rpc::CreateToken => create_token_request().encode_to_vec(),
                    Rpc::GetRoom => GetRoomRequest { name: room.clone() }.encode_to_vec(),
                    Rpc::ListRooms => ListRoomsRequest::default().encode_to_vec(),
                };
                let mut framed = BytesMut::with_capacity(5 + message.len());
                framed.put_u8(0);
                framed.put_u32(message.len() as u32);
                framed.put_slice(&message);
                http1_headers.insert(HeaderName::from_static("x-grpc-web"), HeaderValue::from_static("1"));
                (format!("{SERVICE_PATH}/{}", rpc.name()), framed.freeze(), Some("application/grpc-web+proto"))
            }
            Protocol::Twirp => {
                let names = match rpc {
                    Rpc::CreateToken => return Err("Twirp has no CreateToken: it is signed in-process".to_owned()),
                    Rpc::GetRoom => vec![room.clone()],
                    Rpc::ListRooms => Vec::new(),
                };
                let body = livekit_protocol::ListRoomsRequest { names }.encode_to_vec();
                // One service token for the whole run, as a client that
                // caches its token would; it carries the grant LiveKit wants.
                let grants = livekit_api::access_token::VideoGrants { room_list: true, ..Default::default() };
                let token = livekit_api::access_token::AccessToken::with_api_key(&api_key, &api_secret)
                    .with_grants(grants)
                    .with_ttl(Duration::from_secs(6 * 3600))
                    .to_jwt()
                    .map_err(|e| format!("cannot sign the Twirp token: {e}"))?;
                if !user_headers.contains_key(AUTHORIZATION) {
                    http1_headers.insert(
                        AUTHORIZATION,
                        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
                    );
                }
                ("/twirp/livekit.RoomService/ListRooms".to_owned(), Bytes::from(body), Some("application/protobuf"))
            }
        };
        if let Some(content_type) = content_type {
            http1_headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        for (name, value) in user_headers.iter() {
            http1_headers.append(name.clone(), value.clone());
        }
        let http1_uri =
            if path.is_empty() { Uri::from_static("/") } else { path.parse().map_err(|e| format!("{e}"))? };
        Ok(Plan {
            rpc,
            protocol,
            room,
            grpc_metadata,
            create_token: create_token_request(),
            http1_uri,
            http1_headers,
            http1_body: body,
        })
    }

    fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (key, value) in &self.grpc_metadata {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        request
    }

    /// One call over gRPC, its status and reply checked.
    pub async fn call_grpc(&self, client: &mut GrpcClient) -> Result<(), CallError> {
        match self.rpc {
            Rpc::CreateToken => {
                let reply = client
                    .create_token(self.grpc_request(self.create_token.clone()))
                    .await
                    .map_err(CallError::status)?
                    .into_inner();
                check_token(&reply)
            }
            Rpc::GetRoom => {
                let request = GetRoomRequest { name: self.room.clone() };
                let room = client.get_room(self.grpc_request(request)).await.map_err(CallError::status)?.into_inner();
                check_room(&room.name, &self.room)
            }
            Rpc::ListRooms => {
                client.list_rooms(self.grpc_request(ListRoomsRequest::default())).await.map_err(CallError::status)?;
                Ok(())
            }
        }
    }

    /// One call over HTTP/1.1 (grpc-web or Twirp), its status and reply
    /// checked.
    pub async fn call_http1(&self, connection: &mut H1Connection) -> Result<(), CallError> {
        let mut request = Request::new(Full::new(self.http1_body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.http1_uri.clone();
        *request.headers_mut() = self.http1_headers.clone();
        let (status, headers, body) = connection.exchange(request).await?;
        match self.protocol {
            Protocol::GrpcWeb => self.check_grpc_web(status, &headers, body),
            Protocol::Twirp => self.check_twirp(status, body),
            Protocol::Grpc => unreachable!("gRPC goes over HTTP/2"),
        }
    }

    fn check_grpc_web(&self, status: StatusCode, headers: &http::HeaderMap, body: Bytes) -> Result<(), CallError> {
        if status != StatusCode::OK {
            return Err(CallError::new(format!("http {}", status.as_u16()), "grpc-web reply is not 200"));
        }
        let reply = GrpcWebReply::parse(headers, body)?;
        let code = reply.status.ok_or_else(|| CallError::new("no grpc-status", "the reply carries no grpc-status"))?;
        if code != 0 {
            return Err(CallError::grpc(tonic::Code::from_i32(code), reply.message.unwrap_or_default()));
        }
        let message = reply.data.ok_or_else(|| CallError::new("bad reply", "an OK reply without a message"))?;
        let undecodable = |e: prost::DecodeError| CallError::new("bad reply", e);
        match self.rpc {
            Rpc::CreateToken => check_token(&CreateTokenResponse::decode(message).map_err(undecodable)?),
            Rpc::GetRoom => check_room(&Room::decode(message).map_err(undecodable)?.name, &self.room),
            Rpc::ListRooms => ListRoomsResponse::decode(message).map(drop).map_err(undecodable),
        }
    }

    fn check_twirp(&self, status: StatusCode, body: Bytes) -> Result<(), CallError> {
        if status != StatusCode::OK {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|error| error.get("code").and_then(|code| code.as_str().map(str::to_owned)));
            let kind = match code {
                Some(code) => format!("twirp {code}"),
                None => format!("http {}", status.as_u16()),
            };
            return Err(CallError::new(kind, String::from_utf8_lossy(&body)));
        }
        let reply = livekit_protocol::ListRoomsResponse::decode(body).map_err(|e| CallError::new("bad reply", e))?;
        match self.rpc {
            Rpc::GetRoom => match reply.rooms.iter().find(|room| room.name == self.room) {
                Some(_) => Ok(()),
                None => Err(CallError::new("twirp not_found", format!("no room {:?} in the reply", self.room))),
            },
            _ => Ok(()),
        }
    }
}

fn check_token(reply: &CreateTokenResponse) -> Result<(), CallError> {
    if reply.token.is_empty() {
        return Err(CallError::new("bad reply", "CreateToken answered an empty token"));
    }
    Ok(())
}

fn check_room(got: &str, wanted: &str) -> Result<(), CallError> {
    if got != wanted {
        return Err(CallError::new("bad reply", format!("GetRoom answered room {got:?} for {wanted:?}")));
    }
    Ok(())
}

/// A grpc-web reply taken apart: frames of one flag byte (0x00 data, 0x80
/// trailers), a big-endian u32 length and the bytes. A trailers-only reply
/// carries its status in the headers instead.
struct GrpcWebReply {
    data: Option<Bytes>,
    status: Option<i32>,
    message: Option<String>,
}

impl GrpcWebReply {
    fn parse(headers: &http::HeaderMap, mut body: Bytes) -> Result<Self, CallError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut reply = GrpcWebReply {
            data: None,
            status: header("grpc-status").and_then(|s| s.parse().ok()),
            message: header("grpc-message"),
        };
        while body.has_remaining() {
            if body.remaining() < 5 {
                return Err(CallError::new("bad reply", "a truncated grpc-web frame header"));
            }
            let flag = body.get_u8();
            let len = body.get_u32() as usize;
            if body.remaining() < len {
                return Err(CallError::new("bad reply", "a truncated grpc-web frame"));
            }
            let frame = body.split_to(len);
            if flag & 0x80 == 0 {
                reply.data = Some(frame);
                continue;
            }
            for line in String::from_utf8_lossy(&frame).split("\r\n") {
                let Some((name, value)) = line.split_once(':') else { continue };
                match name.trim().to_ascii_lowercase().as_str() {
                    "grpc-status" => reply.status = value.trim().parse().ok(),
                    "grpc-message" => reply.message = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        Ok(reply)
    }
}

/// One connection of either kind. Cloning shares it: gRPC calls multiplex
/// on the HTTP/2 connection; HTTP/1.1 calls take turns.
#[derive(Clone)]
pub enum Connection {
    Grpc(GrpcClient),
    Http1(Arc<tokio::sync::Mutex<H1Connection>>),
}

impl Connection {
    /// Connects to `addr` with the plan's protocol.
    pub async fn open(plan: &Plan, addr: SocketAddr) -> io::Result<Connection> {
        if plan.protocol.one_call_per_connection() {
            let connection = H1Connection::connect(addr).await?;
            return Ok(Connection::Http1(Arc::new(tokio::sync::Mutex::new(connection))));
        }
        let origin: Uri = format!("http://{addr}").parse().map_err(io::Error::other)?;
        let connection = H2Connection::connect(addr).await?;
        Ok(Connection::Grpc(RoomControlClient::with_origin(connection, origin)))
    }

    /// One call of the plan on this connection.
    pub async fn call(&mut self, plan: &Plan) -> Result<(), CallError> {
        match self {
            Connection::Grpc(client) => plan.call_grpc(client).await,
            Connection::Http1(connection) => plan.call_http1(&mut *connection.lock().await).await,
        }
    }
}
