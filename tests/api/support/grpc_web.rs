//! A grpc-web client over plain HTTP/1.1, speaking the wire format by hand:
//! frames of one flag byte (0x00 data, 0x80 trailers), a big-endian u32
//! length and the bytes.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Code;

pub struct GrpcWebClient {
    http: reqwest::Client,
    base: String,
}

/// One grpc-web reply, taken apart.
#[derive(Debug)]
pub struct GrpcWebReply {
    pub version: http::Version,
    pub http_status: u16,
    pub headers: http::HeaderMap,
    pub messages: Vec<Bytes>,
    /// From the trailers frame, or the headers of a trailers-only reply.
    pub grpc_status: Option<i32>,
    pub grpc_message: Option<String>,
}

impl GrpcWebReply {
    pub fn code(&self) -> Code {
        Code::from_i32(self.grpc_status.expect("a grpc-status"))
    }

    pub fn decode<M: Message + Default>(&self) -> M {
        assert_eq!(self.code(), Code::Ok, "grpc-message: {:?}", self.grpc_message);
        assert_eq!(self.messages.len(), 1, "one message");
        M::decode(self.messages[0].clone()).expect("a well-formed message")
    }
}

impl GrpcWebClient {
    /// Over HTTP/1.1, as browsers mostly do.
    pub fn new(base: String) -> Self {
        Self { http: reqwest::Client::builder().http1_only().build().unwrap(), base }
    }

    /// Over any client (TLS settings of its own).
    pub fn with_client(http: reqwest::Client, base: String) -> Self {
        Self { http, base }
    }

    /// Like [`call`](Self::call), but a transport failure is an error, not
    /// a panic.
    pub async fn try_call<M: Message>(&self, method: &str, request: &M) -> Result<GrpcWebReply, String> {
        self.send(&format!("/roomcontrol.v1.RoomControl/{method}"), request.encode_to_vec(), &[]).await
    }

    /// Over HTTP/2 without TLS (prior knowledge), as a proxy might.
    pub fn new_http2(base: String) -> Self {
        Self { http: reqwest::Client::builder().http2_prior_knowledge().build().unwrap(), base }
    }

    /// Calls `/roomcontrol.v1.RoomControl/{method}` with a protobuf body.
    pub async fn call<M: Message>(&self, method: &str, request: &M) -> GrpcWebReply {
        self.call_with(&format!("/roomcontrol.v1.RoomControl/{method}"), request, &[]).await
    }

    /// Calls any path with extra headers.
    pub async fn call_with<M: Message>(&self, path: &str, request: &M, headers: &[(&str, &str)]) -> GrpcWebReply {
        self.call_encoded(path, request.encode_to_vec(), headers).await
    }

    /// Calls any path with an already encoded message.
    pub async fn call_encoded(&self, path: &str, encoded: Vec<u8>, headers: &[(&str, &str)]) -> GrpcWebReply {
        self.send(path, encoded, headers).await.expect("the grpc-web request goes through")
    }

    /// Sends one grpc-web call; a transport failure is an error.
    async fn send(&self, path: &str, encoded: Vec<u8>, headers: &[(&str, &str)]) -> Result<GrpcWebReply, String> {
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(encoded.len() as u32);
        body.put_slice(&encoded);
        let mut builder = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(body.freeze());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = builder.send().await.map_err(|error| format!("{error:?}"))?;
        let version = response.version();
        let http_status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut payload = response.bytes().await.map_err(|error| format!("{error:?}"))?;
        let mut messages = Vec::new();
        let mut trailers = HashMap::new();
        while payload.has_remaining() {
            let flag = payload.get_u8();
            let len = payload.get_u32() as usize;
            let frame = payload.split_to(len);
            if flag & 0x80 == 0 {
                messages.push(frame);
            } else {
                for line in String::from_utf8_lossy(&frame).split("\r\n").filter(|line| !line.is_empty()) {
                    let (name, value) = line.split_once(':').expect("a trailer line");
                    trailers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let grpc_status =
            trailers.get("grpc-status").cloned().or_else(|| header("grpc-status")).map(|s| s.parse().unwrap());
        let grpc_message = trailers
            .get("grpc-message")
            .cloned()
            .or_else(|| header("grpc-message"))
            .map(|m| percent_encoding::percent_decode_str(&m).decode_utf8_lossy().into_owned());
        Ok(GrpcWebReply { version, http_status, headers, messages, grpc_status, grpc_message })
    }

    /// A CORS preflight for a grpc-web call from `origin`.
    pub async fn preflight(&self, origin: &str) -> reqwest::Response {
        self.http
            .request(reqwest::Method::OPTIONS, format!("{}/roomcontrol.v1.RoomControl/ListRooms", self.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web,x-user-agent,authorization")
            .send()
            .await
            .expect("the preflight goes through")
    }
}
