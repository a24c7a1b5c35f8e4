//! `tandem sentry`: the certificate service for sidecars on several hosts
//! (Dapr Sentry's `SignCertificate`). It holds the CA folder — made on
//! first start if missing, or the one `tandem ca init` made — and signs
//! short-lived workload certificates for sidecars started with
//! `--enable-mtls --sentry-address <host:port>` and the folder's `ca.crt`
//! as their trust anchors (`DAPR_TRUST_ANCHORS`).

use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;
use std::time::Duration;
use tandem_config::LogLevel;

#[derive(clap::Args)]
pub struct Args {
    /// Port to serve on (Dapr Sentry's is 50001; 0 picks a free one).
    #[arg(long, default_value_t = 50001)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    listen_address: String,
    /// The CA folder (default: $TANDEM_CA_DIR, else ~/.tandem/ca).
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// The trust domain of the identities it signs.
    #[arg(long, default_value = "public")]
    trust_domain: String,
    /// A file of accepted tokens, one per line; a sidecar sends the one in
    /// the file its DAPR_SENTRY_TOKEN_FILE names. Without it every caller
    /// is signed for, as Dapr's Sentry does in self-hosted mode.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Life of the certificates it signs (default 24h).
    #[arg(long)]
    workload_cert_ttl: Option<String>,
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevel,
}

pub async fn main(args: Args) -> Result<u8> {
    super::init_logging(args.log_level, false);
    let dir = args.ca_dir.unwrap_or_else(super::ca::dir);
    tandem_proxy::identity::init_ca(&dir).map_err(|e| anyhow!("{e}"))?;
    let ttl = match &args.workload_cert_ttl {
        Some(t) => tandem_config::parse_duration(t)
            .map_err(|e| anyhow!("--workload-cert-ttl {t}: {e}"))
            .and_then(|d| {
                (d >= Duration::from_secs(1))
                    .then_some(d)
                    .ok_or_else(|| anyhow!("--workload-cert-ttl must be at least 1s"))
            })?,
        None => tandem_proxy::identity::workload_ttl(),
    };
    let tokens: Vec<String> = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            let tokens: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect();
            if tokens.is_empty() {
                return Err(anyhow!(
                    "--token-file {} holds no token: every request would be refused",
                    path.display()
                ));
            }
            tokens
        }
        None => {
            tracing::warn!(
                "no --token-file: any caller that reaches this service gets a certificate for the app id it names"
            );
            Vec::new()
        }
    };
    let tls =
        tandem_proxy::identity::service_server_config(&dir, tandem_proxy::sentry::SERVER_NAME)
            .map_err(|e| anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind((args.listen_address.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.listen_address, args.port))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        address = %addr,
        port = addr.port(),
        trust_domain = %args.trust_domain,
        bundle = %dir.join(tandem_proxy::identity::CA_FILE).display(),
        ttl = ?ttl,
        "certificate service serving"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::sidecar::wait_for_signal().await;
        let _ = stop.send(true);
    });
    tandem_proxy::sentry::serve(
        listener,
        tandem_proxy::sentry::Service {
            dir,
            trust_domain: args.trust_domain,
            tokens,
            ttl,
        },
        tls,
        stopped,
    )
    .await;
    Ok(0)
}
