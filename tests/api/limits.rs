//! Rate limits per caller and kind of call (`limits.*`), through real
//! sockets: a flooding self-service user is refused with
//! RESOURCE_EXHAUSTED and a RetryInfo while another user passes, on one
//! replica and on two sharing Redis; the budget refills at its rate; every
//! protocol is limited; a Redis that cannot be reached lets calls through,
//! refuses them or limits per process, as configured, and limits hold again
//! once it is back; rediss:// checks Redis's certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomcontrol::config::{IssuerConfig, OnRedisError, RedisUrl};
use roomcontrol::limits::RateSetting;
use roomcontrol::proto::v1::*;
use secrecy::SecretString;
use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::process::roomcontrol;
use crate::support::{TestApp, scrape, spawn_app_with, unique, value};

/// The Redis server every machine runs.
const REDIS: &str = "redis://127.0.0.1:6379";
const ISSUER: &str = "https://login.example.com/";
const SECRET: &str = "a-shared-secret-for-the-limits-tests-0123";

fn rate(text: &str) -> RateSetting {
    RateSetting::parse(text).unwrap()
}

/// An identity provider whose users may mint only for themselves (the
/// auth tests' provider, with a shared secret).
fn issuer() -> IssuerConfig {
    IssuerConfig { secret: Some(SecretString::from(SECRET)), ..crate::auth::issuer(ISSUER) }
}

/// A signed-in browser user's access token: `tokens:create:self` only.
fn user_token(subject: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "iss": ISSUER, "sub": subject, "aud": "roomcontrol", "exp": now + 600, "scope": "tokens:create:self",
    });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// A join token for the user, as a browser asks for one.
async fn mint_as(app: &TestApp, user: &str) -> Result<CreateTokenResponse, Status> {
    let mut request = tonic::Request::new(CreateTokenRequest { room: "standup".into(), ..Default::default() });
    request.metadata_mut().insert("authorization", format!("Bearer {}", user_token(user)).parse().unwrap());
    app.create_token(request).await
}

/// A token for anyone, as a backend (or, with authentication off, anyone) asks.
async fn mint(app: &TestApp) -> Result<CreateTokenResponse, Status> {
    app.create_token(CreateTokenRequest { room: "standup".into(), identity: "alice".into(), ..Default::default() })
        .await
}

/// The RetryInfo delay of a rate-limited call, after checking the refusal
/// names the limit and says what RoomControl's errors say.
fn refused_by(status: &Status, setting: &str, rate: &str) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    assert!(message.starts_with(&format!("rate limit {setting} ({rate}) exceeded for ")), "{message}");
    assert!(message.contains("; retry in "), "{message}");
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("RATE_LIMITED", "roomcontrol.v1"));
    assert_eq!(info.metadata["limit"], setting);
    assert_eq!(info.metadata["rate"], rate);
    details.retry_info().and_then(|info| info.retry_delay).expect("a RetryInfo with a delay")
}

async fn metric(app: &TestApp, key: &str) -> f64 {
    value(&scrape(app.admin_addr.unwrap()).await, key)
}

/// A RoomControl whose browser users mint at most 3 tokens a minute.
async fn with_self_service_users(configure: impl FnOnce(&mut roomcontrol::Config)) -> TestApp {
    spawn_app_with(|config| {
        config.auth.issuers = vec![issuer()];
        config.limits.self_service_tokens = rate("3/min");
        configure(config);
    })
    .await
}

