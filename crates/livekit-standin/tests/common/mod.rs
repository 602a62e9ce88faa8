//! What the egress and agent tests share: raw Twirp calls over real
//! sockets, and a webhook receiver that answers 200.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use livekit_standin::{StandIn, StandInConfig, WebhookDelivery};
use prost::Message;

/// Fails a test that waits longer than this for something to happen.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A receiver that answers every webhook with 200; returns its URL.
pub async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "" });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

/// A stand-in sending webhooks to a receiver, with short steps.
pub async fn standin_with(config: StandInConfig) -> StandIn {
    let url = receiver().await;
    let s = StandIn::start(StandInConfig {
        webhook_urls: vec![url],
        egress_step: Duration::from_millis(50),
        agent_join_delay: Duration::from_millis(20),
        ..config
    })
    .await
    .expect("stand-in starts");
    // one psrpc selection (a third of this) for handlers that are gone
    s.set_no_route_delay(Duration::from_millis(150));
    s
}

pub fn token(s: &StandIn, grants: VideoGrants) -> String {
    AccessToken::with_api_key(s.api_key(), s.api_secret()).with_grants(grants).to_jwt().unwrap()
}

pub fn record_grant() -> VideoGrants {
    VideoGrants { room_record: true, ..Default::default() }
}

pub fn admin(room: &str) -> VideoGrants {
    VideoGrants { room_admin: true, room: room.to_owned(), ..Default::default() }
}

/// A Twirp error as received: HTTP status, code, message.
pub type Failure = (u16, String, String);

/// A protobuf Twirp call to `service` (e.g. "livekit.Egress").
pub async fn call<R: Message + Default>(
    s: &StandIn,
    service: &str,
    method: &str,
    grants: VideoGrants,
    req: &impl Message,
) -> Result<R, Failure> {
    let resp = http()
        .post(format!("{}/twirp/{service}/{method}", s.url()))
        .header("content-type", "application/protobuf")
        .header("authorization", format!("Bearer {}", token(s, grants)))
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("request reaches the stand-in");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    if status == 200 {
        return Ok(R::decode(body).expect("a protobuf reply"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).expect("a Twirp error");
    Err((status, v["code"].as_str().unwrap().to_owned(), v["msg"].as_str().unwrap().to_owned()))
}

pub async fn egress<R: Message + Default>(s: &StandIn, method: &str, req: &impl Message) -> Result<R, Failure> {
    call(s, "livekit.Egress", method, record_grant(), req).await
}

pub async fn dispatch<R: Message + Default>(
    s: &StandIn,
    method: &str,
    room: &str,
    req: &impl Message,
) -> Result<R, Failure> {
    call(s, "livekit.AgentDispatchService", method, admin(room), req).await
}

pub fn failure(status: u16, code: &str, msg: &str) -> Failure {
    (status, code.to_owned(), msg.to_owned())
}

/// The decoded events delivered so far, in order.
pub fn events(deliveries: &[WebhookDelivery]) -> Vec<proto::WebhookEvent> {
    deliveries.iter().filter(|d| d.attempt == 1).map(WebhookDelivery::decode).collect()
}

/// Waits for the first delivered event that matches, and returns it.
pub async fn wait_event(s: &StandIn, what: &str, f: impl Fn(&proto::WebhookEvent) -> bool) -> proto::WebhookEvent {
    let deliveries = within(what, s.wait_for_webhooks(|d| events(d).iter().any(&f))).await;
    events(&deliveries).into_iter().find(|e| f(e)).unwrap()
}

/// Waits for the egress webhook `event` of `egress_id`.
pub async fn wait_egress(s: &StandIn, event: &str, egress_id: &str) -> proto::EgressInfo {
    let e =
        wait_event(s, event, |e| e.event == event && e.egress_info.as_ref().is_some_and(|i| i.egress_id == egress_id))
            .await;
    e.egress_info.unwrap()
}
