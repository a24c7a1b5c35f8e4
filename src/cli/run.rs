//! `tandem run`: starts a sidecar (in this process) and then the app, like
//! `dapr run`. Unspecified ports are free random ports; app output is
//! prefixed `== APP == `; the exit status is the app's.

use crate::home::RunRecord;
use crate::sidecar::{ResourceSource, start};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tandem_config::SidecarOptions;
use tokio::sync::watch;

pub const UP_AND_RUNNING: &str =
    "You're up and running! Both Dapr and your app logs will appear here.";
/// What `dapr run` says when there is no app command.
pub const UP_AND_RUNNING_NO_APP: &str = "You're up and running! Dapr logs will appear here.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: SidecarOptions,
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
    /// The app's user and group ids (`--app-uid`, `--app-gid`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

pub async fn main(args: Args) -> Result<u8> {
    let options = args.options.with_env();
    super::init_logging(options.log_level, options.log_as_json);
    let stop = stop_on_signal();
    if let Some(file) = args.run_file {
        let ignored = flags_beside_run_file();
        if !ignored.is_empty() {
            super::launch::warning(&format!(
                "The following flags are ignored when using --run-file and should be configured in the run file instead: {}",
                ignored.join(", ")
            ));
        }
        let plan = super::run_file::resolve_path(&file)
            .map_err(|e| ("Failed to get run file path", e))
            .and_then(|f| {
                super::run_file::plan(&f).map_err(|e| ("Error getting apps from config file", e))
            });
        return match plan {
            Ok(plan) => super::run_many::run(plan, stop).await,
            Err((what, e)) => {
                super::launch::failure(&format!("{what}: {e:#}"));
                Ok(1)
            }
        };
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
        uid: args.app_uid,
        gid: args.app_gid,
    };
    let code = run_app(spec, stop).await?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// The flags given to `tandem run` besides `-f` (which the run file's
/// settings replace), as the Dapr CLI names them in its warning.
fn flags_beside_run_file() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip_while(|a| a != "run").skip(1);
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        }
        let Some(name) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            continue;
        };
        let name = name.split('=').next().unwrap_or_default();
        if matches!(name, "f" | "run-file") {
            if !a.contains('=') {
                args.next();
            }
            continue;
        }
        if !matches!(name, "log-as-json" | "help" | "h" | "runtime-path")
            && !out.iter().any(|o| o == name)
        {
            out.push(name.to_string());
        }
    }
    out
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

