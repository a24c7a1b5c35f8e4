//! `tandem ca init`: creates the local certificate authority (a trust root
//! and an issuer) that sidecars started with `--enable-mtls` on this host
//! issue their workload certificates from. A sidecar makes it on first use
//! too; this command makes it ahead of time and says where it is.

use anyhow::{Result, anyhow};
use std::path::PathBuf;

/// `$TANDEM_CA_DIR`, else `$TANDEM_HOME/ca`.
pub fn dir() -> PathBuf {
    std::env::var_os("TANDEM_CA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tandem_control::home::dir().join("ca"))
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create the trust root and issuer (kept if they exist).
    Init {
        /// Where to write them (default: $TANDEM_CA_DIR, else ~/.tandem/ca).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn main(cmd: Command) -> Result<u8> {
    match cmd {
        Command::Init { dir: given } => {
            let dir = given.unwrap_or_else(dir);
            let made = tandem_proxy::identity::init_ca(&dir).map_err(|e| anyhow!("{e}"))?;
            let bundle = dir.join(tandem_proxy::identity::CA_FILE);
            if made {
                println!(
                    "created   {} (trust bundle) and its issuer",
                    bundle.display()
                );
            } else {
                println!("kept      {} (exists)", bundle.display());
            }
            Ok(0)
        }
    }
}
