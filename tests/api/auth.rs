//! Caller authentication and authorization, through real sockets: every
//! attack refused with UNAUTHENTICATED, every RPC against every scope, room
//! patterns, self-service tokens, JWKS rotation and its rate limit, the
//! secure default.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use livekit_api::access_token::TokenVerifier;
use roomcontrol::auth::hash_api_key;
use roomcontrol::config::{ApiKeyConfig, IssuerConfig};
use roomcontrol::proto::v1::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{Rpc, SERVICE_NAME, TestApp, livekit_bound, spawn_app_with, unique};

const HS_ISSUER: &str = "https://hs.example.com/";
const RSA_ISSUER: &str = "https://rsa.example.com/";
const EC_ISSUER: &str = "https://keycloak.example.com/realms/app";
const ED_ISSUER: &str = "https://ed.example.com/";
const JWKS_ISSUER: &str = "https://jwks.example.com/";
const HS_SECRET: &str = "an-hs-secret-for-tests-only-0123456789";
const AUDIENCE: &str = "roomcontrol";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub(crate) fn issuer(iss: &str) -> IssuerConfig {
    IssuerConfig {
        issuer: iss.to_owned(),
        audiences: vec![AUDIENCE.to_owned()],
        algorithms: vec![],
        secret: None,
        secret_file: None,
        public_key_pem: None,
        public_key_file: None,
        jwks_file: None,
        jwks_url: None,
        jwks_min_refresh_interval: Duration::from_secs(30),
        scopes_claim: "scope".to_owned(),
        scope_map: Default::default(),
        rooms_claim: "rooms".to_owned(),
        default_rooms: vec!["*".to_owned()],
        allow_any_audience: false,
        identity_prefix: String::new(),
    }
}

fn api_key(name: &str, scopes: &[&str], rooms: &[&str]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.to_owned(),
        hash: hash_api_key(&format!("rck_test_{name}")),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        rooms: rooms.iter().map(|s| s.to_string()).collect(),
        revoked: false,
    }
}

fn key_of(name: &str) -> String {
    format!("rck_test_{name}")
}

const ALL_SCOPES: [&str; 5] =
    ["rooms:read", "rooms:write", "participants:moderate", "tokens:create", "tokens:create:self"];

/// RoomControl with every kind of credential configured.
async fn spawn_secured(jwks_file: Option<PathBuf>, jwks_url: Option<String>) -> TestApp {
    spawn_app_with(move |config| {
        let auth = &mut config.auth;
        auth.api_keys = vec![
            api_key("admin", &ALL_SCOPES[..4], &["*"]),
            api_key("reader", &["rooms:read"], &["*"]),
            api_key("writer", &["rooms:write"], &["*"]),
            api_key("moderator", &["participants:moderate"], &["*"]),
            api_key("minter", &["tokens:create"], &["*"]),
            api_key("self", &["tokens:create:self"], &["*"]),
            api_key("team-a", &ALL_SCOPES[..4], &["team-a-*"]),
            ApiKeyConfig { revoked: true, ..api_key("revoked", &ALL_SCOPES, &["*"]) },
        ];
        let mut hs = issuer(HS_ISSUER);
        hs.secret = Some(SecretString::from(HS_SECRET));
        // Auth0 style: an array of permissions.
        let mut rsa = issuer(RSA_ISSUER);
        rsa.public_key_file = Some(fixture("rsa-1.pub.pem"));
        rsa.scopes_claim = "permissions".to_owned();
        // Keycloak style: realm roles mapped to scopes.
        let mut ec = issuer(EC_ISSUER);
        ec.public_key_pem = Some(String::from_utf8(pem("ec-1.pub.pem")).unwrap());
        ec.scopes_claim = "realm_access.roles".to_owned();
        ec.scope_map.insert("room-admin".to_owned(), vec!["rooms:read".to_owned(), "rooms:write".to_owned()]);
        ec.scope_map.insert("participant".to_owned(), vec!["tokens:create:self".to_owned()]);
        let mut ed = issuer(ED_ISSUER);
        ed.public_key_file = Some(fixture("ed-1.pub.pem"));
        auth.issuers = vec![hs, rsa, ec, ed];
        if jwks_file.is_some() || jwks_url.is_some() {
            let mut jwks = issuer(JWKS_ISSUER);
            jwks.jwks_file = jwks_file;
            jwks.jwks_url = jwks_url.clone();
            jwks.jwks_min_refresh_interval =
                if jwks_url.is_some() { Duration::from_secs(3600) } else { Duration::ZERO };
            auth.issuers.push(jwks);
        }
    })
    .await
}

