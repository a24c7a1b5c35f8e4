//! `tandem stop --app-id X`: asks that app's sidecar to shut down through its
//! API (which stops the app too); falls back to SIGTERM of the `tandem run`
//! process when the API does not answer.

use crate::home::RunRecord;
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {
    /// The app to stop.
    #[arg(long = "app-id", short = 'a')]
    app_id: Vec<String>,
}

pub async fn main(args: Args) -> Result<u8> {
    if args.app_id.is_empty() {
        bail!("name the app to stop with --app-id");
    }
    let mut failed = false;
    for id in &args.app_id {
        let Some(rec) = RunRecord::read(id).filter(|r| crate::home::pid_alive(r.cli_pid)) else {
            eprintln!("❌  no running app with id `{id}` (see `tandem list`)");
            failed = true;
            continue;
        };
        let answered = super::call_sidecar(rec.http_port, "POST", "/v1.0/shutdown")
            .await
            .is_some_and(|(status, _)| status == 204);
        if !answered {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(rec.cli_pid).unwrap_or(0));
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
                eprintln!("❌  could not stop app `{id}`");
                failed = true;
                continue;
            }
        }
        println!("✅  app stopped successfully: {id}");
    }
    Ok(u8::from(failed))
}
