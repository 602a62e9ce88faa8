//! Caller tokens are verified first, before anything installs a process
//! default; LiveKit's signing must still work afterwards.

#[path = "provider_order/common.rs"]
mod common;

#[tokio::test]
async fn every_caller_algorithm_first_then_livekit_signing() {
    common::every_caller_algorithm_verifies().await;
    common::livekit_signing_works();
    common::every_caller_algorithm_verifies().await;
}
