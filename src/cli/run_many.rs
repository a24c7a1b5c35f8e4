//! Carries out a run template's plan (`run_file.rs`) as the Dapr CLI does:
//! apps start one after the other, each with its own sidecar process
//! (`tandem sidecar`, so its log can go to its own file), each process
//! behind a guard. One app failing to start stops those already started.
//! Sidecar logs go to `<appDirPath>/.dapr/logs/<id>_daprd_<time>.log`, app
//! output to `<id>_app_<time>.log` and the console, unless the template
//! says otherwise.
//!
//! Unlike the Dapr CLI, the run ends by itself once every app has exited
//! (with the worst exit status): nothing is left to serve, and scripts can
//! wait for it.

use super::launch::{Guarded, Launch, Sink, failure, info};
use super::run_file::{AppPlan, Plan, Resources};
use crate::home::RunRecord;
use anyhow::{Result, anyhow};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// One started app: its sidecar, its app process, where their lines go.
struct Running {
    plan: AppPlan,
    sidecar: Guarded,
    app: Option<Guarded>,
    daprd_sink: Sink,
}

/// The ports a `tandem sidecar --ports-file` reports once it serves.
#[derive(serde::Deserialize)]
struct Ports {
    http: u16,
    grpc: u16,
    metrics: u16,
}

pub async fn run(plan: Plan, mut stop: watch::Receiver<bool>) -> Result<u8> {
    let cli_pid = std::process::id();
    let mut started: Vec<Running> = Vec::new();
    for app in plan.apps {
        info(&format!(
            "Validating config and starting app \"{}\"",
            app.app_id
        ));
        let id = app.app_id.clone();
        let start = tokio::select! {
            r = start_one(app, &plan.file, &plan.name, cli_pid) => r,
            _ = super::run::until_true(&mut stop) => Err(anyhow!("stopped by a signal while starting")),
        };
        match start {
            Ok(r) => {
                info(&format!(
                    "Started Dapr with app id \"{id}\". HTTP Port: {}. gRPC Port: {}",
                    r.plan.options.http_port(),
                    r.plan.options.grpc_port()
                ));
                info(&format!(
                    "Writing log files to directory : {}",
                    r.plan.app_dir.join(".dapr/logs").display()
                ));
                started.push(r);
            }
            Err(e) => {
                failure(&format!("Error starting Dapr and app (\"{id}\"): {e:#}"));
                shutdown(&mut started, cli_pid).await;
                return Ok(1);
            }
        }
    }

    // Wait until every app is done (its process exited, or its sidecar went
    // away) or a signal asks to stop.
    let mut codes: Vec<Option<i32>> = vec![None; started.len()];
    let by_signal = loop {
        if codes.iter().all(Option::is_some) {
            break false;
        }
        let pending = started
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| codes[*i].is_none())
            .map(|(i, r)| Box::pin(async move { (i, done(r).await) }));
        let next = futures_select(pending.collect());
        tokio::select! {
            (i, code) = next => codes[i] = Some(code),
            _ = super::run::until_true(&mut stop) => break true,
        }
    };
    if by_signal {
        println!();
        info(
            "Received signal to stop Dapr and app processes. Shutting down Dapr and app processes.",
        );
    }
    shutdown(&mut started, cli_pid).await;
    if by_signal {
        return Ok(0);
    }
    let worst = codes.into_iter().flatten().max().unwrap_or(0);
    Ok(u8::try_from(worst.clamp(0, 255)).unwrap_or(1))
}

/// The first of several futures to finish.
async fn futures_select<F: std::future::Future + Unpin>(futs: Vec<F>) -> F::Output {
    let (out, _, _) = futures_util::future::select_all(futs).await;
    out
}

