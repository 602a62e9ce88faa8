//! LiveKit's Twirp replies as RoomControl reads them: any status and any
//! body give a message or a LiveKitError (then a gRPC status), never a
//! panic. The first two bytes pick the status (often 200), the third the
//! reply type, the rest is the body.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use livekit_protocol as lk;
use roomcontrol::error::ApiError;
use roomcontrol::livekit::decode_reply;

fn read<T: prost::Message + Default>(method: &'static str, status: http::StatusCode, body: Bytes) {
    if let Err(error) = decode_reply::<T>(method, status, body) {
        let _ = error.to_string();
        let _ = tonic::Status::from(ApiError::from(error));
    }
}

fuzz_target!(|data: &[u8]| {
    let [high, low, kind, body @ ..] = data else { return };
    // Half the inputs are 200 (the protobuf path); the others any status
    // http accepts (the Twirp error path).
    let status = if high & 0x80 == 0 {
        http::StatusCode::OK
    } else {
        match http::StatusCode::from_u16(u16::from_be_bytes([high & 0x7f, *low]) % 1000) {
            Ok(status) => status,
            Err(_) => return,
        }
    };
    let body = Bytes::copy_from_slice(body);
    match kind % 5 {
        0 => read::<lk::ListRoomsResponse>("ListRooms", status, body),
        1 => read::<lk::MuteRoomTrackResponse>("MutePublishedTrack", status, body),
        2 => read::<lk::SendDataResponse>("SendData", status, body),
        3 => read::<lk::ParticipantInfo>("GetParticipant", status, body),
        _ => read::<lk::Room>("CreateRoom", status, body),
    }
});