/// A signed JWT with standard claims plus `extra`.
fn jwt(alg: Algorithm, key: &EncodingKey, iss: &str, kid: Option<&str>, extra: Value) -> String {
    let mut claims = json!({
        "iss": iss,
        "sub": "user-42",
        "aud": AUDIENCE,
        "exp": now() + 600,
        "nbf": now() - 10,
        "name": "Ada Lovelace",
    });
    for (key, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn hs(extra: Value) -> String {
    jwt(Algorithm::HS256, &EncodingKey::from_secret(HS_SECRET.as_bytes()), HS_ISSUER, None, extra)
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("rsa-1.key.pem")).unwrap()
}

fn rs(extra: Value) -> String {
    jwt(Algorithm::RS256, &rsa_key(), RSA_ISSUER, None, extra)
}

/// A request with `authorization` set to `value`.
fn with_auth<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value.parse().unwrap());
    request
}

async fn list_rooms_as(app: &TestApp, authorization: Option<&str>) -> Result<ListRoomsResponse, tonic::Status> {
    let request = match authorization {
        Some(value) => with_auth(ListRoomsRequest::default(), value),
        None => tonic::Request::new(ListRoomsRequest::default()),
    };
    app.list_rooms(request).await
}

fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

/// (attack, authorization header, what the message must say)
fn attacks() -> Vec<(&'static str, Option<String>, &'static str)> {
    let unsigned_none = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"iss": HS_ISSUER, "sub": "x", "aud": AUDIENCE, "exp": now() + 600, "scope": "rooms:read"}))
        )
    };
    // Algorithm confusion: HS256 "signed" with the RSA issuer's public key.
    let confused = jwt(
        Algorithm::HS256,
        &EncodingKey::from_secret(&pem("rsa-1.pub.pem")),
        RSA_ISSUER,
        None,
        json!({"permissions": ["rooms:read"]}),
    );
    let wrong_secret = jwt(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-secret"),
        HS_ISSUER,
        None,
        json!({"scope": "rooms:read"}),
    );
    let tampered = {
        let token = hs(json!({"scope": "rooms:read"}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(json!({"iss": HS_ISSUER, "sub": "user-42", "aud": AUDIENCE, "exp": now() + 600, "scope": "rooms:read rooms:write"}).to_string())
        };
        parts[1] = &forged;
        parts.join(".")
    };
    vec![
        ("no authorization header", None, "missing credentials"),
        ("a Basic scheme", Some("Basic dXNlcjpwYXNz".to_owned()), "unsupported authorization scheme"),
        ("no scheme", Some(hs(json!({"scope": "rooms:read"}))), "must be \"Bearer"),
        ("an empty bearer", Some("Bearer ".to_owned()), "empty bearer credential"),
        ("a malformed token", Some(bearer("abc.def.ghi")), "malformed token"),
        ("a bad signature", Some(bearer(&wrong_secret)), "signature is invalid"),
        ("a tampered payload", Some(bearer(&tampered)), "signature is invalid"),
        ("an expired token", Some(bearer(&hs(json!({"scope": "rooms:read", "exp": now() - 3600})))), "expired"),
        (
            "a token not yet valid",
            Some(bearer(&hs(json!({"scope": "rooms:read", "nbf": now() + 3600})))),
            "not valid yet",
        ),
        ("a token without exp", Some(bearer(&hs(json!({"scope": "rooms:read", "exp": null})))), "no exp claim"),
        (
            "a wrong issuer",
            Some(bearer(&jwt(
                Algorithm::HS256,
                &EncodingKey::from_secret(HS_SECRET.as_bytes()),
                "https://evil.example/",
                None,
                json!({}),
            ))),
            "not accepted",
        ),
        (
            "a wrong audience",
            Some(bearer(&hs(json!({"scope": "rooms:read", "aud": "someone-else"})))),
            "audience is not accepted",
        ),
        ("alg none", Some(bearer(&unsigned_none)), "malformed token"),
        ("HS256 signed with the RSA public key", Some(bearer(&confused)), "algorithm HS256 is not accepted"),
        (
            "an oversized token",
            Some(bearer(&hs(json!({"scope": "rooms:read", "padding": "x".repeat(9000)})))),
            "larger than",
        ),
        ("a wrong API key", Some(bearer("rck_not_a_key_at_all")), "neither a known API key"),
        ("a revoked API key", Some(bearer(&key_of("revoked"))), "API key \"revoked\" is revoked"),
        ("a token without sub", Some(bearer(&hs(json!({"scope": "rooms:read", "sub": null})))), "no sub claim"),
    ]
}

