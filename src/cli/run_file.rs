//! `tandem run -f <dir|file>`: Dapr's multi-app run template, read the way
//! the Dapr CLI reads it. This file turns a template into a plan (every
//! field checked, paths resolved, whole-template mistakes found before
//! anything starts); `run_many.rs` carries the plan out.
//!
//! Paths: `appDirPath` and everything under `common` are relative to the
//! template's folder; an app's own `resourcesPath(s)` and `configFilePath`
//! are relative to its `appDirPath`. Resources come from the app's own
//! paths, else `<appDirPath>/.dapr/resources`, else `common`'s, else the
//! defaults of `tandem run`; the Configuration likewise (with
//! `<appDirPath>/.dapr/config.yaml`).

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tandem_config::{SidecarOptions, parse_quantity};

/// The name `-f <dir>` looks for, as the Dapr CLI does.
pub const DEFAULT_FILE: &str = "dapr.yaml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    #[serde(default)]
    version: Option<Scalar>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    common: Option<Spanned<Entry>>,
    #[serde(default)]
    apps: Option<Vec<Spanned<Entry>>>,
}

/// A YAML scalar of any type, for fields users write either way
/// (`maxBodySize: 4Mi` / `8388608`, `env: {DEBUG: true}`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

/// One app, or `common` (which takes the shared fields only). Every field
/// of the Dapr CLI's format is known here; a misspelt one is an error, not
/// a silent default.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    // Shared (common or app).
    config_file_path: Option<PathBuf>,
    app_protocol: Option<String>,
    api_listen_addresses: Option<String>,
    enable_profiling: Option<bool>,
    log_level: Option<String>,
    app_max_concurrency: Option<i64>,
    placement_host_address: Option<String>,
    scheduler_host_address: Option<String>,
    resources_path: Option<PathBuf>,
    resources_paths: Option<Vec<PathBuf>>,
    #[serde(rename = "appSSL")]
    app_ssl: Option<bool>,
    max_body_size: Option<Scalar>,
    read_buffer_size: Option<Scalar>,
    /// Dapr CLI 1.14's spelling, in MB.
    #[serde(rename = "daprHTTPMaxRequestSize")]
    dapr_http_max_request_size: Option<i64>,
    /// Dapr CLI 1.14's spelling, in KB.
    #[serde(rename = "daprHTTPReadBufferSize")]
    dapr_http_read_buffer_size: Option<i64>,
    enable_app_health_check: Option<bool>,
    app_health_check_path: Option<String>,
    /// Seconds.
    app_health_probe_interval: Option<i64>,
    /// Milliseconds.
    app_health_probe_timeout: Option<i64>,
    app_health_threshold: Option<i64>,
    enable_api_logging: Option<bool>,
    /// Where daprd lives, for the Dapr CLI; tandem is its own sidecar.
    runtime_path: Option<PathBuf>,
    env: Option<BTreeMap<String, Scalar>>,
    daprd_log_destination: Option<String>,
    app_log_destination: Option<String>,
    // Per app.
    app_dir_path: Option<PathBuf>,
    #[serde(rename = "appID")]
    app_id: Option<String>,
    app_channel_address: Option<String>,
    app_port: Option<i64>,
    #[serde(rename = "daprHTTPPort")]
    dapr_http_port: Option<i64>,
    #[serde(rename = "daprGRPCPort")]
    dapr_grpc_port: Option<i64>,
    #[serde(rename = "daprInternalGRPCPort")]
    dapr_internal_grpc_port: Option<i64>,
    metrics_port: Option<i64>,
    profile_port: Option<i64>,
    command: Option<Vec<String>>,
    unix_domain_socket: Option<String>,
    // Kubernetes only (`dapr run -k`): accepted, not used here.
    container_image: Option<String>,
    container_image_pull_policy: Option<String>,
    create_service: Option<bool>,
}

