//! Starting the processes of `tandem run` (apps, and under `-f` the
//! sidecars), each behind a guard (`cli/guard.rs`) so none outlives the run,
//! with their output carried line by line to the console, a log file or
//! both. Also the Dapr CLI's status-line prefixes, which users' scripts match.

use anyhow::{Context, Result, anyhow};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The Dapr CLI's status lines: `ℹ️  `, `✅  `, `❌  `, `⚠  ` before the
/// message when written to the terminal streams; plain in log files.
pub fn info(msg: &str) {
    println!("ℹ️  {msg}");
}
pub fn success(msg: &str) {
    println!("✅  {msg}");
}
pub fn failure(msg: &str) {
    eprintln!("❌  {msg}");
}
pub fn warning(msg: &str) {
    println!("⚠  {msg}");
}

/// Where a process's lines go (`appLogDestination`, `daprdLogDestination`).
#[derive(Clone)]
pub struct Sink {
    console: bool,
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl Sink {
    pub fn console() -> Self {
        Sink {
            console: true,
            file: None,
        }
    }

    /// `file`, `console` or `fileAndConsole`, with the file at `path`
    /// (created, with its folder, when a file is wanted).
    pub fn new(destination: &str, path: &Path) -> Result<Self> {
        let (console, file) = match destination {
            "console" => (true, false),
            "file" => (false, true),
            "fileAndConsole" => (true, true),
            other => {
                return Err(anyhow!(
                    "log destination `{other}`; expected file, console or fileAndConsole"
                ));
            }
        };
        let file = if file {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot make {}", dir.display()))?;
            }
            let f = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Some(Arc::new(Mutex::new(f)))
        } else {
            None
        };
        Ok(Sink { console, file })
    }

    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// One line: to the console (stdout, or stderr for a process's stderr
    /// when it goes nowhere else) and to the file.
    pub fn line(&self, text: &str, is_err: bool) {
        if self.console {
            if is_err && self.file.is_none() {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
        }
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
        {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// What to start and how.
pub struct Launch<'a> {
    pub command: &'a [String],
    pub dir: Option<&'a Path>,
    pub env: &'a [(String, String)],
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Put before each output line (`== APP == `); empty for sidecars.
    pub prefix: String,
    pub sink: Sink,
}

/// A process started behind its guard. Dropping it breaks the lifeline:
/// the guard then stops the whole tree.
pub struct Guarded {
    child: Child,
    lifeline: Option<ChildStdin>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    /// The started process itself (the guard's child), once seen.
    pub pid: Option<u32>,
}

/// Finds a program as `exec` would: a path (relative to `dir`) or a name
/// on `PATH`. A clear error beats an app that never starts.
pub fn find_program(program: &str, dir: Option<&Path>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.is_file()
            && p.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return Err(anyhow!("the command is empty"));
    }
    if program.contains('/') {
        let p = match dir {
            Some(d) if !Path::new(program).is_absolute() => d.join(program),
            _ => PathBuf::from(program),
        };
        return if executable(&p) {
            Ok(p)
        } else {
            Err(anyhow!(
                "`{program}` is not an executable file (looked at {})",
                p.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| anyhow!("`{program}` was not found on PATH"))
}

impl Guarded {
    pub fn spawn(l: Launch<'_>) -> Result<Guarded> {
        let exe = std::env::current_exe().context("cannot find the tandem binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("__guard");
        if let Some(uid) = l.uid {
            cmd.args(["--uid", &uid.to_string()]);
        }
        if let Some(gid) = l.gid {
            cmd.args(["--gid", &gid.to_string()]);
        }
        cmd.arg("--")
            .args(l.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: the group a supervisor kills is not the app's;
            // the guard sees the lifeline break and stops the app.
            .process_group(0);
        if let Some(dir) = l.dir {
            cmd.current_dir(dir);
        }
        for (k, v) in l.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", l.command.join(" ")))?;
        let lifeline = child.stdin.take();
        let mut pumps = Vec::new();
        let streams: [(Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, bool); 2] = [
            (child.stdout.take().map(|s| Box::new(s) as _), false),
            (child.stderr.take().map(|s| Box::new(s) as _), true),
        ];
        for (stream, is_err) in streams {
            let Some(stream) = stream else { continue };
            let prefix = l.prefix.clone();
            let sink = l.sink.clone();
            pumps.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.line(&format!("{prefix}{line}"), is_err);
                }
            }));
        }
        Ok(Guarded {
            child,
            lifeline,
            pumps,
            pid: None,
        })
    }

    /// The started process's pid: the guard's child, which appears a moment
    /// after the guard starts.
    pub async fn find_pid(&mut self) -> Option<u32> {
        let guard = self.child.id()?;
        for _ in 0..100 {
            if let Some(&pid) = super::guard::children(guard).first() {
                self.pid = Some(pid);
                return self.pid;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Waits for the process to end; its exit status as a shell reports it
    /// (128 + signal for a signal).
    pub async fn wait(&mut self) -> Result<i32> {
        let status = self.child.wait().await.context("waiting for a process")?;
        // Everything it wrote is shown before anyone reports its end; a
        // grandchild holding the pipe open must not hang us.
        let drain = async {
            for p in self.pumps.drain(..) {
                let _ = p.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        Ok(super::run::exit_code(status))
    }

    /// SIGTERM to the process group, then after `grace` the lifeline is cut
    /// and the guard kills what is left. Returns the exit status.
    pub async fn terminate(&mut self, grace: Duration) -> i32 {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
            if let Ok(Ok(code)) = tokio::time::timeout(grace, self.wait()).await {
                return code;
            }
        }
        self.lifeline.take();
        match tokio::time::timeout(Duration::from_secs(3), self.wait()).await {
            Ok(Ok(code)) => code,
            _ => {
                let _ = self.child.kill().await;
                137
            }
        }
    }
}