#[tokio::test]
async fn every_attack_is_refused_as_unauthenticated_over_grpc_and_grpc_web() {
    let app = spawn_secured(None, None).await;
    let web = app.grpc_web();
    for (attack, header, expected) in attacks() {
        let status = list_rooms_as(&app, header.as_deref()).await.expect_err(attack);
        assert_eq!(status.code(), Code::Unauthenticated, "{attack}: {}", status.message());
        assert!(status.message().contains(expected), "{attack}: {:?} should say {expected:?}", status.message());
        if let Some(header) = &header {
            let secret_part = header.rsplit(' ').next().unwrap();
            assert!(
                secret_part.len() < 8 || !status.message().contains(secret_part),
                "{attack}: the credential is never echoed"
            );
        }
        let headers: Vec<(&str, &str)> = header.as_deref().map(|h| vec![("authorization", h)]).unwrap_or_default();
        let reply =
            web.call_with("/roomcontrol.v1.RoomControl/ListRooms", &ListRoomsRequest::default(), &headers).await;
        assert_eq!(reply.code(), Code::Unauthenticated, "{attack} over grpc-web: {:?}", reply.grpc_message);
    }
}

#[tokio::test]
async fn every_supported_algorithm_is_accepted() {
    let app = spawn_secured(None, None).await;
    let hs_key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let scope = json!({"scope": "rooms:read"});
    let tokens = [
        ("HS256", jwt(Algorithm::HS256, &hs_key, HS_ISSUER, None, scope.clone())),
        ("HS384", jwt(Algorithm::HS384, &hs_key, HS_ISSUER, None, scope.clone())),
        ("HS512", jwt(Algorithm::HS512, &hs_key, HS_ISSUER, None, scope.clone())),
        ("RS256", jwt(Algorithm::RS256, &rsa_key(), RSA_ISSUER, None, json!({"permissions": ["rooms:read"]}))),
        ("PS256", jwt(Algorithm::PS256, &rsa_key(), RSA_ISSUER, None, json!({"permissions": ["rooms:read"]}))),
        (
            "ES256",
            jwt(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(&pem("ec-1.key.pem")).unwrap(),
                EC_ISSUER,
                None,
                json!({"realm_access": {"roles": ["room-admin"]}}),
            ),
        ),
        (
            "EdDSA",
            jwt(Algorithm::EdDSA, &EncodingKey::from_ed_pem(&pem("ed-1.key.pem")).unwrap(), ED_ISSUER, None, scope),
        ),
    ];
    for (alg, token) in tokens {
        list_rooms_as(&app, Some(&bearer(&token))).await.unwrap_or_else(|status| panic!("{alg}: {status:?}"));
    }
}

