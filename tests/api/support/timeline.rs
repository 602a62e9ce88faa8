//! The timeline as tests follow it: RoomControl with the stand-in's
//! webhooks pointed at it, and a room's events through WatchEvents.

use std::time::Duration;

use livekit_standin::StandIn;
use roomcontrol::proto::v1::watch_events_response::Message;
use roomcontrol::proto::v1::*;
use tonic::codec::Streaming;

use super::store::TestDatabase;
use super::{TestApp, spawn_app_with};

/// RoomControl on `database`, with the stand-in's webhooks pointed at it and
/// reconciliation every `reconcile` (zero: off). `None` against a real
/// LiveKit, whose webhooks the test cannot drive.
pub async fn app_with_webhooks(database: &TestDatabase, reconcile: Duration) -> Option<(TestApp, StandIn)> {
    let url = database.url.clone();
    let app = spawn_app_with(move |config| {
        config.store.url = url;
        config.events.reconcile_interval = reconcile;
    })
    .await;
    let Some(standin) = app.standin.clone() else {
        eprintln!("skipped against a real LiveKit: drives the stand-in's participants and webhooks");
        return None;
    };
    standin.set_webhook_urls([format!("{}/livekit/webhook", app.http_url())]);
    Some((app, standin))
}

pub async fn watch_room(app: &TestApp, room: &str) -> Streaming<WatchEventsResponse> {
    app.client
        .clone()
        .watch_events(WatchEventsRequest { rooms: vec![room.to_owned()], since_cursor: Some(0), ..Default::default() })
        .await
        .expect("WatchEvents starts")
        .into_inner()
}

pub async fn next_event(stream: &mut Streaming<WatchEventsResponse>) -> Event {
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(15), stream.message())
            .await
            .expect("an event within 15 s")
            .expect("the stream stays open")
            .expect("the stream has not ended");
        if let Some(Message::Event(event)) = reply.message {
            return event;
        }
    }
}

/// Waits for the next event of one of these types.
pub async fn next_of(stream: &mut Streaming<WatchEventsResponse>, types: &[&str]) -> Event {
    loop {
        let event = next_event(stream).await;
        if types.contains(&event.r#type.as_str()) {
            return event;
        }
    }
}
