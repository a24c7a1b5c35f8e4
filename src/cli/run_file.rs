//! `tandem run -f <file>`: Dapr's multi-app run template. Each app gets its
//! own sidecar in this process; `common` fills what an app leaves out;
//! relative paths are relative to the template's directory.

use super::run::{AppSpec, default_source, resolve, run_app};
use crate::sidecar::ResourceSource;
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tandem_config::{AppProtocol, SidecarOptions, parse_quantity};
use tokio::sync::watch;

#[derive(Deserialize)]
struct Template {
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    common: AppEntry,
    #[serde(default)]
    apps: Vec<AppEntry>,
}

/// One app (or `common`). Unknown fields (log destinations, container
/// images, …) are accepted and ignored.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct AppEntry {
    #[serde(rename = "appID")]
    app_id: Option<String>,
    app_dir_path: Option<PathBuf>,
    app_port: Option<u16>,
    app_protocol: Option<String>,
    app_channel_address: Option<String>,
    command: Option<Vec<String>>,
    resources_path: Option<PathBuf>,
    resources_paths: Option<Vec<PathBuf>>,
    config_file_path: Option<PathBuf>,
    #[serde(rename = "daprHTTPPort")]
    dapr_http_port: Option<u16>,
    #[serde(rename = "daprGRPCPort")]
    dapr_grpc_port: Option<u16>,
    #[serde(rename = "daprInternalGRPCPort")]
    dapr_internal_grpc_port: Option<u16>,
    metrics_port: Option<u16>,
    enable_app_health_check: Option<bool>,
    app_health_check_path: Option<String>,
    app_health_probe_interval: Option<u64>,
    app_health_probe_timeout: Option<u64>,
    app_health_threshold: Option<u32>,
    app_max_concurrency: Option<i64>,
    max_body_size: Option<String>,
    read_buffer_size: Option<String>,
    enable_api_logging: Option<bool>,
    env: Option<BTreeMap<String, serde_json::Value>>,
}

impl AppEntry {
    /// `self` over `common`.
    fn over(self, common: &AppEntry) -> AppEntry {
        macro_rules! pick {
            ($($f:ident),*) => { AppEntry { $($f: self.$f.or_else(|| common.$f.clone()),)* env: {
                let mut env = common.env.clone().unwrap_or_default();
                env.extend(self.env.unwrap_or_default());
                Some(env)
            } } };
        }
        pick!(
            app_id,
            app_dir_path,
            app_port,
            app_protocol,
            app_channel_address,
            command,
            resources_path,
            resources_paths,
            config_file_path,
            dapr_http_port,
            dapr_grpc_port,
            dapr_internal_grpc_port,
            metrics_port,
            enable_app_health_check,
            app_health_check_path,
            app_health_probe_interval,
            app_health_probe_timeout,
            app_health_threshold,
            app_max_concurrency,
            max_body_size,
            read_buffer_size,
            enable_api_logging
        )
    }
}

