//! Test helpers: the real server on an ephemeral port beside the LiveKit
//! stand-in (or a real LiveKit server), and clients for every protocol.
//!
//! Against a real server: set `ROOMCONTROL_TEST_REAL_LIVEKIT=1` with
//! `LIVEKIT_URL`, `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`. Tests that need
//! the stand-in's controls (adding participants, faults) then skip.
//!
//! Logs are silent unless `TEST_LOG` is set.

pub mod grpc_web;
mod requests;
mod rpc;
pub mod store;
pub mod timeline;
pub mod webhooks;

pub use rpc::{Rpc, livekit_bound};

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use livekit_standin::{StandIn, StandInConfig};
use roomcontrol::proto::v1::room_control_client::RoomControlClient;
use roomcontrol::{Application, Config};
use secrecy::SecretString;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

pub use roomcontrol::proto::SERVICE_NAME;

/// Where the LiveKit server under test is.
#[derive(Debug, Clone)]
pub struct LiveKitTarget {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
}

/// A running RoomControl and what it talks to.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin (metrics) port.
    pub admin_addr: Option<SocketAddr>,
    /// Tests send requests through the helpers in `requests.rs`; a clone of
    /// this is for a call that must own its client, such as a spawned one.
    pub client: RoomControlClient<Channel>,
    pub health: HealthClient<Channel>,
    /// The stand-in, unless the suite runs against a real LiveKit.
    pub standin: Option<StandIn>,
    pub livekit: LiveKitTarget,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// Skips the rest of a test that needs the stand-in's controls.
#[macro_export]
macro_rules! standin_or_skip {
    ($app:expr) => {
        match $app.standin.as_ref() {
            Some(standin) => standin.clone(),
            None => {
                eprintln!("skipped against a real LiveKit: needs the stand-in's controls");
                return;
            }
        }
    };
}

/// Whether the suite runs against a real LiveKit server.
pub fn real_livekit() -> Option<LiveKitTarget> {
    if std::env::var("ROOMCONTROL_TEST_REAL_LIVEKIT").ok().as_deref() != Some("1") {
        return None;
    }
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("ROOMCONTROL_TEST_REAL_LIVEKIT=1 needs {name}"));
    Some(LiveKitTarget {
        url: var("LIVEKIT_URL"),
        api_key: var("LIVEKIT_API_KEY"),
        api_secret: var("LIVEKIT_API_SECRET"),
    })
}

fn init_test_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // reqwest (grpc-web tests) needs the process rustls provider.
        roomcontrol::crypto::install_providers();
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("info,roomcontrol=debug").with_test_writer().try_init();
        }
    });
}

/// A name no other test (or earlier run against a real server) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The configuration tests start from: ephemeral port, quick health checks.
pub fn test_config(livekit: &LiveKitTarget) -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.admin.port = 0;
    config.server.grace_period = Duration::from_secs(5);
    config.livekit.url = livekit.url.clone();
    config.livekit.api_key = livekit.api_key.clone();
    config.livekit.api_secret = SecretString::from(livekit.api_secret.clone());
    config.livekit.health_check_interval = Duration::from_millis(100);
    // Each app its own timeline, gone with it; tests that need a shared or
    // lasting one say so (`store::TestDatabase`).
    config.store.url = "sqlite::memory:".to_owned();
    // No reconciliation (it calls LiveKit): the events tests turn it on.
    config.events.reconcile_interval = Duration::ZERO;
    config
}

/// RoomControl beside a fresh stand-in (or the real LiveKit), defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with changes to the configuration.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let (config, standin, livekit) = configured(configure).await;
    spawn_with_config(config, standin, livekit).await
}

/// Like [`spawn_app_with`], but `client` and `health` connect on their
/// first call: the main port starts with no connection, for tests that
/// count them.
pub async fn spawn_app_without_connections(configure: impl FnOnce(&mut Config)) -> TestApp {
    let (config, standin, livekit) = configured(configure).await;
    start(config, standin, livekit, false).await
}

/// The stand-in (or the real LiveKit) and the test configuration for it.
async fn configured(configure: impl FnOnce(&mut Config)) -> (Config, Option<StandIn>, LiveKitTarget) {
    let (standin, livekit) = match real_livekit() {
        Some(target) => (None, target),
        None => {
            let standin = StandIn::start(StandInConfig::default()).await.expect("the stand-in starts");
            let target = LiveKitTarget {
                url: standin.url(),
                api_key: standin.api_key().to_owned(),
                api_secret: standin.api_secret().to_owned(),
            };
            (Some(standin), target)
        }
    };
    let mut config = test_config(&livekit);
    configure(&mut config);
    (config, standin, livekit)
}

