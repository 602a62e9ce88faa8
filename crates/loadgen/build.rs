//! Compiles RoomControl's API contract into a tonic client (for the load
//! generator) and server (for the bare baseline), from the same proto file
//! the service is built from.
//!
//! protoc comes from the `protoc-bin-vendored` crate unless `PROTOC` names
//! one, as in the root build script; it is handed to prost-build directly
//! rather than through the environment.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../..");
    let proto_dir = root.join("proto");
    let proto = proto_dir.join("roomcontrol/v1/room_control.proto");
    let protoc = match std::env::var_os("PROTOC") {
        Some(protoc) => PathBuf::from(protoc),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // The baseline server answers CreateToken only; the other RPCs
        // answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_with_config(config, &[proto], std::slice::from_ref(&proto_dir))?;
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
