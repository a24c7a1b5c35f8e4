//! `tandem run`, `run -f`, `list`, `stop` and `init` as a user runs them.

mod common;

use common::{BIN, Output, TempDir, free_port, http};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tandem(home: &TempDir) -> Command {
    let mut c = Command::new(BIN);
    c.env("TANDEM_HOME", home.path())
        .env_remove("DAPR_API_TOKEN")
        .env_remove("APP_API_TOKEN");
    c
}

/// The HTTP port from `Starting Dapr with id X. HTTP Port: N. gRPC Port: M`.
fn http_port_announced(out: &Output) -> u16 {
    let text = out.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("Starting Dapr with id"))
        .unwrap_or_else(|| panic!("{text}"));
    common::port_in(line, "HTTP Port")
}

fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn run_gives_the_app_its_environment_and_its_exit_status() {
    let home = TempDir::new("run-home");
    let out = tandem(&home)
        .args(["run", "--app-id", "envapp", "--", "sh", "-c"])
        .arg("echo id=$APP_ID http=$DAPR_HTTP_PORT grpc=$DAPR_GRPC_PORT metrics=$DAPR_METRICS_PORT proto=$APP_PROTOCOL; curl -s -o /dev/null -w 'health=%{http_code}\\n' http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/healthz/outbound; exit 3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status is the app's:\n{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("== APP == id="))
        .unwrap_or_else(|| panic!("{stdout}"));
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("id"), "envapp");
    assert!(
        stdout.contains(&format!(
            "Starting Dapr with id envapp. HTTP Port: {}. gRPC Port: {}",
            field("http"),
            field("grpc")
        )),
        "{stdout}"
    );
    assert_eq!(field("proto"), "http");
    for k in ["http", "grpc", "metrics"] {
        let port: u16 = field(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} port in {line}"));
        assert!(
            port > 1024 && port != 3500 && port != 50001,
            "random free port: {line}"
        );
    }
    assert!(
        stdout.contains("== APP == health=204"),
        "the sidecar serves before the app starts:\n{stdout}"
    );
    assert!(
        stdout.contains("You're up and running! Both Dapr and your app logs will appear here."),
        "{stdout}"
    );
}