#[tokio::test]
async fn a_self_service_user_minting_in_a_loop_is_limited_while_another_user_mints() {
    let app = with_self_service_users(|_| {}).await;
    for n in 0..3 {
        mint_as(&app, "mallory").await.unwrap_or_else(|status| panic!("call {n} of the burst: {status:?}"));
    }
    let refused = mint_as(&app, "mallory").await.unwrap_err();
    let delay = refused_by(&refused, "limits.self_service_tokens", "3/min");
    // One token every 20 s, less the moments the calls took.
    assert!(delay > Duration::from_secs(19) && delay <= Duration::from_secs(20), "{delay:?}");
    assert!(refused.message().contains("\"mallory\" (issuer https://login.example.com/)"), "{}", refused.message());
    for _ in 0..5 {
        assert_eq!(mint_as(&app, "mallory").await.unwrap_err().code(), Code::ResourceExhausted);
    }

    let token = mint_as(&app, "alice").await.expect("another user's budget is her own");
    assert_eq!(token.identity, "alice");
    assert_eq!(metric(&app, r#"roomcontrol_rate_limited_total{limit="self_service_tokens"}"#).await, 6.0);
    assert_eq!(metric(&app, r#"roomcontrol_rate_limited_total{limit="writes"}"#).await, 0.0);
}

#[tokio::test]
async fn a_budget_refills_at_its_rate() {
    // One call at a time, ten a second: the next is allowed 100 ms after
    // the last.
    let app = spawn_app_with(|config| config.limits.tokens = rate("10/s burst 1")).await;
    mint(&app).await.expect("the first call");
    let refused = mint(&app).await.unwrap_err();
    let delay = refused_by(&refused, "limits.tokens", "10/s burst 1");
    assert!(delay > Duration::ZERO && delay <= Duration::from_millis(100), "{delay:?}");
    // Waiting what RetryInfo says is enough (the behaviour under test).
    tokio::time::sleep(delay).await;
    mint(&app).await.expect("allowed once the RetryInfo delay has passed");
}

#[tokio::test]
async fn writes_reads_and_tokens_have_budgets_of_their_own() {
    let app = spawn_app_with(|config| config.limits.writes = rate("1/min")).await;
    let room = unique("limited");
    app.create_room(CreateRoomRequest { name: room.clone(), ..Default::default() }).await.expect("the one write");
    let refused = app.delete_room(DeleteRoomRequest { name: room.clone() }).await.unwrap_err();
    let delay = refused_by(&refused, "limits.writes", "1/min");
    assert!(delay > Duration::from_secs(59), "{delay:?}");
    assert!(refused.message().contains("for the anonymous caller"), "{}", refused.message());
    app.get_room(GetRoomRequest { name: room.clone() }).await.expect("reads are not writes");
    mint(&app).await.expect("CreateToken has its own limit (off)");
    assert!(app.get_room(GetRoomRequest { name: room }).await.is_ok(), "the refused delete did nothing");
}

#[tokio::test]
async fn grpc_web_callers_are_limited_and_read_the_refusal() {
    let app = spawn_app_with(|config| config.limits.tokens = rate("1/min")).await;
    let web = app.grpc_web();
    let request = CreateTokenRequest { room: "standup".into(), identity: "alice".into(), ..Default::default() };
    assert_eq!(web.call("CreateToken", &request).await.code(), Code::Ok);
    let refused = web.call("CreateToken", &request).await;
    assert_eq!(refused.http_status, 200);
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(refused.headers["content-type"], "application/grpc-web+proto");
    let message = refused.grpc_message.as_deref().unwrap();
    assert!(message.starts_with("rate limit limits.tokens (1/min) exceeded for the anonymous caller; retry in "));
    assert!(refused.headers.contains_key("grpc-status-details-bin"), "the RetryInfo reaches the browser");
    // gRPC and grpc-web callers share the caller's budget.
    assert_eq!(mint(&app).await.unwrap_err().code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn rest_calls_over_their_limit_answer_429_with_retry_after() {
    let app = spawn_app_with(|config| config.limits.tokens = rate("1/min")).await;
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let post = || {
        http.post(format!("{}/livekit/token", app.http_url()))
            .header("content-type", "application/json")
            .body(json!({"roomName": "standup", "participantName": "User"}).to_string())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 201);
    let refused = post().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["statusCode"], 429);
    assert_eq!(body["error"], "Too Many Requests");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("rate limit limits.tokens (1/min) exceeded for the anonymous caller"), "{message}");
}

/// A replica keeping its limits in the machine's Redis, under `prefix`.
async fn replica(prefix: &str, configure: impl FnOnce(&mut roomcontrol::Config)) -> TestApp {
    let prefix = prefix.to_owned();
    with_self_service_users(move |config| {
        config.redis.url = Some(RedisUrl::new(REDIS));
        config.redis.key_prefix = prefix;
        // A loaded CI machine may answer slowly; a slow answer is not what
        // these tests are about.
        config.redis.timeout = Duration::from_secs(2);
        configure(config);
    })
    .await
}

#[tokio::test]
async fn replicas_sharing_redis_share_each_callers_budget() {
    let prefix = format!("{}:", unique("roomcontrol-test"));
    let a = replica(&prefix, |_| {}).await;
    let b = replica(&prefix, |_| {}).await;
    // Calls to A spend the budget B sees.
    mint_as(&a, "mallory").await.expect("1 of 3, on A");
    mint_as(&a, "mallory").await.expect("2 of 3, on A");
    mint_as(&b, "mallory").await.expect("3 of 3, on B");
    for app in [&a, &b] {
        let refused = mint_as(app, "mallory").await.unwrap_err();
        let delay = refused_by(&refused, "limits.self_service_tokens", "3/min");
        assert!(delay > Duration::from_secs(15) && delay <= Duration::from_secs(20), "{delay:?}");
    }
    mint_as(&b, "alice").await.expect("another user passes on B");
    mint_as(&a, "alice").await.expect("and on A");
    assert_eq!(metric(&a, "roomcontrol_rate_limit_store_errors_total").await, 0.0);

    // The budget is one key per caller and limit, which expires by itself.
    let client = redis::Client::open(REDIS).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.expect("Redis answers on 127.0.0.1:6379");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut redis).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        assert!(key.starts_with(&format!("{prefix}rate:self_service_tokens:jwt:")), "{key}");
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut redis).await.unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{key}: {ttl} ms");
    }
}

/// A replica whose Redis is nowhere: nothing listens on port 1.
async fn without_redis(on_redis_error: OnRedisError) -> TestApp {
    spawn_app_with(move |config| {
        config.limits.tokens = rate("1/min");
        config.limits.on_redis_error = on_redis_error;
        config.redis.url = Some(RedisUrl::new("redis://:hunter2@127.0.0.1:1"));
    })
    .await
}

#[tokio::test]
async fn an_unreachable_redis_lets_calls_through_by_default_and_counts_them() {
    let app = without_redis(OnRedisError::Allow).await;
    for n in 0..5 {
        mint(&app).await.unwrap_or_else(|status| panic!("call {n} fails open: {status:?}"));
    }
    assert_eq!(metric(&app, "roomcontrol_rate_limit_store_errors_total").await, 5.0);
    assert_eq!(metric(&app, r#"roomcontrol_rate_limited_total{limit="tokens"}"#).await, 0.0);
}

#[tokio::test]
async fn an_unreachable_redis_refuses_calls_when_told_to_deny() {
    let app = without_redis(OnRedisError::Deny).await;
    let refused = mint(&app).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let message = refused.message();
    assert!(message.starts_with("rate limits cannot be checked: Redis at redis://:***@127.0.0.1:1 "), "{message}");
    assert!(message.contains("limits.on_redis_error = \"deny\""), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(refused.get_error_details().retry_info().is_some());
    // Calls not under a limit never ask Redis.
    app.list_rooms(ListRoomsRequest::default()).await.expect("reads are not limited");
    assert_eq!(metric(&app, "roomcontrol_rate_limit_store_errors_total").await, 1.0);
}

#[tokio::test]
async fn an_unreachable_redis_can_leave_each_replica_to_limit_its_own_calls() {
    let app = without_redis(OnRedisError::Local).await;
    mint(&app).await.expect("within the process's own limit");
    let refused = mint(&app).await.unwrap_err();
    refused_by(&refused, "limits.tokens", "1/min");
}

/// What `roomcontrol config` prints in `dir` with `env`.
fn printed_config(dir: &std::path::Path, env: &[(&str, &str)]) -> serde_json::Value {
    let output = roomcontrol(dir, env, &["config"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn limits_and_redis_are_configured_like_the_other_sections() {
    let dir = tempfile::tempdir().unwrap();
    let config = printed_config(dir.path(), &[]);
    assert_eq!(
        config["limits"],
        json!({"self_service_tokens": "10/min", "tokens": "off", "writes": "off", "reads": "off", "on_redis_error": "allow"})
    );
    assert_eq!(
        config["redis"],
        json!({"url": null, "ca_file": null, "key_prefix": "roomcontrol:", "timeout": "100ms"})
    );

    let env = [
        ("REDIS_URL", "redis://:s3cret-pass@redis.internal:6379/2"),
        ("ROOMCONTROL_LIMITS__TOKENS", "2000/s"),
        ("ROOMCONTROL_LIMITS__WRITES", "100/s burst 200"),
        ("ROOMCONTROL_LIMITS__SELF_SERVICE_TOKENS", "off"),
        ("ROOMCONTROL_LIMITS__ON_REDIS_ERROR", "deny"),
    ];
    let config = printed_config(dir.path(), &env);
    assert_eq!(config["redis"]["url"], "redis://:***@redis.internal:6379/2", "the password hidden");
    assert_eq!(config["limits"]["tokens"], "2000/s");
    assert_eq!(config["limits"]["writes"], "100/s burst 200");
    assert_eq!(config["limits"]["self_service_tokens"], "off");
    assert_eq!(config["limits"]["on_redis_error"], "deny");
    let config = printed_config(dir.path(), &[("REDIS_URL", "")]);
    assert_eq!(config["redis"]["url"], json!(null), "an empty REDIS_URL is no Redis");
}

#[test]
fn bad_limits_stop_start_up_naming_the_setting_and_the_accepted_forms() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("ROOMCONTROL_LIMITS__WRITES", "100 per second")],
            "limits.writes: expected a rate such as \"100/s\", \"10/min\" or \"2000/h\", optionally with a burst (\"100/s burst 200\"), or \"off\"; got \"100 per second\" (from ROOMCONTROL_LIMITS__WRITES environment variable)",
        ),
        (&[("ROOMCONTROL_LIMITS__TOKENS", "100")], "limits.tokens: expected a rate such as"),
        (&[("ROOMCONTROL_LIMITS__READS", "0/s")], "limits.reads: a rate of 0 would refuse every call; write \"off\""),
        (
            &[("ROOMCONTROL_LIMITS__ON_REDIS_ERROR", "maybe")],
            "limits.on_redis_error: unknown variant: found `maybe`, expected `one of `allow`, `deny`, `local``",
        ),
        (
            &[("REDIS_URL", "http://:pw-123@redis:6379")],
            "redis.url = \"http://:***@redis:6379/\" (from REDIS_URL environment variable): expected redis://[:password@]host[:port][/db] or rediss://... (TLS)",
        ),
    ];
    for (env, expected) in cases {
        let output = roomcontrol(dir.path(), env, &["config"]);
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let message = String::from_utf8(output.stderr).unwrap();
        assert!(message.contains(expected), "{env:?}:\n  got      {message}\n  expected {expected}");
        assert!(!message.contains("pw-123"), "{message}");
    }
}

#[tokio::test]
async fn a_flood_and_a_failing_redis_are_logged_once_not_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LIVEKIT_URL", crate::support::closed_port_url().await),
        ("ROOMCONTROL_STORE__URL", "sqlite::memory:".to_owned()),
        ("ROOMCONTROL_LIMITS__TOKENS", "1/min".to_owned()),
        ("ROOMCONTROL_LIMITS__ON_REDIS_ERROR", "local".to_owned()),
        ("REDIS_URL", "redis://:hunter2@127.0.0.1:1".to_owned()),
    ];
    let (child, address, lines, mut log) = crate::process::start_binary(dir.path(), &env).await;
    let mut client =
        roomcontrol::proto::v1::room_control_client::RoomControlClient::connect(format!("http://{address}"))
            .await
            .unwrap();
    let mut refused = 0;
    for _ in 0..30 {
        let request = CreateTokenRequest { room: "standup".into(), identity: "alice".into(), ..Default::default() };
        match client.create_token(request).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("{status:?}"),
        }
    }
    assert_eq!(refused, 29, "one call within the process's own limit");
    crate::process::stop_binary(child, lines, &mut log).await;

    let lines: Vec<serde_json::Value> = log.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let message = |line: &serde_json::Value| line["message"].as_str().unwrap_or_default().to_owned();
    let failing: Vec<_> =
        lines.iter().filter(|line| message(line).starts_with("rate limits: Redis is failing")).collect();
    assert_eq!(failing.len(), 1, "the failure is logged once:\n{}", log.join("\n"));
    assert_eq!(failing[0]["level"], "WARN");
    let refusals = lines.iter().filter(|line| message(line) == "call refused").count();
    assert_eq!(refusals, 0, "no line per refused call at info:\n{}", log.join("\n"));
    let startup = lines.iter().find(|line| message(line) == "rate limits").expect("the limits are logged at start-up");
    assert!(startup["limits"].as_str().unwrap().contains("tokens=1/min"), "{startup}");
    assert!(!log.join("\n").contains("hunter2"), "the Redis password is never logged");
}