/// Resolves when this app is done: its process exited (reported in its
/// sidecar's log, as the Dapr CLI does), or its sidecar ended (then the app
/// is stopped too). Returns the app's exit status.
async fn done(r: &mut Running) -> i32 {
    match r.app.as_mut() {
        Some(app) => {
            tokio::select! {
                code = app.wait() => {
                    let code = code.unwrap_or(1);
                    r.app = None;
                    if code == 0 {
                        r.daprd_sink.line("Exited App successfully", false);
                    } else {
                        r.daprd_sink.line(&format!("The App process exited with error code: {}", super::run::describe_exit(code)), false);
                    }
                    code
                }
                code = r.sidecar.wait() => {
                    let code = code.unwrap_or(1);
                    r.daprd_sink.line(&sidecar_exit_line(code), false);
                    let app_code = app.terminate(Duration::from_secs(5)).await;
                    r.app = None;
                    r.daprd_sink.line("Exited App successfully", false);
                    app_code
                }
            }
        }
        None => {
            let code = r.sidecar.wait().await.unwrap_or(1);
            r.daprd_sink.line(&sidecar_exit_line(code), false);
            0
        }
    }
}

fn sidecar_exit_line(code: i32) -> String {
    if code == 0 {
        "Exited Dapr successfully".into()
    } else {
        format!(
            "The daprd process exited with error code: {}",
            super::run::describe_exit(code)
        )
    }
}

/// Stops every started app and its sidecar, apps first.
async fn shutdown(started: &mut [Running], cli_pid: u32) {
    let stops = started.iter_mut().map(|r| {
        Box::pin(async move {
            r.daprd_sink
                .line("\ntermination signal received: shutting down", false);
            if let Some(app) = r.app.as_mut() {
                app.terminate(Duration::from_secs(5)).await;
                r.app = None;
                r.daprd_sink.line("Exited App successfully", false);
            }
            let grace = Duration::from_secs(r.plan.options.dapr_graceful_shutdown_seconds + 2);
            let code = r.sidecar.terminate(grace).await;
            // SIGTERM answered by a clean stop counts as success.
            let code = if code == 128 + 15 { 0 } else { code };
            r.daprd_sink.line(&sidecar_exit_line(code), false);
            RunRecord::remove(&r.plan.app_id, cli_pid);
        })
    });
    futures_util::future::join_all(stops).await;
}