/// Starts RoomControl with exactly this configuration.
pub async fn spawn_with_config(config: Config, standin: Option<StandIn>, livekit: LiveKitTarget) -> TestApp {
    start(config, standin, livekit, true).await
}

async fn start(config: Config, standin: Option<StandIn>, livekit: LiveKitTarget, connect: bool) -> TestApp {
    init_test_logs();
    let application = Application::build(config).await.expect("RoomControl starts");
    let addr = application.local_addr();
    let admin_addr = application.admin_addr();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stop.await;
    }));
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    let channel = if connect { endpoint.connect().await.expect("connects") } else { endpoint.connect_lazy() };
    TestApp {
        addr,
        admin_addr,
        client: RoomControlClient::new(channel.clone()),
        health: HealthClient::new(channel),
        standin,
        livekit,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// The base URL for HTTP clients.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A grpc-web client over HTTP/1.1.
    pub fn grpc_web(&self) -> grpc_web::GrpcWebClient {
        grpc_web::GrpcWebClient::new(self.http_url())
    }

    /// The health status of `service` right now.
    pub async fn health_of(&self, service: &str) -> ServingStatus {
        let reply = self.health.clone().check(HealthCheckRequest { service: service.to_owned() }).await;
        ServingStatus::try_from(reply.expect("health answers").into_inner().status).unwrap()
    }

    /// Waits, through the health Watch stream, until `service` reports `status`.
    pub async fn wait_for_health(&self, service: &str, status: ServingStatus) {
        let mut stream = self
            .health
            .clone()
            .watch(HealthCheckRequest { service: service.to_owned() })
            .await
            .expect("health watch starts")
            .into_inner();
        let wait = async {
            while let Some(reply) = stream.message().await.expect("health stream stays open") {
                if reply.status == status as i32 {
                    return;
                }
            }
            panic!("health stream ended before {service:?} became {status:?}");
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("{service:?} did not become {status:?} within 10 s"));
    }

    /// Begins shutdown, as SIGTERM does, and returns the server task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.server.take().expect("the server runs")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A LiveKit URL where nothing listens.
pub async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Publishes a 720p simulcast VP8 camera track for `identity` on the stand-in.
pub fn add_camera(standin: &StandIn, room: &str, identity: &str) -> livekit_protocol::TrackInfo {
    standin.add_track(
        room,
        identity,
        livekit_standin::TrackSpec {
            name: "camera".into(),
            kind: livekit_protocol::TrackType::Video,
            source: livekit_protocol::TrackSource::Camera,
            muted: false,
            simulcast: true,
            width: 1280,
            height: 720,
            mime_type: "video/vp8".into(),
        },
    )
}

/// Publishes an Opus microphone track for `identity` on the stand-in.
pub fn add_microphone(standin: &StandIn, room: &str, identity: &str) -> livekit_protocol::TrackInfo {
    standin.add_track(
        room,
        identity,
        livekit_standin::TrackSpec {
            name: "microphone".into(),
            kind: livekit_protocol::TrackType::Audio,
            source: livekit_protocol::TrackSource::Microphone,
            muted: false,
            simulcast: false,
            width: 0,
            height: 0,
            mime_type: "audio/opus".into(),
        },
    )
}

/// `name{labels}` -> value, from the text format.
pub async fn scrape(admin: std::net::SocketAddr) -> std::collections::HashMap<String, f64> {
    let response = reqwest::get(format!("http://{admin}/metrics")).await.expect("the admin port answers");
    assert!(response.status().is_success());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "a complete exposition");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').expect("name and value");
            (key.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("a number in {line:?}")))
        })
        .collect()
}

pub fn value(metrics: &std::collections::HashMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

/// An API key for `auth.api_keys`: its secret is `rck_<name>_0123456789abcdef0123`.
pub fn api_key(name: &str, scopes: &[&str], rooms: &[&str]) -> roomcontrol::config::ApiKeyConfig {
    roomcontrol::config::ApiKeyConfig {
        name: name.to_owned(),
        hash: roomcontrol::auth::hash_api_key(&format!("rck_{name}_0123456789abcdef0123")),
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
        revoked: false,
    }
}

/// A request carrying the key [`api_key`] made for `name`.
pub fn as_key<T>(name: &str, request: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    let value = format!("Bearer rck_{name}_0123456789abcdef0123").parse().expect("a header value");
    request.metadata_mut().insert("authorization", value);
    request
}
