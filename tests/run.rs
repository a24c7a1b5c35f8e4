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
        .find(|l| l.starts_with("ℹ️  Starting Dapr with id"))
        .unwrap_or_else(|| panic!("{text}"));
    common::port_in(line, "HTTP Port")
}

use common::wait_exit;

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
        "version: 1\napps:\n- appID: x\n  command: [\"true\"]\n",
    );
    let out = tandem(&home)
        .args(["run", "-f", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("required field `appDirPath` is missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// How `tandem run` is killed in each case of an app-outlives-run test.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// SIGTERM to the run's process group, SIGKILL to it 200 ms later: what
    /// supervisors and test harnesses do.
    TermThenSigkillGroup,
    /// SIGKILL to the whole group at once.
    Group,
    /// SIGKILL to `tandem run` alone (an OOM kill).
    RunOnly,
}

/// The app never outlives its `tandem run`: killed any of three ways, the
/// app (started through a shell that forks, as `npm start` does) is gone
/// and its port free within a second, and a new run can take the port.
#[test]
fn an_app_never_outlives_a_killed_run() {
    use std::os::unix::process::CommandExt;
    for kill in [Kill::TermThenSigkillGroup, Kill::Group, Kill::RunOnly] {
        let home = TempDir::new("run-kill");
        let port = free_port();
        let start = |home: &TempDir| {
            let mut child = tandem(home)
                .args([
                    "run",
                    "--app-id",
                    "victim",
                    "--app-port",
                    &port.to_string(),
                    "--",
                    "sh",
                    "-c",
                ])
                // `; true` keeps the shell alive: python is a grandchild.
                .arg(format!(
                    "python3 -m http.server {port} --bind 127.0.0.1; true"
                ))
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = Output::capture(child.stdout.take().unwrap());
            assert!(
                out.wait_for("You're up and running!", Duration::from_secs(30)),
                "{kill:?}: {}",
                out.text()
            );
            (child, out)
        };
        let (mut child, _out) = start(&home);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let run = nix::unistd::Pid::from_raw(child.id() as i32);
        use nix::sys::signal::{Signal, kill as send};
        match kill {
            Kill::TermThenSigkillGroup => {
                send(group, Signal::SIGTERM).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                let _ = send(group, Signal::SIGKILL);
            }
            Kill::Group => send(group, Signal::SIGKILL).unwrap(),
            Kill::RunOnly => send(run, Signal::SIGKILL).unwrap(),
        }
        let killed_at = Instant::now();
        child.wait().unwrap();
        let mut free = false;
        while killed_at.elapsed() < Duration::from_secs(1) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                free = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            free,
            "{kill:?}: the app still holds port {port} a second later"
        );
        // A restarted run starts its app on the same port.
        let (mut again, out) = start(&home);
        assert!(
            out.text().contains("== APP == Serving HTTP"),
            "{kill:?}: {}",
            out.text()
        );
        send(
            nix::unistd::Pid::from_raw(-(again.id() as i32)),
            Signal::SIGTERM,
        )
        .unwrap();
        again.wait().unwrap();
    }
}

/// `tandem invoke`, `publish`, `list -o` and `version` with the Dapr CLI's
/// flags and lines.
#[test]
fn invoke_publish_list_and_version_as_the_dapr_cli() {
    let home = TempDir::new("cli-cmds");
    let dir = TempDir::new("cli-cmds-app");
    let port = free_port();
    let record = dir.path().join("events.txt");
    let app = dir.write(
        "app.py",
        r#"import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body, ctype="application/json"):
        self.send_response(code); self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/dapr/subscribe":
            return self.reply(200, json.dumps([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]).encode())
        self.reply(404, b"{}")
    def do_PUT(self): self.do_POST()
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/orders":
            with open(os.environ["RECORD"], "a") as f:
                f.write(json.loads(body).get("data", {}).__repr__() + "\n")
            return self.reply(200, b'{"status":"SUCCESS"}')
        if self.path.startswith("/fail"):
            return self.reply(500, b"broken on purpose", "text/plain")
        self.reply(200, json.dumps({"verb": self.command, "path": self.path, "body": body.decode(),
            "ctype": self.headers.get("content-type"), "x": self.headers.get("x-tenant")}).encode())
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
    );
    let mut child = tandem(&home)
        .args([
            "run",
            "--app-id",
            "shop",
            "--app-port",
            &port.to_string(),
            "--",
        ])
        .args(["python3", app.to_str().unwrap(), &port.to_string()])
        .env("RECORD", &record)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Output::capture(child.stdout.take().unwrap());
    assert!(
        out.wait_for("You're up and running!", Duration::from_secs(30)),
        "{}",
        out.text()
    );

    let run = |args: &[&str]| {
        let o = tandem(&home).args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // invoke: POST by default, JSON content type, body printed, then the line.
    let (code, stdout, stderr) = run(&[
        "invoke",
        "--app-id",
        "shop",
        "--method",
        "orders/new?x=1",
        "--data",
        r#"{"id":1}"#,
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let body: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(body["verb"], "POST");
    assert_eq!(body["path"], "/orders/new?x=1");
    assert_eq!(body["body"], r#"{"id":1}"#);
    assert_eq!(body["ctype"], "application/json");
    assert!(
        stdout.ends_with("✅  App invoked successfully\n"),
        "{stdout}"
    );
    // --verb, --data-file, --header
    let payload = dir.write("payload.json", r#"{"from":"file"}"#);
    let (code, stdout, _) = run(&[
        "invoke",
        "-a",
        "shop",
        "-m",
        "put-here",
        "-v",
        "PUT",
        "-f",
        payload.to_str().unwrap(),
        "-H",
        "x-tenant: acme",
    ]);
    assert_eq!(code, 0);
    let body: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            body["verb"].as_str(),
            body["body"].as_str(),
            body["x"].as_str()
        ),
        (Some("PUT"), Some(r#"{"from":"file"}"#), Some("acme"))
    );
    // errors: the app's failure, an unknown app, both data flags, a bad header
    let (code, _, stderr) = run(&["invoke", "-a", "shop", "-m", "fail"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("❌  error invoking app shop: 500") && stderr.contains("broken on purpose"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["invoke", "-a", "nobody", "-m", "x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("app ID nobody not found"), "{stderr}");
    let (code, _, stderr) = run(&[
        "invoke",
        "-a",
        "shop",
        "-m",
        "x",
        "-d",
        "1",
        "-f",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Only one of --data and --data-file allowed in the same invoke command")
    );
    let (code, _, stderr) = run(&["invoke", "-a", "shop", "-m", "x", "-H", "no-separator"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = run(&["invoke", "-a", "shop", "-m", "a b"]);
    assert_eq!(code, 1, "{stderr}");

    // publish: to the embedded pub/sub; the app's subscription receives it.
    let (code, stdout, stderr) = run(&[
        "publish",
        "--publish-app-id",
        "shop",
        "--pubsub",
        "pubsub",
        "--topic",
        "orders",
        "--data",
        r#"{"orderId":42}"#,
        "--metadata",
        r#"{"ttlInSeconds":"60"}"#,
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("✅  Event published successfully"),
        "{stdout}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&record)
        .unwrap_or_default()
        .contains("42")
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .contains("'orderId': 42")
    );
    let (code, _, stderr) = run(&[
        "publish", "-i", "shop", "-p", "nope", "-t", "orders", "-d", "{}",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Error publishing topic orders: unexpected status code 404 on publishing to orders in nope"), "{stderr}");
    let (code, _, stderr) = run(&[
        "publish", "-i", "shop", "-p", "pubsub", "-t", "orders", "-m", "not json",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Error parsing metadata as JSON"),
        "{stderr}"
    );

    // list in three shapes
    let (code, json, _) = run(&["list", "-o", "json"]);
    assert_eq!(code, 0);
    assert!(
        !json.ends_with('\n'),
        "as the Dapr CLI: no newline after the JSON"
    );
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "appId",
        "httpPort",
        "grpcPort",
        "appPort",
        "metricsEnabled",
        "command",
        "age",
        "created",
        "daprdPid",
        "cliPid",
        "appPid",
        "maxRequestBodySize",
        "httpReadBufferSize",
        "runTemplatePath",
        "appLogPath",
        "daprdLogPath",
        "runTemplateName",
    ] {
        assert!(keys.contains(&k), "{k} in {json}");
    }
    assert_eq!(rows[0]["appId"], "shop");
    assert_eq!(rows[0]["appPort"], port);
    assert_eq!(rows[0]["cliPid"], child.id());
    assert_eq!(rows[0]["maxRequestBodySize"], 4 << 20);
    assert!(rows[0]["appPid"].as_u64().unwrap() > 0);
    let (_, yaml, _) = run(&["list", "-o", "yaml"]);
    assert!(
        yaml.contains("appId: shop") && yaml.contains(&format!("appPort: {port}")),
        "{yaml}"
    );
    let (_, table, _) = run(&["list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("APP ID") && header.contains("HTTP PORT") && header.contains("CLI PID"),
        "{table}"
    );
    assert!(
        !header.contains("RUN TEMPLATE PATH"),
        "blank columns are left out: {table}"
    );
    let (code, _, stderr) = run(&["list", "-o", "xml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("An invalid output format was specified."));

    // version
    let (_, text, _) = run(&["version"]);
    assert!(
        text.starts_with("CLI version: ") && text.contains(" \nRuntime version: "),
        "{text}"
    );
    let (_, json, _) = run(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["Cli version"].is_string() && v["Runtime version"].is_string());
    let (_, text, _) = run(&["--version"]);
    assert!(text.starts_with("CLI version: "), "{text}");

    let (code, stdout, _) = run(&["stop", "shop"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("✅  app stopped successfully: shop"));
    child.wait().unwrap();
    let (_, table, _) = run(&["list"]);
    assert_eq!(table.trim(), "No Dapr instances found.");
}
