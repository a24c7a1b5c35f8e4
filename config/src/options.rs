//! The sidecar's options: daprd's flags (dapr-wire.md §5) and environment.
//! `tandem sidecar` parses them directly; `tandem run` flattens the same set.

use crate::duration::{parse_duration, parse_quantity};
use clap::{ArgAction, Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum AppProtocol {
    #[default]
    Http,
    Https,
    H2c,
    Grpc,
    Grpcs,
}

impl AppProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::Https => "https",
            AppProtocol::H2c => "h2c",
            AppProtocol::Grpc => "grpc",
            AppProtocol::Grpcs => "grpcs",
        }
    }

    pub fn is_grpc(self) -> bool {
        matches!(self, AppProtocol::Grpc | AppProtocol::Grpcs)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Fatal,
}

fn seconds_or_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => parse_duration(s),
    }
}

fn millis_or_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(n) => Ok(Duration::from_millis(n)),
        Err(_) => parse_duration(s),
    }
}

fn quantity(s: &str) -> Result<u64, String> {
    parse_quantity(s)
}

/// daprd's flags. Ports are `Option` so `tandem run` can tell "not given"
/// (pick a free port) from a value; `tandem sidecar` fills Dapr's defaults.
#[derive(Clone, Debug, Args)]
pub struct SidecarOptions {
    /// The application's id.
    #[arg(long = "app-id", short = 'a', default_value = "")]
    pub app_id: String,
    /// The port the application listens on.
    #[arg(long = "app-port", short = 'p')]
    pub app_port: Option<u16>,
    /// How the sidecar talks to the app.
    #[arg(long = "app-protocol", short = 'P', value_enum, default_value_t = AppProtocol::Http)]
    pub app_protocol: AppProtocol,
    /// Where the app listens.
    #[arg(long = "app-channel-address", default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// Most concurrent requests sent to the app; -1 is unlimited.
    #[arg(long = "app-max-concurrency", default_value_t = -1, allow_negative_numbers = true)]
    pub app_max_concurrency: i64,
    #[arg(long = "dapr-http-port", short = 'H')]
    pub dapr_http_port: Option<u16>,
    #[arg(long = "dapr-grpc-port", short = 'G')]
    pub dapr_grpc_port: Option<u16>,
    #[arg(long = "dapr-internal-grpc-port", short = 'I')]
    pub dapr_internal_grpc_port: Option<u16>,
    /// Addresses the Dapr HTTP and gRPC APIs listen on (comma separated).
    #[arg(long = "dapr-listen-addresses", default_value = "127.0.0.1")]
    pub dapr_listen_addresses: String,
    #[arg(long = "metrics-port", short = 'M')]
    pub metrics_port: Option<u16>,
    #[arg(long = "metrics-listen-address", default_value = "0.0.0.0")]
    pub metrics_listen_address: String,
    #[arg(long = "enable-metrics", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_metrics: bool,
    /// A directory of resource YAML files; repeatable.
    #[arg(long = "resources-path", short = 'd', alias = "components-path")]
    pub resources_path: Vec<PathBuf>,
    /// A Configuration YAML file.
    #[arg(long = "config", short = 'c')]
    pub config: Option<PathBuf>,
    #[arg(long = "enable-app-health-check", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_app_health_check: bool,
    #[arg(long = "app-health-check-path", default_value = "/healthz")]
    pub app_health_check_path: String,
    /// Seconds between probes (or a duration such as 500ms).
    #[arg(long = "app-health-probe-interval", default_value = "5", value_parser = seconds_or_duration)]
    pub app_health_probe_interval: Duration,
    /// Milliseconds a probe may take (or a duration such as 1s).
    #[arg(long = "app-health-probe-timeout", default_value = "500", value_parser = millis_or_duration)]
    pub app_health_probe_timeout: Duration,
    #[arg(long = "app-health-threshold", default_value_t = 3)]
    pub app_health_threshold: u32,
    /// Largest request body, e.g. 4Mi.
    #[arg(long = "max-body-size", default_value = "4Mi", value_parser = quantity)]
    pub max_body_size: u64,
    /// Threads serving requests. 1 (the default) runs the sidecar on one
    /// thread: a request never changes threads between the client's
    /// connection, the peer's and the app's. More threads give one busy
    /// sidecar more than a core; 0 means one per core.
    #[arg(
        long = "worker-threads",
        env = "TANDEM_WORKER_THREADS",
        default_value_t = 1
    )]
    pub worker_threads: usize,
    /// Largest request header block, e.g. 4Ki.
    #[arg(long = "read-buffer-size", default_value = "4Ki", value_parser = quantity)]
    pub read_buffer_size: u64,
    #[arg(long = "log-level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    #[arg(long = "log-as-json", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
    #[arg(long = "enable-api-logging", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_api_logging: Option<bool>,
    #[arg(long = "dapr-graceful-shutdown-seconds", default_value_t = 5)]
    pub dapr_graceful_shutdown_seconds: u64,
    /// Init endpoints the sidecar must not call: `config`, `subscribe`.
    #[arg(long = "disable-init-endpoints", value_delimiter = ',')]
    pub disable_init_endpoints: Vec<String>,
    #[arg(long = "app-binding-options-timeout", default_value = "3s", value_parser = parse_duration)]
    pub app_binding_options_timeout: Duration,
    /// Accepted for daprd compatibility: `standalone` is the only mode.
    #[arg(long = "mode", default_value = "standalone")]
    pub mode: String,
    /// mTLS between sidecars, with certificates from the local CA
    /// (`tandem ca init`; `$TANDEM_CA_DIR`, else `$TANDEM_HOME/ca`).
    #[arg(long = "enable-mtls", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_mtls: bool,
    #[arg(long = "sentry-address")]
    pub sentry_address: Option<String>,
    /// Transparent mode (tandem's own), all in one: serve both doors
    /// (outbound 15001 and inbound 15006 unless given) and install the
    /// iptables rules in this network namespace at start — excluding this
    /// process's uid, so the app must run as another user — and remove
    /// them at exit. Needs root (CAP_NET_ADMIN).
    #[arg(long = "transparent", default_value_t = false)]
    pub transparent: bool,
    /// Transparent mode (tandem's own): serve the outbound door on this
    /// port, the one `tandem iptables install --outbound-port` redirects
    /// the app's connections to. The sidecar must run as the uid given to
    /// `--proxy-uid` there.
    #[arg(long = "transparent-outbound-port")]
    pub transparent_outbound_port: Option<u16>,
    /// Transparent mode: serve the inbound door on this port (`tandem
    /// iptables install --inbound-port`).
    #[arg(long = "transparent-inbound-port")]
    pub transparent_inbound_port: Option<u16>,
    /// Whether the inbound door lets plaintext from outside the mesh
    /// through to the app (`allow`) or closes it (`deny`).
    #[arg(long = "transparent-inbound-plaintext", default_value = "allow", value_parser = ["allow", "deny"])]
    pub transparent_inbound_plaintext: String,
    /// How long the outbound door waits for a client's first bytes before
    /// treating the connection as opaque TCP.
    #[arg(long = "protocol-detect-timeout", default_value = "1s", value_parser = crate::duration::parse_duration)]
    pub protocol_detect_timeout: std::time::Duration,
    /// Transparent mode: host-name suffixes taken off before a `Host`
    /// names a mesh app (`orders.prod.svc.cluster.local` → `orders.prod`);
    /// set this for a cluster domain other than `cluster.local`.
    #[arg(
        long = "transparent-host-suffixes",
        value_delimiter = ',',
        default_value = ".svc.cluster.local,.svc"
    )]
    pub transparent_host_suffixes: Vec<String>,
    #[arg(long = "placement-host-address")]
    pub placement_host_address: Option<String>,
    #[arg(long = "scheduler-host-address")]
    pub scheduler_host_address: Option<String>,
    #[arg(long = "allowed-origins", default_value = "")]
    pub allowed_origins: String,
    /// Deprecated daprd form of --max-body-size, in MB.
    #[arg(long = "dapr-http-max-request-size", hide = true)]
    pub dapr_http_max_request_size: Option<u64>,
    /// Deprecated daprd form of --read-buffer-size, in KB.
    #[arg(long = "dapr-http-read-buffer-size", hide = true)]
    pub dapr_http_read_buffer_size: Option<u64>,
    /// Accepted for compatibility; profiling is not served.
    #[arg(long = "enable-profiling", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub enable_profiling: bool,
    #[arg(long = "profile-port", hide = true)]
    pub profile_port: Option<u16>,
    /// Unix domain sockets for the APIs: not supported yet (refused).
    #[arg(long = "unix-domain-socket", short = 'u')]
    pub unix_domain_socket: Option<PathBuf>,

    /// `DAPR_API_TOKEN`: required from callers of the API when set.
    #[arg(skip)]
    pub api_token: Option<String>,
    /// `APP_API_TOKEN`: sent to the app on every call when set.
    #[arg(skip)]
    pub app_api_token: Option<String>,
    /// `NAMESPACE`.
    #[arg(skip)]
    pub namespace: Option<String>,
}

