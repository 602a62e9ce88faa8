//! No stalled client, cancelling client or hung LiveKit can starve the
//! service: calls take a slot only once their request has arrived, LiveKit
//! calls and CreateToken have budgets of their own, overload is refused
//! fast, and cancellations are counted as what they are.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use livekit_standin::Fault;
use prost::Message;
use roomcontrol::proto::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use crate::standin_or_skip;
use crate::support::{SERVICE_NAME, TestApp, scrape, spawn_app_with, value};

/// An HTTP/2 connection driven by hand, for what generated clients never do.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("the HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

fn grpc_request(addr: SocketAddr, method: &str, content_type: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::post(format!("http://{addr}/roomcontrol.v1.RoomControl/{method}"))
        .header("te", "trailers")
        .body(())
        .unwrap();
    if let Some(content_type) = content_type {
        request.headers_mut().insert("content-type", content_type.parse().unwrap());
    }
    request
}

/// A gRPC frame header that promises `len` bytes of message.
fn frame_header(len: u32) -> Vec<u8> {
    let mut header = vec![0];
    header.extend_from_slice(&len.to_be_bytes());
    header
}

/// The grpc-status of an answer: in its headers (trailers-only) or trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> (http::StatusCode, Option<i32>, String) {
    let response = response.await.expect("an answer");
    let status = response.status();
    let header =
        |headers: &http::HeaderMap, name: &str| headers.get(name).map(|value| value.to_str().unwrap().to_owned());
    if let Some(code) = header(response.headers(), "grpc-status") {
        let message = header(response.headers(), "grpc-message").unwrap_or_default();
        return (status, Some(code.parse().unwrap()), percent_decode(&message));
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.ok().flatten().unwrap_or_default();
    let message = header(&trailers, "grpc-message").unwrap_or_default();
    (status, header(&trailers, "grpc-status").map(|code| code.parse().unwrap()), percent_decode(&message))
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Waits until the server counts at least `n` calls in flight: the stalled
/// requests have reached it.
async fn wait_for_in_flight(app: &TestApp, n: f64) {
    let admin = app.admin_addr.unwrap();
    let wait = async {
        while value(&scrape(admin).await, "roomcontrol_calls_in_flight") < n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the calls reach the server");
}

#[tokio::test]
async fn stalled_http2_request_bodies_hold_no_slot_and_are_answered_at_the_body_deadline() {
    let app = spawn_app_with(|config| {
        config.server.max_concurrent_calls = 2;
        config.server.max_concurrent_local_calls = 2;
        config.server.request_body_timeout = Duration::from_secs(2);
    })
    .await;
    // Twenty calls, each promising a 100-byte message and sending 10 bytes,
    // never ending: ten times the slots of each budget.
    let mut client = h2_client(app.addr).await;
    let mut stalled = Vec::new();
    for method in ["ListRooms", "CreateToken"].into_iter().cycle().take(20) {
        let (response, mut body) =
            client.send_request(grpc_request(app.addr, method, Some("application/grpc")), false).unwrap();
        let mut partial = frame_header(100);
        partial.extend_from_slice(&[0; 10]);
        body.send_data(Bytes::from(partial), false).unwrap();
        stalled.push((response, body));
    }
    wait_for_in_flight(&app, 20.0).await;

    app.list_rooms(ListRoomsRequest::default()).await.expect("a LiveKit call is served beside stalled ones");
    app.create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .expect("CreateToken is served beside stalled ones");

    for (response, _body) in stalled {
        let (_, code, message) = grpc_status(response).await;
        assert_eq!(code, Some(Code::DeadlineExceeded as i32), "{message}");
        assert!(message.contains("server.request_body_timeout"), "{message}");
    }
}

/// Sends a grpc-web request head over HTTP/1.1 and part of its body.
async fn stalled_http1(addr: SocketAddr, framing: &str, partial: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /roomcontrol.v1.RoomControl/ListRooms HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n{framing}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(partial).await.unwrap();
    tcp
}

/// The head of an HTTP/1.1 response, read up to its blank line.
async fn response_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test]
async fn stalled_http1_grpc_web_bodies_hold_no_slot_and_are_answered_at_the_body_deadline() {
    let app = spawn_app_with(|config| {
        config.server.max_concurrent_calls = 1;
        config.server.request_body_timeout = Duration::from_secs(2);
    })
    .await;
    let mut partial = frame_header(990);
    partial.extend_from_slice(&[0; 5]);
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(stalled_http1(app.addr, "content-length: 1000\r\n", &partial).await);
    }
    // A chunked body whose last chunk never comes.
    for _ in 0..3 {
        let mut chunk = format!("{:x}\r\n", partial.len()).into_bytes();
        chunk.extend_from_slice(&partial);
        chunk.extend_from_slice(b"\r\n");
        sockets.push(stalled_http1(app.addr, "transfer-encoding: chunked\r\n", &chunk).await);
    }
    wait_for_in_flight(&app, 6.0).await;

    let reply = app.grpc_web().call("ListRooms", &ListRoomsRequest::default()).await;
    assert_eq!(reply.code(), Code::Ok, "a grpc-web call is served beside stalled ones: {:?}", reply.grpc_message);

    for mut socket in sockets {
        let head = response_head(&mut socket).await;
        assert!(head.contains("grpc-status: 4"), "{head}");
        assert!(head.contains("server.request_body_timeout"), "{head}");
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_is_refused_without_the_http_librarys_words() {
    let app = spawn_app_with(|_| {}).await;
    let mut socket = stalled_http1(app.addr, "transfer-encoding: chunked\r\n", b"zz\r\n").await;
    let head = response_head(&mut socket).await;
    assert!(head.contains("grpc-status: 3"), "{head}");
    assert!(head.contains("the%20request%20body%20is%20malformed"), "{head}");
    assert!(!head.contains("chunk size") && !head.contains("hyper"), "{head}");
}

#[tokio::test]
async fn a_hung_livekit_fills_only_its_own_budget_and_the_overflow_is_refused_fast() {
    let app = spawn_app_with(|config| {
        config.server.max_concurrent_calls = 2;
        config.server.max_queued_calls = 2;
        config.server.max_queue_wait = Duration::from_millis(300);
        config.livekit.timeout = Duration::from_secs(30);
    })
    .await;
    let standin = standin_or_skip!(app);
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;
    let mut readiness =
        app.health.clone().watch(HealthCheckRequest { service: SERVICE_NAME.to_owned() }).await.unwrap().into_inner();
    assert_eq!(readiness.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

    // LiveKit hangs on ListParticipants (the readiness probe lists rooms).
    standin.fail_next(Some("ListParticipants"), Fault::Hang, 100);
    let hung = |app: &TestApp| {
        let client = app.client.clone();
        async move { client.clone().list_participants(ListParticipantsRequest { room: "hung".into() }).await }
    };
    let holding: Vec<_> = (0..2).map(|_| tokio::spawn(hung(&app))).collect();
    standin.wait_for_calls("ListParticipants", 2).await;
    let queued: Vec<_> = (0..2).map(|_| tokio::spawn(hung(&app))).collect();
    let admin = app.admin_addr.unwrap();
    let wait = async {
        while value(&scrape(admin).await, r#"roomcontrol_calls_queued{budget="livekit"}"#) < 2.0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("two calls wait for a slot");

    let refused = app.list_participants(ListParticipantsRequest { room: "hung".into() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("server.max_queued_calls"), "{}", refused.message());
    let retry = refused.get_details_retry_info().expect("a RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(300)));

    let token = app.create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() });
    token.await.expect("CreateToken has a budget of its own");

    for call in queued {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("server.max_queue_wait"), "{}", status.message());
    }
    // Readiness told the load balancer while the queue overflowed, and
    // took it back once the queue drained.
    let mut seen = Vec::new();
    while seen.last() != Some(&(ServingStatus::Serving as i32)) || seen.len() < 2 {
        seen.push(readiness.message().await.unwrap().unwrap().status);
    }
    assert_eq!(seen, [ServingStatus::NotServing as i32, ServingStatus::Serving as i32]);

    let metrics = scrape(admin).await;
    assert_eq!(value(&metrics, r#"roomcontrol_calls_shed_total{budget="livekit",reason="queue_full"}"#), 1.0);
    assert_eq!(value(&metrics, r#"roomcontrol_calls_shed_total{budget="livekit",reason="queue_wait"}"#), 2.0);
    assert_eq!(value(&metrics, r#"roomcontrol_calls_queued{budget="livekit"}"#), 0.0);
    standin.stop().await;
    for call in holding {
        let _ = call.await;
    }
}

#[tokio::test]
async fn a_cancellation_storm_counts_cancelled_calls_and_no_internal_error() {
    let app = spawn_app_with(|_| {}).await;
    // Rapid reset: headers, then RST_STREAM at once, on connection after
    // connection (the server may end one that resets too much).
    for _ in 0..5 {
        let mut client = h2_client(app.addr).await;
        for _ in 0..100 {
            let Ok((_, mut body)) =
                client.send_request(grpc_request(app.addr, "CreateToken", Some("application/grpc")), false)
            else {
                break;
            };
            body.send_reset(h2::Reason::CANCEL);
            match client.ready().await {
                Ok(ready) => client = ready,
                Err(_) => break,
            }
        }
    }
    let mut client = h2_client(app.addr).await;
    // And calls the server is surely working on when they are reset.
    let mut started = Vec::new();
    for _ in 0..5 {
        let (_, mut body) =
            client.send_request(grpc_request(app.addr, "ListRooms", Some("application/grpc")), false).unwrap();
        body.send_data(Bytes::from(frame_header(10)), false).unwrap();
        started.push(body);
    }
    wait_for_in_flight(&app, 5.0).await;
    for mut body in started {
        body.send_reset(h2::Reason::CANCEL);
    }
    let admin = app.admin_addr.unwrap();
    let wait = async {
        while value(&scrape(admin).await, "roomcontrol_calls_in_flight") > 0.0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("every call ends");

    let metrics = scrape(admin).await;
    let total = |code: &str| -> f64 {
        metrics
            .iter()
            .filter(|(key, _)| key.starts_with("roomcontrol_calls_total{") && key.contains(&format!("code=\"{code}\"")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total("Internal"), 0.0, "a client's cancellation is not RoomControl's failure");
    assert_eq!(total("Unknown"), 0.0);
    assert!(total("Cancelled") >= 5.0, "cancelled calls are counted as such: {}", total("Cancelled"));
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_resource_exhausted() {
    let app = spawn_app_with(|config| config.server.max_message_bytes = 1024).await;
    let status = app
        .create_room(CreateRoomRequest { name: "big".into(), metadata: "m".repeat(2000), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("larger than 1024 bytes (server.max_message_bytes)"), "{}", status.message());

    // A length prefix that promises 100 MB, whatever follows it.
    let mut client = h2_client(app.addr).await;
    let (response, mut body) =
        client.send_request(grpc_request(app.addr, "ListRooms", Some("application/grpc")), false).unwrap();
    let mut message = frame_header(100 * 1024 * 1024);
    message.extend_from_slice(&ListRoomsRequest::default().encode_to_vec());
    body.send_data(Bytes::from(message), true).unwrap();
    let (_, code, message) = grpc_status(response).await;
    assert_eq!(code, Some(Code::ResourceExhausted as i32), "{message}");
}

#[tokio::test]
async fn a_request_that_is_not_grpc_is_answered_415_as_grpc_specifies() {
    let app = spawn_app_with(|_| {}).await;
    let mut client = h2_client(app.addr).await;
    for content_type in [Some("application/json"), None] {
        let (response, mut body) =
            client.send_request(grpc_request(app.addr, "ListRooms", content_type), false).unwrap();
        body.send_data(Bytes::from_static(b"{}"), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
    }
}