fn timestamp() -> String {
    // UTC: the Dapr CLI uses local time; tandem has no time-zone database.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = tandem_control::clock::civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn start_one(mut plan: AppPlan, file: &Path, name: &str, cli_pid: u32) -> Result<Running> {
    let logs = plan.app_dir.join(".dapr/logs");
    let ts = timestamp();
    let daprd_log = logs.join(format!("{}_daprd_{ts}.log", plan.app_id));
    let app_log = logs.join(format!("{}_app_{ts}.log", plan.app_id));
    let daprd_sink = Sink::new(&plan.daprd_log, &daprd_log)?;
    let app_sink = if plan.command.is_empty() {
        daprd_sink.clone()
    } else {
        Sink::new(&plan.app_log, &app_log)?
    };
    let ports_file = crate::home::dir()
        .join("run")
        .join(format!(".ports-{}-{cli_pid}.json", plan.app_id));
    std::fs::create_dir_all(ports_file.parent().expect("has a parent"))?;
    let _ = std::fs::remove_file(&ports_file);
    let exe = std::env::current_exe()?.display().to_string();
    let mut command = vec![exe, "sidecar".to_string()];
    command.extend(plan.sidecar_args.iter().cloned());
    command.push("--ports-file".into());
    command.push(ports_file.display().to_string());
    if plan.resources == Resources::Defaults {
        command.push("--run-defaults".into());
    }
    let mut sidecar = Guarded::spawn(Launch {
        command: &command,
        dir: Some(&plan.app_dir),
        env: &[],
        uid: None,
        gid: None,
        prefix: String::new(),
        sink: daprd_sink.clone(),
    })?;
    let ports = loop {
        if let Ok(text) = std::fs::read(&ports_file)
            && let Ok(p) = serde_json::from_slice::<Ports>(&text)
        {
            let _ = std::fs::remove_file(&ports_file);
            break p;
        }
        if let Ok(Ok(code)) = tokio::time::timeout(Duration::from_millis(20), sidecar.wait()).await
        {
            let log = if daprd_sink.has_file() {
                format!(" (its log: {})", daprd_log.display())
            } else {
                String::new()
            };
            return Err(anyhow!(
                "the sidecar exited with status {code} before serving{log}"
            ));
        }
    };
    let sidecar_pid = sidecar.find_pid().await.unwrap_or_default();
    plan.options.dapr_http_port = Some(ports.http);
    plan.options.dapr_grpc_port = Some(ports.grpc);
    plan.options.metrics_port = Some(ports.metrics);
    let o = &plan.options;
    daprd_sink.line(
        &format!(
            "Starting Dapr with id {}. HTTP Port: {}. gRPC Port: {}",
            plan.app_id, ports.http, ports.grpc
        ),
        false,
    );
    let put = |key: &'static str, value: String| {
        let port = ports.http;
        async move {
            let path = format!("/v1.0/metadata/{key}");
            let token = std::env::var("DAPR_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let _ = tokio::task::spawn_blocking(move || {
                super::local_http(port, "PUT", &path, token.as_deref(), value.as_bytes())
            })
            .await;
        }
    };
    daprd_sink.line(&format!("Updating metadata for cliPID: {cli_pid}"), false);
    put("cliPID", cli_pid.to_string()).await;
    // What the app may read from its sidecar's metadata is there before it
    // starts; only its pid has to wait for it.
    let has_app = !plan.command.is_empty();
    put("runTemplatePath", file.display().to_string()).await;
    put("runTemplateName", name.to_string()).await;
    let app_log_path = if app_sink.has_file() && has_app {
        app_log.display().to_string()
    } else {
        String::new()
    };
    let daprd_log_path = if daprd_sink.has_file() {
        daprd_log.display().to_string()
    } else {
        String::new()
    };
    if !app_log_path.is_empty() {
        put("appLogPath", app_log_path.clone()).await;
    }
    if !daprd_log_path.is_empty() {
        put("daprdLogPath", daprd_log_path.clone()).await;
    }
    let mut app = None;
    if has_app {
        let cmd = plan.command.join(" ");
        daprd_sink.line(&format!("Updating metadata for app command: {cmd}"), false);
        put("appCommand", cmd).await;
        let env = super::run::app_env(o, &plan.env);
        let mut g = Guarded::spawn(Launch {
            command: &plan.command,
            dir: Some(&plan.app_dir),
            env: &env,
            uid: None,
            gid: None,
            prefix: format!("== APP - {} == ", plan.app_id),
            sink: app_sink.clone(),
        })?;
        if let Some(pid) = g.find_pid().await {
            daprd_sink.line(&format!("Updating metadata for appPID: {pid}"), false);
            put("appPID", pid.to_string()).await;
        }
        app = Some(g);
    } else {
        super::launch::warning(&format!(
            "No application command found for app \"{}\" present in {}",
            plan.app_id,
            file.display()
        ));
        app_sink.line("No application command present", false);
    }
    daprd_sink.line(
        "You're up and running! Dapr logs will appear here.\n",
        false,
    );
    let record = RunRecord {
        run_template_path: file.display().to_string(),
        run_template_name: name.to_string(),
        app_log_path,
        daprd_log_path,
        ..RunRecord::started(
            o,
            cli_pid,
            sidecar_pid,
            app.as_ref().and_then(|a| a.pid),
            &plan.command,
        )
    };
    if let Err(e) = record.write() {
        tracing::warn!(error = %e, "cannot record the run; `tandem list` will not show it");
    }
    Ok(Running {
        plan,
        sidecar,
        app,
        daprd_sink,
    })
}
