//! grpc-web in front of RoomControl's real service, as the server stacks
//! them: tonic-web's translation, then the generated RoomControl server and
//! its handlers, with an anonymous caller in the request's extensions (what
//! the authentication layer puts there when authentication is off). The
//! first byte picks the RPC and the content type (binary or base64 text),
//! the rest is the HTTP body: frames, lengths, compression flags, trailers
//! and messages. Every input must get a complete response, never a panic.
//!
//! The LiveKit URL is a loopback port where nothing listens, so handlers
//! that pass validation fail fast with UNAVAILABLE; CreateToken (signed
//! in-process) and the validation failures run in full.

#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use roomcontrol::api::RoomControlService;
use roomcontrol::auth::Caller;
use roomcontrol::bans::Bans;
use roomcontrol::config::Config;
use roomcontrol::events::Timeline;
use roomcontrol::events::watch::WatchContext;
use roomcontrol::livekit::LiveKit;
use roomcontrol::metrics::Metrics;
use roomcontrol::proto::v1::room_control_server::RoomControlServer;
use roomcontrol::rpc::RPCS;
use roomcontrol::store::Store;
use roomcontrol::tokens::TokenSigner;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, ServiceExt};

const CONTENT_TYPES: [&str; 3] = ["application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text"];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    service: GrpcWebService<RoomControlServer<RoomControlService>>,
    caller: Arc<Caller>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        roomcontrol::crypto::install_providers();
        let mut config = Config::default();
        // Port 1 on loopback: refused at once, and no name to resolve.
        config.livekit.url = "http://127.0.0.1:1".to_owned();
        config.store.url = "sqlite::memory:".to_owned();
        let metrics = Metrics::new();
        let livekit = Arc::new(LiveKit::new(&config.livekit, metrics.clone()).expect("a LiveKit client"));
        let signer = TokenSigner::new(&config.livekit).expect("a token signer");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        // The timeline, in memory: the actions the fuzzer's calls record.
        let (timeline, bans) = runtime.block_on(async {
            let store = Store::open(&config.store).await.expect("an in-memory store");
            let timeline = Timeline::start(store.clone(), &config.events, metrics.clone()).await.expect("a timeline");
            (timeline, Bans::start(store, config.events.poll_interval).await.expect("the bans"))
        });
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let watch = WatchContext { timeline, livekit, metrics, closing };
        let recorder =
            roomcontrol::api::recordings::Recorder::new(&config.recordings).expect("the recordings settings");
        let room_control = RoomControlService::new(
            signer,
            config.tokens.clone(),
            config.auth.self_service.clone(),
            watch,
            bans,
            recorder,
        );
        Fixture {
            runtime,
            service: GrpcWebLayer::new().layer(RoomControlServer::new(room_control)),
            caller: Arc::new(Caller::anonymous()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let fixture = fixture();
    let rpc = &RPCS[usize::from(selector) % RPCS.len()];
    let content_type = CONTENT_TYPES[usize::from(selector) / RPCS.len() % CONTENT_TYPES.len()];
    let mut request = http::Request::post(rpc.path)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("a well-formed request");
    request.extensions_mut().insert(fixture.caller.clone());
    fixture.runtime.block_on(async {
        let response = fixture.service.clone().oneshot(request).await.expect("the service is infallible");
        // The whole body: the reply's frame and the trailers frame.
        let _ = response.into_body().collect().await;
    });
});
