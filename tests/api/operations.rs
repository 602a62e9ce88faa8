//! What the platform sees: Prometheus metrics on the admin port, TLS with
//! reloading and client certificates, the drain on SIGTERM under load, and
//! the maximum connection age.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use livekit_standin::{StandIn, StandInConfig};
use roomcontrol::config::TlsConfig;
use roomcontrol::proto::v1::room_control_client::RoomControlClient;
use roomcontrol::proto::v1::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::process::{start_binary, stop_binary};
use crate::support::grpc_web::GrpcWebClient;
use crate::support::{SERVICE_NAME, scrape, spawn_app, spawn_app_with, unique, value};

#[tokio::test]
async fn metrics_count_calls_codes_latency_livekit_requests_and_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_addr.expect("the admin port is on by default");
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;
    let before = scrape(admin).await;
    assert_eq!(value(&before, "roomcontrol_ready"), 1.0);
    assert_eq!(value(&before, "roomcontrol_calls_in_flight"), 0.0);
    assert!(before.keys().any(|key| key.starts_with("roomcontrol_build_info{version=")));

    for _ in 0..2 {
        app.create_room(CreateRoomRequest { name: unique("metrics"), ..Default::default() }).await.unwrap();
    }
    app.get_room(GetRoomRequest { name: unique("absent") }).await.unwrap_err();
    app.create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .unwrap();
    let web = app.grpc_web().call("CreateRoom", &CreateRoomRequest::default()).await;
    assert_eq!(web.code(), Code::InvalidArgument);

    let after = scrape(admin).await;
    let delta = |key: &str| value(&after, key) - value(&before, key);
    let create_ok = r#"roomcontrol_calls_total{rpc="roomcontrol.v1.RoomControl/CreateRoom",code="Ok",protocol="grpc"}"#;
    assert_eq!(delta(create_ok), 2.0);
    assert_eq!(
        delta(r#"roomcontrol_calls_total{rpc="roomcontrol.v1.RoomControl/GetRoom",code="NotFound",protocol="grpc"}"#),
        1.0
    );
    assert_eq!(
        delta(
            r#"roomcontrol_calls_total{rpc="roomcontrol.v1.RoomControl/CreateRoom",code="InvalidArgument",protocol="grpc-web"}"#
        ),
        1.0
    );
    assert_eq!(delta(r#"roomcontrol_call_duration_seconds_count{rpc="roomcontrol.v1.RoomControl/CreateRoom"}"#), 3.0);
    assert!(delta(r#"roomcontrol_call_duration_seconds_sum{rpc="roomcontrol.v1.RoomControl/CreateRoom"}"#) > 0.0);
    assert_eq!(delta(r#"roomcontrol_livekit_requests_total{method="CreateRoom",outcome="ok"}"#), 2.0);
    assert!(
        delta(r#"roomcontrol_livekit_requests_total{method="ListRooms",outcome="ok"}"#) >= 1.0,
        "GetRoom asks ListRooms"
    );
    assert_eq!(delta(r#"roomcontrol_tokens_minted_total{kind="any"}"#), 1.0);
    assert_eq!(value(&after, "roomcontrol_calls_in_flight"), 0.0);

    let missing = reqwest::get(format!("http://{admin}/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn metrics_show_livekit_failures_and_readiness() {
    let app = spawn_app_with(|config| config.livekit.api_secret = secrecy::SecretString::from("wrong")).await;
    let admin = app.admin_addr.unwrap();
    app.wait_for_health(SERVICE_NAME, ServingStatus::NotServing).await;
    app.list_rooms(ListRoomsRequest::default()).await.unwrap_err();
    let metrics = scrape(admin).await;
    assert_eq!(value(&metrics, "roomcontrol_ready"), 0.0);
    assert!(
        value(&metrics, r#"roomcontrol_livekit_requests_total{method="ListRooms",outcome="credentials_rejected"}"#)
            >= 1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"roomcontrol_calls_total{rpc="roomcontrol.v1.RoomControl/ListRooms",code="Unavailable",protocol="grpc"}"#
        ),
        1.0
    );
}

fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

/// An HTTPS client trusting `ca`, presenting the test client certificate
/// when asked to.
fn https_client(ca: &str, client_certificate: bool) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    roomcontrol::crypto::install_providers();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(tls_fixture(ca)).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = if client_certificate {
        let certs = vec![CertificateDer::from_pem_file(tls_fixture("client.pem")).unwrap()];
        builder
            .with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(tls_fixture("client.key.pem")).unwrap())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder().tls_backend_preconfigured(config).build().unwrap()
}

fn tls_config(dir: &std::path::Path, client_ca: bool) -> TlsConfig {
    for file in ["server-1.pem", "server-1.key.pem"] {
        std::fs::copy(tls_fixture(file), dir.join(file)).unwrap();
    }
    TlsConfig {
        cert_file: dir.join("server-1.pem"),
        key_file: dir.join("server-1.key.pem"),
        client_ca_file: client_ca.then(|| tls_fixture("ca-1.pem")),
        reload_interval: Duration::from_millis(50),
    }
}

async fn token_over(client: reqwest::Client, base: String) -> Result<CreateTokenResponse, String> {
    let web = GrpcWebClient::with_client(client, base);
    let request = CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() };
    web.try_call("CreateToken", &request).await.map(|reply| reply.decode())
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), false);
    let app = spawn_app_with(move |c| c.server.tls = Some(config)).await;
    let base = format!("https://localhost:{}", app.addr.port());
    let token = token_over(https_client("ca-1.pem", false), base.clone()).await.expect("the right CA connects");
    assert_eq!(token.identity, "i");
    let refused = token_over(https_client("ca-2.pem", false), base.clone()).await;
    assert!(refused.is_err(), "a client trusting another CA refuses the server");
    let plaintext = reqwest::get(format!("http://127.0.0.1:{}/", app.addr.port())).await;
    assert!(plaintext.map(|response| !response.status().is_success()).unwrap_or(true), "plaintext is not served");

    // Kubernetes' gRPC probes cannot speak TLS: health answers in plaintext
    // on the admin port.
    let admin = format!("http://{}", app.admin_addr.unwrap());
    let channel = tonic::transport::Channel::from_shared(admin).unwrap().connect().await;
    let mut health = HealthClient::new(channel.expect("the admin port speaks plaintext HTTP/2"));
    for service in ["", SERVICE_NAME] {
        let reply = health.check(HealthCheckRequest { service: service.to_owned() }).await;
        assert!(reply.is_ok(), "health of {service:?} on the admin port: {reply:?}");
    }
}

#[tokio::test]
async fn tls_with_client_certificates_refuses_a_client_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), true);
    let app = spawn_app_with(move |c| c.server.tls = Some(config)).await;
    let base = format!("https://localhost:{}", app.addr.port());
    token_over(https_client("ca-1.pem", true), base.clone())
        .await
        .expect("a client with a certificate from the CA connects");
    let refused = token_over(https_client("ca-1.pem", false), base).await;
    assert!(refused.is_err(), "a client without a certificate is refused");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), false);
    let (cert, key) = (config.cert_file.clone(), config.key_file.clone());
    let app = spawn_app_with(move |c| c.server.tls = Some(config)).await;
    let base = format!("https://localhost:{}", app.addr.port());
    assert!(
        token_over(https_client("ca-2.pem", false), base.clone()).await.is_err(),
        "ca-2 does not sign the first certificate"
    );

    std::fs::copy(tls_fixture("server-2.key.pem"), &key).unwrap();
    std::fs::copy(tls_fixture("server-2.pem"), &cert).unwrap();
    // Wait for the reload (checked every 50 ms) by retrying, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match token_over(https_client("ca-2.pem", false), base.clone()).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("the renewed certificate was never served: {error}"),
        }
    }
}