impl Entry {
    /// Fields only an app can have, for the check that `common` has none.
    fn app_only_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! check {
            ($($f:ident => $n:literal),*) => { $( if self.$f.is_some() { out.push($n); } )* };
        }
        check!(app_dir_path => "appDirPath", app_id => "appID", app_port => "appPort",
            dapr_http_port => "daprHTTPPort", dapr_grpc_port => "daprGRPCPort",
            dapr_internal_grpc_port => "daprInternalGRPCPort", metrics_port => "metricsPort",
            profile_port => "profilePort", command => "command",
            app_channel_address => "appChannelAddress", unix_domain_socket => "unixDomainSocket");
        out
    }

    /// `self` with what it leaves out taken from `common` (paths already
    /// resolved in both, so each keeps its own base). `env` merges key by
    /// key, the app's winning.
    fn over(self, common: &Entry) -> Entry {
        macro_rules! pick {
            ($($f:ident),*) => { Entry { $($f: self.$f.or_else(|| common.$f.clone()),)*
                resources_path: None,
                resources_paths: None,
                config_file_path: None,
                env: {
                    let mut env = common.env.clone().unwrap_or_default();
                    env.extend(self.env.unwrap_or_default());
                    Some(env)
                },
            } };
        }
        pick!(
            app_protocol,
            api_listen_addresses,
            enable_profiling,
            log_level,
            app_max_concurrency,
            placement_host_address,
            scheduler_host_address,
            app_ssl,
            max_body_size,
            read_buffer_size,
            dapr_http_max_request_size,
            dapr_http_read_buffer_size,
            enable_app_health_check,
            app_health_check_path,
            app_health_probe_interval,
            app_health_probe_timeout,
            app_health_threshold,
            enable_api_logging,
            runtime_path,
            daprd_log_destination,
            app_log_destination,
            app_dir_path,
            app_id,
            app_channel_address,
            app_port,
            dapr_http_port,
            dapr_grpc_port,
            dapr_internal_grpc_port,
            metrics_port,
            profile_port,
            command,
            unix_domain_socket,
            container_image,
            container_image_pull_policy,
            create_service
        )
    }

    fn resources(&self) -> Vec<PathBuf> {
        let mut paths = self.resources_paths.clone().unwrap_or_default();
        paths.extend(self.resources_path.clone());
        paths
    }
}

/// Where an app's resources come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Resources {
    Dirs(Vec<PathBuf>),
    /// `~/.tandem/components` when it exists, else the embedded defaults
    /// (what `tandem run` loads without `--resources-path`).
    Defaults,
}

/// One app of a template, ready to start.
pub struct AppPlan {
    pub app_id: String,
    pub app_dir: PathBuf,
    /// `tandem sidecar` arguments (daprd's flags).
    pub sidecar_args: Vec<String>,
    /// The same arguments parsed, for what the app's environment needs.
    pub options: SidecarOptions,
    pub resources: Resources,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub app_log: String,
    pub daprd_log: String,
}

pub struct Plan {
    pub file: PathBuf,
    pub name: String,
    pub apps: Vec<AppPlan>,
}

/// `-f` names a directory (its `dapr.yaml`) or a `.yaml`/`.yml` file.
pub fn resolve_path(arg: &Path) -> Result<PathBuf> {
    let file = if arg.is_dir() {
        let f = arg.join(DEFAULT_FILE);
        if !f.is_file() {
            bail!(
                "{} is a directory without a {DEFAULT_FILE}; name the run file or add one",
                arg.display()
            );
        }
        f
    } else {
        if !arg.exists() {
            bail!("run file {} does not exist", arg.display());
        }
        let ext = arg.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if ext != "yaml" && ext != "yml" {
            bail!("file \"{}\" is not a YAML file", arg.display());
        }
        arg.to_path_buf()
    };
    Ok(std::fs::canonicalize(&file).unwrap_or(file))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `~/…` expanded, relative joined to `base`, and required to exist.
fn existing(base: &Path, p: &Path, at: &str) -> Result<PathBuf> {
    let expanded = match p.strip_prefix("~") {
        Ok(rest) if p.starts_with("~/") || p == Path::new("~") => {
            home().map(|h| h.join(rest)).unwrap_or(p.to_path_buf())
        }
        _ => p.to_path_buf(),
    };
    let full = if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    };
    let full = normalize(&full);
    if !full.exists() {
        bail!(
            "{at}: {} does not exist (relative paths here are relative to {})",
            full.display(),
            base.display()
        );
    }
    Ok(full)
}