/// Runs one app with its sidecar (in this process) until the app exits, the
/// sidecar is asked to shut down, or `stop` fires. Returns the app's exit
/// code. Prints the Dapr CLI's lines for a single-app `dapr run`.
pub async fn run_app(spec: AppSpec, mut stop: watch::Receiver<bool>) -> Result<i32> {
    use super::launch::{Guarded, Launch, Sink, failure, info, success};
    if let Some(program) = spec.command.first() {
        super::launch::find_program(program, spec.dir.as_deref()).with_context(|| {
            format!("cannot start the app command `{}`", spec.command.join(" "))
        })?;
    }
    let sidecar = start(spec.options.clone(), spec.source.clone()).await?;
    let rt = sidecar.runtime.clone();
    // The options as bound: random ports are known now.
    let o = rt.options.clone();
    let app_id = o.app_id.clone();
    info(&format!(
        "Starting Dapr with id {app_id}. HTTP Port: {}. gRPC Port: {}",
        o.http_port(),
        o.grpc_port()
    ));
    let cli_pid = std::process::id();
    rt.set_extended("cliPID".into(), cli_pid.to_string());

    if o.app_port.is_none() {
        // As `dapr run`: without an app port the app starts once the sidecar
        // is fully up.
        info(&format!(
            "Checking if Dapr sidecar is listening on HTTP port {}",
            o.http_port()
        ));
        info(&format!(
            "Checking if Dapr sidecar is listening on GRPC port {}",
            o.grpc_port()
        ));
        rt.wait_ready().await;
        info("Dapr sidecar is up and running.");
    }
    let mut app = match spec.command.is_empty() {
        true => None,
        false => {
            let env = app_env(&o, &spec.env);
            let mut g = Guarded::spawn(Launch {
                command: &spec.command,
                dir: spec.dir.as_deref(),
                env: &env,
                uid: spec.uid,
                gid: spec.gid,
                prefix: spec.prefix.clone(),
                sink: Sink::console(),
            })?;
            if let Some(pid) = g.find_pid().await {
                info(&format!("Updating metadata for appPID: {pid}"));
                rt.set_extended("appPID".into(), pid.to_string());
            }
            info(&format!(
                "Updating metadata for app command: {}",
                spec.command.join(" ")
            ));
            rt.set_extended("appCommand".into(), spec.command.join(" "));
            Some(g)
        }
    };
    // The sidecar runs in this process: it is the daprd of the record.
    let record = RunRecord::started(
        &o,
        cli_pid,
        cli_pid,
        app.as_ref().and_then(|a| a.pid),
        &spec.command,
    );
    if let Err(e) = record.write() {
        tracing::warn!(error = %e, "cannot record the run; `tandem list` will not show it");
    }

    let mut announce = {
        let rt = rt.clone();
        let message = if app.is_some() {
            UP_AND_RUNNING
        } else {
            UP_AND_RUNNING_NO_APP
        };
        tokio::spawn(async move {
            rt.wait_ready().await;
            success(&format!("{message}\n"));
        })
    };

    let mut shutdown = rt.shutdown_signal();
    let code = match app.as_mut() {
        Some(a) => {
            tokio::select! {
                code = a.wait() => {
                    let code = code?;
                    if rt.ready() {
                        let _ = (&mut announce).await;
                    }
                    if code == 0 {
                        success("Exited App successfully");
                    } else {
                        failure(&format!("The App process exited with error code: {}", describe_exit(code)));
                    }
                    code
                }
                _ = until_true(&mut shutdown) => { a.terminate(Duration::from_secs(5)).await; 0 }
                _ = until_true(&mut stop) => {
                    info("\nterminated signal received: shutting down");
                    a.terminate(Duration::from_secs(5)).await;
                    success("Exited App successfully");
                    0
                }
            }
        }
        None => {
            tokio::select! {
                _ = until_true(&mut shutdown) => {}
                _ = until_true(&mut stop) => info("\nterminated signal received: shutting down"),
            }
            0
        }
    };
    announce.abort();
    rt.request_shutdown();
    sidecar.wait().await;
    RunRecord::remove(&app_id, cli_pid);
    success("Exited Dapr successfully");
    Ok(code)
}

/// How the Dapr CLI (Go's `exec`) names an exit: `exit status N`, or
/// `signal: killed` for a signal.
pub fn describe_exit(code: i32) -> String {
    if code > 128 {
        let name = nix::sys::signal::Signal::try_from(code - 128)
            .map(|s| match s {
                nix::sys::signal::Signal::SIGKILL => "killed".to_string(),
                nix::sys::signal::Signal::SIGTERM => "terminated".to_string(),
                nix::sys::signal::Signal::SIGINT => "interrupt".to_string(),
                other => other.as_str().to_lowercase(),
            })
            .unwrap_or_else(|_| (code - 128).to_string());
        format!("signal: {name}")
    } else {
        format!("exit status {code}")
    }
}

/// Resolves when the flag turns true (or its sender is gone).
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(1))
}

/// The app's environment as `dapr run` sets it; the template's `env` last,
/// so it wins.
pub fn app_env(o: &SidecarOptions, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("APP_ID".to_string(), o.app_id.clone()),
        ("DAPR_HTTP_PORT".into(), o.http_port().to_string()),
        ("DAPR_GRPC_PORT".into(), o.grpc_port().to_string()),
        (
            "DAPR_METRICS_PORT".into(),
            o.metrics_port_or_default().to_string(),
        ),
        ("APP_PROTOCOL".into(), o.app_protocol.as_str().to_string()),
    ];
    if let Some(port) = o.app_port {
        env.push(("APP_PORT".into(), port.to_string()));
    }
    if o.app_channel_address != "127.0.0.1" {
        env.push(("APP_CHANNEL_ADDRESS".into(), o.app_channel_address.clone()));
    }
    env.extend(extra.iter().cloned());
    env
}
