//! One module per subcommand.

pub mod apply;
pub mod ca;
pub mod dashboard;
pub mod guard;
pub mod init;
pub mod invoke;
pub mod iptables;
pub mod launch;
pub mod list;
pub mod run;
pub mod run_file;
pub mod run_many;
pub mod sentry;
pub mod sidecar;
pub mod status;
pub mod stop;

use std::io::{Read, Write};
use std::time::Duration;

/// Calls a local sidecar's API off the async workers, with `DAPR_API_TOKEN`
/// from the environment when set. `None` when it does not answer.
pub async fn call_sidecar(
    port: u16,
    method: &'static str,
    path: &'static str,
) -> Option<(u16, Vec<u8>)> {
    let token = std::env::var("DAPR_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    tokio::task::spawn_blocking(move || local_http(port, method, path, token.as_deref(), b""))
        .await
        .ok()
        .and_then(Result::ok)
}

/// A minimal HTTP/1.1 request to a local sidecar, for `list` and `stop`
/// (no client stack needed for two loopback calls).
pub fn local_http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let headers: Vec<(String, String)> = token
        .map(|t| ("dapr-api-token".to_string(), t.to_string()))
        .into_iter()
        .collect();
    local_http_with(port, method, path, &headers, body).map(|(s, _, b)| (s, b))
}

/// The same with any headers; returns status, reason phrase and body.
pub fn local_http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..text_end]).to_string();
    let mut status_line = head.lines().next().unwrap_or_default().splitn(3, ' ');
    let status = status_line
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let reason = status_line.next().unwrap_or_default().to_string();
    let mut body = raw[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, reason, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// Which sidecar a control command talks to: a `tandem run` app by id,
/// or any local sidecar by its HTTP port.
#[derive(clap::Args)]
pub struct Target {
    /// An app started with `tandem run` (see `tandem list`).
    #[arg(long = "app-id", short = 'a')]
    app_id: Option<String>,
    /// The sidecar's Dapr HTTP port (for sidecars started otherwise).
    #[arg(long = "dapr-http-port")]
    dapr_http_port: Option<u16>,
}

impl Target {
    pub fn port(&self) -> anyhow::Result<u16> {
        match (&self.app_id, self.dapr_http_port) {
            (_, Some(p)) => Ok(p),
            (Some(id), None) => crate::home::RunRecord::read(id)
                .filter(|r| crate::home::pid_alive(r.cli_pid))
                .map(|r| r.http_port)
                .ok_or_else(|| {
                    anyhow::anyhow!("no running app with id `{id}` (see `tandem list`)")
                }),
            (None, None) => anyhow::bail!("name the sidecar with --app-id or --dapr-http-port"),
        }
    }

    /// One call to the sidecar's API, `DAPR_API_TOKEN` sent when set.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let port = self.port()?;
        let token = std::env::var("DAPR_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let (status, body) = local_http(port, method, path, token.as_deref(), body)
            .map_err(|e| anyhow::anyhow!("the sidecar on port {port} does not answer: {e}"))?;
        let json = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        Ok((status, json))
    }
}

/// Sets up `tracing` once for the process: text or JSON, at the given level.
pub fn init_logging(level: tandem_config::LogLevel, json: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match level {
        tandem_config::LogLevel::Debug => "debug",
        tandem_config::LogLevel::Info => "info",
        tandem_config::LogLevel::Warn => "warn",
        tandem_config::LogLevel::Error | tandem_config::LogLevel::Fatal => "error",
    };
    let filter = EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