#[tokio::test]
async fn health_and_reflection_need_no_credential() {
    let app = spawn_secured(None, None).await;
    app.wait_for_health(SERVICE_NAME, tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    assert_eq!(app.health_of("").await, tonic_health::pb::health_check_response::ServingStatus::Serving);
}

/// The scope each RPC needs.
fn scope_of(rpc: &str) -> &'static str {
    match rpc {
        "ListRooms" | "GetRoom" | "ListParticipants" | "GetParticipant" => "rooms:read",
        "CreateRoom" | "UpdateRoomMetadata" | "DeleteRoom" => "rooms:write",
        "CreateToken" => "tokens:create",
        _ => "participants:moderate",
    }
}

#[tokio::test]
async fn each_rpc_needs_its_scope_and_no_other() {
    let app = spawn_secured(None, None).await;
    let room = unique("scopes");
    let mut rpcs = livekit_bound(&room);
    rpcs.push(Rpc::CreateToken(CreateTokenRequest {
        room: room.clone(),
        identity: "bob".into(),
        ..Default::default()
    }));
    for key in ["reader", "writer", "moderator", "minter"] {
        let granted = match key {
            "reader" => "rooms:read",
            "writer" => "rooms:write",
            "moderator" => "participants:moderate",
            _ => "tokens:create",
        };
        for rpc in &rpcs {
            let name = rpc.name();
            let result = call_as(&app, rpc.clone(), &key_of(key)).await;
            if scope_of(name) == granted {
                if let Err(status) = &result {
                    assert_ne!(status.code(), Code::PermissionDenied, "{key} may call {name}: {}", status.message());
                    assert_ne!(status.code(), Code::Unauthenticated, "{key} may call {name}: {}", status.message());
                }
            } else {
                let status = result.expect_err(&format!("{key} may not call {name}"));
                assert_eq!(status.code(), Code::PermissionDenied, "{key} calling {name}: {}", status.message());
                assert!(
                    status.message().contains(&format!("{name} needs scope {}", scope_of(name))),
                    "{key} calling {name}: {}",
                    status.message()
                );
            }
        }
    }
}

async fn call_as(app: &TestApp, rpc: Rpc, key: &str) -> Result<(), tonic::Status> {
    app.call_with(rpc, &[("authorization", &bearer(key))]).await
}

#[tokio::test]
async fn room_patterns_limit_every_room_call_and_filter_list_rooms() {
    let app = spawn_secured(None, None).await;
    let (mine, theirs) = (format!("team-a-{}", unique("room")), format!("team-b-{}", unique("room")));
    for room in [&mine, &theirs] {
        call_as(
            &app,
            Rpc::CreateRoom(CreateRoomRequest { name: room.clone(), ..Default::default() }),
            &key_of("admin"),
        )
        .await
        .unwrap();
    }
    let team_a = key_of("team-a");
    let listed = app.list_rooms(with_auth(ListRoomsRequest::default(), &bearer(&team_a))).await.unwrap().rooms;
    assert!(listed.iter().any(|room| room.name == mine));
    assert!(listed.iter().all(|room| room.name.starts_with("team-a-")), "only team-a rooms: {listed:?}");

    for rpc in livekit_bound(&theirs).into_iter().filter(|rpc| rpc.name() != "ListRooms").chain([Rpc::CreateToken(
        CreateTokenRequest { room: theirs.clone(), identity: "bob".into(), ..Default::default() },
    )]) {
        let name = rpc.name();
        let status = call_as(&app, rpc, &team_a).await.expect_err(name);
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {}", status.message());
        assert!(
            status.message().contains("is not among the rooms API key \"team-a\" may touch (team-a-*)"),
            "{name}: {}",
            status.message()
        );
    }
    call_as(&app, Rpc::GetRoom(GetRoomRequest { name: mine }), &team_a).await.expect("its own rooms work");
}

fn self_service_token(rooms: &[&str]) -> String {
    rs(json!({"permissions": ["tokens:create:self"], "rooms": rooms}))
}

async fn create_token_as(
    app: &TestApp,
    token: &str,
    request: CreateTokenRequest,
) -> Result<CreateTokenResponse, tonic::Status> {
    app.create_token(with_auth(request, &bearer(token))).await
}

