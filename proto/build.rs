//! Generates the volley.v1 code with a vendored protoc, so no system protoc is needed,
//! and writes the encoded file descriptor set that gRPC reflection serves.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; PROTOC is read by the codegen below.
    unsafe_set_protoc(&protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::ProtoCodec")
        .file_descriptor_set_path(out_dir.join("volley_descriptor.bin"))
        .compile_protos(&["proto/volley/v1/volley.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/volley/v1/volley.proto");
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_set_protoc(path: &std::path::Path) {
    // set_var is unsafe in edition 2024 because other threads may read the
    // environment; a build script has no other threads.
    unsafe { std::env::set_var("PROTOC", path) };
}
