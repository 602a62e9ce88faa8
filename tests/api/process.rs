//! The `roomcontrol` binary itself: help, the token command, and a served
//! process stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use livekit_api::access_token::TokenVerifier;
use livekit_standin::{StandIn, StandInConfig};
use roomcontrol::proto::v1::room_control_client::RoomControlClient;
use roomcontrol::proto::v1::*;

pub const BINARY: &str = env!("CARGO_BIN_EXE_roomcontrol");

/// The binary with a clean environment in `dir`.
pub fn roomcontrol(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn help_explains_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let output = roomcontrol(dir.path(), &[], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in ["control plane for LiveKit", "serve", "token", "config", "--config", "LIVEKIT_URL"] {
        assert!(help.contains(expected), "--help mentions {expected}:\n{help}");
    }
}

#[test]
fn the_token_command_prints_a_token_livekit_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("LIVEKIT_API_KEY", "cli-key"), ("LIVEKIT_API_SECRET", "cli-secret-0123456789")];
    let output = roomcontrol(
        dir.path(),
        &env,
        &["token", "--room", "demo", "--identity", "bob", "--ttl", "10m", "--can-publish", "false"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let claims = TokenVerifier::with_api_key("cli-key", "cli-secret-0123456789").verify(&token).expect("a valid token");
    assert_eq!((claims.sub.as_str(), claims.video.room.as_str()), ("bob", "demo"));
    assert_eq!(claims.exp - claims.nbf, 600);
    assert_eq!(claims.video.can_publish, Some(false));

    // --json answers in CreateToken's proto3 JSON shape, as grpcurl shows it.
    let output = roomcontrol(dir.path(), &env, &["token", "--room", "demo", "--identity", "bob", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expiresAt", "identity", "room", "serverUrl", "token"], "{json}");
    assert_eq!(json["serverUrl"], "ws://localhost:7880");
    assert_eq!((json["identity"].as_str(), json["room"].as_str()), (Some("bob"), Some("demo")));
    let claims = TokenVerifier::with_api_key("cli-key", "cli-secret-0123456789")
        .verify(json["token"].as_str().unwrap())
        .expect("a valid token");
    let expires_at = json["expiresAt"].as_str().unwrap();
    assert!(expires_at.ends_with('Z') && expires_at.contains('T'), "RFC 3339 in UTC: {expires_at}");
    let expires_at: prost_types::Timestamp = expires_at.parse().expect("an RFC 3339 timestamp");
    assert_eq!(expires_at, prost_types::Timestamp { seconds: claims.exp as i64, nanos: 0 });

    let output = roomcontrol(dir.path(), &env, &["token", "--room", "", "--identity", "bob"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "roomcontrol: invalid request: room: must not be empty: give the room name"
    );
}

#[tokio::test]
async fn the_served_process_stops_cleanly_on_sigterm_and_never_logs_its_secret() {
    const SECRET: &str = "never-log-this-secret-6b7f0e";
    let standin = StandIn::start(StandInConfig { api_secret: SECRET.to_owned(), ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LIVEKIT_URL", standin.url()),
        ("LIVEKIT_API_KEY", standin.api_key().to_owned()),
        ("LIVEKIT_API_SECRET", SECRET.to_owned()),
        ("ROOMCONTROL_LIVEKIT__HEALTH_CHECK_INTERVAL", "100ms".to_owned()),
    ];
    let (child, address, lines, mut log) = start_binary(dir.path(), &env).await;
    let mut client = RoomControlClient::connect(format!("http://{address}")).await.unwrap();
    client.create_room(CreateRoomRequest { name: "from-process".into(), ..Default::default() }).await.unwrap();
    let refused = client.get_room(GetRoomRequest { name: "missing".into() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    stop_binary(child, lines, &mut log).await;
    let log = log.join("\n");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("GetRoom") && log.contains("missing"), "refused calls are logged with their room:\n{log}");
    assert!(!log.contains(SECRET), "the secret never reaches the logs");
}

#[tokio::test]
async fn the_process_serves_on_a_single_threaded_or_a_multi_threaded_runtime() {
    let standin = StandIn::start(StandInConfig::default()).await.unwrap();
    standin.create_room("on-any-runtime");
    let dir = tempfile::tempdir().unwrap();
    for (threads, flavor) in [("1", "CurrentThread"), ("3", "MultiThread")] {
        let env = [
            ("LIVEKIT_URL", standin.url()),
            ("LIVEKIT_API_KEY", standin.api_key().to_owned()),
            ("LIVEKIT_API_SECRET", standin.api_secret().to_owned()),
            ("ROOMCONTROL_SERVER__WORKER_THREADS", threads.to_owned()),
        ];
        let (child, address, lines, mut log) = start_binary(dir.path(), &env).await;
        let listening: serde_json::Value = serde_json::from_str(log.last().unwrap()).unwrap();
        assert_eq!(listening["worker_threads"].to_string(), threads, "{listening}");
        assert_eq!(listening["runtime"], flavor, "{listening}");
        // A call that reaches LiveKit and one that does not.
        let mut client = RoomControlClient::connect(format!("http://{address}")).await.unwrap();
        let room = client.get_room(GetRoomRequest { name: "on-any-runtime".into() }).await.unwrap().into_inner();
        assert_eq!(room.name, "on-any-runtime");
        let token = client
            .create_token(CreateTokenRequest {
                room: "on-any-runtime".into(),
                identity: "ann".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!token.token.is_empty());
        stop_binary(child, lines, &mut log).await;
    }
}

/// Starts the binary in `dir` with JSON logs; returns it, its address and
/// its log lines.
pub async fn start_binary(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, String, tokio::sync::mpsc::UnboundedReceiver<String>, Vec<String>) {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).env_clear().envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    start(command).await
}

/// Starts `command` (the binary, or a shell that execs it) on free ports
/// with JSON logs; returns the child, its address, its log lines up to the
/// "listening" line and the rest to come. Variables `command` sets win.
pub async fn start(
    mut command: Command,
) -> (std::process::Child, String, tokio::sync::mpsc::UnboundedReceiver<String>, Vec<String>) {
    for (name, value) in [("PORT", "0"), ("ROOMCONTROL_ADMIN__PORT", "0"), ("ROOMCONTROL_LOG__FORMAT", "json")] {
        if !command.get_envs().any(|(set, _)| set == name) {
            command.env(name, value);
        }
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let address = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.recv())
            .await
            .expect("a log line")
            .unwrap_or_else(|| panic!("the process stopped:\n{}", log.join("\n")));
        log.push(line.clone());
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if let Some(address) = event["address"].as_str() {
            break address.to_owned();
        }
    };
    (child, address, lines, log)
}

pub async fn stop_binary(
    child: std::process::Child,
    mut lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    log: &mut Vec<String>,
) {
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    while let Some(line) = lines.recv().await {
        log.push(line);
    }
}

#[tokio::test]
async fn minted_tokens_and_destructive_calls_leave_audit_lines_without_secrets() {
    const KEY: &str = "rck_audit_key_do_not_log_0123456789";
    const SECRET: &str = "livekit-secret-do-not-log-9f8e7d";
    let standin = StandIn::start(StandInConfig { api_secret: SECRET.to_owned(), ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roomcontrol.toml"),
        format!(
            "[[auth.api_keys]]\nname = \"ops-backend\"\nhash = \"{}\"\nscopes = [\"rooms:read\", \"rooms:write\", \"participants:moderate\", \"tokens:create\"]\n",
            roomcontrol::auth::hash_api_key(KEY)
        ),
    )
    .unwrap();
    let env = [
        ("LIVEKIT_URL", standin.url()),
        ("LIVEKIT_API_KEY", standin.api_key().to_owned()),
        ("LIVEKIT_API_SECRET", SECRET.to_owned()),
        // The timeline is the audit trail; its log lines are at debug.
        ("ROOMCONTROL_LOG__LEVEL", "info,roomcontrol::audit=debug".to_owned()),
    ];
    let (child, address, lines, mut log) = start_binary(dir.path(), &env).await;
    let mut client = RoomControlClient::connect(format!("http://{address}")).await.unwrap();
    fn auth<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        request
    }
    client.create_room(auth(CreateRoomRequest { name: "audited".into(), ..Default::default() })).await.unwrap();
    let token = client
        .create_token(auth(CreateTokenRequest {
            room: "audited".into(),
            identity: "carol".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    client.delete_room(auth(DeleteRoomRequest { name: "audited".into() })).await.unwrap();
    let unauthenticated = client.list_rooms(ListRoomsRequest::default()).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    stop_binary(child, lines, &mut log).await;

    let audits: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "roomcontrol::audit")
        .collect();
    let find = |rpc: &str| {
        audits.iter().find(|event| event["rpc"] == rpc).unwrap_or_else(|| panic!("an audit line for {rpc}: {audits:?}"))
    };
    let minted = find("CreateToken");
    assert_eq!(minted["caller"], "API key \"ops-backend\"");
    assert_eq!(minted["room"], "audited");
    assert_eq!(minted["identity"], "carol");
    assert!(minted["detail"].as_str().unwrap().contains(r#""ttl":"6h""#), "{minted}");
    assert_eq!(find("DeleteRoom")["room"], "audited");
    assert_eq!(find("CreateRoom")["caller"], "API key \"ops-backend\"");
    let log = log.join("\n");
    for secret in [KEY, SECRET, token.as_str()] {
        assert!(!log.contains(secret), "logs never carry a key, a secret or a token");
    }
}

#[tokio::test]
async fn the_binary_refuses_to_serve_beyond_loopback_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let output = roomcontrol(
        dir.path(),
        &[("ROOMCONTROL_SERVER__HOST", "0.0.0.0"), ("PORT", "0"), ("ROOMCONTROL_LOG__FORMAT", "json")],
        &[],
    );
    // A configuration error: exit code 2, like every other.
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve on 0.0.0.0 without authentication"), "{stderr}");
}

#[tokio::test]
async fn roomcontrol_config_reports_serving_beyond_loopback_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let output = roomcontrol(dir.path(), &[("ROOMCONTROL_SERVER__HOST", "0.0.0.0")], &["config"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.host = 0.0.0.0 (from ROOMCONTROL_SERVER__HOST"), "{stderr}");
    assert!(stderr.contains("refusing to serve on 0.0.0.0 without authentication"), "{stderr}");
    assert!(stderr.contains("auth.allow_unauthenticated"), "{stderr}");
}

/// The README's advice for several copies on one host: each needs its own
/// `admin.port` too, and a clash names it.
#[tokio::test]
async fn a_second_copy_on_one_host_with_the_same_admin_port_stops_naming_admin_port() {
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (child, _address, lines, mut log) =
        start_binary(dir.path(), &[("ROOMCONTROL_ADMIN__PORT", admin_port.clone())]).await;
    let second = roomcontrol(
        dir.path(),
        &[("PORT", "0"), ("ROOMCONTROL_ADMIN__PORT", &admin_port), ("ROOMCONTROL_LOG__FORMAT", "json")],
        &[],
    );
    stop_binary(child, lines, &mut log).await;
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    let expected = format!("cannot listen on 127.0.0.1:{admin_port} for the admin port");
    assert!(stderr.contains(&expected) && stderr.contains("admin.port"), "{stderr}");
}

/// The default store (a SQLite file in the working directory): every token
/// handed out has its `token_minted` event stored, even when the process is
/// killed with SIGKILL right after, while calls are still in flight.
#[tokio::test]
async fn every_token_handed_out_is_in_the_timeline_after_a_sigkill() {
    let standin = StandIn::start(StandInConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LIVEKIT_URL", standin.url()),
        ("LIVEKIT_API_KEY", standin.api_key().to_owned()),
        ("LIVEKIT_API_SECRET", standin.api_secret().to_owned()),
    ];
    let (mut child, address, _lines, _log) = start_binary(dir.path(), &env).await;
    let client = RoomControlClient::connect(format!("http://{address}")).await.unwrap();
    // Callers that keep minting; the process is killed once 200 tokens
    // were handed out, with more calls on the way.
    let (handed_out, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..16 {
        let mut client = client.clone();
        let handed_out = handed_out.clone();
        callers.spawn(async move {
            for call in 0.. {
                let identity = format!("caller-{caller}-{call}");
                let request =
                    CreateTokenRequest { room: "killed".into(), identity: identity.clone(), ..Default::default() };
                match client.create_token(request).await {
                    Ok(_) => {
                        if handed_out.send(identity).is_err() {
                            return;
                        }
                    }
                    // The process is gone.
                    Err(_) => return,
                }
            }
        });
    }
    drop(handed_out);
    let mut minted = Vec::new();
    while minted.len() < 200 {
        minted.push(received.recv().await.expect("tokens are handed out"));
    }
    child.kill().unwrap();
    tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    while let Some(identity) = callers.join_next().await {
        identity.unwrap();
    }
    // Answered before the kill too, but read after it.
    while let Ok(identity) = received.try_recv() {
        minted.push(identity);
    }

    let url = format!("sqlite://{}", dir.path().join("roomcontrol.db").display());
    let config = roomcontrol::config::StoreConfig { url, max_connections: 1, connect_timeout: Duration::from_secs(5) };
    let store = roomcontrol::store::Store::open(&config).await.unwrap();
    let filter = roomcontrol::store::Filter { rooms: vec!["killed".into()], kinds: vec!["token_minted".into()] };
    let stored = store.read_after(0, 100_000, &filter).await.unwrap();
    store.close().await;
    let identities: std::collections::HashSet<String> = stored
        .iter()
        .map(|stored| roomcontrol::events::timeline::decode(stored.cursor, &stored.payload).unwrap())
        .map(|event| event.participant.unwrap().identity)
        .collect();
    assert_eq!(identities.len(), stored.len(), "each token once");
    for identity in &minted {
        assert!(identities.contains(identity), "{identity} got a token but its token_minted is not stored");
    }
}
