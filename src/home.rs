//! tandem's home directory (`$TANDEM_HOME`, default `~/.tandem`): default
//! resources, and the registry of apps started by `tandem run` that `list`
//! and `stop` read.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use tandem_control::home::dir;

pub fn components_dir() -> PathBuf {
    dir().join("components")
}

pub fn default_config() -> PathBuf {
    dir().join("config.yaml")
}

fn runs_dir() -> PathBuf {
    dir().join("run")
}

/// One running app, as `tandem run` records it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunRecord {
    pub app_id: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub metrics_enabled: bool,
    pub app_port: Option<u16>,
    pub cli_pid: u32,
    /// The sidecar's process: `tandem run` itself for a single app (the
    /// sidecar runs in it), a child of it under `-f`.
    pub daprd_pid: u32,
    pub app_pid: Option<u32>,
    pub command: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub max_body_size: u64,
    pub read_buffer_size: u64,
    /// Under `-f`: the template's absolute path and `name`.
    pub run_template_path: String,
    pub run_template_name: String,
    pub app_log_path: String,
    pub daprd_log_path: String,
}

impl RunRecord {
    /// The record of app `o.app_id` (options as bound) started now by the
    /// `tandem run` with pid `cli_pid`; template fields left empty.
    pub fn started(
        o: &tandem_config::SidecarOptions,
        cli_pid: u32,
        daprd_pid: u32,
        app_pid: Option<u32>,
        command: &[String],
    ) -> Self {
        RunRecord {
            app_id: o.app_id.clone(),
            http_port: o.http_port(),
            grpc_port: o.grpc_port(),
            metrics_port: o.metrics_port_or_default(),
            metrics_enabled: o.enable_metrics,
            app_port: o.app_port,
            cli_pid,
            daprd_pid,
            app_pid,
            command: command.join(" "),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            max_body_size: o.max_body_size,
            read_buffer_size: o.read_buffer_size,
            ..RunRecord::default()
        }
    }

    fn path(app_id: &str) -> PathBuf {
        runs_dir().join(format!("{app_id}.json"))
    }

    pub fn write(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(runs_dir())?;
        let tmp = runs_dir().join(format!(".{}.{}.tmp", self.app_id, self.cli_pid));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("plain JSON"))?;
        std::fs::rename(tmp, Self::path(&self.app_id))
    }

    pub fn remove(app_id: &str, cli_pid: u32) {
        // Only remove our own record: another run may have reused the id.
        if let Some(r) = Self::read(app_id)
            && r.cli_pid == cli_pid
        {
            let _ = std::fs::remove_file(Self::path(app_id));
        }
    }

    pub fn read(app_id: &str) -> Option<Self> {
        let text = std::fs::read(Self::path(app_id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every record whose `tandem run` process is still alive; stale ones
    /// are cleaned up.
    pub fn all_live() -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(runs_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<Self> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let rec: Self = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                if pid_alive(rec.cli_pid) {
                    Some(rec)
                } else {
                    let _ = std::fs::remove_file(e.path());
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        out
    }
}

/// Whether the process runs (a zombie waiting for its parent does not).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => true,
    }
}
