//! WatchEvents' own route: its replies leave already encoded.
//!
//! tonic encodes each reply of a stream as it sends it, so an event sent to
//! a thousand watchers would be cloned and encoded a thousand times (an
//! event's `detail` is a whole webhook body). The timeline's live feed
//! carries each event encoded once, as the `WatchEventsResponse` bytes
//! every watcher sends (`crate::events::timeline::event_frame`); this route
//! serves WatchEvents with a codec that writes those bytes as they are.
//! The request is decoded, admitted and handled exactly as every other
//! RPC's, by the same [`RoomControlService`] and the same layers around it:
//! only the reply's codec differs. On the wire nothing changes, and the
//! generated clients (gRPC and grpc-web) read it as they would any stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;

use super::RoomControlService;
use crate::events::watch::WatchStream;
use crate::proto::v1::WatchEventsRequest;
use crate::rpc::Rpc;

/// The path this route serves.
pub const PATH: &str = crate::rpc::RPCS[Rpc::WatchEvents as usize].path;

/// Decodes a `WatchEventsRequest`; encodes replies that are already the
/// bytes of a `WatchEventsResponse`.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedRepliesCodec;

impl Codec for EncodedRepliesCodec {
    type Encode = Bytes;
    type Decode = WatchEventsRequest;
    type Encoder = EncodedReplies;
    type Decoder = ProstDecoder<WatchEventsRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedReplies
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes an encoded message as it is.
#[derive(Debug, Clone, Copy)]
struct EncodedReplies;

impl Encoder for EncodedReplies {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// The service behind [`PATH`].
#[derive(Debug, Clone)]
pub struct WatchEventsRoute {
    service: RoomControlService,
    max_decoding_message_size: usize,
}

impl WatchEventsRoute {
    pub fn new(service: RoomControlService, max_decoding_message_size: usize) -> Self {
        Self { service, max_decoding_message_size }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for WatchEventsRoute
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = WatchCall(self.service.clone());
        let mut grpc = Grpc::new(EncodedRepliesCodec).max_decoding_message_size(self.max_decoding_message_size);
        Box::pin(async move { Ok(grpc.server_streaming(call, request).await) })
    }
}

struct WatchCall(RoomControlService);

impl ServerStreamingService<WatchEventsRequest> for WatchCall {
    type Response = Bytes;
    type ResponseStream = WatchStream;
    type Future = BoxFuture<Result<Response<WatchStream>, Status>>;

    fn call(&mut self, request: Request<WatchEventsRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.watch(request).await })
    }
}
