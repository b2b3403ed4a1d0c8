//! Generates the protobuf frame types from `proto/hush/v1/frames.proto`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        // Byte fields are `bytes::Bytes`: decoding a frame and handing an envelope
        // to many connections shares one buffer instead of copying it.
        .bytes(["."])
        .compile_protos(&["proto/hush/v1/frames.proto"], &["proto"])?;
    Ok(())
}