fn rel(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn to_spec(
    entry: AppEntry,
    base: &Path,
    defaults: &SidecarOptions,
    file: &Path,
) -> Result<AppSpec> {
    let app_id = entry
        .app_id
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("{}: every app needs `appID`", file.display()))?;
    let dir = entry.app_dir_path.as_ref().map(|d| rel(base, d));
    if let Some(d) = &dir
        && !d.is_dir()
    {
        bail!(
            "{}: app `{app_id}`: appDirPath {} is not a directory",
            file.display(),
            d.display()
        );
    }
    let mut o = defaults.clone();
    o.app_id = app_id.clone();
    o.app_port = entry.app_port.or(o.app_port);
    if let Some(p) = &entry.app_protocol {
        o.app_protocol = <AppProtocol as clap::ValueEnum>::from_str(p, true).map_err(|_| {
            anyhow!(
                "{}: app `{app_id}`: appProtocol `{p}`; expected http, https, h2c, grpc or grpcs",
                file.display()
            )
        })?;
    }
    if let Some(a) = entry.app_channel_address {
        o.app_channel_address = a;
    }
    o.dapr_http_port = entry.dapr_http_port;
    o.dapr_grpc_port = entry.dapr_grpc_port;
    o.dapr_internal_grpc_port = entry.dapr_internal_grpc_port;
    o.metrics_port = entry.metrics_port;
    if let Some(v) = entry.enable_app_health_check {
        o.enable_app_health_check = v;
    }
    if let Some(v) = entry.app_health_check_path {
        o.app_health_check_path = v;
    }
    if let Some(v) = entry.app_health_probe_interval {
        o.app_health_probe_interval = std::time::Duration::from_secs(v);
    }
    if let Some(v) = entry.app_health_probe_timeout {
        o.app_health_probe_timeout = std::time::Duration::from_millis(v);
    }
    if let Some(v) = entry.app_health_threshold {
        o.app_health_threshold = v;
    }
    if let Some(v) = entry.app_max_concurrency {
        o.app_max_concurrency = v;
    }
    if let Some(v) = &entry.max_body_size {
        o.max_body_size =
            parse_quantity(v).map_err(|e| anyhow!("{}: app `{app_id}`: {e}", file.display()))?;
    }
    if let Some(v) = &entry.read_buffer_size {
        o.read_buffer_size =
            parse_quantity(v).map_err(|e| anyhow!("{}: app `{app_id}`: {e}", file.display()))?;
    }
    if entry.enable_api_logging.is_some() {
        o.enable_api_logging = entry.enable_api_logging;
    }
    let mut paths: Vec<PathBuf> = entry.resources_paths.unwrap_or_default();
    paths.extend(entry.resources_path);
    o.resources_path = paths.iter().map(|p| rel(base, p)).collect();
    if let Some(c) = &entry.config_file_path {
        o.config = Some(rel(base, c));
    }
    let o = resolve(o)?;
    // Dapr's convention: an app's own `.dapr/resources` when no path is given.
    let source = match (&o.resources_path, &dir) {
        (p, Some(d)) if p.is_empty() && d.join(".dapr/resources").is_dir() => {
            ResourceSource::Dirs(vec![d.join(".dapr/resources")])
        }
        (p, _) => default_source(p),
    };
    let env = entry
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    Ok(AppSpec {
        prefix: format!("== APP - {app_id} == "),
        options: o,
        source,
        command: entry.command.unwrap_or_default(),
        dir: dir.or_else(|| Some(base.to_path_buf())),
        env,
        run_file: Some(file.to_path_buf()),
        uid: None,
        gid: None,
    })
}

pub async fn run(file: &Path, defaults: SidecarOptions, stop: watch::Receiver<bool>) -> Result<u8> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read run file {}", file.display()))?;
    let template: Template = serde_saphyr::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: {}",
            file.display(),
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    if let Some(v) = &template.version
        && v.as_u64() != Some(1)
        && v.as_str() != Some("1")
    {
        bail!("{}: `version` is {v}; expected 1", file.display());
    }
    if template.apps.is_empty() {
        bail!(
            "{}: `apps` is empty; expected at least one app",
            file.display()
        );
    }
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut specs = Vec::new();
    for app in template.apps {
        specs.push(to_spec(
            app.over(&template.common),
            &base,
            &defaults,
            &file,
        )?);
    }
    let mut tasks = Vec::new();
    for spec in specs {
        tasks.push(tokio::spawn(run_app(spec, stop.clone())));
    }
    let mut worst = 0i32;
    for t in tasks {
        match t.await {
            Ok(Ok(code)) => worst = worst.max(code),
            Ok(Err(e)) => {
                eprintln!("error: {e:#}");
                worst = worst.max(1);
            }
            Err(e) => {
                eprintln!("error: {e}");
                worst = worst.max(1);
            }
        }
    }
    Ok(u8::try_from(worst.clamp(0, 255)).unwrap_or(1))
}
