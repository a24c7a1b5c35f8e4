//! `tandem stop`: `--app-id X` (or ids as arguments) asks that app's
//! sidecar to shut down through its API (which stops the app too), falling
//! back to SIGTERM of its `tandem run`; `-f <dir|file>` stops every app of
//! the run template, as `dapr stop -f` does.

use super::launch::{failure, success};
use crate::home::RunRecord;
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The app to stop (repeatable).
    #[arg(long = "app-id", short = 'a')]
    app_id: Vec<String>,
    /// Stop every app of this run template (a dapr.yaml or its folder).
    #[arg(long = "run-file", short = 'f')]
    run_file: Option<PathBuf>,
    /// App ids, as `dapr stop a b` takes them.
    ids: Vec<String>,
}

pub async fn main(args: Args) -> Result<u8> {
    if let Some(file) = &args.run_file {
        return stop_template(file).await;
    }
    let ids: Vec<&String> = args.app_id.iter().chain(&args.ids).collect();
    if ids.is_empty() {
        failure("name the app to stop with --app-id, or a run template with -f");
        return Ok(1);
    }
    let mut failed = false;
    for id in ids {
        let Some(rec) = RunRecord::read(id).filter(|r| crate::home::pid_alive(r.cli_pid)) else {
            failure(&format!(
                "failed to stop app id {id}: couldn't find app id {id}"
            ));
            failed = true;
            continue;
        };
        let answered = super::call_sidecar(rec.http_port, "POST", "/v1.0/shutdown")
            .await
            .is_some_and(|(status, _)| status == 204);
        if !answered && !signal(rec.daprd_pid.max(rec.cli_pid)) {
            failure(&format!(
                "failed to stop app id {id}: its processes do not answer"
            ));
            failed = true;
            continue;
        }
        success(&format!("app stopped successfully: {id}"));
    }
    Ok(u8::from(failed))
}

fn signal(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok()
}

/// SIGTERM to every `tandem run` whose apps came from this template, then
/// a wait (bounded) for them to finish stopping, so a script can start
/// the template again right after.
async fn stop_template(arg: &std::path::Path) -> Result<u8> {
    let file = match super::run_file::resolve_path(arg) {
        Ok(f) => f.display().to_string(),
        Err(e) => {
            failure(&format!("Failed to get run file path: {e:#}"));
            return Ok(1);
        }
    };
    let mut pids: Vec<u32> = RunRecord::all_live()
        .into_iter()
        .filter(|r| r.run_template_path == file)
        .map(|r| r.cli_pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    if pids.is_empty() {
        failure(&format!(
            "Failed to stop Dapr and app processes: couldn't find apps with run file \"{file}\""
        ));
        return Ok(1);
    }
    for &pid in &pids {
        signal(pid);
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&p| crate::home::pid_alive(p)) && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    success("Dapr and app processes stopped successfully");
    Ok(0)
}
