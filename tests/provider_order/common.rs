//! Shared by the two provider-order tests. Each runs in its own process,
//! because jsonwebtoken's crypto provider is chosen once per process.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use roomcontrol::auth::Authenticator;
use roomcontrol::config::{AuthConfig, IssuerConfig};
use secrecy::SecretString;
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name)).unwrap()
}

fn issuer(iss: &str) -> IssuerConfig {
    let mut config: IssuerConfig = serde_json::from_value(json!({ "issuer": iss })).unwrap();
    config.audiences = vec!["roomcontrol".to_owned()];
    config
}

/// Signs with the RustCrypto provider named explicitly, so building the
/// test tokens does not depend on (or change) the process default.
fn sign(alg: Algorithm, key: &EncodingKey, iss: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": format!("{alg:?}"), "typ": "JWT"}).to_string());
    let claims = json!({"iss": iss, "sub": "user", "aud": "roomcontrol", "exp": now + 600, "scope": "rooms:read"});
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signer = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg, key).unwrap();
    let signature: Vec<u8> = signer.sign(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Verifies a token of every supported algorithm through RoomControl.
pub async fn every_caller_algorithm_verifies() {
    let mut hs = issuer("https://hs.example/");
    hs.secret = Some(SecretString::from("hs-secret"));
    let mut rsa = issuer("https://rsa.example/");
    rsa.public_key_pem = Some(String::from_utf8(fixture("rsa-1.pub.pem")).unwrap());
    let mut ec = issuer("https://ec.example/");
    ec.public_key_pem = Some(String::from_utf8(fixture("ec-1.pub.pem")).unwrap());
    let mut ed = issuer("https://ed.example/");
    ed.public_key_pem = Some(String::from_utf8(fixture("ed-1.pub.pem")).unwrap());
    let config = AuthConfig { issuers: vec![hs, rsa, ec, ed], ..AuthConfig::default() };
    let authenticator = Authenticator::new(&config).unwrap();

    let rsa_key = EncodingKey::from_rsa_pem(&fixture("rsa-1.key.pem")).unwrap();
    let tokens = [
        ("HS256", sign(Algorithm::HS256, &EncodingKey::from_secret(b"hs-secret"), "https://hs.example/")),
        ("HS512", sign(Algorithm::HS512, &EncodingKey::from_secret(b"hs-secret"), "https://hs.example/")),
        ("RS256", sign(Algorithm::RS256, &rsa_key, "https://rsa.example/")),
        ("PS256", sign(Algorithm::PS256, &rsa_key, "https://rsa.example/")),
        (
            "ES256",
            sign(Algorithm::ES256, &EncodingKey::from_ec_pem(&fixture("ec-1.key.pem")).unwrap(), "https://ec.example/"),
        ),
        (
            "EdDSA",
            sign(Algorithm::EdDSA, &EncodingKey::from_ed_pem(&fixture("ed-1.key.pem")).unwrap(), "https://ed.example/"),
        ),
    ];
    for (alg, token) in tokens {
        let header = format!("Bearer {token}");
        let caller = authenticator.authenticate(Some(header.as_bytes())).await;
        assert!(caller.is_ok(), "{alg}: {caller:?}");
    }
}

/// LiveKit's own signing, and RoomControl's join tokens, verified by
/// LiveKit's verifier.
pub fn livekit_signing_works() {
    use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
    let token = AccessToken::with_api_key("devkey", "secret")
        .with_grants(VideoGrants { room_list: true, ..Default::default() })
        .to_jwt()
        .expect("livekit-api signs");
    TokenVerifier::with_api_key("devkey", "secret").verify(&token).expect("and verifies");

    let signer = roomcontrol::tokens::TokenSigner::new(&roomcontrol::Config::default().livekit).unwrap();
    let signed = signer
        .sign(&roomcontrol::tokens::JoinGrant {
            room: "r".into(),
            identity: "i".into(),
            ttl: std::time::Duration::from_secs(60),
            ..Default::default()
        })
        .expect("RoomControl signs join tokens");
    TokenVerifier::with_api_key("devkey", "secret").verify(&signed.token).expect("LiveKit accepts them");
}
