//! `tandem run`: starts a sidecar (in this process) and then the app, like
//! `dapr run`. Unspecified ports are free random ports; app output is
//! prefixed `== APP == `; the exit status is the app's.

use crate::home::RunRecord;
use crate::sidecar::{ResourceSource, start};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tandem_config::SidecarOptions;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub const UP_AND_RUNNING: &str =
    "You're up and running! Both Dapr and your app logs will appear here.";
/// What `dapr run` says when there is no app command.
pub const UP_AND_RUNNING_NO_APP: &str = "You're up and running! Dapr logs will appear here.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: SidecarOptions,
    /// A multi-app run template (Dapr's run file format).
    #[arg(long = "run-file", short = 'f')]
    run_file: Option<PathBuf>,
    /// Run the app as this user (and group) id — with `--transparent`, the
    /// app must not share the sidecar's uid, or its traffic is not
    /// redirected.
    #[arg(long = "app-uid")]
    app_uid: Option<u32>,
    #[arg(long = "app-gid")]
    app_gid: Option<u32>,
    /// The app's command line, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Everything needed to start one app with its sidecar.
pub struct AppSpec {
    pub options: SidecarOptions,
    pub source: ResourceSource,
    pub command: Vec<String>,
    pub dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Prefix of the app's output lines.
    pub prefix: String,
    pub run_file: Option<PathBuf>,
    /// The app's user and group ids (`--app-uid`, `--app-gid`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

pub async fn main(args: Args) -> Result<u8> {
    let options = args.options.with_env();
    super::init_logging(options.log_level, options.log_as_json);
    let stop = stop_on_signal();
    if let Some(file) = args.run_file {
        return super::run_file::run(&file, options, stop).await;
    }
    let options = resolve(options)?;
    if options.transparent && args.app_uid.is_none() {
        return Err(anyhow::anyhow!(
            "--transparent redirects every process except the sidecar's user, and the app runs as that user: pass --app-uid (and --app-gid) to run the app as another one"
        ));
    }
    let source = default_source(&options.resources_path);
    let spec = AppSpec {
        options,
        source,
        command: args.command,
        dir: None,
        env: Vec::new(),
        prefix: "== APP == ".into(),
        run_file: None,
        uid: args.app_uid,
        gid: args.app_gid,
    };
    let code = run_app(spec, stop).await?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// A watch that turns true on SIGINT/SIGTERM.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        super::sidecar::wait_for_signal().await;
        tracing::info!("signal received: stopping the app and the sidecar");
        tx.send_replace(true);
    });
    rx
}

/// Fills what `dapr run` fills: an app id, free ports, the default config.
pub fn resolve(mut o: SidecarOptions) -> Result<SidecarOptions> {
    if o.app_id.is_empty() {
        o.app_id = format!("app-{}", &uuid_hex()[..8]);
    }
    // Port 0: the sidecar binds any free port and reports the one it got,
    // so two runs starting at once can never pick the same port.
    o.dapr_http_port.get_or_insert(0);
    o.dapr_grpc_port.get_or_insert(0);
    o.metrics_port.get_or_insert(0);
    if o.config.is_none() && crate::home::default_config().is_file() {
        o.config = Some(crate::home::default_config());
    }
    Ok(o)
}

/// `--resources-path` if given, else `~/.tandem/components` if it exists,
/// else the embedded defaults.
pub fn default_source(paths: &[PathBuf]) -> ResourceSource {
    if !paths.is_empty() {
        return ResourceSource::Dirs(paths.to_vec());
    }
    let home = crate::home::components_dir();
    if home.is_dir() {
        ResourceSource::Dirs(vec![home])
    } else {
        ResourceSource::Embedded
    }
}

fn uuid_hex() -> String {
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id()) << 64
    )
    .chars()
    .rev()
    .collect()
}

