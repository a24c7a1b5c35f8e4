//! `tandem sidecar`: the daprd replacement.

use crate::sidecar::{ResourceSource, start};
use anyhow::Result;
use tandem_config::SidecarOptions;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: SidecarOptions,
}

pub async fn main(args: Args) -> Result<u8> {
    let options = args.options.with_env();
    super::init_logging(options.log_level, options.log_as_json);
    // Like daprd: no resources dir means no components.
    let source = ResourceSource::Dirs(options.resources_path.clone());
    let sidecar = start(options, source).await?;
    let rt = sidecar.runtime.clone();
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