/// A Redis server of the test's own (the machine's redis-server binary),
/// on a free port, stopped when dropped.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    /// `None` (and the test skips, saying so) where no redis-server binary
    /// is installed.
    async fn start(port: Option<u16>, extra: &[&str]) -> Option<PrivateRedis> {
        let port = match port {
            Some(port) => port,
            None => std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
        };
        let tls = extra.contains(&"--tls-port");
        let port_args =
            if tls { vec!["--port".to_owned(), "0".to_owned()] } else { vec!["--port".to_owned(), port.to_string()] };
        let mut command = std::process::Command::new("redis-server");
        command
            .args(port_args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(extra.iter().map(|arg| arg.replace("{port}", &port.to_string())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                eprintln!("skipped: cannot run redis-server ({error})");
                return None;
            }
        };
        let ready = async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ready).await.expect("redis-server listens");
        Some(PrivateRedis { child, port })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn limits_hold_again_once_redis_answers_again() {
    let Some(mut redis) = PrivateRedis::start(None, &[]).await else { return };
    let port = redis.port;
    let app = spawn_app_with(move |config| {
        config.limits.tokens = rate("1/min");
        config.redis.url = Some(RedisUrl::new(format!("redis://127.0.0.1:{port}")));
        config.redis.timeout = Duration::from_secs(2);
    })
    .await;
    mint(&app).await.expect("within the limit");
    refused_by(&mint(&app).await.unwrap_err(), "limits.tokens", "1/min");

    redis.stop();
    for n in 0..3 {
        mint(&app).await.unwrap_or_else(|status| panic!("call {n} fails open while Redis is down: {status:?}"));
    }
    assert!(metric(&app, "roomcontrol_rate_limit_store_errors_total").await >= 3.0);

    // A new Redis on the same port, empty: the caller's budget starts
    // afresh, and is held once Redis is asked again (after a second).
    let _redis = PrivateRedis::start(Some(port), &[]).await.expect("redis-server starts again");
    let limited_again = async {
        loop {
            if let Err(status) = mint(&app).await {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), limited_again)
        .await
        .expect("the limit holds again within seconds of Redis's return");
    refused_by(&refused, "limits.tokens", "1/min");
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

#[tokio::test]
async fn rediss_urls_speak_tls_and_check_the_servers_certificate() {
    let (cert, key, ca) = (tls_fixture("server-1.pem"), tls_fixture("server-1.key.pem"), tls_fixture("ca-1.pem"));
    let args = [
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ];
    let Some(redis) = PrivateRedis::start(None, &args).await else { return };
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let over_tls = |ca_file: &'static str| {
        let url = url.clone();
        spawn_app_with(move |config| {
            config.limits.tokens = rate("1/min");
            config.limits.on_redis_error = OnRedisError::Deny;
            config.redis.url = Some(RedisUrl::new(url));
            config.redis.ca_file = Some(tls_fixture(ca_file));
            config.redis.timeout = Duration::from_secs(2);
        })
    };
    let trusting = over_tls("ca-1.pem").await;
    mint(&trusting).await.expect("Redis answers over TLS");
    refused_by(&mint(&trusting).await.unwrap_err(), "limits.tokens", "1/min");

    // A certificate from a CA RoomControl was not told to trust is refused.
    let distrusting = over_tls("ca-2.pem").await;
    let refused = mint(&distrusting).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("certificate"), "{}", refused.message());
}
