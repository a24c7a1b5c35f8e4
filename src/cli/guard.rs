//! `tandem __guard`: the small process `tandem run` puts between itself and
//! each process it starts (the app, and under `-f` each sidecar), so that
//! nothing it started outlives it, however it dies.
//!
//! Why a process of its own: a parent-death signal reaches only a direct
//! child (an app started through `sh -c` or `npm start` forks again), and a
//! process-group kill misses a child that lives in another group. The guard
//! is a child subreaper (every orphaned descendant of the app becomes its
//! child), reads a lifeline pipe on its stdin that only `tandem run` holds
//! open, and lives in a process group of its own with the app. When the
//! lifeline breaks — `tandem run` was SIGKILLed alone or with its group — it
//! stops the whole tree: SIGTERM, a short grace, then SIGKILL. Otherwise it
//! waits for the app and exits with the app's status. SIGTERM and SIGINT to
//! the group are for the app: the guard outlasts them to report the status.

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::time::Duration;

/// How long the tree has between SIGTERM and SIGKILL once `tandem run` is
/// gone: short, so a restarted run finds the app's port free within a second.
const ORPHAN_GRACE: Duration = Duration::from_millis(400);

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    uid: Option<u32>,
    #[arg(long)]
    gid: Option<u32>,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub async fn main(args: Args) -> Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    // Handlers, not dispositions: the signals still reach the app (same
    // group), while the guard stays to collect its status.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    let mut cmd = tokio::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .stdin(std::process::Stdio::null());
    if let Some(gid) = args.gid.or(args.uid) {
        cmd.gid(gid);
    }
    if let Some(uid) = args.uid {
        cmd.uid(uid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start `{}`: {e}", args.command.join(" "));
            // 127: the shell's "command not found", which callers recognise.
            return Ok(127);
        }
    };
    // A plain thread (not the runtime's blocking pool, which would hold the
    // exit back while the read blocks) waits for the lifeline to break.
    let (broken_tx, mut broken) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = broken_tx.send(());
    });
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("waiting for the app")?;
                return Ok(u8::try_from(super::run::exit_code(status).clamp(0, 255)).unwrap_or(1));
            }
            _ = &mut broken => {
                stop_tree().await;
                return Ok(137);
            }
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

/// The lifeline broke: SIGTERM to every descendant, then SIGKILL to those
/// still there once the grace is over.
async fn stop_tree() {
    signal_descendants(Signal::SIGTERM);
    let end = tokio::time::Instant::now() + ORPHAN_GRACE;
    while tokio::time::Instant::now() < end {
        reap();
        if descendants(std::process::id()).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_descendants(Signal::SIGKILL);
    reap();
}

fn signal_descendants(sig: Signal) {
    for pid in descendants(std::process::id()) {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
    // The guard's group holds any descendant this walk raced with; the guard
    // itself only handles SIGTERM, and SIGKILL comes last.
    if sig == Signal::SIGTERM {
        let _ = killpg(nix::unistd::getpgrp(), sig);
    }
}

fn reap() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if matches!(status, nix::sys::wait::WaitStatus::StillAlive) {
            break;
        }
    }
}

/// Every live process below `root`, read from `/proc` (children of children
/// included; zombies left out).
pub fn descendants(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &table {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|&(_, ppid)| ppid == pid)
        .map(|(p, _)| p)
        .collect()
}

/// `(pid, ppid)` of every live process.
fn process_table() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The name in parentheses may hold spaces; the fields after the
            // last ')' are: state ppid …
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            (state != "Z").then_some((pid, ppid))
        })
        .collect()
}