impl SidecarOptions {
    /// Fills what comes from the environment rather than flags, and folds
    /// daprd's deprecated size flags into the current ones.
    pub fn with_env(mut self) -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.api_token = get("DAPR_API_TOKEN");
        self.app_api_token = get("APP_API_TOKEN");
        self.namespace = get("NAMESPACE");
        if let Some(mb) = self.dapr_http_max_request_size {
            self.max_body_size = mb.saturating_mul(1 << 20);
        }
        if let Some(kb) = self.dapr_http_read_buffer_size {
            self.read_buffer_size = kb.saturating_mul(1 << 10);
        }
        self
    }

    /// Options tandem accepts for compatibility but cannot honour yet; using
    /// them is an error rather than a silent difference.
    pub fn unsupported(&self) -> Option<String> {
        if let Some(dir) = &self.unix_domain_socket {
            return Some(format!(
                "--unix-domain-socket {} is not supported yet; the APIs listen on TCP ports (--dapr-http-port, --dapr-grpc-port)",
                dir.display()
            ));
        }
        None
    }

    pub fn http_port(&self) -> u16 {
        self.dapr_http_port.unwrap_or(3500)
    }

    pub fn grpc_port(&self) -> u16 {
        self.dapr_grpc_port.unwrap_or(50001)
    }

    pub fn metrics_port_or_default(&self) -> u16 {
        self.metrics_port.unwrap_or(9090)
    }

    pub fn init_endpoint_disabled(&self, name: &str) -> bool {
        self.disable_init_endpoints.iter().any(|e| e.trim() == name)
    }

    pub fn listen_addresses(&self) -> Vec<String> {
        self.dapr_listen_addresses
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}
