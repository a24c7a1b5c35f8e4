//! Transparent mode on a host of its own (a network namespace made by the
//! test, joined to an "outside" namespace by a veth pair): a plain Python
//! client that knows nothing of tandem calls `http://orders/...`; the
//! rules redirect it to its sidecar's outbound door, which finds `orders`
//! in the mesh and invokes it through the peer sidecar. Calls to hosts
//! outside the mesh, opaque TCP and a client that stays silent pass
//! through to where they were going; a connection to the door itself is
//! refused. Inbound from the other host, plaintext to the app is refused
//! by setting while a peer's connection to the internal port reaches the
//! internal listener. Removing the rules restores direct traffic.

mod common;

use common::TempDir;
use common::netns::{Netns, text};
use std::process::Child;
use std::time::{Duration, Instant};

const PROXY_UID: &str = "2102";

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Python in the app namespace; its stdout.
fn py(ns: &Netns, code: &str) -> String {
    let out = ns.run("python3", &["-c", code]);
    text(&out)
}

/// A GET from the app namespace, as a plain Python client makes it (with
/// `host` as the Host header when given): the body, or the HTTP error and
/// its body.
fn fetch(ns: &Netns, url: &str, host: Option<&str>) -> String {
    let headers = host.map_or("{}".to_string(), |h| format!("{{'Host': '{h}'}}"));
    py(
        ns,
        &format!(
            "import urllib.request, urllib.error\nr=urllib.request.Request('{url}', headers={headers})\ntry:\n  print(urllib.request.urlopen(r, timeout=5).read().decode())\nexcept urllib.error.HTTPError as e: print(e.code, e.read().decode())"
        ),
    )
}

