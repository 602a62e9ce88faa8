//! The generated RoomControl API (`proto/roomcontrol/v1/room_control.proto`).

/// `roomcontrol.v1`: messages, the server trait and a client.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("roomcontrol.v1");
}

/// The encoded file descriptor set of `roomcontrol.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("roomcontrol_descriptor");

/// The service name health checks ask about: `roomcontrol.v1.RoomControl`.
pub const SERVICE_NAME: &str =
    <v1::room_control_server::RoomControlServer<crate::api::RoomControlService> as tonic::server::NamedService>::NAME;
