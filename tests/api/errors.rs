//! LiveKit down, slow, or refusing RoomControl's key: every RPC that calls
//! LiveKit answers with the right status and a message that says what to fix.

use std::time::Duration;

use roomcontrol::proto::v1::CreateTokenRequest;
use secrecy::SecretString;
use tonic::Code;

use crate::standin_or_skip;
use crate::support::{SERVICE_NAME, closed_port_url, livekit_bound, spawn_app, spawn_app_with, unique};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn every_rpc_answers_unavailable_when_livekit_is_unreachable() {
    let url = closed_port_url().await;
    let app = spawn_app_with(|config| config.livekit.url = url.clone()).await;
    for rpc in livekit_bound(&unique("down")) {
        let name = rpc.name();
        let status = app.call(rpc).await.expect_err(name);
        assert_eq!(status.code(), Code::Unavailable, "{name}: {}", status.message());
        assert!(
            status.message().contains("unreachable") && status.message().contains(&url),
            "{name}: {}",
            status.message()
        );
    }
    // Tokens are signed in-process and need no LiveKit.
    app.create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .expect("CreateToken works while LiveKit is down");
}

#[tokio::test]
async fn every_rpc_says_livekit_rejected_roomcontrols_key_when_the_secret_is_wrong() {
    let app = spawn_app_with(|config| config.livekit.api_secret = SecretString::from("not-the-secret")).await;
    for rpc in livekit_bound(&unique("bad-key")) {
        let name = rpc.name();
        let status = app.call(rpc).await.expect_err(name);
        assert_eq!(status.code(), Code::Unavailable, "{name}: {}", status.message());
        assert!(
            status.message().contains("LiveKit rejected RoomControl's API key"),
            "{name}: the message blames RoomControl's key, not the caller: {}",
            status.message()
        );
        assert!(!status.message().contains("not-the-secret"), "{name}: the secret never leaks");
    }
}

#[tokio::test]
async fn every_rpc_answers_deadline_exceeded_when_livekit_is_slower_than_the_configured_timeout() {
    let app = spawn_app_with(|config| config.livekit.timeout = Duration::from_millis(200)).await;
    let standin = standin_or_skip!(app);
    standin.set_delay(Duration::from_secs(3));
    for rpc in livekit_bound(&unique("slow")) {
        let name = rpc.name();
        let status = app.call(rpc).await.expect_err(name);
        assert_eq!(status.code(), Code::DeadlineExceeded, "{name}: {}", status.message());
        assert!(status.message().contains("livekit.timeout"), "{name}: {}", status.message());
    }
}

#[tokio::test]
async fn the_callers_deadline_bounds_the_wait_for_livekit() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    standin.set_delay(Duration::from_secs(3));
    // Over grpc-web with a plain HTTP client, which sends the deadline and
    // waits for the server's answer (tonic's own client would give up first
    // and report CANCELLED itself).
    let web = app.grpc_web();
    for rpc in livekit_bound(&unique("deadline")) {
        let name = rpc.name();
        let started = std::time::Instant::now();
        let path = format!("/roomcontrol.v1.RoomControl/{name}");
        let reply = web.call_encoded(&path, rpc.encode(), &[("grpc-timeout", "150m")]).await;
        assert_eq!(reply.code(), Code::DeadlineExceeded, "{name}: {:?}", reply.grpc_message);
        assert!(
            reply.grpc_message.as_deref().unwrap_or_default().contains("deadline"),
            "{name}: {:?}",
            reply.grpc_message
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{name}: answered before LiveKit did");
    }
}

#[tokio::test]
async fn livekit_errors_keep_their_code_and_message() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    let cases = [
        ("resource_exhausted", Code::ResourceExhausted),
        ("unavailable", Code::Unavailable),
        ("internal", Code::Internal),
        ("already_exists", Code::AlreadyExists),
        ("failed_precondition", Code::FailedPrecondition),
        ("aborted", Code::Aborted),
        ("out_of_range", Code::OutOfRange),
        ("unimplemented", Code::Unimplemented),
        ("dataloss", Code::DataLoss),
        ("canceled", Code::Cancelled),
        ("unknown", Code::Unknown),
        ("malformed", Code::Internal),
    ];
    for (twirp, grpc) in cases {
        standin.fail_next(
            Some("CreateRoom"),
            livekit_standin::Fault::Twirp { code: twirp.to_owned(), msg: format!("injected {twirp}") },
            1,
        );
        let rpc = livekit_bound(&unique("twirp")).remove(0);
        let status = app.call(rpc).await.expect_err(twirp);
        assert_eq!(status.code(), grpc, "{twirp}: {}", status.message());
        assert!(status.message().contains(&format!("injected {twirp}")), "{twirp}: {}", status.message());
    }
}

#[tokio::test]
async fn a_grant_livekit_refuses_is_roomcontrols_problem_not_the_callers() {
    let app = spawn_app().await;
    let standin = standin_or_skip!(app);
    standin.fail_next(
        Some("CreateRoom"),
        livekit_standin::Fault::Twirp { code: "unauthenticated".into(), msg: "permissions denied".into() },
        1,
    );
    let status = app.call(livekit_bound(&unique("grant")).remove(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(status.message().contains("RoomControl's service token"), "{}", status.message());
}

#[tokio::test]
async fn a_reply_that_is_not_twirp_is_reported_without_a_crash() {
    // One readiness probe only, done before faults are queued.
    let app = spawn_app_with(|config| config.livekit.health_check_interval = Duration::from_secs(3600)).await;
    let standin = standin_or_skip!(app);
    app.wait_for_health(SERVICE_NAME, ServingStatus::Serving).await;
    for rpc in livekit_bound(&unique("garbage")) {
        let name = rpc.name();
        standin.fail_next(
            Some(name_on_livekit(name)),
            livekit_standin::Fault::Http {
                status: 502,
                body: "<html>bad gateway</html>".into(),
                content_type: "text/html".into(),
            },
            1,
        );
        let status = app.call(rpc).await.expect_err(name);
        assert_eq!(status.code(), Code::Unavailable, "{name}: {}", status.message());
        assert!(
            status.message().contains("not a Twirp error"),
            "{name}: the message says what came back: {}",
            status.message()
        );
    }
    // Still serving.
    let after = app.call(livekit_bound(&unique("after")).remove(0)).await;
    assert!(after.is_ok(), "the server still serves: {after:?}");
}

/// The first LiveKit method an RPC calls.
fn name_on_livekit(rpc: &str) -> &str {
    match rpc {
        "GetRoom" => "ListRooms",
        "MutePublishedTrack" | "UpdateSubscriptions" => "GetParticipant",
        other => other,
    }
}

#[tokio::test]
async fn an_https_livekit_url_is_spoken_to_over_tls() {
    // A plain-text server behind an https:// URL: the TLS handshake fails,
    // which proves RoomControl speaks TLS (without a TLS feature the crate
    // would refuse the scheme outright).
    let app = spawn_app().await;
    let Some(standin) = app.standin.clone() else {
        eprintln!("skipped against a real LiveKit: needs the stand-in");
        return;
    };
    let https = standin.url().replacen("http://", "https://", 1);
    let tls_app = spawn_app_with(|config| config.livekit.url = https.clone()).await;
    for rpc in livekit_bound(&unique("tls")) {
        let name = rpc.name();
        let status = tls_app.call(rpc).await.expect_err(name);
        assert_eq!(status.code(), Code::Unavailable, "{name}: {}", status.message());
        assert!(!status.message().contains("scheme"), "{name}: {}", status.message());
        assert!(status.message().contains(&https), "{name}: {}", status.message());
    }
}
