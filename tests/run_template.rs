//! `tandem run -f` as the Dapr quickstarts use it: a folder holding a
//! `dapr.yaml`, app-level paths relative to each `appDirPath`, the
//! `.dapr/resources` convention, the log destinations and files, every
//! template field, the Dapr CLI's lines, `stop -f`, and templates with
//! mistakes (refused before anything starts, naming file, line and field).

mod common;

use common::{BIN, Output, TempDir, free_port};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tandem(home: &TempDir) -> Command {
    let mut c = Command::new(BIN);
    c.env("TANDEM_HOME", home.path())
        .env_remove("DAPR_API_TOKEN")
        .env_remove("APP_API_TOKEN");
    c
}

const ENV_COMPONENT: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: NAME\nspec:\n  type: secretstores.local.env\n";

fn env_component(name: &str) -> String {
    ENV_COMPONENT.replace("NAME", name)
}

/// An app command that prints its environment and its sidecar's metadata
/// (one line each, for the test to pick apart).
const SHOW: &str = "echo env id=$APP_ID http=$DAPR_HTTP_PORT grpc=$DAPR_GRPC_PORT metrics=$DAPR_METRICS_PORT proto=$APP_PROTOCOL appport=$APP_PORT chan=$APP_CHANNEL_ADDRESS greeting=$GREETING; echo meta $(curl -s http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/metadata)";

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with `{needle}` in:\n{text}"))
}

