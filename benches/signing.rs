//! Token signing in-process: RoomControl's signing path
//! (`TokenSigner::sign`: claims, JSON, base64url, HMAC-SHA256) against a bare
//! HMAC-SHA256 of the same bytes, the floor any HS256 signer pays. Also the
//! CreateToken handler around it (validation, then signing).
//!
//! `cargo bench --bench signing`; `scripts/bench` runs it and puts the
//! ratio in its table. The target: signing within 4x the bare HMAC.

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use roomcontrol::Config;
use roomcontrol::proto::v1::CreateTokenRequest;
use roomcontrol::tokens::{JoinGrant, TokenSigner};
use secrecy::ExposeSecret;
use sha2::Sha256;

/// The join token the load generator asks for: one room, one identity, a
/// display name, LiveKit's default permissions, the default lifetime.
fn grant() -> JoinGrant {
    JoinGrant {
        room: "bench-room".to_owned(),
        identity: "bench-user".to_owned(),
        name: "Bench User".to_owned(),
        ttl: Duration::from_secs(6 * 3600),
        ..Default::default()
    }
}

fn signing(c: &mut Criterion) {
    let config = Config::default();
    let signer = TokenSigner::new(&config.livekit).expect("the default configuration signs");
    let secret = config.livekit.api_secret.expose_secret().as_bytes().to_vec();

    // The bytes an HS256 JWT signs: base64url(header) "." base64url(claims),
    // taken from a real token so both sides hash the same input.
    let token = signer.sign(&grant()).expect("a token").token;
    let signing_input = token.rsplit_once('.').expect("a JWT has three parts").0.as_bytes().to_vec();

    let mut group = c.benchmark_group(loadgen_names::GROUP);
    group.bench_function(loadgen_names::ROOMCONTROL, |b| {
        b.iter_batched(grant, |grant| signer.sign(&grant).expect("signs"), BatchSize::SmallInput)
    });
    group.bench_function(loadgen_names::BARE_HMAC, |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(std::hint::black_box(&secret)).expect("any key length");
            mac.update(std::hint::black_box(&signing_input));
            mac.finalize().into_bytes()
        })
    });
    let request = CreateTokenRequest {
        room: "bench-room".to_owned(),
        identity: "bench-user".to_owned(),
        name: "Bench User".to_owned(),
        ..Default::default()
    };
    group.bench_function(loadgen_names::HANDLER, |b| {
        b.iter_batched(
            || request.clone(),
            |request| roomcontrol::api::create_token(&signer, &config.tokens, request).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The names `loadgen report` reads criterion's estimates under
/// (`crates/loadgen/src/report.rs`).
mod loadgen_names {
    pub const GROUP: &str = "signing";
    pub const ROOMCONTROL: &str = "roomcontrol_sign";
    pub const BARE_HMAC: &str = "bare_hmac_sha256";
    pub const HANDLER: &str = "create_token_handler";
}

criterion_group!(benches, signing);
criterion_main!(benches);
