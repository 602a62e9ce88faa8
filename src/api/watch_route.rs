//! WatchEvents' own route: its replies leave already framed.
//!
//! tonic encodes each reply of a stream as it sends it, copying it into a
//! buffer of its own, so an event sent to a thousand watchers would be
//! encoded, or at least copied, a thousand times (an event's `detail` is a
//! whole webhook body). The timeline's live feed carries each event once,
//! as the gRPC frame every watcher sends, the frames of the events
//! published together end to end in one buffer
//! (`crate::events::timeline::LiveEvent`); this route serves WatchEvents
//! with a body that hands those bytes to the connection as they are: a
//! watcher that takes a whole publication sends its buffer, shared. The
//! request is decoded by tonic, and admitted and handled exactly as every
//! other RPC's, by the same [`RoomControlService`] and the same layers
//! around it: only the reply's body differs. On the wire nothing changes,
//! and the generated clients (gRPC and grpc-web) read it as they would any
//! stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

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

/// Decodes a `WatchEventsRequest`. The replies never pass through it (see
/// [`FramesBody`]); were one to, it is written as it is.
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
        let answered = Arc::new(Mutex::new(None));
        let call = WatchCall { service: self.service.clone(), answered: answered.clone() };
        let mut grpc = Grpc::new(EncodedRepliesCodec).max_decoding_message_size(self.max_decoding_message_size);
        Box::pin(async move {
            // tonic decodes the request, calls the handler and writes the
            // response's head (or a refusal as a trailers-only answer); a
            // watch that started sends its frames through a body of its own.
            let response = grpc.server_streaming(call, request).await;
            let replies = answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            Ok(match replies {
                Some(replies) => {
                    let (head, _nothing) = response.into_parts();
                    http::Response::from_parts(head, tonic::body::Body::new(FramesBody { replies, ended: false }))
                }
                None => response,
            })
        })
    }
}

/// The handler, for tonic: the watch it starts is set aside for the route's
/// own body, and tonic is given an empty stream.
struct WatchCall {
    service: RoomControlService,
    answered: Arc<Mutex<Option<WatchStream>>>,
}

type Nothing = futures_util::stream::Empty<Result<Bytes, Status>>;

impl ServerStreamingService<WatchEventsRequest> for WatchCall {
    type Response = Bytes;
    type ResponseStream = Nothing;
    type Future = BoxFuture<Result<Response<Nothing>, Status>>;

    fn call(&mut self, request: Request<WatchEventsRequest>) -> Self::Future {
        let service = self.service.clone();
        let answered = self.answered.clone();
        Box::pin(async move {
            let replies = service.watch(request).await?;
            let (metadata, replies, extensions) = replies.into_parts();
            *answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(replies);
            Ok(Response::from_parts(metadata, futures_util::stream::empty(), extensions))
        })
    }
}

/// A watch's response body: its frames as the watch gives them, then the
/// trailers with its status (OK when it ends, or the status it ended with).
struct FramesBody {
    replies: WatchStream,
    ended: bool,
}

impl http_body::Body for FramesBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        use futures_util::Stream as _;
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut this.replies).poll_next(cx)) {
            Some(Ok(frames)) => return Poll::Ready(Some(Ok(http_body::Frame::data(frames)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.ended = true;
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.clear();
            let _ = Status::internal("the watch's status could not be written").add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }
}
