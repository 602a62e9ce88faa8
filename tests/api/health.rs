//! grpc.health.v1: the process, and readiness that follows LiveKit.

use secrecy::SecretString;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::standin_or_skip;
use crate::support::{SERVICE_NAME, closed_port_url, spawn_app, spawn_app_with};

#[tokio::test]
async fn readiness_turns_serving_once_livekit_answers_and_the_process_is_serving() {
    let app = spawn_app().await;
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;
    assert_eq!(app.health_of("").await, ServingStatus::Serving);
}

#[tokio::test]
async fn readiness_follows_livekit_down_and_back_up() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;

    standin.stop().await;
    app.wait_for_health(SERVICE_NAME, ServingStatus::NotServing).await;
    assert_eq!(app.health_of("").await, ServingStatus::Serving, "liveness does not depend on LiveKit");

    standin.restart().await.expect("the stand-in restarts on its port");
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;
}

#[tokio::test]
async fn readiness_stays_not_serving_while_livekit_is_unreachable() {
    let url = closed_port_url().await;
    let app = spawn_app_with(|config| config.livekit.url = url).await;
    app.wait_for_health(SERVICE_NAME, ServingStatus::NotServing).await;
    assert_eq!(app.health_of("").await, ServingStatus::Serving);
}

#[tokio::test]
async fn readiness_is_not_serving_when_livekit_rejects_roomcontrols_key() {
    let app = spawn_app_with(|config| config.livekit.api_secret = SecretString::from("wrong-secret")).await;
    let standin = standin_or_skip!(app);
    // Wait until LiveKit has been asked twice, so a SERVING would have shown.
    standin.wait_for_calls("ListRooms", 2).await;
    assert_eq!(app.health_of(SERVICE_NAME).await, ServingStatus::NotServing);
    assert_eq!(app.health_of("").await, ServingStatus::Serving);
}

#[tokio::test]
async fn an_unknown_service_name_is_not_found() {
    let app = spawn_app().await;
    let status = app
        .health
        .clone()
        .check(tonic_health::pb::HealthCheckRequest { service: "no.such.Service".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_so_grpcurl_needs_no_proto_files() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(app.http_url()).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().expect("a reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("a service list, got {:?}", reply.message_response);
    };
    let names: Vec<_> = list.service.into_iter().map(|service| service.name).collect();
    assert!(names.contains(&SERVICE_NAME.to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("roomcontrol.v1.RoomControl".into())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().expect("a reply");
    assert!(matches!(reply.message_response, Some(MessageResponse::FileDescriptorResponse(_))));
}
