fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "ragw/registrar/v1/common.proto",
        "ragw/registrar/v1/enrollment.proto",
        "ragw/registrar/v1/worker.proto",
        "ragw/registrar/v1/admin.proto",
        "ragw/registrar/v1/audit.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure().compile_protos(&files, &["."])?;
    Ok(())
}
