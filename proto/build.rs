//! Compiles tandem's own `.proto` files. protoc comes from `protoc-bin-vendored`
//! so a fresh machine needs nothing from apt.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &[
                std::path::PathBuf::from("proto/dapr/proto/common/v1/common.proto"),
                std::path::PathBuf::from("proto/dapr/proto/runtime/v1/appcallback.proto"),
                std::path::PathBuf::from("proto/dapr/proto/runtime/v1/dapr.proto"),
                std::path::PathBuf::from("proto/dapr/proto/sentry/v1/sentry.proto"),
                std::path::PathBuf::from("proto/otlp/trace.proto"),
                std::path::PathBuf::from("proto/etcd/kv.proto"),
                std::path::PathBuf::from("proto/durabletask/taskhub.proto"),
            ],
            &[std::path::PathBuf::from("proto"), wkt],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
