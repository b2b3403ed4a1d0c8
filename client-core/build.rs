//! Generates the end-to-end content types from `proto/content.proto`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new().compile_protos(&["proto/content.proto"], &["proto"])?;
    Ok(())
}
