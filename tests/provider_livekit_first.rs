//! LiveKit signs first, so livekit-api installs its HMAC-only jsonwebtoken
//! provider as the process default; RS256, PS256, ES256 and EdDSA caller
//! tokens must still verify.

#[path = "provider_order/common.rs"]
mod common;

#[tokio::test]
async fn livekit_signing_first_then_every_caller_algorithm() {
    common::livekit_signing_works();
    common::every_caller_algorithm_verifies().await;
    common::livekit_signing_works();
}