#[tokio::test]
async fn a_browser_user_gets_exactly_its_own_join_token() {
    let app = spawn_secured(None, None).await;
    let user = self_service_token(&["standup-*"]);
    let reply =
        create_token_as(&app, &user, CreateTokenRequest { room: "standup-monday".into(), ..Default::default() })
            .await
            .expect("a self-service token");
    let claims =
        TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret).verify(&reply.token).unwrap();
    assert_eq!(claims.sub, "user-42", "the identity is the caller's own subject");
    assert_eq!(claims.name, "Ada Lovelace", "the name comes from the caller's token");
    assert_eq!(claims.video.room, "standup-monday");
    assert_eq!(claims.exp - claims.nbf, 3600, "no ttl asked: the default, capped at auth.self_service.max_ttl");
    assert_eq!(claims.video.can_publish, Some(true), "the policy's permissions are spelled out");
    assert_eq!(claims.video.can_subscribe, Some(true));
    assert_eq!(claims.video.can_publish_data, Some(true));
    assert_eq!(claims.video.can_update_own_metadata, Some(false));
    assert!(!claims.video.hidden && !claims.video.room_admin && !claims.video.room_create);

    // The same over grpc-web, as a browser sends it.
    let reply = app
        .grpc_web()
        .call_with(
            "/roomcontrol.v1.RoomControl/CreateToken",
            &CreateTokenRequest { room: "standup-tuesday".into(), identity: "user-42".into(), ..Default::default() },
            &[("authorization", &bearer(&user))],
        )
        .await;
    let token: CreateTokenResponse = reply.decode();
    assert_eq!(token.identity, "user-42");
}

#[tokio::test]
async fn self_service_refuses_whatever_exceeds_the_policy() {
    let app = spawn_secured(None, None).await;
    let user = self_service_token(&["standup-*"]);
    let base = || CreateTokenRequest { room: "standup-1".into(), ..Default::default() };
    let permissions = |p: TokenPermissions| Some(p);
    let cases = [
        ("another identity", CreateTokenRequest { identity: "someone-else".into(), ..base() }, "must be your own"),
        (
            "a room outside its patterns",
            CreateTokenRequest { room: "board-meeting".into(), ..base() },
            "is not among the rooms",
        ),
        (
            "a ttl over the cap",
            CreateTokenRequest { ttl: Some(prost_types::Duration { seconds: 7200, nanos: 0 }), ..base() },
            "max_ttl",
        ),
        (
            "a hidden participant",
            CreateTokenRequest {
                permissions: permissions(TokenPermissions { hidden: Some(true), ..Default::default() }),
                ..base()
            },
            "hidden",
        ),
        (
            "metadata",
            CreateTokenRequest { metadata: "{\"role\":\"host\"}".into(), ..base() },
            "metadata and attributes are not allowed",
        ),
        (
            "attributes",
            CreateTokenRequest { attributes: [("role".to_owned(), "host".to_owned())].into(), ..base() },
            "metadata and attributes are not allowed",
        ),
        (
            "updating its own metadata",
            CreateTokenRequest {
                permissions: permissions(TokenPermissions {
                    can_update_own_metadata: Some(true),
                    ..Default::default()
                }),
                ..base()
            },
            "can_update_own_metadata",
        ),
    ];
    for (what, request, expected) in cases {
        let status = create_token_as(&app, &user, request).await.expect_err(what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {}", status.message());
        assert!(status.message().contains(expected), "{what}: {}", status.message());
    }
    // Asking for less than allowed is fine.
    let reply = create_token_as(
        &app,
        &user,
        CreateTokenRequest {
            ttl: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            permissions: permissions(TokenPermissions { can_publish: Some(false), ..Default::default() }),
            ..base()
        },
    )
    .await
    .unwrap();
    let claims =
        TokenVerifier::with_api_key(&app.livekit.api_key, &app.livekit.api_secret).verify(&reply.token).unwrap();
    assert_eq!((claims.exp - claims.nbf, claims.video.can_publish), (600, Some(false)));
}

#[tokio::test]
async fn provider_roles_map_to_scopes() {
    let app = spawn_secured(None, None).await;
    let ec_key = EncodingKey::from_ec_pem(&pem("ec-1.key.pem")).unwrap();
    let participant =
        jwt(Algorithm::ES256, &ec_key, EC_ISSUER, None, json!({"realm_access": {"roles": ["participant"]}}));
    let status = list_rooms_as(&app, Some(&bearer(&participant))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("has tokens:create:self"), "{}", status.message());
    let admin = jwt(
        Algorithm::ES256,
        &ec_key,
        EC_ISSUER,
        None,
        json!({"realm_access": {"roles": ["room-admin", "offline_access"]}}),
    );
    list_rooms_as(&app, Some(&bearer(&admin))).await.expect("room-admin maps to rooms:read");
}

fn jwks_json(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, file)| {
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
                &EncodingKey::from_rsa_pem(&pem(file)).unwrap(),
                Algorithm::RS256,
            )
            .unwrap();
            jwk.common.key_id = Some(kid.to_string());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn an_unknown_kid_reloads_the_jwks_so_rotated_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_json(&[("k1", "rsa-1.key.pem")])).unwrap();
    let app = spawn_secured(Some(path.clone()), None).await;
    let rotated = jwt(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&pem("rsa-2.key.pem")).unwrap(),
        JWKS_ISSUER,
        Some("k2"),
        json!({"scope": "rooms:read"}),
    );
    let status = list_rooms_as(&app, Some(&bearer(&rotated))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("\"k2\" is not in the JWKS"), "{}", status.message());

    std::fs::write(&path, jwks_json(&[("k1", "rsa-1.key.pem"), ("k2", "rsa-2.key.pem")])).unwrap();
    list_rooms_as(&app, Some(&bearer(&rotated))).await.expect("the rotated key is found after a reload");
    let old = jwt(Algorithm::RS256, &rsa_key(), JWKS_ISSUER, Some("k1"), json!({"scope": "rooms:read"}));
    list_rooms_as(&app, Some(&bearer(&old))).await.expect("the old key still works");
    let wrong_key = jwt(Algorithm::RS256, &rsa_key(), JWKS_ISSUER, Some("k2"), json!({"scope": "rooms:read"}));
    assert_eq!(list_rooms_as(&app, Some(&bearer(&wrong_key))).await.unwrap_err().code(), Code::Unauthenticated);
}

