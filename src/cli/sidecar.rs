//! `tandem sidecar`: the daprd replacement.

use crate::sidecar::{ResourceSource, start};
use anyhow::Result;
use std::path::PathBuf;
use tandem_config::SidecarOptions;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: SidecarOptions,
    /// For `tandem run -f`: write the bound ports (JSON) to this file once
    /// the APIs serve.
    #[arg(long = "ports-file", hide = true)]
    ports_file: Option<PathBuf>,
    /// For `tandem run -f`: without `--resources-path`, load what `tandem
    /// run` loads (~/.tandem/components, else the embedded defaults).
    #[arg(long = "run-defaults", hide = true)]
    run_defaults: bool,
}

pub async fn main(args: Args) -> Result<u8> {
    let options = args.options.with_env();
    super::init_logging(options.log_level, options.log_as_json);
    // Like daprd: no resources dir means no components.
    let source = if args.run_defaults {
        super::run::default_source(&options.resources_path)
    } else {
        ResourceSource::Dirs(options.resources_path.clone())
    };
    let sidecar = start(options, source).await?;
    let rt = sidecar.runtime.clone();
    if let Some(file) = &args.ports_file {
        let o = &rt.options;
        let ports = serde_json::json!({
            "http": o.http_port(),
            "grpc": o.grpc_port(),
            "metrics": o.metrics_port_or_default(),
        });
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, ports.to_string())?;
        std::fs::rename(&tmp, file)?;
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        rt.request_shutdown();
    });
    sidecar.wait().await;
    Ok(0)
}

/// SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