fn meta_of(stdout: &str, app: &str) -> serde_json::Value {
    let line = line_with(stdout, &format!("== APP - {app} == meta "));
    let json = line.split_once(" meta ").unwrap().1;
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn field(line: &str, k: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .unwrap_or_default()
        .to_string()
}

fn logs_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(".dapr/logs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_log(dir: &std::path::Path, kind: &str) -> String {
    let name = logs_in(dir)
        .into_iter()
        .find(|n| n.contains(kind))
        .unwrap_or_else(|| panic!("no {kind} log in {}", dir.display()));
    std::fs::read_to_string(dir.join(".dapr/logs").join(name)).unwrap()
}

#[test]
fn run_f_on_a_folder_resolves_app_paths_from_each_app_dir_and_writes_logs() {
    let home = TempDir::new("tpl-home");
    let root = TempDir::new("tpl");
    // The quickstarts' layout: a shared components folder two levels up.
    root.write("components/shared.yaml", &env_component("shared-env"));
    root.write(
        "tutorial/lang/own/.dapr/resources/own.yaml",
        &env_component("own-env"),
    );
    root.write(
        "tutorial/lang/common-res/common.yaml",
        &env_component("common-env"),
    );
    root.write("tutorial/lang/third/cfg/config.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec: {}\n");
    std::fs::create_dir_all(root.path().join("tutorial/lang/shared")).unwrap();
    let http = free_port();
    root.write(
        "tutorial/lang/dapr.yaml",
        &format!(
            "version: 1\nname: quick\ncommon:\n  resourcesPath: ./common-res\n  env:\n    GREETING: hello\napps:\n\
\x20 - appID: shared\n    appDirPath: ./shared/\n    resourcesPath: ../../../components\n    daprHTTPPort: {http}\n    command: [\"sh\", \"-c\", \"{SHOW}\"]\n\
\x20 - appID: own\n    appDirPath: ./own\n    appLogDestination: file\n    daprdLogDestination: console\n    env:\n      GREETING: bonjour\n    command: [\"sh\", \"-c\", \"{SHOW}\"]\n\
\x20 - appDirPath: ./third\n    configFilePath: cfg/config.yaml\n    appLogDestination: console\n    daprdLogDestination: fileAndConsole\n    command: [\"sh\", \"-c\", \"{SHOW}\"]\n"
        ),
    );
    // `tandem run -f .` from the template's folder, as the quickstarts say.
    let out = tandem(&home)
        .current_dir(root.path().join("tutorial/lang"))
        .args(["run", "-f", ".", "--app-port", "9999"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let dir = |d: &str| std::fs::canonicalize(root.path().join("tutorial/lang").join(d)).unwrap();

    // The Dapr CLI's lines, in its order, for each app.
    for app in ["shared", "own", "third"] {
        let v = stdout
            .find(&format!("ℹ️  Validating config and starting app \"{app}\""))
            .unwrap_or_else(|| panic!("{stdout}"));
        let s = stdout
            .find(&format!(
                "ℹ️  Started Dapr with app id \"{app}\". HTTP Port: "
            ))
            .unwrap_or_else(|| panic!("{stdout}"));
        let w = stdout
            .find(&format!(
                "ℹ️  Writing log files to directory : {}",
                dir(app).join(".dapr/logs").display()
            ))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(v < s && s < w, "{stdout}");
    }
    assert!(
        stdout.contains(&format!(
            "Started Dapr with app id \"shared\". HTTP Port: {http}. gRPC Port: "
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("⚠  The following flags are ignored when using --run-file and should be configured in the run file instead: app-port"),
        "{stdout}"
    );

    // Resources: the app's own path (relative to its appDirPath), then
    // `.dapr/resources`, then common's (relative to the template).
    let names = |app: &str| -> Vec<String> {
        meta_of(&stdout, app)["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    // `own` writes its app output to the file only.
    assert!(!stdout.contains("== APP - own =="), "{stdout}");
    assert_eq!(names("shared"), ["shared-env"]);
    assert_eq!(names("third"), ["common-env"]);
    let own_app_log = read_log(&dir("own"), "_app_");
    let own_meta: serde_json::Value = serde_json::from_str(
        line_with(&own_app_log, "== APP - own == meta ")
            .split_once(" meta ")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(own_meta["components"][0]["name"], "own-env");
    assert!(
        own_app_log.contains("greeting=bonjour"),
        "app env wins: {own_app_log}"
    );

    // appID defaults to the folder's name; env from common.
    let third_env = line_with(&stdout, "== APP - third == env ");
    assert_eq!(field(third_env, "id"), "third");
    assert_eq!(field(third_env, "greeting"), "hello");

    // Log files: default app fileAndConsole + daprd file; `own`: app file,
    // daprd console; `third`: app console, daprd fileAndConsole.
    let shared_logs = logs_in(&dir("shared"));
    assert_eq!(shared_logs.len(), 2, "{shared_logs:?}");
    assert!(
        shared_logs[0].starts_with("shared_app_") && shared_logs[1].starts_with("shared_daprd_")
    );
    let stamp = shared_logs[0]
        .trim_start_matches("shared_app_")
        .trim_end_matches(".log");
    assert!(
        stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{stamp}"
    );
    assert!(read_log(&dir("shared"), "_app_").contains("== APP - shared == env id=shared"));
    let daprd = read_log(&dir("shared"), "_daprd_");
    assert!(daprd.contains("Starting Dapr with id shared."), "{daprd}");
    assert!(
        daprd.contains("You're up and running! Dapr logs will appear here."),
        "{daprd}"
    );
    assert!(
        daprd.contains("Updating metadata for app command: sh -c"),
        "{daprd}"
    );
    assert!(daprd.contains("dapr APIs are serving"), "{daprd}");
    assert!(
        !stdout.contains("Starting Dapr with id shared."),
        "daprd log is not on the console: {stdout}"
    );
    assert_eq!(logs_in(&dir("own")).len(), 1, "own: app file only");
    assert!(
        stdout.contains("Starting Dapr with id own.")
            || stderr.contains("Starting Dapr with id own.")
    );
    assert_eq!(logs_in(&dir("third")).len(), 1, "third: daprd file only");
    assert!(read_log(&dir("third"), "_daprd_").contains("Starting Dapr with id third."));
    assert!(stdout.contains("Starting Dapr with id third."), "{stdout}");

    // The metadata the Dapr CLI writes, which `dapr list` and users read.
    let m = meta_of(&stdout, "shared");
    let tpl = std::fs::canonicalize(root.path().join("tutorial/lang/dapr.yaml")).unwrap();
    assert_eq!(m["extended"]["runTemplatePath"], tpl.display().to_string());
    assert_eq!(m["extended"]["runTemplateName"], "quick");
    assert!(
        m["extended"]["appLogPath"]
            .as_str()
            .unwrap()
            .contains("/shared/.dapr/logs/shared_app_")
    );
    assert!(
        m["extended"]["daprdLogPath"]
            .as_str()
            .unwrap()
            .contains("/shared/.dapr/logs/shared_daprd_")
    );
    assert!(
        m["extended"]["cliPID"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .is_ok()
    );
}

/// Every field of the run-template format has an effect the app or its
/// sidecar can show; this template sets each on some app.
#[test]
fn every_template_field_reaches_the_sidecar_or_the_app() {
    let home = TempDir::new("tplf-home");
    let root = TempDir::new("tplf");
    root.write("res/env.yaml", &env_component("env"));
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    let (h, g, m, i, ap) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // `a`: ports, protocol, channel address, concurrency, health, sizes
    // (the sidecar reports them in metadata); `b`: the 1.14 size fields,
    // log level and API logging (its log shows them); `c`: appSSL.
    let probe = format!(
        "curl -s -o /dev/null -w 'big=%{{http_code}}\\n' -X POST -H 'content-type: application/json' --data-binary @big.json http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/state/none; (exec 3<>/dev/tcp/127.0.0.1/{i} && echo internal=open) || echo internal=closed"
    );
    std::fs::write(root.path().join("a/big.json"), vec![b'1'; 3000]).unwrap();
    std::fs::write(root.path().join("b/big.json"), vec![b'1'; 1_200_000]).unwrap();
    let probe_b = "curl -s -o /dev/null -w 'big=%{http_code}\\n' -X POST -H 'content-type: application/json' --data-binary @big.json http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/state/none";
    let file = root.write(
        "dapr.yaml",
        &format!(
            "version: 1\ncommon:\n  resourcesPaths: [./res]\n  enableApiLogging: false\napps:\n\
\x20 - appID: a\n    appDirPath: a\n    appPort: {ap}\n    appProtocol: http\n    appChannelAddress: 127.0.0.1\n    daprHTTPPort: {h}\n    daprGRPCPort: {g}\n    metricsPort: {m}\n    daprInternalGRPCPort: {i}\n    appMaxConcurrency: 7\n    enableAppHealthCheck: true\n    appHealthCheckPath: /ready\n    appHealthProbeInterval: 3\n    appHealthProbeTimeout: 700\n    appHealthThreshold: 4\n    maxBodySize: 2Ki\n    readBufferSize: 8Ki\n    enableProfiling: false\n    placementHostAddress: localhost:50005\n    schedulerHostAddress: localhost:50006\n    apiListenAddresses: 127.0.0.1\n    runtimePath: /nowhere\n    containerImage: ghcr.io/x/y\n    command: [\"bash\", \"-c\", \"{SHOW}; {probe}\"]\n\
\x20 - appID: b\n    appDirPath: b\n    daprHTTPMaxRequestSize: 1\n    daprHTTPReadBufferSize: 16\n    logLevel: warn\n    enableApiLogging: true\n    command: [\"sh\", \"-c\", \"{SHOW}; {probe_b}\"]\n\
\x20 - appID: c\n    appDirPath: c\n    enableApiLogging: true\n    appProtocol: grpc\n    appSSL: true\n    command: [\"sh\", \"-c\", \"{SHOW}\"]\n",
            probe = probe.replace('"', "\\\"")
        ),
    );
    let out = tandem(&home)
        .args(["run", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let env_a = line_with(&stdout, "== APP - a == env ");
    assert_eq!(field(env_a, "http"), h.to_string());
    assert_eq!(field(env_a, "grpc"), g.to_string());
    assert_eq!(field(env_a, "metrics"), m.to_string());
    assert_eq!(field(env_a, "appport"), ap.to_string());
    assert_eq!(field(env_a, "proto"), "http");
    let meta_a = meta_of(&stdout, "a");
    let conn = &meta_a["appConnectionProperties"];
    assert_eq!(conn["port"], ap);
    assert_eq!(conn["channelAddress"], "127.0.0.1");
    assert_eq!(conn["maxConcurrency"], 7);
    assert_eq!(conn["health"]["healthCheckPath"], "/ready");
    assert_eq!(conn["health"]["healthProbeInterval"], "3s");
    assert_eq!(conn["health"]["healthProbeTimeout"], "700ms");
    assert_eq!(conn["health"]["healthThreshold"], 4);
    assert!(
        stdout.contains("== APP - a == big=413"),
        "maxBodySize 2Ki: {stdout}"
    );
    assert!(
        stdout.contains("== APP - a == internal=open"),
        "daprInternalGRPCPort: {stdout}"
    );

    assert!(
        stdout.contains("== APP - b == big=413"),
        "daprHTTPMaxRequestSize 1 (MB): {stdout}"
    );
    let daprd_b = read_log(&root.path().join("b"), "_daprd_");
    assert!(!daprd_b.contains(" INFO "), "logLevel warn: {daprd_b}");
    assert!(
        daprd_b.contains("Starting Dapr with id b."),
        "the CLI's own lines stay: {daprd_b}"
    );
    let daprd_c = read_log(&root.path().join("c"), "_daprd_");
    assert!(
        daprd_c.contains("HTTP API called") && daprd_c.contains("/v1.0/metadata"),
        "enableApiLogging: {daprd_c}"
    );
    let daprd_a = read_log(&root.path().join("a"), "_daprd_");
    assert!(
        !daprd_a.contains("HTTP API called"),
        "common enableApiLogging false: {daprd_a}"
    );

    let env_c = line_with(&stdout, "== APP - c == env ");
    assert_eq!(
        field(env_c, "proto"),
        "grpcs",
        "appSSL turns grpc into grpcs"
    );
}

/// What `tandem run -f` must refuse before it starts anything.
#[test]
fn template_mistakes_are_refused_with_file_line_and_field() {
    let home = TempDir::new("tplbad-home");
    let root = TempDir::new("tplbad");
    std::fs::create_dir_all(root.path().join("a")).unwrap();
    let p1 = free_port();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown.yaml",
            "version: 1\napps:\n  - appID: a\n    appDirPath: a\n    comand: [\"true\"]\n".into(),
            vec!["unknown.yaml:5", "comand"],
        ),
        (
            "nodir.yaml",
            "version: 1\napps:\n  - appID: a\n    command: [\"true\"]\n".into(),
            vec!["nodir.yaml:3", "appDirPath"],
        ),
        (
            "missingdir.yaml",
            "version: 1\napps:\n  - appID: a\n    appDirPath: ./nothere\n".into(),
            vec!["missingdir.yaml:3", "appDirPath", "nothere"],
        ),
        (
            "twice.yaml",
            "version: 1\napps:\n  - appID: a\n    appDirPath: a\n    command: [\"sleep\", \"30\"]\n  - appID: a\n    appDirPath: a\n    command: [\"sleep\", \"30\"]\n".into(),
            vec!["twice.yaml:6", "appID `a` is used twice"],
        ),
        (
            "port.yaml",
            format!("version: 1\napps:\n  - appID: a\n    appDirPath: a\n    daprHTTPPort: {p1}\n    command: [\"sleep\", \"30\"]\n  - appID: b\n    appDirPath: a\n    appPort: {p1}\n    command: [\"sleep\", \"30\"]\n"),
            vec!["port.yaml:7", "appPort", "daprHTTPPort of app `a`"],
        ),
        (
            "nocmd.yaml",
            "version: 1\napps:\n  - appID: a\n    appDirPath: a\n    command: [\"sleep\", \"30\"]\n  - appID: b\n    appDirPath: a\n    command: [\"no-such-program-xyz\"]\n".into(),
            vec!["nocmd.yaml:6", "no-such-program-xyz", "not found"],
        ),
        (
            "version.yaml",
            "apps:\n  - appID: a\n    appDirPath: a\n".into(),
            vec!["version.yaml:1", "version"],
        ),
        (
            "common.yaml",
            "version: 1\ncommon:\n  appPort: 3000\napps:\n  - appDirPath: a\n".into(),
            vec!["common.yaml", "appPort", "common"],
        ),
        (
            "proto.yaml",
            "version: 1\napps:\n  - appDirPath: a\n    appProtocol: smtp\n".into(),
            vec!["proto.yaml:3", "appProtocol `smtp`"],
        ),
        (
            "dest.yaml",
            "version: 1\napps:\n  - appDirPath: a\n    appLogDestination: printer\n".into(),
            vec!["dest.yaml:3", "appLogDestination `printer`"],
        ),
        (
            "size.yaml",
            "version: 1\napps:\n  - appDirPath: a\n    maxBodySize: lots\n".into(),
            vec!["size.yaml:3", "maxBodySize"],
        ),
        (
            "badtype.yaml",
            "version: 1\napps:\n  - appDirPath: a\n    appPort: [1]\n".into(),
            vec!["badtype.yaml:4"],
        ),
        ("empty.yaml", "version: 1\napps: []\n".into(), vec!["empty.yaml", "`apps` is empty"]),
    ];
    for (name, text, wants) in cases {
        let file = root.write(name, &text);
        let started = Instant::now();
        let out = tandem(&home)
            .args(["run", "-f", file.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains("❌  Error getting apps from config file"),
            "{name}: {stderr}"
        );
        for w in wants {
            assert!(stderr.contains(w), "{name}: `{w}` in {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: refused before starting"
        );
        assert!(
            !root.path().join("a/.dapr/logs").exists(),
            "{name}: nothing started"
        );
    }
    // Not a YAML file, a folder without dapr.yaml.
    let txt = root.write("run.txt", "version: 1\n");
    let out = tandem(&home)
        .args(["run", "-f", txt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a YAML file"));
    let out = tandem(&home)
        .args(["run", "-f", root.path().join("a").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a dapr.yaml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failure while starting the second app stops the first (its app and
/// sidecar), and the run exits 1.
#[test]
fn a_failed_start_stops_the_apps_already_started() {
    let home = TempDir::new("tplfail-home");
    let root = TempDir::new("tplfail");
    std::fs::create_dir_all(root.path().join("a")).unwrap();
    let (busy, first_http, app_port) = (free_port(), free_port(), free_port());
    let _taken = std::net::TcpListener::bind(("127.0.0.1", busy)).unwrap();
    let file = root.write(
        "dapr.yaml",
        &format!(
            "version: 1\napps:\n  - appID: first\n    appDirPath: a\n    daprHTTPPort: {first_http}\n    appPort: {app_port}\n    command: [\"python3\", \"-m\", \"http.server\", \"{app_port}\", \"--bind\", \"127.0.0.1\"]\n  - appID: second\n    appDirPath: a\n    daprHTTPPort: {busy}\n    command: [\"sleep\", \"30\"]\n"
        ),
    );
    let out = tandem(&home)
        .args(["run", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Started Dapr with app id \"first\""),
        "{stdout}"
    );
    assert!(
        stderr.contains("Error starting Dapr and app (\"second\")"),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", app_port)).is_err(),
        "first app stopped"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", first_http)).is_err(),
        "first sidecar stopped"
    );
    let daprd = read_log(&root.path().join("a"), "second_daprd_");
    assert!(
        daprd.contains("is another sidecar using it?") || daprd.contains("cannot listen"),
        "{daprd}"
    );
}

#[test]
fn stop_f_stops_every_app_of_the_template() {
    let home = TempDir::new("tplstop-home");
    let root = TempDir::new("tplstop");
    std::fs::create_dir_all(root.path().join("a")).unwrap();
    let (p1, p2) = (free_port(), free_port());
    root.write(
        "dapr.yaml",
        &format!(
            "version: 1\napps:\n  - appID: one\n    appDirPath: a\n    appPort: {p1}\n    command: [\"python3\", \"-m\", \"http.server\", \"{p1}\", \"--bind\", \"127.0.0.1\"]\n  - appID: two\n    appDirPath: a\n    appPort: {p2}\n    command: [\"python3\", \"-m\", \"http.server\", \"{p2}\", \"--bind\", \"127.0.0.1\"]\n"
        ),
    );
    let mut child = tandem(&home)
        .args(["run", "-f", root.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Output::capture(child.stdout.take().unwrap());
    assert!(
        out.wait_for("Started Dapr with app id \"two\"", Duration::from_secs(30)),
        "{}",
        out.text()
    );
    let list = tandem(&home).args(["list", "-o", "json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let tpl = std::fs::canonicalize(root.path().join("dapr.yaml")).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    for r in rows.as_array().unwrap() {
        assert_eq!(r["runTemplatePath"], tpl.display().to_string());
        assert_eq!(r["cliPid"], child.id());
        assert!(r["daprdPid"].as_u64().unwrap() > 0 && r["daprdPid"] != r["cliPid"]);
    }
    let stop = tandem(&home)
        .args(["stop", "-f", root.path().to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&stop.stdout);
    assert!(stop.status.success(), "{said}");
    assert!(
        said.contains("✅  Dapr and app processes stopped successfully"),
        "{said}"
    );
    assert!(
        common::wait_exit(&mut child, Duration::from_secs(15)).is_some(),
        "the run ended"
    );
    for p in [p1, p2] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "app on {p} stopped"
        );
    }
    let again = tandem(&home)
        .args(["stop", "-f", root.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("couldn't find apps with run file"));
}
