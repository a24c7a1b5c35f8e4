//! `tandem dashboard` as a user meets it: three plain Python apps under
//! `tandem run -f .` (one calling the two others, one of which fails
//! behind a circuit breaker), a fourth sidecar that needs an API token,
//! the dashboard opened in Debian's Chromium driven by Playwright
//! (`tests/dashboard/check.cjs`), screenshots kept under
//! `target/test-artifacts/dashboard/`. Around it, the dashboard's own doors
//! tried the way an attacker would.

mod common;

use common::netns::{Netns, text};
use common::{BIN, Killed, Output, TempDir, free_port};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `tandem stop -f .` in the template's folder when the test ends, passed
/// or not (no app outlives it).
struct StopAll<'a>(&'a TempDir, &'a TempDir);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .current_dir(self.0.path())
            .env("TANDEM_HOME", self.1.path())
            .args(["stop", "-f", "."])
            .output();
    }
}

fn node_modules() -> String {
    std::env::var("TANDEM_PLAYWRIGHT").unwrap_or_else(|_| {
        panic!(
            "TANDEM_PLAYWRIGHT is not set: run through scripts/test.sh, or set it to what tests/dashboard/setup.sh prints"
        )
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/dashboard")
        .join(name)
}

/// One request with the headers given verbatim (Host included).
fn raw(port: u16, head: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(format!("{head}Connection: close\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, headers.to_string(), body.to_string())
}

fn get(port: u16, path: &str) -> (u16, String, String) {
    raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
    )
}

fn overview(port: u16) -> serde_json::Value {
    let (status, _, body) = get(port, "/api/overview");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `f` holds for the dashboard's overview.
fn wait_overview(
    port: u16,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let v = overview(port);
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < end, "{what}: never seen in\n{v:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn sidecar_of<'a>(v: &'a serde_json::Value, app: &str) -> Option<&'a serde_json::Value> {
    v["sidecars"].as_array()?.iter().find(|s| s["appId"] == app)
}

/// `tandem dashboard --port 0` as the Dapr tools start it: the port is read
/// back from the Dapr CLI's line.
fn dashboard(
    home: &TempDir,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, u16, Output) {
    let mut c = Command::new(BIN);
    c.env("TANDEM_HOME", home.path())
        .env_remove("DAPR_API_TOKEN")
        .args(["dashboard", "--port", "0", "--interval", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let out = Output::capture(child.stdout.take().unwrap());
    let err = Output::capture(child.stderr.take().unwrap());
    let line = "Dapr Dashboard running on http://localhost:";
    assert!(
        out.wait_for(line, Duration::from_secs(20)),
        "the dashboard did not start: {}{}",
        out.text(),
        err.text()
    );
    let text = out.text();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {text}"));
    (child, port, out)
}

#[test]
fn the_dashboard_shows_three_apps_their_traffic_an_open_breaker_and_a_refused_reload_in_chromium() {
    let node_modules = node_modules();
    let home = TempDir::new("dash-home");
    let root = TempDir::new("dash");
    for f in ["resiliency.yaml", "statestore.yaml"] {
        std::fs::copy(
            fixture(&format!("resources/{f}")),
            root.path().join("resources").join(f),
        )
        .or_else(|_| {
            std::fs::create_dir_all(root.path().join("resources"))?;
            std::fs::copy(
                fixture(&format!("resources/{f}")),
                root.path().join("resources").join(f),
            )
        })
        .unwrap();
    }
    let mut apps = String::from("version: 1\ncommon:\n  resourcesPath: ./resources\napps:\n");
    for app in ["caller", "orders", "payments"] {
        std::fs::create_dir_all(root.path().join(app)).unwrap();
        std::fs::copy(fixture("app.py"), root.path().join(app).join("app.py")).unwrap();
        apps.push_str(&format!(
            "  - appID: {app}\n    appDirPath: ./{app}\n    appPort: {}\n    command: [\"python3\", \"app.py\", \"{app}\"]\n",
            free_port()
        ));
    }
    // A fourth app with the Python SDK: the Counter actor and workflows,
    // on its own SQLite actor state store.
    let venv = std::env::var("TANDEM_SDK_VENV").unwrap_or_else(|_| {
        panic!(
            "TANDEM_SDK_VENV is not set: run through scripts/test.sh (tests/sdk/venv.sh makes it)"
        )
    });
    std::fs::create_dir_all(root.path().join("processor")).unwrap();
    std::fs::copy(
        fixture("processor.py"),
        root.path().join("processor/processor.py"),
    )
    .unwrap();
    root.write(
        "processor/resources/actorstore.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: actorstore\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n    - name: connectionString\n      value: \"{}\"\n    - name: actorStateStore\n      value: \"true\"\n",
            root.path().join("processor.db").display()
        ),
    );
    apps.push_str(&format!(
        "  - appID: processor\n    appDirPath: ./processor\n    appPort: {}\n    resourcesPath: ./resources\n    command: [\"{venv}/bin/python\", \"processor.py\"]\n",
        free_port()
    ));
    root.write("dapr.yaml", &apps);

    // `tandem run -f .` from the template's folder, as the quickstarts do.
    let mut run = Command::new(BIN);
    run.current_dir(root.path())
        .env("TANDEM_HOME", home.path())
        .env_remove("DAPR_API_TOKEN")
        .args(["run", "-f", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = run.spawn().unwrap();
    let _stop_all = StopAll(&root, &home);
    let run_out = Output::capture(run.stdout.take().unwrap());
    let _run_err = Output::capture(run.stderr.take().unwrap());
    // A sidecar started on its own that needs an API token.
    let locked_port = free_port();
    let locked = Command::new(BIN)
        .env("TANDEM_HOME", home.path())
        .env("DAPR_API_TOKEN", "s3cret-token")
        .args([
            "sidecar",
            "--app-id",
            "locked",
            "--dapr-http-port",
            &locked_port.to_string(),
            "--dapr-grpc-port",
            &free_port().to_string(),
            "--metrics-port",
            &free_port().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Killed(vec![locked]);
    for app in ["caller", "orders", "payments"] {
        assert!(
            run_out.wait_for(
                &format!("Started Dapr with app id \"{app}\""),
                Duration::from_secs(60)
            ),
            "{}",
            run_out.text()
        );
    }
    assert!(
        run_out.wait_for("PROCESSOR READY", Duration::from_secs(90)),
        "{}",
        run_out.text()
    );
    let locked_addr = format!("127.0.0.1:{locked_port}");
    let (dash, port, _out) = dashboard(&home, &["--sidecar", &locked_addr], &[]);
    guard.0.push(dash);

    // What the page will read, checked first through its API.
    let v = wait_overview(port, "three apps read, the locked one not", |v| {
        ["caller", "orders", "payments"]
            .iter()
            .all(|a| sidecar_of(v, a).is_some_and(|s| s["readable"] == true))
            && v["sidecars"].as_array().unwrap().iter().any(|s| {
                s["address"] == locked_addr.as_str()
                    && s["readable"] == false
                    && s["problems"].to_string().contains("needs an API token")
            })
    });

    // The dashboard's doors.
    let key = sidecar_of(&v, "orders").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, headers, _) = get(port, "/");
    assert_eq!(s, 200);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
    // DNS rebinding: a page of another name reaching our port.
    let (s, _, body) = raw(
        port,
        "GET /api/overview HTTP/1.1\r\nHost: evil.example:80\r\n",
    );
    assert_eq!(s, 421, "{body}");
    // Cross-site POSTs: no custom header, or another origin.
    let reload = format!("POST /api/reload?sidecar={key} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    let (s, _, body) = raw(port, &reload);
    assert_eq!(s, 403, "{body}");
    let (s, _, body) = raw(
        port,
        &format!("{reload}x-tandem-dashboard: 1\r\nOrigin: http://evil.example\r\n"),
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    let (s, _, body) = raw(
        port,
        &format!("{reload}x-tandem-dashboard: 1\r\nOrigin: http://127.0.0.1:{port}\r\n"),
    );
    assert_eq!(s, 200, "{body}");
    // Only sidecars it found: no reading arbitrary addresses.
    for path in [
        "/api/workflows?sidecar=10.1.2.3:80".to_string(),
        "/api/workflows?sidecar=%2e%2e%2f".to_string(),
    ] {
        let (s, _, body) = get(port, &path);
        assert_eq!(s, 404, "{path}: {body}");
    }
    let (s, _, body) = raw(
        port,
        "POST /api/reload?sidecar=127.0.0.1:1 HTTP/1.1\r\nHost: localhost\r\nx-tandem-dashboard: 1\r\n",
    );
    assert_eq!(s, 404, "{body}");
    let (s, _, body) = get(port, "/api/workflows");
    assert_eq!(s, 400, "{body}");
    let (s, _, body) = get(port, &format!("/api/workflows?sidecar={key}&id="));
    assert_eq!(s, 400, "{body}");
    let (s, _, _) = get(port, "/../../etc/passwd");
    assert_eq!(s, 404);
    let (s, _, _) = raw(
        port,
        &format!("DELETE /api/overview HTTP/1.1\r\nHost: localhost:{port}\r\n"),
    );
    assert_eq!(s, 405);
    // A sidecar without an actor store lists no workflows, plainly.
    let (s, _, body) = get(port, &format!("/api/workflows?sidecar={key}"));
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("actorStateStore"), "{body}");

    // The browser: every page, the checks in check.cjs, screenshots.
    // Screenshots stay after the run: under the target directory (outside
    // the clone when CI sets CARGO_TARGET_DIR).
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("test-artifacts/dashboard");
    println!("screenshots: {}", artifacts.display());
    let out = Command::new("node")
        .arg(fixture("check.cjs"))
        .env("NODE_PATH", &node_modules)
        .env("DASHBOARD_URL", format!("http://127.0.0.1:{port}/"))
        .env("RESOURCES_DIR", root.path().join("resources"))
        .env("ARTIFACTS", &artifacts)
        .env("LOCKED", &locked_addr)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    for shot in [
        "apps",
        "traffic",
        "resilience",
        "configuration",
        "phone-traffic",
    ] {
        let png = artifacts.join(format!("{shot}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{}",
            png.display()
        );
    }

    // The reload the page showed refused is refused for the API too, and
    // the file is named.
    let v = wait_overview(port, "refusals", |v| {
        ["caller", "orders", "payments"].iter().all(|a| {
            sidecar_of(v, a).is_some_and(|s| {
                s["status"]["recentReloads"].as_array().is_some_and(|r| {
                    r.iter().any(|o| {
                        o["ok"] == false
                            && o["error"].as_str().unwrap_or("").contains("broken.yaml:")
                    })
                })
            })
        })
    });
    // Nothing was applied from the broken file: the sidecars still serve
    // generation 1 and keep calling.
    for a in ["caller", "orders", "payments"] {
        assert_eq!(sidecar_of(&v, a).unwrap()["status"]["generation"], 1);
    }

    // Given the token, the dashboard reads the locked sidecar and never
    // shows the token; a wrong one is named as refused.
    let (with_token, tport, _) = dashboard(
        &home,
        &["--sidecar", &locked_addr],
        &[("DAPR_API_TOKEN", "s3cret-token")],
    );
    guard.0.push(with_token);
    let v = wait_overview(tport, "the locked sidecar read with the token", |v| {
        sidecar_of(v, "locked").is_some_and(|s| s["readable"] == true)
    });
    assert!(
        !v.to_string().contains("s3cret"),
        "the token leaked into the overview"
    );
    let (wrong, wport, _) = dashboard(
        &home,
        &["--sidecar", &locked_addr, "--api-token", "nope"],
        &[],
    );
    guard.0.push(wrong);
    wait_overview(wport, "a wrong token named", |v| {
        v["sidecars"].as_array().unwrap().iter().any(|s| {
            s["address"] == locked_addr.as_str()
                && s["problems"]
                    .to_string()
                    .contains("refused the API token given")
        })
    });

    // A sidecar that stops leaves the dashboard (the run registry forgets it).
    let stop = Command::new(BIN)
        .current_dir(root.path())
        .env("TANDEM_HOME", home.path())
        .args(["stop", "-f", "."])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    wait_overview(port, "stopped apps gone", |v| {
        sidecar_of(v, "caller").is_none()
    });
    let _ = common::wait_exit(&mut run, Duration::from_secs(20));
    let _ = run.kill();
    let _ = run.wait();
}

/// Two hosts on one link (network namespaces): on B, `orders` with its Dapr
/// API on every address and `private` on loopback only, both with
/// `nameResolution: mdns`, and `guarded`, which needs an API token; on A,
/// `tandem dashboard --mdns --api-token …` with nothing of its own. It reads
/// `orders` across the link, names `private` as heard but not answering,
/// and does not send the token to `guarded`, known only from mDNS.
#[test]
fn the_dashboard_finds_sidecars_on_another_host_by_mdns() {
    let (host_a, host_b) = Netns::pair("dash", "");
    let (home_a, home_b) = (TempDir::new("dash-a"), TempDir::new("dash-b"));
    let config = home_b.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: mdns\n",
    );
    let app = "import http.server\nhttp.server.ThreadingHTTPServer(('127.0.0.1', 8081), http.server.SimpleHTTPRequestHandler).serve_forever()";
    let start = |id: &str, http: &str, metrics: &str, extra: &[&str], cmd: &[&str]| {
        // `guarded` needs an API token (daprd reads it from the environment).
        let token = if id == "guarded" {
            "DAPR_API_TOKEN=mesh-secret"
        } else {
            "DAPR_API_TOKEN="
        };
        host_b
            .command("env")
            .args([
                &format!("TANDEM_HOME={}", home_b.path().display()),
                token,
                BIN,
                "run",
                "--app-id",
                id,
                "--config",
                config.to_str().unwrap(),
                "--dapr-http-port",
                http,
                "--metrics-port",
                metrics,
            ])
            .args(extra)
            .arg("--")
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let everywhere = ["--dapr-listen-addresses", "0.0.0.0"];
    let orders = start(
        "orders",
        "3500",
        "9091",
        &[&["--app-port", "8081"][..], &everywhere].concat(),
        &["python3", "-c", app],
    );
    let private = start("private", "3600", "9092", &[], &["sleep", "600"]);
    // The dashboard has the token, and must not send it to an address it
    // only heard of on mDNS.
    let guarded = start("guarded", "3700", "9093", &everywhere, &["sleep", "600"]);
    let dash = host_a
        .command("env")
        .args([
            &format!("TANDEM_HOME={}", home_a.path().display()),
            BIN,
            "dashboard",
            "--mdns",
            "--port",
            "8080",
            "--interval",
            "1",
            "--api-token",
            "mesh-secret",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(vec![dash, orders, private, guarded]);

    let end = Instant::now() + Duration::from_secs(60);
    let v = loop {
        let out = host_a.run(
            "curl",
            &["-s", "-m", "5", "http://127.0.0.1:8080/api/overview"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let orders = sidecar_of(&v, "orders");
        let private = v["sidecars"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["address"] == "10.99.0.2:3600"));
        if orders.is_some_and(|o| o["readable"] == true && o["status"]["ports"]["metrics"] == 9091)
            && private.is_some_and(|p| p["problems"].to_string().contains("loopback only"))
            && v["sidecars"].as_array().is_some_and(|all| {
                all.iter().any(|s| {
                    s["address"] == "10.99.0.2:3700"
                        && s["readable"] == false
                        && s["problems"].to_string().contains("it is not sent one")
                })
            })
        {
            break v;
        }
        assert!(
            Instant::now() < end,
            "not seen across the link:\n{}\n{v:#}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let orders = sidecar_of(&v, "orders").unwrap();
    assert_eq!(orders["address"], "10.99.0.2:3500", "{v:#}");
    assert_eq!(orders["source"], "mDNS");
    // Its metrics were read across the link too (golden metrics exist).
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = host_a.run(
            "curl",
            &["-s", "-m", "5", "http://127.0.0.1:8080/api/overview"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if sidecar_of(&v, "orders").is_some_and(|o| o["golden"]["current"].is_object()) {
            break;
        }
        assert!(Instant::now() < end, "no metrics read from B: {v:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A `--sidecar` that is not an address is refused at start, naming it,
/// not ignored at every read.
#[test]
fn a_sidecar_given_without_a_port_is_refused_at_start() {
    let home = TempDir::new("dash-bad");
    for bad in ["orders-host", ":3500", "host:99999", "[fe80::1]"] {
        let out = Command::new(BIN)
            .env("TANDEM_HOME", home.path())
            .args(["dashboard", "--port", "0", "--sidecar", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: started");
        assert!(
            err.contains(&format!(
                "--sidecar {bad}: give the Dapr HTTP API's host:port"
            )),
            "{bad}: {err}"
        );
    }
}