/// `a/b/../c` → `a/c` without touching the file system (symlinks kept).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Reads and checks a template: every mistake found here, before anything
/// starts, names the file, the line and the field.
pub fn plan(file: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow!("cannot read run file {}: {e}", file.display()))?;
    let template: Template = serde_saphyr::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        let full = e.to_string();
        let first = full.lines().next().unwrap_or_default();
        let message = first
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(": ").map(|(_, m)| m))
            .unwrap_or(first);
        anyhow!("{}:{line}: {message}", file.display())
    })?;
    let f = file.display();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.trim_start().trim_start_matches("- ").starts_with(needle))
            .map_or(1, |i| i + 1)
    };
    match &template.version {
        None => bail!("{f}:1: required field `version` is missing; expected `version: 1`"),
        Some(Scalar::Int(1)) => {}
        Some(Scalar::Text(s)) if s == "1" => {}
        Some(v) => bail!("{f}:{}: `version` is {v}; expected 1", line_of("version:")),
    }
    let apps = template.apps.unwrap_or_default();
    if apps.is_empty() {
        bail!(
            "{f}:{}: `apps` is empty; expected at least one app",
            line_of("apps:")
        );
    }
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut common = template
        .common
        .map(|c| (c.value, c.referenced.line()))
        .unwrap_or_default();
    if let Some(field) = common.0.app_only_fields().first() {
        bail!(
            "{f}:{}: `{field}` belongs to each app under `apps`, not to `common`",
            common.1
        );
    }
    // Common's paths are relative to the template's folder.
    let common_resources = common
        .0
        .resources()
        .iter()
        .map(|p| {
            existing(
                &base,
                p,
                &format!("{f}:{}: common.resourcesPath", line_of("resourcesPath")),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let common_config = common
        .0
        .config_file_path
        .take()
        .map(|p| {
            existing(
                &base,
                &p,
                &format!("{f}:{}: common.configFilePath", line_of("configFilePath")),
            )
        })
        .transpose()?;

    let mut plans: Vec<AppPlan> = Vec::new();
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    for spanned in apps {
        let line = spanned.referenced.line();
        let app = spanned.value;
        let at = format!("{f}:{line}");
        let dir = app
            .app_dir_path
            .clone()
            .ok_or_else(|| anyhow!("{at}: required field `appDirPath` is missing for this app"))?;
        let app_dir = existing(&base, &dir, &format!("{at}: appDirPath"))?;
        if !app_dir.is_dir() {
            bail!("{at}: appDirPath {} is not a directory", app_dir.display());
        }
        // The app's own paths are relative to its appDirPath.
        let own_resources = app
            .resources()
            .iter()
            .map(|p| existing(&app_dir, p, &format!("{at}: resourcesPath")))
            .collect::<Result<Vec<_>>>()?;
        let own_config = app
            .config_file_path
            .clone()
            .map(|p| existing(&app_dir, &p, &format!("{at}: configFilePath")))
            .transpose()?;
        let e = app.over(&common.0);
        let app_id = match e.app_id.clone().filter(|s| !s.trim().is_empty()) {
            Some(id) => id,
            None => app_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| anyhow!("{at}: `appID` is missing and appDirPath has no name"))?,
        };
        if let Some(other) = plans.iter().find(|p| p.app_id == app_id) {
            bail!(
                "{at}: appID `{app_id}` is used twice (also the app in {}); each app needs its own id",
                other.app_dir.display()
            );
        }
        let resources = if !own_resources.is_empty() {
            Resources::Dirs(own_resources)
        } else if app_dir.join(".dapr/resources").is_dir() {
            Resources::Dirs(vec![app_dir.join(".dapr/resources")])
        } else if !common_resources.is_empty() {
            Resources::Dirs(common_resources.clone())
        } else {
            Resources::Defaults
        };
        let config = own_config
            .or_else(|| {
                let c = app_dir.join(".dapr/config.yaml");
                c.is_file().then_some(c)
            })
            .or_else(|| common_config.clone())
            .or_else(|| {
                let c = crate::home::default_config();
                c.is_file().then_some(c)
            });
        let (args, env) =
            sidecar_args(&e, &app_id, &resources, config.as_deref(), &at, &mut ports)?;
        let options = parse_options(&args).map_err(|m| anyhow!("{at}: app `{app_id}`: {m}"))?;
        let command = e.command.clone().unwrap_or_default();
        if let Some(program) = command.first() {
            super::launch::find_program(program, Some(&app_dir))
                .map_err(|err| anyhow!("{at}: app `{app_id}`: command: {err}"))?;
        }
        let dest = |v: &Option<String>, default: &str, field: &str| -> Result<String> {
            let d = v.clone().unwrap_or_else(|| default.to_string());
            match d.as_str() {
                "file" | "console" | "fileAndConsole" => Ok(d),
                other => bail!(
                    "{at}: app `{app_id}`: {field} `{other}`; expected file, console or fileAndConsole"
                ),
            }
        };
        plans.push(AppPlan {
            app_log: dest(
                &e.app_log_destination,
                "fileAndConsole",
                "appLogDestination",
            )?,
            daprd_log: dest(&e.daprd_log_destination, "file", "daprdLogDestination")?,
            app_id,
            app_dir,
            sidecar_args: args,
            options,
            resources,
            command,
            env,
        });
    }
    Ok(Plan {
        file: file.to_path_buf(),
        name: template.name.unwrap_or_default(),
        apps: plans,
    })
}

/// Parses daprd flags as `tandem sidecar` will, so a bad value is refused
/// before anything starts.
fn parse_options(args: &[String]) -> Result<SidecarOptions, String> {
    #[derive(clap::Parser)]
    struct Sidecar {
        #[command(flatten)]
        options: SidecarOptions,
    }
    use clap::Parser;
    Sidecar::try_parse_from(
        std::iter::once("tandem sidecar".to_string()).chain(args.iter().cloned()),
    )
    .map(|s| s.options)
    .map_err(|e| {
        e.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .replace("error: ", "")
    })
}

/// Environment variables, in order.
type Env = Vec<(String, String)>;

/// The daprd flags (and app environment) an entry stands for.
fn sidecar_args(
    e: &Entry,
    app_id: &str,
    resources: &Resources,
    config: Option<&Path>,
    at: &str,
    ports: &mut BTreeMap<u16, String>,
) -> Result<(Vec<String>, Env)> {
    let mut a: Vec<String> = vec!["--app-id".into(), app_id.into()];
    let mut push = |flag: &str, v: String| {
        a.push(flag.into());
        a.push(v);
    };
    let mut port = |field: &str, v: Option<i64>| -> Result<Option<u16>> {
        match v {
            None => Ok(None),
            Some(n) if n <= 0 => Ok(None),
            Some(n) => {
                let p = u16::try_from(n).map_err(|_| {
                    anyhow!("{at}: app `{app_id}`: {field} {n} is not a port (1-65535)")
                })?;
                if let Some(other) = ports.insert(p, format!("{field} of app `{app_id}`")) {
                    bail!(
                        "{at}: app `{app_id}`: {field} {p} is already the {other}; each port can be used once"
                    );
                }
                Ok(Some(p))
            }
        }
    };
    if let Some(p) = port("appPort", e.app_port)? {
        push("--app-port", p.to_string());
    }
    for (field, flag, v) in [
        ("daprHTTPPort", "--dapr-http-port", e.dapr_http_port),
        ("daprGRPCPort", "--dapr-grpc-port", e.dapr_grpc_port),
        ("metricsPort", "--metrics-port", e.metrics_port),
        (
            "daprInternalGRPCPort",
            "--dapr-internal-grpc-port",
            e.dapr_internal_grpc_port,
        ),
        ("profilePort", "--profile-port", e.profile_port),
    ] {
        // No port: any free one, chosen when the sidecar binds.
        let p = port(field, v)?.unwrap_or(0);
        if p != 0 || flag != "--profile-port" {
            push(flag, p.to_string());
        }
    }
    let mut protocol = e
        .app_protocol
        .clone()
        .unwrap_or_else(|| "http".into())
        .to_lowercase();
    if e.app_ssl == Some(true) {
        protocol = match protocol.as_str() {
            "http" => "https".into(),
            "grpc" => "grpcs".into(),
            other => other.into(),
        };
    }
    if !["http", "https", "h2c", "grpc", "grpcs"].contains(&protocol.as_str()) {
        bail!(
            "{at}: app `{app_id}`: appProtocol `{protocol}`; expected http, https, h2c, grpc or grpcs"
        );
    }
    push("--app-protocol", protocol);
    if let Some(v) = &e.app_channel_address {
        push("--app-channel-address", v.clone());
    }
    if let Some(v) = e.app_max_concurrency {
        push(
            "--app-max-concurrency",
            if v < 1 { "-1".into() } else { v.to_string() },
        );
    }
    if let Some(v) = &e.api_listen_addresses {
        push("--dapr-listen-addresses", v.clone());
    }
    if let Resources::Dirs(dirs) = resources {
        for d in dirs {
            push("--resources-path", d.display().to_string());
        }
    }
    if let Some(c) = config {
        push("--config", c.display().to_string());
    }
    if let Some(v) = e.enable_app_health_check {
        push("--enable-app-health-check", v.to_string());
    }
    if let Some(v) = &e.app_health_check_path {
        push("--app-health-check-path", v.clone());
    }
    for (field, flag, v) in [
        (
            "appHealthProbeInterval",
            "--app-health-probe-interval",
            e.app_health_probe_interval,
        ),
        (
            "appHealthProbeTimeout",
            "--app-health-probe-timeout",
            e.app_health_probe_timeout,
        ),
        (
            "appHealthThreshold",
            "--app-health-threshold",
            e.app_health_threshold,
        ),
    ] {
        match v {
            None | Some(0) => {}
            Some(n) if n < 0 => bail!("{at}: app `{app_id}`: {field} {n} is negative"),
            Some(n) => push(flag, n.to_string()),
        }
    }
    for (field, flag, v) in [
        ("maxBodySize", "--max-body-size", &e.max_body_size),
        ("readBufferSize", "--read-buffer-size", &e.read_buffer_size),
    ] {
        if let Some(v) = v {
            let text = v.to_string();
            parse_quantity(&text).map_err(|m| anyhow!("{at}: app `{app_id}`: {field}: {m}"))?;
            push(flag, text);
        }
    }
    for (flag, v) in [
        ("--dapr-http-max-request-size", e.dapr_http_max_request_size),
        ("--dapr-http-read-buffer-size", e.dapr_http_read_buffer_size),
    ] {
        if let Some(n) = v.filter(|n| *n > 0) {
            push(flag, n.to_string());
        }
    }
    if let Some(v) = &e.log_level
        && !v.is_empty()
    {
        push("--log-level", v.clone());
    }
    if let Some(v) = e.enable_api_logging {
        push("--enable-api-logging", v.to_string());
    }
    if let Some(v) = e.enable_profiling {
        push("--enable-profiling", v.to_string());
    }
    if let Some(v) = &e.placement_host_address {
        push("--placement-host-address", v.clone());
    }
    if let Some(v) = &e.scheduler_host_address {
        push("--scheduler-host-address", v.clone());
    }
    if e.unix_domain_socket
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        bail!(
            "{at}: app `{app_id}`: unixDomainSocket is not supported yet; remove it and the app gets TCP ports"
        );
    }
    let env = e
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    Ok((a, env))
}
