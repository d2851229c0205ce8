//! Generates the tonic client and server code from `proto/` with a vendored
//! protoc, so building needs no protoc on the system.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sundial_descriptor.bin"))
        .compile_protos(&["proto/sundial/v1/sundial.proto"], &["proto"])?;
    // Benchmark-only: kept out of the descriptor set that reflection serves.
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/bench/etcd_kv.proto"], &["proto"])?;
    Ok(())
}