/// Runs one app with its sidecar until the app exits, the sidecar is asked to
/// shut down, or `stop` fires. Returns the app's exit code.
pub async fn run_app(spec: AppSpec, mut stop: watch::Receiver<bool>) -> Result<i32> {
    let sidecar = start(spec.options.clone(), spec.source.clone()).await?;
    let rt = sidecar.runtime.clone();
    // The options as bound: random ports are known now.
    let o = rt.options.clone();
    let app_id = o.app_id.clone();
    println!(
        "Starting Dapr with id {app_id}. HTTP Port: {}. gRPC Port: {}",
        o.http_port(),
        o.grpc_port()
    );
    let cli_pid = std::process::id();
    rt.set_extended("cliPID".into(), cli_pid.to_string());
    if let Some(f) = &spec.run_file {
        rt.set_extended("runTemplatePath".into(), f.display().to_string());
    }

    if o.app_port.is_none() {
        // As `dapr run`: without an app port the app starts once the sidecar
        // is fully up.
        rt.wait_ready().await;
    }
    let mut output_pumps = Vec::new();
    let mut child = if spec.command.is_empty() {
        None
    } else {
        let (child, pumps) = spawn_app(&spec, &o)?;
        output_pumps = pumps;
        rt.set_extended("appCommand".into(), spec.command.join(" "));
        if let Some(pid) = child.id() {
            rt.set_extended("appPID".into(), pid.to_string());
        }
        Some(child)
    };
    let record = RunRecord {
        app_id: app_id.clone(),
        http_port: o.http_port(),
        grpc_port: o.grpc_port(),
        metrics_port: o.metrics_port_or_default(),
        app_port: o.app_port,
        cli_pid,
        app_pid: child.as_ref().and_then(Child::id),
        command: spec.command.join(" "),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    if let Err(e) = record.write() {
        tracing::warn!(error = %e, "cannot record the run; `tandem list` will not show it");
    }

    let mut announce = {
        let rt = rt.clone();
        let message = if child.is_some() {
            UP_AND_RUNNING
        } else {
            UP_AND_RUNNING_NO_APP
        };
        tokio::spawn(async move {
            rt.wait_ready().await;
            println!("{message}");
        })
    };

    let mut shutdown = rt.shutdown_signal();
    let code = match child.as_mut() {
        Some(c) => {
            tokio::select! {
                status = c.wait() => {
                    let status = status.context("waiting for the app")?;
                    let code = exit_code(status);
                    // Print everything the app wrote before saying it exited;
                    // a grandchild holding the pipe open must not hang us.
                    let drain = async { for p in output_pumps.drain(..) { let _ = p.await; } };
                    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                    if rt.ready() {
                        let _ = (&mut announce).await;
                    }
                    println!("Exited App successfully (status {code})");
                    code
                }
                _ = until_true(&mut shutdown) => { terminate(c).await; 0 }
                _ = until_true(&mut stop) => { terminate(c).await; 0 }
            }
        }
        None => {
            tokio::select! {
                _ = until_true(&mut shutdown) => {}
                _ = until_true(&mut stop) => {}
            }
            0
        }
    };
    announce.abort();
    rt.request_shutdown();
    sidecar.wait().await;
    RunRecord::remove(&app_id, cli_pid);
    println!("Exited Dapr successfully");
    Ok(code)
}

/// Resolves when the flag turns true (or its sender is gone).
async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(1))
}

fn spawn_app(
    spec: &AppSpec,
    o: &SidecarOptions,
) -> Result<(Child, Vec<tokio::task::JoinHandle<()>>)> {
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .env("APP_ID", &o.app_id)
        .env("DAPR_HTTP_PORT", o.http_port().to_string())
        .env("DAPR_GRPC_PORT", o.grpc_port().to_string())
        .env("DAPR_METRICS_PORT", o.metrics_port_or_default().to_string())
        .env("APP_PROTOCOL", o.app_protocol.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(port) = o.app_port {
        cmd.env("APP_PORT", port.to_string());
    }
    if o.app_channel_address != "127.0.0.1" {
        cmd.env("APP_CHANNEL_ADDRESS", &o.app_channel_address);
    }
    if let Some(dir) = &spec.dir {
        cmd.current_dir(dir);
    }
    if let Some(gid) = spec.gid.or(spec.uid) {
        cmd.gid(gid);
    }
    if let Some(uid) = spec.uid {
        cmd.uid(uid);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the app command `{}`", spec.command.join(" ")))?;
    let mut pumps = Vec::new();
    for (stream, is_err) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            false,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            true,
        ),
    ] {
        let Some(stream) = stream else { continue };
        let prefix = spec.prefix.clone();
        pumps.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if is_err {
                    eprintln!("{prefix}{line}");
                } else {
                    println!("{prefix}{line}");
                }
            }
        }));
    }
    Ok((child, pumps))
}

/// SIGTERM to the app's process group, SIGKILL after 5 s.
async fn terminate(child: &mut Child) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill().await;
}
