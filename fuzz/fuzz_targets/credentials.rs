//! The `authorization` header, as the authentication layer hands it to the
//! Authenticator: any bytes give a caller or a refusal, never a panic. The
//! Authenticator knows two API keys and one identity provider with an HS256
//! shared secret; the seeds (fuzz/corpus/credentials) hold a valid bearer of
//! each kind, so mutations reach JWT parsing, signature and claim checks.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use roomcontrol::auth::{Authenticator, hash_api_key};
use roomcontrol::config::{ApiKeyConfig, AuthConfig, IssuerConfig};

/// The keys and secret the seeds were made with.
const API_KEYS: [(&str, &str); 2] = [
    ("billing-backend", "rck_FuzzKeyOne0000000000000000000000"),
    ("moderation-bot", "rck_FuzzKeyTwo0000000000000000000000"),
];
const ISSUER: &str = "https://login.example.com/";
const AUDIENCE: &str = "roomcontrol";
const SECRET: &str = "fuzzing-shared-secret-of-32-bytes";

fn api_key(name: &str, key: &str, scopes: &[&str], rooms: &[&str]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.to_owned(),
        hash: hash_api_key(key),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        rooms: rooms.iter().map(|s| (*s).to_owned()).collect(),
        revoked: false,
    }
}

fn config() -> AuthConfig {
    AuthConfig {
        api_keys: vec![
            api_key(API_KEYS[0].0, API_KEYS[0].1, &["rooms:read", "rooms:write", "tokens:create"], &["*"]),
            api_key(API_KEYS[1].0, API_KEYS[1].1, &["participants:moderate"], &["support-*"]),
        ],
        issuers: vec![IssuerConfig {
            issuer: ISSUER.to_owned(),
            audiences: vec![AUDIENCE.to_owned()],
            // Empty: every algorithm of the key's kind (HS256, HS384, HS512).
            algorithms: Vec::new(),
            secret: Some(SECRET.into()),
            secret_file: None,
            public_key_pem: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_min_refresh_interval: Duration::from_secs(30),
            scopes_claim: "scope".to_owned(),
            scope_map: BTreeMap::from([("moderator".to_owned(), vec!["participants:moderate".to_owned()])]),
            rooms_claim: "rooms".to_owned(),
            default_rooms: Vec::new(),
            allow_any_audience: false,
            identity_prefix: "example:".to_owned(),
        }],
        ..AuthConfig::default()
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        roomcontrol::crypto::install_providers();
        let config = config();
        roomcontrol::auth::check_config(&config).expect("the fuzzing configuration is valid");
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
            authenticator: Authenticator::new(&config).expect("an authenticator"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    match fixture.runtime.block_on(fixture.authenticator.authenticate(Some(data))) {
        Ok(caller) => {
            let _ = (caller.subject(), caller.display_name(), caller.scope_list());
        }
        Err(failure) => {
            let _ = failure.to_string();
        }
    }
});