#[tokio::test]
async fn connections_older_than_the_maximum_age_are_closed_gracefully() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.server.max_connection_age = Some(Duration::from_millis(300))).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // One grpc-web call on a keep-alive HTTP/1.1 connection.
    let body = {
        use prost::Message;
        let message =
            CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() }.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend((message.len() as u32).to_be_bytes());
        framed.extend(message);
        framed
    };
    let head = format!(
        "POST /roomcontrol.v1.RoomControl/CreateToken HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the aged connection");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "the call on it was answered first: {text}");
}

/// True for errors of calls the server never accepted: the connection was
/// refused or the stream was refused after GOAWAY.
fn never_accepted(status: &tonic::Status) -> bool {
    let text = format!("{status:?}").to_ascii_lowercase();
    status.code() == Code::Unavailable
        && (text.contains("connect") || text.contains("refused") || text.contains("goaway") || text.contains("go away"))
}

#[tokio::test]
async fn sigterm_under_load_loses_no_accepted_call_and_drops_readiness_first() {
    let standin = StandIn::start(StandInConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LIVEKIT_URL", standin.url()),
        ("ROOMCONTROL_LIVEKIT__HEALTH_CHECK_INTERVAL", "100ms".to_owned()),
        ("ROOMCONTROL_SERVER__DRAIN_DELAY", "1s".to_owned()),
        ("ROOMCONTROL_SERVER__GRACE_PERIOD", "5s".to_owned()),
    ];
    let (child, address, lines, mut log) = start_binary(dir.path(), &env).await;
    let url = format!("http://{address}");
    let watcher = tonic::transport::Channel::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let mut watch = HealthClient::new(watcher)
        .watch(HealthCheckRequest { service: SERVICE_NAME.to_owned() })
        .await
        .unwrap()
        .into_inner();
    while watch.message().await.unwrap().unwrap().status != ServingStatus::Serving as i32 {}

    // Steady load: four clients, each on its own connection, calling in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let mut client = RoomControlClient::connect(url.clone()).await.unwrap();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let request =
                    CreateTokenRequest { room: "load".into(), identity: format!("w{worker}"), ..Default::default() };
                match client.create_token(request).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) if never_accepted(&status) => tokio::task::yield_now().await,
                    Err(status) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        failures.push(format!("{status:?}"));
                    }
                }
            }
            failures
        }));
    }
    while ok.load(Ordering::SeqCst) < 200 {
        tokio::task::yield_now().await;
    }

    let sent_at = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    while watch.message().await.unwrap().expect("the watcher hears the change").status
        != ServingStatus::NotServing as i32
    {}
    let ok_at_not_serving = ok.load(Ordering::SeqCst);
    // Readiness is down, yet the listener still takes new connections.
    let mut fresh =
        RoomControlClient::connect(url.clone()).await.expect("the listener is still open after NOT_SERVING");
    fresh
        .create_token(CreateTokenRequest { room: "late".into(), identity: "late".into(), ..Default::default() })
        .await
        .expect("calls are still served during the drain delay");

    stop_binary(child, lines, &mut log).await;
    let exited_after = sent_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    assert!(failures.is_empty(), "no accepted call failed: {failures:?}");
    assert!(ok.load(Ordering::SeqCst) > ok_at_not_serving, "calls kept succeeding while draining");
    assert!(exited_after < Duration::from_secs(6), "exit within drain delay + grace period: {exited_after:?}");
    let log = log.join("\n");
    assert!(log.contains("still serving while load balancers catch up"), "{log}");
}
