//! Several replicas on one PostgreSQL database: every watcher on every
//! replica sees every event once, in one order, while both replicas write
//! at once; a watcher resumes on another replica; a replica killed with
//! SIGKILL mid-stream loses nothing that was acknowledged.

use std::time::Duration;

use roomcontrol::proto::v1::room_control_client::RoomControlClient;
use roomcontrol::proto::v1::watch_events_response::Message;
use roomcontrol::proto::v1::*;
use tonic::codec::Streaming;

use crate::process::start_binary;
use crate::support::store::{Kind, TestDatabase};
use crate::support::webhooks;
use crate::support::{TestApp, spawn_app_with, unique};

async fn replica(database: &TestDatabase) -> TestApp {
    let url = database.url.clone();
    spawn_app_with(move |config| config.store.url = url).await
}

async fn watch_from(
    client: &mut RoomControlClient<tonic::transport::Channel>,
    since: u64,
) -> Streaming<WatchEventsResponse> {
    client
        .watch_events(WatchEventsRequest { since_cursor: Some(since), ..Default::default() })
        .await
        .expect("WatchEvents starts")
        .into_inner()
}

/// Events from a watch until `n` arrived (heartbeats skipped), within 30 s
/// in all: a watcher that missed an event fails here.
async fn collect(stream: &mut Streaming<WatchEventsResponse>, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events.len() < n {
        let reply = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events within 30 s", events.len()))
            .expect("the stream stays open")
            .expect("the stream has not ended");
        if let Some(Message::Event(event)) = reply.message {
            events.push(event);
        }
    }
    events
}

fn joined(room: &str, n: usize) -> serde_json::Value {
    let id = format!("EV_{}", unique("r").replace('-', ""));
    webhooks::event("participant_joined", &id, (room, "RM_replicas"), Some((&format!("p{n}"), &format!("PA_{n}_{id}"))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_deliver_every_event_to_every_watcher_in_one_order() {
    let database = TestDatabase::create(Kind::Postgres).await;
    let a = replica(&database).await;
    let b = replica(&database).await;
    let mut watch_a = watch_from(&mut a.client.clone(), 0).await;
    let mut watch_b = watch_from(&mut b.client.clone(), 0).await;
    let room = unique("replicated");

    // Eight writers at once, four on each replica: webhooks and actions.
    let per_writer = 40;
    let mut writers = Vec::new();
    for writer in 0..8 {
        let app = if writer % 2 == 0 { &a } else { &b };
        let room = room.clone();
        let mut client = app.client.clone();
        writers.push(async move {
            for n in 0..per_writer {
                if n % 4 == 3 {
                    let request = CreateTokenRequest {
                        room: room.clone(),
                        identity: format!("w{writer}-{n}"),
                        ..Default::default()
                    };
                    client.create_token(request).await.expect("CreateToken answers");
                } else {
                    let answer = app.post_webhook(&joined(&room, writer * 1000 + n)).await;
                    assert_eq!(answer.status, 200, "{}", answer.text);
                }
            }
        });
    }
    futures_util::future::join_all(writers).await;
    let total = 8 * per_writer;
    let (seen_a, seen_b) = tokio::join!(collect(&mut watch_a, total), collect(&mut watch_b, total));

    let order = |events: &[Event]| events.iter().map(|event| (event.cursor, event.id.clone())).collect::<Vec<_>>();
    assert_eq!(order(&seen_a), order(&seen_b), "both replicas' watchers saw one order");
    let cursors: Vec<u64> = seen_a.iter().map(|event| event.cursor).collect();
    assert!(cursors.windows(2).all(|pair| pair[0] < pair[1]), "strictly increasing: nothing twice");
    let stored = a
        .client
        .clone()
        .list_events(ListEventsRequest { page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(order(&stored), order(&seen_a), "no watcher missed a stored event");

    // A watcher resumes on the other replica with the cursor the first gave.
    let middle = seen_a[total / 2].cursor;
    let mut resumed = watch_from(&mut b.client.clone(), middle).await;
    let rest = collect(&mut resumed, total - total / 2 - 1).await;
    assert_eq!(order(&rest), order(&seen_a[total / 2 + 1..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_stream_loses_nothing_and_repeats_nothing() {
    let database = TestDatabase::create(Kind::Postgres).await;
    let standin = livekit_standin::StandIn::start(livekit_standin::StandInConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("LIVEKIT_URL", standin.url()),
        ("LIVEKIT_API_KEY", standin.api_key().to_owned()),
        ("LIVEKIT_API_SECRET", standin.api_secret().to_owned()),
        ("DATABASE_URL", database.url.clone()),
        ("ROOMCONTROL_EVENTS__RECONCILE_INTERVAL", "0s".to_owned()),
    ];
    let (victim, victim_addr, _victim_lines, _) = start_binary(dir.path(), &env).await;
    let (survivor, survivor_addr, survivor_lines, mut survivor_log) = start_binary(dir.path(), &env).await;
    let post = |addr: String, body: Vec<u8>| {
        let authorization = webhooks::sign(standin.api_key(), standin.api_secret(), &body);
        async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/livekit/webhook"))
                .header("authorization", authorization)
                .body(body)
                .send()
                .await
                .ok()
                .map(|response| response.status().as_u16())
        }
    };
    let mut client = RoomControlClient::connect(format!("http://{victim_addr}")).await.unwrap();
    let mut stream = watch_from(&mut client, 0).await;
    let room = unique("killed");

    // Webhooks alternate between the replicas; what is acknowledged counts.
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        let event = joined(&room, n);
        let body = webhooks::body(&event);
        let target = if n % 2 == 0 { victim_addr.clone() } else { survivor_addr.clone() };
        assert_eq!(post(target, body).await, Some(200));
        acknowledged.push(event["id"].as_str().unwrap().to_owned());
    }
    let mut seen = collect(&mut stream, 20).await;

    // SIGKILL mid-stream: no drain, no goodbye.
    let mut victim = victim;
    victim.kill().unwrap();
    let _ = tokio::task::spawn_blocking(move || victim.wait()).await;
    // The stream ends with an error; what was delivered stays delivered.
    loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.message()).await.expect("the stream ends") {
            Ok(Some(WatchEventsResponse { message: Some(Message::Event(event)) })) => seen.push(event),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // LiveKit retries what the dead replica never answered; here, to the
    // survivor, with more events after.
    for n in 40..60 {
        let event = joined(&room, n);
        assert_eq!(post(survivor_addr.clone(), webhooks::body(&event)).await, Some(200));
        acknowledged.push(event["id"].as_str().unwrap().to_owned());
    }
    let last = seen.last().map_or(0, |event| event.cursor);
    let mut client = RoomControlClient::connect(format!("http://{survivor_addr}")).await.unwrap();
    let mut resumed = watch_from(&mut client, last).await;
    let missing = acknowledged.len() - seen.len();
    seen.extend(collect(&mut resumed, missing).await);

    let ids: Vec<String> = seen.iter().map(|event| event.id.clone()).collect();
    let mut unique_ids = ids.clone();
    unique_ids.sort();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), ids.len(), "nothing twice");
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(unique_ids, expected, "every acknowledged webhook, and nothing else");
    crate::process::stop_binary(survivor, survivor_lines, &mut survivor_log).await;
}