fn wait_http(ns: &Netns, url: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    let code = format!(
        "import urllib.request\ntry:\n  urllib.request.urlopen('{url}', timeout=1); print('up')\nexcept Exception as e: print('down', e)"
    );
    while !py(ns, &code).contains("up") {
        assert!(Instant::now() < end, "{url} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP server printing the path and the caller its sidecar named.
const APP: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s %s caller=%s" % (sys.argv[1], self.path, self.headers.get("dapr-caller-app-id"))).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H).serve_forever()
"#;

/// Python that connects to the address appended (a tuple), sends a
/// request and says whether the connection was closed without an answer.
const CLOSED: &str = "import socket\ndef probe(addr):\n  c=socket.create_connection(addr,timeout=5)\n  c.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n  try:\n    d=c.recv(100)\n  except ConnectionResetError:\n    d=b''\n  print('closed without an answer' if d==b'' else 'answered %r' % d)\nprobe";

/// A TCP echo server.
const ECHO: &str = r#"
import socket, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("10.99.0.2", 7000)); l.listen()
def serve(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = l.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[test]
fn an_unchanged_app_calls_by_name_through_the_mesh() {
    let (app_ns, outside) = Netns::pair("tp", "10.99.0.50 orders\n");
    let home = TempDir::new("transparent");
    // The sidecars run as the proxy uid and write the shared registry.
    std::fs::create_dir_all(home.path().join("registry")).unwrap();
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rwx", home.path().to_str().unwrap()])
        .status();
    let h = home.path().to_str().unwrap();
    let sidecar = |app_id: &str, extra: &[&str]| {
        let mut args = vec![
            format!("--reuid={PROXY_UID}"),
            format!("--regid={PROXY_UID}"),
            "--clear-groups".into(),
            "env".into(),
            format!("TANDEM_HOME={h}"),
            common::BIN.into(),
            "sidecar".into(),
            "--app-id".into(),
            app_id.into(),
            "--log-level".into(),
            "warn".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        app_ns.spawn("setpriv", &args)
    };
    let _procs = Killed(vec![
        app_ns.spawn("python3", &["-c", APP, "orders-app", "127.0.0.1", "8081"]),
        outside.spawn("python3", &["-c", APP, "outside", "10.99.0.2", "8090"]),
        outside.spawn("python3", &["-c", ECHO]),
        sidecar(
            "orders",
            &[
                "--app-port",
                "8081",
                "--dapr-http-port",
                "3510",
                "--dapr-grpc-port",
                "50011",
                "--metrics-port",
                "9091",
                "--dapr-internal-grpc-port",
                "50002",
                "--transparent-inbound-port",
                "15006",
                "--transparent-inbound-plaintext",
                "deny",
            ],
        ),
        sidecar(
            "shop",
            &[
                "--dapr-http-port",
                "3500",
                "--dapr-grpc-port",
                "50001",
                "--metrics-port",
                "9090",
                "--transparent-outbound-port",
                "15001",
                "--protocol-detect-timeout",
                "300ms",
            ],
        ),
    ]);
    wait_http(&app_ns, "http://127.0.0.1:3500/v1.0/healthz");
    wait_http(&app_ns, "http://127.0.0.1:3510/v1.0/healthz");
    wait_http(&outside, "http://10.99.0.2:8090/ready");

    let install = app_ns.tandem(&[
        "install",
        "--proxy-uid",
        PROXY_UID,
        "--outbound-port",
        "15001",
        "--inbound-port",
        "15006",
        "--skip-inbound-ports",
        "22",
    ]);
    assert!(install.status.success(), "{}", text(&install));

    // By name: through the mesh (the callee's sidecar names the caller).
    let got = fetch(&app_ns, "http://orders/hello?x=1", None);
    assert!(got.contains("orders-app /hello?x=1 caller=shop"), "{got}");
    // The same with a Kubernetes-style name and a port in `Host`.
    let got = fetch(
        &app_ns,
        "http://10.99.0.50:8080/k8s",
        Some("orders.default.svc.cluster.local:8080"),
    );
    assert!(got.contains("orders-app /k8s caller=shop"), "{got}");

    // Not a mesh app: to the original destination, untouched.
    let got = fetch(&app_ns, "http://10.99.0.2:8090/plain", None);
    assert!(got.contains("outside /plain caller=None"), "{got}");

    // Opaque TCP, and a client that says nothing for longer than the
    // detection timeout: both reach the echo server, nothing hangs.
    let got = py(
        &app_ns,
        "import socket,time\nc=socket.create_connection(('10.99.0.2',7000),timeout=5)\nc.sendall(b'\\x00\\x01binary')\nprint('first', c.recv(100))\nd=socket.create_connection(('10.99.0.2',7000),timeout=5)\ntime.sleep(0.8)\nd.sendall(b'late words')\nprint('second', d.recv(100))\nd.shutdown(socket.SHUT_WR)\nprint('closed', d.recv(100))",
    );
    assert!(got.contains("first b'\\x00\\x01binary'"), "{got}");
    assert!(got.contains("second b'late words'"), "{got}");
    assert!(got.contains("closed b''"), "half-close passed on: {got}");

    // A connection to the door's own port is a loop: closed, not followed.
    let got = py(&app_ns, &format!("{CLOSED}(('10.99.0.2', 15001))"));
    assert!(got.contains("closed without an answer"), "{got}");

    // Inbound, from the other host: plaintext to the app's port is
    // refused (the setting says deny) ...
    let got = py(&outside, &format!("{CLOSED}(('10.99.0.1', 8081))"));
    assert!(
        got.contains("closed without an answer"),
        "{got}\n{}\n{}",
        text(&app_ns.run("iptables", &["-t", "nat", "-L", "-v", "-n"])),
        text(&app_ns.run("ss", &["-ltnp"]))
    );
    // ... while a peer sidecar's connection to the internal port reaches
    // the internal listener (an HTTP/2 server: SETTINGS comes back).
    let got = py(
        &outside,
        "import socket\nc=socket.create_connection(('10.99.0.1',50002),timeout=5)\nc.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\\x00\\x00\\x00\\x04\\x00\\x00\\x00\\x00\\x00')\nd=c.recv(9)\nprint('frame type', d[3] if len(d)>3 else None)",
    );
    assert!(got.contains("frame type 4"), "{got}");

    // The caller's sidecar counted the invocations it made.
    let metrics = fetch(&app_ns, "http://127.0.0.1:9090/metrics", None);
    assert!(
        metrics.contains("dapr_service_invocation_req_sent_total{app_id=\"shop\",dest_app_id=\"orders\",type=\"http\"} 2"),
        "{metrics}"
    );

    // Without the rules, the name goes where DNS says: nowhere.
    let rm = app_ns.tandem(&["remove"]);
    assert!(rm.status.success(), "{}", text(&rm));
    let got = py(
        &app_ns,
        "import urllib.request\ntry:\n  urllib.request.urlopen('http://orders/hello', timeout=2); print('reached')\nexcept Exception as e: print('direct', e)",
    );
    assert!(got.contains("direct"), "{got}");
}

/// `tandem run --transparent`: the rules go in when the sidecar starts
/// (its own uid excluded), the app — run as another user — calls the mesh
/// by name without knowing it, and the rules come out when it ends.
#[test]
fn run_transparent_sets_up_and_cleans_up_the_rules() {
    let (app_ns, _outside) = Netns::pair("tprun", "10.99.0.50 orders\n");
    let home = TempDir::new("transparent-run");
    let h = home.path().to_str().unwrap();
    let _procs = Killed(vec![
        app_ns.spawn("python3", &["-c", APP, "orders-app", "127.0.0.1", "8081"]),
        app_ns.spawn(
            "env",
            &[
                &format!("TANDEM_HOME={h}"),
                common::BIN,
                "sidecar",
                "--app-id",
                "orders",
                "--app-port",
                "8081",
                "--dapr-http-port",
                "3510",
                "--dapr-grpc-port",
                "50011",
                "--metrics-port",
                "9091",
            ],
        ),
    ]);
    wait_http(&app_ns, "http://127.0.0.1:3510/v1.0/healthz");

    // Without another user for the app, transparent mode would redirect
    // nothing: refused with what to do.
    let refused = app_ns
        .command("env")
        .args([
            &format!("TANDEM_HOME={h}"),
            common::BIN,
            "run",
            "--app-id",
            "shop",
            "--transparent",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(text(&refused).contains("--app-uid"), "{}", text(&refused));

    let client = "import urllib.request\nprint(urllib.request.urlopen('http://orders/by-name', timeout=5).read().decode())";
    let run = app_ns
        .command("env")
        .args([
            &format!("TANDEM_HOME={h}"),
            common::BIN,
            "run",
            "--app-id",
            "shop",
            "--transparent",
            "--app-uid",
            "2103",
            "--dapr-http-port",
            "3500",
            "--dapr-grpc-port",
            "50001",
            "--metrics-port",
            "9090",
            "--",
            "python3",
            "-c",
            client,
        ])
        .output()
        .unwrap();
    let out = text(&run);
    assert!(run.status.success(), "{out}");
    assert!(
        out.contains("== APP == orders-app /by-name caller=shop"),
        "{out}"
    );
    assert_eq!(
        app_ns.saved(),
        "",
        "the rules are gone with the sidecar:\n{out}"
    );
}