/// A JWKS over HTTP on loopback that counts its requests.
async fn serve_jwks(body: String) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn a_flood_of_unknown_kids_cannot_hammer_the_jwks_url() {
    let (url, hits) = serve_jwks(jwks_json(&[("k1", "rsa-1.key.pem")])).await;
    let app = spawn_secured(None, Some(url)).await;
    let good = jwt(Algorithm::RS256, &rsa_key(), JWKS_ISSUER, Some("k1"), json!({"scope": "rooms:read"}));
    list_rooms_as(&app, Some(&bearer(&good))).await.expect("a key from the JWKS URL works");
    for n in 0..25 {
        let bogus =
            jwt(Algorithm::RS256, &rsa_key(), JWKS_ISSUER, Some(&format!("bogus-{n}")), json!({"scope": "rooms:read"}));
        assert_eq!(list_rooms_as(&app, Some(&bearer(&bogus))).await.unwrap_err().code(), Code::Unauthenticated);
    }
    let fetched = hits.load(Ordering::SeqCst);
    assert!(
        fetched <= 2,
        "the JWKS was fetched {fetched} times for 25 unknown kids (at most the start-up fetch and one refresh)"
    );
}

#[tokio::test]
async fn without_credentials_configured_roomcontrol_refuses_to_serve_beyond_loopback() {
    let mut config = roomcontrol::Config::default();
    config.store.url = "sqlite::memory:".to_owned();
    config.server.host = "0.0.0.0".parse().unwrap();
    config.server.port = 0;
    config.admin.port = 0;
    let error = roomcontrol::Application::build(config.clone()).await.err().expect("start-up is refused");
    assert!(error.to_string().contains("refusing to serve on 0.0.0.0 without authentication"), "{error}");
    assert!(error.to_string().contains("auth.allow_unauthenticated"), "{error}");

    config.auth.allow_unauthenticated = true;
    roomcontrol::Application::build(config.clone()).await.expect("the explicit opt-out starts");

    config.auth.allow_unauthenticated = false;
    config.auth.api_keys = vec![api_key("admin", &ALL_SCOPES, &["*"])];
    roomcontrol::Application::build(config).await.expect("with authentication it starts anywhere");
}

