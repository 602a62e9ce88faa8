//! Connections that cannot starve the server: the handshake, idle and
//! keepalive deadlines, the connection cap with readiness, and the
//! open-file limit. Real sockets throughout; every wait is for something
//! the server does (a close, a status), bounded by `BOUND`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use roomcontrol::proto::v1::CreateTokenRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus};

use crate::support::{SERVICE_NAME, TestApp, spawn_app_without_connections};

/// The failure bound of every wait: far beyond any deadline set here.
const BOUND: Duration = Duration::from_secs(10);

/// The short handshake timeout of these tests.
const HANDSHAKE: Duration = Duration::from_millis(300);

/// Reads until the server closes the connection (end of stream, or a
/// reset); returns what it sent. Panics after `BOUND`.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(BOUND, async {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                return;
            }
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close {what} within {BOUND:?}");
    received
}

/// One series' value on the admin port's /metrics.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let admin = app.admin_addr.expect("the admin port is on");
    let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} in\n{text}"))
}

fn closed_for(reason: &str) -> String {
    format!("roomcontrol_connections_closed_total{{reason=\"{reason}\"}}")
}

/// An HTTP/2 connection made with the h2 crate over `io`, its connection
/// future driven on a task of its own (which answers the server's pings).
async fn h2_over(io: TcpStream) -> (h2::client::SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    let (send, connection) = h2::client::handshake(io).await.expect("the HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// Starts a `grpc.health.v1.Health` call for the process (service ""),
/// returns the response body, where the reply messages arrive.
async fn health_call(send: &h2::client::SendRequest<Bytes>, method: &str) -> h2::RecvStream {
    let mut send = send.clone().ready().await.expect("the connection takes a stream");
    let request = http::Request::post(format!("http://localhost/grpc.health.v1.Health/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    // An empty HealthCheckRequest in gRPC's framing: uncompressed, length 0.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
    let response = tokio::time::timeout(BOUND, response).await.expect("an answer").expect("a response");
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// A whole health Check, answered OK.
async fn health_check(send: &h2::client::SendRequest<Bytes>) {
    let mut body = health_call(send, "Check").await;
    while let Some(data) = body.data().await {
        let data = data.expect("the reply");
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
}

/// Waits for the end of an h2 connection the server closes.
async fn until_closed(driver: JoinHandle<Result<(), h2::Error>>, what: &str) -> Result<(), h2::Error> {
    tokio::time::timeout(BOUND, driver)
        .await
        .unwrap_or_else(|_| panic!("the server did not close {what} within {BOUND:?}"))
        .unwrap()
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let app = spawn_app_without_connections(|config| config.server.handshake_timeout = HANDSHAKE).await;
    let connected_at = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    read_until_closed(&mut stream, "a connect-only socket").await;
    assert!(connected_at.elapsed() >= HANDSHAKE, "closed by the deadline, not at once");
    assert_eq!(metric(&app, &closed_for("handshake_timeout")).await, 1.0);
}

#[tokio::test]
async fn a_stalled_http2_preface_is_closed_after_the_handshake_timeout() {
    let app = spawn_app_without_connections(|config| config.server.handshake_timeout = HANDSHAKE).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The first 10 of the preface's 24 bytes: the server cannot yet tell
    // HTTP/2 from HTTP/1.1.
    stream.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..10]).await.unwrap();
    read_until_closed(&mut stream, "a connection stalled in its preface").await;
    assert_eq!(metric(&app, &closed_for("handshake_timeout")).await, 1.0);
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_is_closed_after_the_handshake_timeout() {
    let app = spawn_app_without_connections(|config| config.server.handshake_timeout = HANDSHAKE).await;
    let (send, driver) = h2_over(TcpStream::connect(app.addr).await.unwrap()).await;
    // The preface and SETTINGS went out with the handshake; the server's
    // SETTINGS come back. No stream follows.
    let ended = until_closed(driver, "an HTTP/2 connection without a stream").await;
    assert!(ended.is_ok(), "closed gracefully (GOAWAY), not broken: {ended:?}");
    let refused = send.clone().ready().await;
    assert!(refused.is_err(), "the connection takes no more streams");
    assert_eq!(metric(&app, &closed_for("handshake_timeout")).await, 1.0);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_handshake_timeout() {
    let fixture =
        |name: &str| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name);
    let tls = roomcontrol::config::TlsConfig {
        cert_file: fixture("server-1.pem"),
        key_file: fixture("server-1.key.pem"),
        client_ca_file: None,
        reload_interval: Duration::from_secs(60),
    };
    let app = spawn_app_without_connections(|config| {
        config.server.handshake_timeout = HANDSHAKE;
        config.server.tls = Some(tls);
    })
    .await;
    let connected_at = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The first bytes of a TLS record (a handshake record of 512 bytes),
    // then nothing.
    stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    read_until_closed(&mut stream, "a stalled TLS handshake").await;
    assert!(connected_at.elapsed() >= HANDSHAKE, "closed by the deadline, not at once");
    assert_eq!(metric(&app, &closed_for("handshake_timeout")).await, 1.0);
}

#[tokio::test]
async fn an_http1_connection_that_sends_no_next_request_is_closed_after_the_handshake_timeout() {
    use prost::Message;
    let app = spawn_app_without_connections(|config| config.server.handshake_timeout = HANDSHAKE).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // One grpc-web call on a keep-alive HTTP/1.1 connection, then nothing.
    let message = CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    let head = format!(
        "POST /roomcontrol.v1.RoomControl/CreateToken HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let received = read_until_closed(&mut stream, "an HTTP/1.1 connection without a next request").await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "the call was answered first: {text}");
    assert_eq!(metric(&app, &closed_for("header_timeout")).await, 1.0);
    assert_eq!(metric(&app, &closed_for("handshake_timeout")).await, 0.0);
}

#[tokio::test]
async fn an_idle_connection_is_closed_while_one_with_a_health_watch_stays_open() {
    let app = spawn_app_without_connections(|config| config.server.idle_timeout = Duration::from_millis(300)).await;

    // A watcher, as a load balancer keeps one: a call in flight as long as
    // the stream lasts.
    let (watcher, watcher_driver) = h2_over(TcpStream::connect(app.addr).await.unwrap()).await;
    let mut watch = health_call(&watcher, "Watch").await;
    watch.data().await.expect("the first status").expect("the first status");

    // Two connections, one after the other, each with one call and then
    // nothing: each is closed after the idle timeout. By the end of the
    // second, the watcher has gone without a finished call for more than
    // an idle timeout.
    for which in ["a first idle connection", "a second idle connection"] {
        let (send, driver) = h2_over(TcpStream::connect(app.addr).await.unwrap()).await;
        health_check(&send).await;
        let ended = until_closed(driver, which).await;
        assert!(ended.is_ok(), "closed gracefully (GOAWAY), not broken: {ended:?}");
        assert!(send.clone().ready().await.is_err(), "{which} takes no more streams");
    }

    assert!(!watcher_driver.is_finished(), "the watcher's connection is still open");
    health_check(&watcher).await;
    assert_eq!(metric(&app, &closed_for("idle_timeout")).await, 2.0);
    drop(watch);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_after_the_keepalive_timeout() {
    let app = spawn_app_without_connections(|config| {
        config.server.http2_keepalive_interval = Duration::from_millis(200);
        config.server.http2_keepalive_timeout = Duration::from_millis(200);
        // Far beyond BOUND: only the keepalive can close it in time.
        config.server.handshake_timeout = Duration::from_secs(60);
        config.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    // Two descriptors for one socket: h2 gets one, the test keeps the other.
    // Closing h2's descriptor (when its task is aborted) closes nothing on
    // the wire while the other is open, so the server sees a peer that is
    // still connected but has gone silent, as a half-open connection looks;
    // reading the other descriptor then shows when the server closes it.
    let socket = std::net::TcpStream::connect(app.addr).unwrap();
    socket.set_nonblocking(true).unwrap();
    let observer = socket.try_clone().unwrap();
    let (send, driver) = h2_over(TcpStream::from_std(socket).unwrap()).await;
    health_check(&send).await;

    // Nothing reads the socket or answers the server's pings from now on.
    driver.abort();
    let _ = driver.await;
    drop(send);
    let mut observer = TcpStream::from_std(observer).unwrap();
    read_until_closed(&mut observer, "a connection whose peer stopped answering pings").await;
    assert_eq!(metric(&app, &closed_for("keepalive_timeout")).await, 1.0);
}

/// Waits, on a health Watch stream, until it reports `status`.
async fn until_status(watch: &mut tonic::Streaming<HealthCheckResponse>, status: ServingStatus) {
    let wait = async {
        while let Some(reply) = watch.message().await.expect("the health stream stays open") {
            if reply.status == status as i32 {
                return;
            }
        }
        panic!("the health stream ended before {status:?}");
    };
    tokio::time::timeout(BOUND, wait).await.unwrap_or_else(|_| panic!("no {status:?} within {BOUND:?}"));
}

#[tokio::test]
async fn beyond_max_connections_new_connections_wait_and_readiness_is_not_serving() {
    let app = spawn_app_without_connections(|config| {
        config.server.max_connections = 3;
        config.server.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    // Readiness as the platform sees it: on the admin port.
    let admin = Channel::from_shared(format!("http://{}", app.admin_addr.unwrap())).unwrap().connect().await.unwrap();
    let mut admin = HealthClient::new(admin);
    let readiness = HealthCheckRequest { service: SERVICE_NAME.to_owned() };
    let mut watch = admin.watch(readiness.clone()).await.unwrap().into_inner();
    until_status(&mut watch, ServingStatus::Serving).await;

    // Three sockets that never send anything hold the three slots.
    let held_at = Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    until_status(&mut watch, ServingStatus::NotServing).await;
    // The admin port still answers.
    let status = admin.check(readiness.clone()).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    assert_eq!(metric(&app, "roomcontrol_connections").await, 3.0);

    // A well-behaved call on a fourth connection waits in the backlog until
    // the handshake timeout frees a slot, then succeeds.
    let mut client = app.client.clone();
    let call = tokio::spawn(async move {
        client.create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() }).await
    });
    let reply = tokio::time::timeout(BOUND, call).await.expect("the waiting call is served").unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    assert!(held_at.elapsed() >= Duration::from_millis(500), "the call waited for a slot");

    for stream in &mut held {
        read_until_closed(stream, "a connect-only socket").await;
    }
    until_status(&mut watch, ServingStatus::Serving).await;
    assert_eq!(metric(&app, &closed_for("handshake_timeout")).await, 3.0);
}

/// The binary, started through `sh` with this open-file limit (soft, hard),
/// JSON logs; returns it with its address, its log lines so far (up to the
/// "listening" line) and the rest to come.
async fn start_with_open_files(
    dir: &std::path::Path,
    soft: u64,
    hard: u64,
) -> (std::process::Child, String, tokio::sync::mpsc::UnboundedReceiver<String>, Vec<String>) {
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\""))
        .arg(crate::process::BINARY)
        .current_dir(dir)
        .env_clear();
    crate::process::start(command).await
}

#[tokio::test]
async fn the_process_raises_its_open_file_limit_and_fits_max_connections_to_it() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let hard = hard.min(2048);
    assert!(hard > 256, "the test needs a hard open-file limit above 256, not {hard}");
    let dir = tempfile::tempdir().unwrap();
    let (child, address, mut lines, mut log) = start_with_open_files(dir.path(), 256, hard).await;
    let events = |log: &[String]| -> Vec<serde_json::Value> {
        log.iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    };
    // The cap is set as the main port starts serving, after "listening".
    let lowered = |event: &serde_json::Value| event["configured"].is_u64() && event["max_connections"].is_u64();
    while !events(&log).iter().any(lowered) {
        let line = tokio::time::timeout(BOUND, lines.recv()).await.expect("the max_connections line").unwrap();
        log.push(line);
    }
    // One answered call: the process is serving, and so handles SIGTERM.
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest { service: String::new() }).await.expect("the process answers");
    crate::process::stop_binary(child, lines, &mut log).await;

    let events = events(&log);
    let limit = events
        .iter()
        .find(|event| event["message"].as_str().is_some_and(|message| message.starts_with("open-file limit")))
        .unwrap_or_else(|| panic!("a line naming the open-file limit:\n{}", log.join("\n")));
    assert_eq!(limit["open_files_limit"], hard, "the soft limit, 256, raised to the hard one: {limit}");
    let lowered = events.iter().find(|event| lowered(event)).unwrap();
    // The admin port's 64, and 64 or a tenth of the limit for the rest.
    let expected = hard - 64 - (hard / 10).max(64);
    assert_eq!(lowered["max_connections"], expected, "{lowered}");
    assert_eq!(lowered["configured"], 10_000, "{lowered}");
}
