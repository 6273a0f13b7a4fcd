//! Generates the agent's gRPC code with protox, so no system `protoc` is needed.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/esb/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("esb_agent_v1_descriptor.bin"),
        files.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Payloads as `bytes::Bytes`: handed through without a copy.
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}
