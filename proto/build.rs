//! Compiles `proto/**/*.proto` with protox (pure Rust, no protoc) and generates prost
//! messages and tonic service stubs (servers and clients) with tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/journaldb/v1/records.proto",
        "proto/journaldb/v1/services.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Keys and values are `bytes::Bytes` so records can be sliced without copying.
        .bytes(".journaldb")
        .compile_fds(fds)?;
    Ok(())
}
