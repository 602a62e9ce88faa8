//! CreateToken: the token decodes with LiveKit's own verifier and carries
//! exactly what was asked, defaults included.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_api::access_token::TokenVerifier;
use roomcontrol::proto::v1::*;
use tonic::Code;

use crate::support::{spawn_app, spawn_app_with};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn create_token_signs_a_join_token_livekit_accepts_with_default_grants() {
    let app = spawn_app().await;
    let before = now();
    let reply = app
        .create_token(CreateTokenRequest { room: "standup".into(), identity: "alice".into(), ..Default::default() })
        .await
        .expect("CreateToken succeeds");
    let claims = TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret)
        .verify(&reply.token)
        .expect("LiveKit's verifier accepts the token");
    assert_eq!(claims.iss, app.livekit.api_key);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.name, "alice", "an empty name defaults to the identity");
    assert!(claims.video.room_join);
    assert_eq!(claims.video.room, "standup");
    assert_eq!(claims.video.can_publish, None, "unset: LiveKit's default (true)");
    assert_eq!(claims.video.can_subscribe, None);
    assert_eq!(claims.video.can_publish_data, None);
    assert!(claims.video.can_publish() && claims.video.can_subscribe() && claims.video.can_publish_data());
    assert!(!claims.video.can_update_own_metadata());
    assert!(!claims.video.hidden);
    assert!(claims.video.can_publish_sources.is_empty());
    assert!(!claims.video.room_admin && !claims.video.room_create && !claims.video.room_list);
    assert!(claims.metadata.is_empty() && claims.attributes.is_empty());
    assert!((claims.nbf as i64) >= before && (claims.nbf as i64) <= now());
    assert_eq!(claims.exp - claims.nbf, 6 * 3600, "the default lifetime is 6 h");
    assert_eq!(reply.expires_at.unwrap().seconds, claims.exp as i64);
    assert_eq!((reply.identity.as_str(), reply.room.as_str()), ("alice", "standup"));
    let expected_url = app.livekit.url.replacen("http", "ws", 1);
    assert_eq!(reply.server_url, expected_url.trim_end_matches('/'));
}

#[tokio::test]
async fn create_token_carries_every_field_and_permission_asked_for() {
    let app = spawn_app().await;
    let reply = app
        .create_token(CreateTokenRequest {
            room: "webinar".into(),
            identity: "speaker-1".into(),
            name: "Dr. Speaker".into(),
            metadata: r#"{"role":"speaker"}"#.into(),
            attributes: HashMap::from([("team".to_owned(), "blue".to_owned())]),
            ttl: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            permissions: Some(TokenPermissions {
                can_publish: Some(true),
                can_subscribe: Some(false),
                can_publish_data: Some(false),
                can_publish_sources: vec![TrackSource::Camera as i32, TrackSource::ScreenShareAudio as i32],
                can_update_own_metadata: Some(true),
                hidden: Some(true),
            }),
        })
        .await
        .unwrap();
    let claims =
        TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret).verify(&reply.token).unwrap();
    assert_eq!(claims.name, "Dr. Speaker");
    assert_eq!(claims.metadata, r#"{"role":"speaker"}"#);
    assert_eq!(claims.attributes.get("team").map(String::as_str), Some("blue"));
    assert_eq!(claims.exp - claims.nbf, 600);
    assert_eq!(claims.video.can_publish, Some(true));
    assert_eq!(claims.video.can_subscribe, Some(false));
    assert_eq!(claims.video.can_publish_data, Some(false));
    assert_eq!(claims.video.can_publish_sources, ["camera", "screen_share_audio"]);
    assert!(claims.video.can_update_own_metadata());
    assert!(claims.video.hidden);
}

#[tokio::test]
async fn create_token_answers_the_configured_public_url() {
    let app = spawn_app_with(|config| config.livekit.public_url = Some("https://media.example.com".into())).await;
    let reply = app
        .create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(reply.server_url, "wss://media.example.com");
}

#[tokio::test]
async fn create_token_honours_the_configured_default_and_maximum_lifetimes() {
    let app = spawn_app_with(|config| {
        config.tokens.default_ttl = Duration::from_secs(300);
        config.tokens.max_ttl = Duration::from_secs(900);
    })
    .await;
    let reply = app
        .create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .unwrap();
    let claims =
        TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret).verify(&reply.token).unwrap();
    assert_eq!(claims.exp - claims.nbf, 300);
    let status = app
        .create_token(CreateTokenRequest {
            room: "r".into(),
            identity: "i".into(),
            ttl: Some(prost_types::Duration { seconds: 901, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most 15m (tokens.max_ttl)"), "{}", status.message());
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused_by_livekits_verifier() {
    let app = spawn_app().await;
    let reply = app
        .create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(TokenVerifier::with_api_key(&app.livekit.api_key, "another-secret").verify(&reply.token).is_err());
}

#[tokio::test]
async fn a_token_that_refuses_publishing_refuses_data_explicitly_so_every_verifier_agrees() {
    // LiveKit reads an absent canPublishData as canPublish; its SDKs'
    // verifiers read it as true. The claim is written out.
    let app = spawn_app().await;
    let permissions =
        |can_publish, can_publish_data| TokenPermissions { can_publish, can_publish_data, ..Default::default() };
    let data_claim = |reply: CreateTokenResponse| {
        let claims =
            TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret).verify(&reply.token).unwrap();
        claims.video.can_publish_data
    };
    let request = |permissions| CreateTokenRequest {
        room: "lecture".into(),
        identity: "student".into(),
        permissions: Some(permissions),
        ..Default::default()
    };
    let refused = app.create_token(request(permissions(Some(false), None))).await.unwrap();
    assert_eq!(data_claim(refused), Some(false));
    let asked = app.create_token(request(permissions(Some(false), Some(true)))).await.unwrap();
    assert_eq!(data_claim(asked), Some(true), "an explicit choice is kept");
    let allowed = app.create_token(request(permissions(Some(true), None))).await.unwrap();
    assert_eq!(data_claim(allowed), None, "allowed publishing leaves LiveKit's default");
}

#[tokio::test]
async fn a_ttl_beyond_the_maximum_is_refused_naming_it_in_hours() {
    let app = spawn_app().await;
    let status = app
        .create_token(CreateTokenRequest {
            room: "r".into(),
            identity: "i".into(),
            ttl: Some(prost_types::Duration { seconds: 2 * 86_400, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most 24h (tokens.max_ttl)"), "{}", status.message());
}

#[tokio::test]
async fn the_readmes_sample_tokens_start_with_the_header_roomcontrol_writes() {
    use base64::Engine;
    let app = spawn_app().await;
    let reply = app
        .create_token(CreateTokenRequest { room: "r".into(), identity: "i".into(), ..Default::default() })
        .await
        .unwrap();
    let header = reply.token.split('.').next().unwrap().to_owned();
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&header).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), r#"{"typ":"JWT","alg":"HS256"}"#);

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let samples: Vec<&str> = readme
        .match_indices("eyJ")
        .map(|(at, _)| {
            let rest = &readme[at..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    assert!(!samples.is_empty(), "the README shows sample tokens");
    for sample in samples {
        assert_eq!(sample, header, "a README sample token's header differs from the one RoomControl writes");
    }
}
