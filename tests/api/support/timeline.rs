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

/// The next event (heartbeats skipped), within 15 s.
pub async fn next_event(stream: &mut Streaming<WatchEventsResponse>) -> Event {
    tokio::time::timeout(Duration::from_secs(15), next_event_ever(stream)).await.expect("an event within 15 s")
}

async fn next_event_ever(stream: &mut Streaming<WatchEventsResponse>) -> Event {
    loop {
        let reply = stream.message().await.expect("the stream stays open").expect("the stream has not ended");
        if let Some(Message::Event(event)) = reply.message {
            return event;
        }
    }
}

/// Waits for the next event of one of these types, within 15 s (however
/// many heartbeats and other events come first).
pub async fn next_of(stream: &mut Streaming<WatchEventsResponse>, types: &[&str]) -> Event {
    let wanted = async {
        loop {
            let event = next_event_ever(stream).await;
            if types.contains(&event.r#type.as_str()) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wanted)
        .await
        .unwrap_or_else(|_| panic!("no {types:?} event within 15 s"))
}

/// Waits until one event of each of these types has come, in any order
/// (a webhook and RoomControl's own action about the same thing race);
/// returns them in `types`' order.
pub async fn each_of(stream: &mut Streaming<WatchEventsResponse>, types: &[&str]) -> Vec<Event> {
    let mut found: Vec<Option<Event>> = vec![None; types.len()];
    while found.iter().any(Option::is_none) {
        let missing: Vec<&str> =
            types.iter().zip(&found).filter(|(_, event)| event.is_none()).map(|(kind, _)| *kind).collect();
        let event = next_of(stream, &missing).await;
        if let Some(index) = types.iter().position(|kind| *kind == event.r#type) {
            found[index] = Some(event);
        }
    }
    found.into_iter().flatten().collect()
}
