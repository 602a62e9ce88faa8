//! Compiles `proto/` into the tonic server and client, and writes the file
//! descriptor set that server reflection serves.
//!
//! protoc comes from the `protoc-bin-vendored` crate unless `PROTOC` names
//! one, so a fresh machine needs nothing installed to build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // build.rs runs alone in its own process; setting PROTOC here is the
        // documented way to point prost-build at a protoc binary.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("roomcontrol_descriptor.bin"))
        .compile_protos(&["proto/roomcontrol/v1/room_control.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
