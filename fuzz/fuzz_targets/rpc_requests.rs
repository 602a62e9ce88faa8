//! Every RoomControl request message, decoded from arbitrary bytes and put
//! through its rules: the first byte picks the message, the rest is its
//! protobuf encoding. Whatever decodes must be judged without a panic, and
//! the violations must turn into an INVALID_ARGUMENT status with details.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use roomcontrol::config::{Config, TokenConfig};
use roomcontrol::error::ApiError;
use roomcontrol::proto::v1::*;
use roomcontrol::validate::{AboutRoom, Validate, Violations};

fn limits() -> &'static TokenConfig {
    static LIMITS: OnceLock<TokenConfig> = OnceLock::new();
    LIMITS.get_or_init(|| Config::default().tokens)
}

/// Violations become a status the way a handler answers them.
fn answer(violations: Violations) {
    if violations.is_empty() {
        return;
    }
    let status = tonic::Status::from(ApiError::from(violations));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// A request with the generic rules (every RPC but CreateToken).
fn check<T: Message + Default + Validate + AboutRoom>(bytes: &[u8]) {
    let Ok(request) = T::decode(bytes) else { return };
    let _ = request.room();
    answer(request.violations());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    match selector % 13 {
        0 => check::<CreateRoomRequest>(bytes),
        1 => check::<ListRoomsRequest>(bytes),
        2 => check::<GetRoomRequest>(bytes),
        3 => check::<DeleteRoomRequest>(bytes),
        4 => check::<UpdateRoomMetadataRequest>(bytes),
        5 => check::<ListParticipantsRequest>(bytes),
        6 => check::<GetParticipantRequest>(bytes),
        7 => check::<RemoveParticipantRequest>(bytes),
        8 => check::<UpdateParticipantRequest>(bytes),
        9 => check::<MutePublishedTrackRequest>(bytes),
        10 => check::<UpdateSubscriptionsRequest>(bytes),
        11 => check::<SendDataRequest>(bytes),
        _ => {
            let Ok(request) = CreateTokenRequest::decode(bytes) else { return };
            match roomcontrol::validate::create_token(limits(), &request) {
                // An accepted lifetime is within the configured bounds.
                Ok(ttl) => assert!(ttl >= std::time::Duration::from_secs(1) && ttl <= limits().max_ttl),
                Err(violations) => answer(violations),
            }
        }
    }
});