#[test]
fn run_with_fixed_ports_and_an_app_port_waits_for_the_app() {
    let home = TempDir::new("run-fixed");
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    let mut child = tandem(&home)
        .args([
            "run",
            "--app-id",
            "web",
            "--dapr-http-port",
            &hp.to_string(),
            "--dapr-grpc-port",
            &gp.to_string(),
        ])
        .args([
            "--app-port",
            &ap.to_string(),
            "--",
            "python3",
            "-m",
            "http.server",
            &ap.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Output::capture(child.stdout.take().unwrap());
    assert!(
        out.wait_for("You're up and running!", Duration::from_secs(20)),
        "{}",
        out.text()
    );
    assert_eq!(
        http(hp, "GET", "/v1.0/healthz", &[], b"").unwrap().status,
        204
    );
    let m = http(hp, "GET", "/v1.0/metadata", &[], b"").unwrap().json();
    assert_eq!(
        m["extended"]["appCommand"],
        format!("python3 -m http.server {ap} --bind 127.0.0.1")
    );
    assert!(
        m["extended"]["appPID"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .is_ok()
    );
    assert_eq!(m["extended"]["cliPID"], child.id().to_string());

    // list shows it; stop ends it
    let list = tandem(&home).args(["list", "-o", "json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["appId"], "web");
    assert_eq!(rows[0]["httpPort"], hp);
    assert_eq!(rows[0]["appPort"], ap);
    let table = String::from_utf8(tandem(&home).arg("list").output().unwrap().stdout).unwrap();
    assert!(table.contains("APP ID") && table.contains("web"), "{table}");

    let stop = tandem(&home)
        .args(["stop", "--app-id", "web"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("run ends after stop");
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ap)).is_err(),
        "the app was stopped too"
    );
    let list = tandem(&home).args(["list", "-o", "json"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");

    let stop = tandem(&home)
        .args(["stop", "--app-id", "web"])
        .output()
        .unwrap();
    assert!(!stop.status.success(), "stopping what does not run fails");
}

#[test]
fn sigterm_to_run_stops_app_and_sidecar() {
    let home = TempDir::new("run-term");
    let mut child = tandem(&home)
        .args(["run", "--app-id", "sleeper", "--", "sleep", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Output::capture(child.stdout.take().unwrap());
    assert!(out.wait_for("You're up and running!", Duration::from_secs(20)));
    let hp = http_port_announced(&out);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_exit(&mut child, Duration::from_secs(15)).is_some(),
        "run exits on SIGTERM"
    );
    assert!(
        http(hp, "GET", "/v1.0/healthz", &[], b"").is_err(),
        "sidecar gone"
    );
}

/// Runs an app that prints its sidecar's metadata; returns what it printed.
fn metadata_seen_by_an_app(home: &TempDir) -> String {
    let out = tandem(home)
        .args([
            "run",
            "--app-id",
            "m",
            "--",
            "sh",
            "-c",
            "curl -s http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/metadata",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn init_writes_defaults_that_run_then_loads() {
    let home = TempDir::new("init");
    let out = tandem(&home).arg("init").output().unwrap();
    assert!(out.status.success());
    let file = home.path().join("components/localsecretstore.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("secretstores.local.env"));
    // edit it: run must load the dir, not the embedded copy
    std::fs::write(
        &file,
        text.replace("name: localsecretstore", "name: edited"),
    )
    .unwrap();
    let stdout = metadata_seen_by_an_app(&home);
    assert!(stdout.contains(r#""name":"edited""#), "{stdout}");
    // a second init keeps the user's edit
    tandem(&home).arg("init").output().unwrap();
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("name: edited")
    );
}

#[test]
fn run_without_resources_uses_embedded_defaults() {
    let home = TempDir::new("embedded");
    let stdout = metadata_seen_by_an_app(&home);
    assert!(stdout.contains(r#""name":"localsecretstore""#), "{stdout}");
}

#[test]
fn run_file_starts_every_app_with_its_own_sidecar() {
    let home = TempDir::new("runfile");
    let dir = TempDir::new("runfile-apps");
    dir.write("a/marker", "");
    dir.write("res/env.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: shared-env\nspec:\n  type: secretstores.local.env\n");
    let file = dir.write(
        "dapr.yaml",
        "version: 1\ncommon:\n  resourcesPath: ./res\n  env:\n    GREETING: hello\napps:\n- appID: alpha\n  appDirPath: ./a\n  command: [\"sh\", \"-c\", \"ls; echo $GREETING from $APP_ID; curl -s http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/metadata\"]\n- appID: beta\n  appDirPath: ./a\n  env:\n    GREETING: bonjour\n  command: [\"sh\", \"-c\", \"echo $GREETING from $APP_ID\"]\n",
    );
    let out = tandem(&home)
        .args(["run", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("== APP - alpha == hello from alpha"),
        "{stdout}"
    );
    assert!(
        stdout.contains("== APP - beta == bonjour from beta"),
        "app env overrides common: {stdout}"
    );
    assert!(
        stdout.contains("== APP - alpha == marker"),
        "runs in appDirPath: {stdout}"
    );
    assert!(
        stdout.contains(r#""name":"shared-env""#),
        "resourcesPath relative to the file: {stdout}"
    );

    let bad = dir.write(
        "bad.yaml",
        "version: 1\napps:\n- appDirPath: ./a\n  command: [\"true\"]\n",
    );
    let out = tandem(&home)
        .args(["run", "-f", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("every app needs `appID`"));
}

#[test]
fn run_without_an_app_is_just_the_sidecar() {
    let home = TempDir::new("solo");
    let mut child = tandem(&home)
        .args(["run", "--app-id", "solo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Output::capture(child.stdout.take().unwrap());
    assert!(
        out.wait_for(
            "You're up and running! Dapr logs will appear here.",
            Duration::from_secs(20)
        ),
        "{}",
        out.text()
    );
    let hp = http_port_announced(&out);
    assert_eq!(
        http(hp, "GET", "/v1.0/metadata", &[], b"").unwrap().json()["id"],
        "solo"
    );
    assert_eq!(
        http(hp, "POST", "/v1.0/shutdown", &[], b"").unwrap().status,
        204
    );
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("shutdown API ends the run");
    assert!(status.success());
}
