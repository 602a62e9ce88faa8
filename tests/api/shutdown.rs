//! Graceful shutdown in-process: readiness drops, the listener closes, the
//! call in flight still completes, and the server stops.

use std::time::Duration;

use roomcontrol::proto::v1::*;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::standin_or_skip;
use crate::support::{SERVICE_NAME, spawn_app, unique};

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_lets_the_call_in_flight_finish() {
    let mut app = spawn_app().await;
    let standin = standin_or_skip!(app);
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;

    // A watcher on its own connection, as a load balancer would have.
    let watcher = Channel::from_shared(app.http_url()).unwrap().connect().await.unwrap();
    let mut watch =
        HealthClient::new(watcher).watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

    standin.set_delay(Duration::from_millis(800));
    let room = unique("in-flight");
    // Spawned on a client of its own: begin_shutdown takes the app mutably
    // while the call is in flight.
    let mut client = app.client.clone();
    let in_flight =
        tokio::spawn(async move { client.create_room(CreateRoomRequest { name: room, ..Default::default() }).await });
    standin.wait_for_calls("CreateRoom", 1).await;

    let server = app.begin_shutdown();
    let status = watch.message().await.unwrap().expect("the watcher hears the change").status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    drop(watch);

    let reply = in_flight.await.unwrap();
    assert!(reply.is_ok(), "the call in flight completes: {reply:?}");

    let refused = Channel::from_shared(app.http_url()).unwrap().connect().await;
    assert!(refused.is_err(), "the listener is closed");

    tokio::time::timeout(Duration::from_secs(4), server)
        .await
        .expect("the server stops well within the 5 s grace period")
        .unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_calls_that_outlast_the_grace_period() {
    let mut app =
        crate::support::spawn_app_with(|config| config.server.grace_period = Duration::from_millis(300)).await;
    let standin = standin_or_skip!(app);
    standin.set_delay(Duration::from_secs(30));
    // Spawned on a client of its own: begin_shutdown takes the app mutably.
    let mut client = app.client.clone();
    let in_flight = tokio::spawn(async move {
        client.create_room(CreateRoomRequest { name: unique("stuck"), ..Default::default() }).await
    });
    standin.wait_for_calls("CreateRoom", 1).await;
    let server = app.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops after the grace period")
        .unwrap();
    let reply = in_flight.await.unwrap();
    assert!(reply.is_err(), "the abandoned call fails rather than hanging");
}