#[tokio::test]
async fn an_identity_provider_that_never_answers_makes_calls_unavailable_not_unauthenticated() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let app = spawn_secured(None, Some(url)).await;
    let token = jwt(Algorithm::RS256, &rsa_key(), JWKS_ISSUER, Some("k1"), json!({"scope": "rooms:read"}));
    let started = std::time::Instant::now();
    let status = list_rooms_as(&app, Some(&bearer(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("identity provider's keys could not be loaded"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(15), "bounded by the fetch time-out");
}

#[tokio::test]
async fn health_answers_even_when_every_call_slot_is_taken() {
    let app = spawn_app_with(|config| config.server.max_concurrent_calls = 1).await;
    let standin = crate::standin_or_skip!(app);
    app.wait_for_health(SERVICE_NAME, tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    standin.set_delay(Duration::from_secs(30));
    // A spawned call, on a client of its own, holds the only slot.
    let mut client = app.client.clone();
    let stuck = tokio::spawn(async move { client.list_rooms(ListRoomsRequest::default()).await });
    standin.wait_for_calls("ListRooms", 1).await;
    let health = tokio::time::timeout(Duration::from_secs(5), app.health_of("")).await;
    assert!(health.is_ok(), "health does not wait for a call slot");
    stuck.abort();
}

#[tokio::test]
async fn a_call_beyond_the_limit_waits_for_a_slot_and_is_served_once_one_frees() {
    let app = spawn_app_with(|config| config.server.max_concurrent_calls = 1).await;
    let standin = crate::standin_or_skip!(app);
    standin.set_delay(Duration::from_millis(300));
    // Two spawned calls at once, each on a client of its own.
    let (mut first_client, mut second_client) = (app.client.clone(), app.client.clone());
    let first = tokio::spawn(async move {
        first_client.list_rooms(ListRoomsRequest::default()).await.map(|_| std::time::Instant::now())
    });
    standin.wait_for_calls("ListRooms", 1).await;
    let second = tokio::spawn(async move {
        second_client.list_rooms(ListRoomsRequest::default()).await.map(|_| std::time::Instant::now())
    });
    let first_done = first.await.unwrap().expect("the first call is served");
    let second_done = second.await.unwrap().expect("the waiting call is served once the slot frees");
    // LiveKit takes 300 ms per call: the second one reached it only after
    // the first one's answer freed the slot.
    assert!(
        second_done.duration_since(first_done) >= Duration::from_millis(300),
        "the second call waited for the first one's slot"
    );
    // The slots are back: a third call goes straight through.
    standin.set_delay(Duration::ZERO);
    app.list_rooms(ListRoomsRequest::default()).await.expect("a free slot");
}

#[tokio::test]
async fn without_authentication_only_requests_addressed_to_loopback_are_served() {
    let app = crate::support::spawn_app().await;
    let web = app.grpc_web();
    let rebound = web
        .call_with(
            "/roomcontrol.v1.RoomControl/ListRooms",
            &ListRoomsRequest::default(),
            &[("host", "attacker.example:50051")],
        )
        .await;
    assert_eq!(rebound.code(), Code::PermissionDenied, "{:?}", rebound.grpc_message);
    assert!(rebound.grpc_message.unwrap_or_default().contains("addressed to localhost"));
    let local = web
        .call_with(
            "/roomcontrol.v1.RoomControl/ListRooms",
            &ListRoomsRequest::default(),
            &[("host", "localhost:50051")],
        )
        .await;
    assert_eq!(local.code(), Code::Ok);
}
