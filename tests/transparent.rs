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

use common::netns::{Netns, text};
use common::{Killed, TempDir};
use std::process::Child;
use std::time::{Duration, Instant};

const PROXY_UID: &str = "2102";

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

/// Waits until `probe` (Python that prints `up` or `down …`) says up in
/// `ns`.
fn wait_up(ns: &Netns, what: &str, probe: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while !py(ns, probe).contains("up") {
        assert!(Instant::now() < end, "{what} never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until something accepts connections at `addr` (`"ip", port`).
fn wait_port(ns: &Netns, addr: &str) {
    wait_up(
        ns,
        addr,
        &format!(
            "import socket\ntry:\n  socket.create_connection(({addr}), timeout=1); print('up')\nexcept Exception as e: print('down', e)"
        ),
    );
}

fn wait_http(ns: &Netns, url: &str) {
    wait_up(
        ns,
        url,
        &format!(
            "import urllib.request\ntry:\n  urllib.request.urlopen('{url}', timeout=1); print('up')\nexcept Exception as e: print('down', e)"
        ),
    );
}

/// An HTTP server printing the path and the caller its sidecar named;
/// `/flaky…` paths answer 503 twice each, then 200; `/hits/<path>` counts the
/// requests `<path>` got.
const APP: &str = r#"
import http.server, sys, collections
hits = collections.Counter()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        hits[self.path] += 1
        status = 503 if self.path.startswith("/flaky") and hits[self.path] <= 2 else 200
        if self.path.startswith("/hits/"):
            body = str(hits[self.path[5:]]).encode()
        else:
            body = ("%s %s caller=%s" % (sys.argv[1], self.path, self.headers.get("dapr-caller-app-id"))).encode()
        self.send_response(status); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H).serve_forever()
"#;

/// Python that connects to the address appended (a tuple), sends a
/// request and says whether the connection was closed without an answer.
const CLOSED: &str = "import socket\ndef probe(addr):\n  c=socket.create_connection(addr,timeout=5)\n  c.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n  try:\n    d=c.recv(100)\n  except ConnectionResetError:\n    d=b''\n  print('closed without an answer' if d==b'' else 'answered %r' % d)\nprobe";

/// A plain grpcio server (no Dapr SDK, no generated code): method
/// `/greet.Greeter/Hello` answers the raw request bytes with its name and
/// the caller its sidecar named. argv: name, listen address.
const GRPC_APP: &str = r#"
import grpc, sys
from concurrent import futures
def hello(req, ctx):
    md = dict(ctx.invocation_metadata())
    return ("%s hello %s caller=%s" % (sys.argv[1], req.decode(), md.get("dapr-caller-app-id"))).encode()
s = grpc.server(futures.ThreadPoolExecutor(4))
s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("greet.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}),))
s.add_insecure_port(sys.argv[2]); s.start(); s.wait_for_termination()
"#;

/// The Python of the SDK venv, which has grpcio (`tests/sdk/venv.sh`
/// makes it; `scripts/test.sh` runs that first and exports its path).
fn grpc_python() -> String {
    let venv = std::env::var("TANDEM_SDK_VENV").unwrap_or_else(|_| {
        format!(
            "{}/tandem/sdk-venv",
            std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!(
                "{}/.cache",
                std::env::var("HOME").unwrap_or_default()
            ))
        )
    });
    let python = format!("{venv}/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run tests/sdk/venv.sh (scripts/test.sh does)"
    );
    python
}

/// A unary call `/greet.Greeter/Hello` from a plain grpcio client in
/// `ns` to `target`: the answer, or the error.
fn grpc_hello(ns: &Netns, target: &str, name: &str) -> String {
    let code = format!(
        "import os\nos.environ['GRPC_DNS_RESOLVER']='native'\nimport grpc\nch=grpc.insecure_channel('{target}')\ntry:\n  print(ch.unary_unary('/greet.Greeter/Hello')(b'{name}', timeout=5).decode())\nexcept grpc.RpcError as e: print('error', e.code(), e.details())"
    );
    text(&ns.run(&grpc_python(), &["-c", &code]))
}

/// A TCP echo server on 10.99.0.2, at the port given.
const ECHO: &str = r#"
import socket, threading, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("10.99.0.2", int(sys.argv[1]))); l.listen()
def serve(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = l.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A sidecar in `ns` running as the proxy uid (so its own connections are
/// not redirected), with `env` besides `TANDEM_HOME`.
fn proxy_sidecar(
    ns: &Netns,
    home: &TempDir,
    env: &[String],
    app_id: &str,
    extra: &[&str],
) -> Child {
    let mut args = vec![
        format!("--reuid={PROXY_UID}"),
        format!("--regid={PROXY_UID}"),
        "--clear-groups".into(),
        "env".into(),
        format!("TANDEM_HOME={}", home.path().display()),
    ];
    args.extend(env.iter().cloned());
    args.extend(
        [
            common::BIN,
            "sidecar",
            "--app-id",
            app_id,
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Ok(dir) = std::env::var("TANDEM_TEST_LOGS") {
        args.insert(5, "TANDEM_LOG=debug,h2=info,hyper=info".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::fs::File::create(format!("{dir}/{}-{app_id}.log", ns.name)).unwrap();
        return ns
            .command("setpriv")
            .args(&args)
            .stderr(log)
            .spawn()
            .unwrap();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.spawn("setpriv", &args)
}

/// Makes `home` usable by the proxy uid.
fn open_to_proxy(home: &TempDir) {
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rwx", home.path().to_str().unwrap()])
        .status();
}

#[test]
fn an_unchanged_app_calls_by_name_through_the_mesh() {
    let (app_ns, outside) = Netns::pair("tp", "10.99.0.50 orders\n");
    let home = TempDir::new("transparent");
    // The sidecars run as the proxy uid and write the shared registry.
    std::fs::create_dir_all(home.path().join("registry")).unwrap();
    open_to_proxy(&home);
    let sidecar = |app_id: &str, extra: &[&str]| proxy_sidecar(&app_ns, &home, &[], app_id, extra);
    let procs = Killed(vec![
        app_ns.spawn("python3", &["-c", APP, "orders-app", "127.0.0.1", "8081"]),
        outside.spawn("python3", &["-c", APP, "outside", "10.99.0.2", "8090"]),
        outside.spawn("python3", &["-c", ECHO, "7000"]),
        outside.spawn(
            &grpc_python(),
            &["-c", GRPC_APP, "outside-grpc", "10.99.0.2:50061"],
        ),
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
    wait_port(&outside, "'10.99.0.2', 50061");

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

    // HTTP/2 with prior knowledge to a gRPC server outside the mesh: to
    // it, still HTTP/2, untouched.
    let got = grpc_hello(&app_ns, "10.99.0.2:50061", "outside");
    assert!(
        got.contains("outside-grpc hello outside caller=None"),
        "{got}"
    );

    // What the bad inputs below must not leave behind: open sockets in the
    // caller's sidecar (its pid is the child's: `ip netns exec`, setpriv
    // and env all exec).
    let shop_pid = procs.0[5].id();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{shop_pid}/comm"))
            .unwrap()
            .trim(),
        "tandem"
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{shop_pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();

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

    // Garbage that starts like HTTP: a 400 from the door, nothing sent on.
    let got = py(
        &app_ns,
        "import socket\nc=socket.create_connection(('10.99.0.2',8090),timeout=5)\nc.sendall(b'GET /\\x00\\x01 nonsense\\r\\n\\r\\n')\nprint(c.recv(100))",
    );
    assert!(got.contains("HTTP/1.1 400"), "{got}");
    // Bytes for a port where nothing listens: the client's connection is
    // closed, the door goes on.
    let got = py(
        &app_ns,
        "import socket\nc=socket.create_connection(('10.99.0.2',9),timeout=5)\nc.sendall(b'\\x00\\x01')\ntry: print('got', c.recv(100))\nexcept ConnectionResetError: print('got reset')",
    );
    assert!(
        got.contains("got b''") || got.contains("got reset"),
        "{got}"
    );
    // An HTTP request there: a 502 that says why.
    let got = py(&app_ns, &format!("{CLOSED}(('10.99.0.2', 9))"));
    assert!(got.contains("502 Bad Gateway"), "{got}");
    let got = fetch(&app_ns, "http://orders/still-here", None);
    assert!(got.contains("orders-app /still-here"), "{got}");
    // Every connection above is over: no socket left open.
    let end = Instant::now() + Duration::from_secs(5);
    while fds() > before {
        assert!(
            Instant::now() < end,
            "the caller's sidecar holds {} descriptors, {before} before the bad inputs",
            fds()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

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
        metrics.contains("dapr_service_invocation_req_sent_total{app_id=\"shop\",dest_app_id=\"orders\",type=\"http\"} 3"),
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

/// Records every frame on interface `v1` (length-prefixed) into the file
/// given, until killed; the file exists once it listens.
const CAPTURE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3)); s.bind(("v1", 0))
out = open(sys.argv[1], "wb")
while True:
    d = s.recv(65535)
    out.write(len(d).to_bytes(4, "big") + d); out.flush()
"#;

/// TCP segments in a capture: (source port, destination port, payload).
fn segments(capture: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= capture.len() {
        let n = u32::from_be_bytes(capture[at..at + 4].try_into().unwrap()) as usize;
        let frame = &capture[at + 4..(at + 4 + n).min(capture.len())];
        at += 4 + n;
        // Ethernet, IPv4, TCP.
        if frame.len() < 34 || frame[12..14] != [8, 0] || frame[23] != 6 {
            continue;
        }
        let ip = &frame[14..];
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let tcp = &ip[(ip[0] & 0xf) as usize * 4..total.min(ip.len())];
        if tcp.len() < 20 {
            continue;
        }
        let data = &tcp[((tcp[12] >> 4) as usize * 4).min(tcp.len())..];
        out.push((
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
            data.to_vec(),
        ));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Two hosts, each an unchanged app beside its sidecar in transparent
/// mode (both doors, rules installed), mTLS from a shared CA, static name
/// resolution, a collector on the callee's host. A plain Python client on
/// host A calls `http://orders/...` and opens plain TCP to host B; on the
/// wire (captured on B's interface) there is only TLS to B's internal
/// port. The callee's resiliency policy retries a flaky answer and trips
/// the breaker when the app dies; both hops reach the collector as one
/// trace; access control governs tunnels by port.
#[test]
fn two_hosts_speak_only_mtls_and_keep_their_policies() {
    let (host_a, host_b) = Netns::pair("tp2", "10.99.0.2 orders greeter\n");
    let home = TempDir::new("transparent-2h");
    let ca = home.path().join("ca");
    let init = std::process::Command::new(common::BIN)
        .args(["ca", "init", "--dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    let spans = home.path().join("spans.lines");
    let capture = home.path().join("capture.bin");
    let config = |extra: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: static\n    configuration:\n      apps:\n        orders: [\"10.99.0.2:50002\"]\n        greeter: [\"10.99.0.2:50003\"]\n        shop: [\"10.99.0.1:50012\"]\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 10.99.0.2:4318\n      isSecure: false\n      protocol: http\n{extra}"
        )
    };
    // One Configuration for all: whichever sidecar on B a tunnel to B's
    // address goes through denies shop port 7001.
    let shared_config = home.write(
        "config.yaml",
        &config(
            "  accessControl:\n    defaultAction: allow\n    policies:\n    - appId: shop\n      defaultAction: allow\n      operations:\n      - name: /tcp/7001\n        httpVerb: ['*']\n        action: deny\n",
        ),
    );
    let resources = home.path().join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(
        resources.join("resiliency.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      thrice:\n        policy: constant\n        duration: 20ms\n        maxRetries: 3\n    circuitBreakers:\n      fuse:\n        maxRequests: 1\n        timeout: 30s\n        trip: consecutiveFailures >= 4\n  targets:\n    apps:\n      orders:\n        retry: thrice\n        circuitBreaker: fuse\n",
    )
    .unwrap();
    open_to_proxy(&home);
    let env = [format!("TANDEM_CA_DIR={}", ca.display())];
    let doors = |internal: &'static str, config: &std::path::Path| {
        vec![
            "--enable-mtls".to_string(),
            "--config".into(),
            config.to_str().unwrap().into(),
            "--resources-path".into(),
            resources.to_str().unwrap().into(),
            "--dapr-internal-grpc-port".into(),
            internal.into(),
            "--transparent-outbound-port".into(),
            "15001".into(),
            "--transparent-inbound-port".into(),
            "15006".into(),
            "--transparent-inbound-plaintext".into(),
            "deny".into(),
            "--protocol-detect-timeout".into(),
            "200ms".into(),
        ]
    };
    let mut orders_args = doors("50002", &shared_config);
    orders_args.extend(["--app-port".into(), "8081".into()]);
    let orders_args: Vec<&str> = orders_args.iter().map(String::as_str).collect();
    let shop_args = doors("50012", &shared_config);
    let shop_args: Vec<&str> = shop_args.iter().map(String::as_str).collect();
    let mut procs = Killed(vec![
        host_b.spawn("python3", &["-c", APP, "orders-app", "127.0.0.1", "8081"]),
        host_b.spawn("python3", &["-c", APP, "b-other", "10.99.0.2", "8090"]),
        host_b.spawn("python3", &["-c", ECHO, "7000"]),
        host_b.spawn("python3", &["-c", ECHO, "7001"]),
        host_b.spawn(
            "python3",
            &[
                "-c",
                common::otlp::PYTHON_COLLECTOR,
                spans.to_str().unwrap(),
                "10.99.0.2",
                "4318",
            ],
        ),
        host_b.spawn(
            &grpc_python(),
            &["-c", GRPC_APP, "greeter-app", "127.0.0.1:50051"],
        ),
        host_b.spawn(
            &grpc_python(),
            &["-c", GRPC_APP, "b-grpc", "10.99.0.2:50061"],
        ),
        proxy_sidecar(&host_b, &home, &env, "orders", &orders_args),
        // A second app on B, gRPC, without doors of its own (B's inbound
        // door is orders'; its internal port is skipped by B's rules).
        proxy_sidecar(
            &host_b,
            &home,
            &env,
            "greeter",
            &[
                "--enable-mtls",
                "--config",
                shared_config.to_str().unwrap(),
                "--app-protocol",
                "grpc",
                "--app-port",
                "50051",
                "--dapr-internal-grpc-port",
                "50003",
                "--dapr-http-port",
                "3501",
                "--dapr-grpc-port",
                "50005",
                "--metrics-port",
                "9095",
            ],
        ),
        proxy_sidecar(&host_a, &home, &env, "shop", &shop_args),
    ]);
    wait_http(&host_a, "http://127.0.0.1:3500/v1.0/healthz");
    wait_http(&host_b, "http://127.0.0.1:3500/v1.0/healthz");
    wait_http(&host_b, "http://127.0.0.1:8081/ready");
    wait_http(&host_b, "http://10.99.0.2:8090/ready");
    wait_http(&host_b, "http://127.0.0.1:3501/v1.0/healthz");
    wait_port(&host_b, "'127.0.0.1', 50051");
    wait_port(&host_b, "'10.99.0.2', 50061");
    for (ns, skip) in [(&host_a, "22"), (&host_b, "4318,50003")] {
        let install = ns.tandem(&[
            "install",
            "--proxy-uid",
            PROXY_UID,
            "--outbound-port",
            "15001",
            "--inbound-port",
            "15006",
            "--skip-inbound-ports",
            skip,
        ]);
        assert!(install.status.success(), "{}", text(&install));
    }
    procs
        .0
        .push(host_b.spawn("python3", &["-c", CAPTURE, capture.to_str().unwrap()]));
    let end = Instant::now() + Duration::from_secs(5);
    while !capture.exists() {
        assert!(Instant::now() < end, "the capture never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    // By name, from an app that knows nothing of the mesh.
    let got = fetch(&host_a, "http://orders/hello-secret", None);
    assert!(
        got.contains("orders-app /hello-secret caller=shop"),
        "{got}"
    );
    // A flaky answer is retried by the callee's policy: the client sees
    // only the success, the app was asked three times.
    let got = fetch(&host_a, "http://orders/flaky", None);
    assert!(got.contains("orders-app /flaky"), "{got}");
    assert_eq!(fetch(&host_a, "http://orders/hits/flaky", None).trim(), "3");
    // A plain grpcio client calling by name: proxied to greeter's gRPC
    // server through both sidecars.
    let got = grpc_hello(&host_a, "greeter:50051", "grpc-secret");
    assert!(
        got.contains("greeter-app hello grpc-secret caller=shop"),
        "{got}"
    );
    // gRPC to another port of B's host by address: HTTP/2 in the tunnel.
    let got = grpc_hello(&host_a, "10.99.0.2:50061", "tunnelled-grpc");
    assert!(
        got.contains("b-grpc hello tunnelled-grpc caller=None"),
        "{got}"
    );
    // HTTP to another port of B's host by address: a stream on the pooled
    // mTLS connection to B's sidecar, which delivers it to the address —
    // under the same pipeline as a call by name (canonical path, policy,
    // span, metrics), and judged as a tunnel to that port: the port
    // access control denies to shop is refused with a 403 that says so.
    let got = fetch(&host_a, "http://10.99.0.2:8090/by-address", None);
    assert!(got.contains("b-other /by-address caller=None"), "{got}");
    let got = fetch(&host_a, "http://10.99.0.2:7001/by-address", None);
    assert!(got.starts_with("403"), "{got}");
    assert!(got.contains("/tcp/7001"), "{got}");
    let got = fetch(&host_a, "http://10.99.0.2:8090/x/%2e%2e/admin", None);
    assert!(got.starts_with("400"), "{got}");
    // Plain TCP to B's host: tunnelled; a port access control denies to
    // shop is closed without reaching the server.
    let got = py(
        &host_a,
        "import socket\nc=socket.create_connection(('10.99.0.2',7000),timeout=5)\nc.sendall(b'opaque-secret')\nprint('echo', c.recv(100))\nc.shutdown(socket.SHUT_WR)\nprint('closed', c.recv(100))\nd=socket.create_connection(('10.99.0.2',7001),timeout=5)\ntry:\n  d.sendall(b'denied-secret'); print('denied', d.recv(100))\nexcept OSError as e: print('denied', e)",
    );
    assert!(got.contains("echo b'opaque-secret'"), "{got}");
    assert!(got.contains("closed b''"), "{got}");
    assert!(
        got.contains("denied b''") || got.contains("denied [Errno"),
        "{got}"
    );

    // On the wire: TLS to the internal ports, nothing of the plaintext.
    std::thread::sleep(Duration::from_millis(300));
    let frames = segments(&std::fs::read(&capture).unwrap());
    const INTERNAL: [u16; 2] = [50002, 50003];
    for port in INTERNAL {
        let first = frames
            .iter()
            .find(|(_, d, p)| *d == port && !p.is_empty())
            .map(|(_, _, p)| p);
        assert!(
            first.is_some_and(|p| p.starts_with(&[0x16, 0x03])),
            "the first bytes to internal port {port} are a TLS handshake"
        );
    }
    for (src, dst, payload) in &frames {
        let ports = [*src, *dst];
        assert!(
            ports.iter().any(|p| INTERNAL.contains(p) || *p == 4318) || payload.is_empty(),
            "only mTLS between the hosts (and telemetry): a segment {src} → {dst}"
        );
        for secret in [
            &b"hello-secret"[..],
            b"opaque-secret",
            b"denied-secret",
            b"by-address",
            b"grpc-secret",
            b"tunnelled-grpc",
        ] {
            assert!(
                [*src, *dst].contains(&4318) || !contains(payload, secret),
                "plaintext {:?} on the wire ({src} → {dst})",
                String::from_utf8_lossy(secret)
            );
        }
    }

    // Both hops of the calls by name, HTTP and gRPC, each one trace in the
    // collector: the caller's CLIENT span and the callee's SERVER span
    // under it.
    let end = Instant::now() + Duration::from_secs(10);
    let pairs = loop {
        let all = common::otlp::read_collected(&spans);
        let pair = |callee: &str, suffix: &str| {
            let server = all.iter().find(|s| {
                (callee.is_empty() || s.service == callee)
                    && s.service != "shop"
                    && s.name.ends_with(suffix)
            })?;
            let client = all
                .iter()
                .find(|s| s.service == "shop" && s.id == server.parent)?;
            Some((client.clone(), server.clone()))
        };
        if let (Some(h), Some(g), Some(a)) = (
            pair("orders", "/hello-secret"),
            pair("greeter", "/greet.Greeter/Hello"),
            // By address: whichever app B's address names.
            pair("", "/by-address"),
        ) {
            break [h, g, a];
        }
        assert!(
            Instant::now() < end,
            "no two-hop traces in the collector: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (client, server) in &pairs {
        assert_eq!(client.trace, server.trace);
        assert_eq!(client.kind, 3, "the caller's span is CLIENT");
        assert_eq!(server.kind, 2, "the callee's span is SERVER");
    }
    assert_eq!(pairs[1].0.name, "/greet.Greeter/Hello");
    // And counted as invocations by the caller's sidecar: HTTP by name and
    // by address, gRPC by name.
    let metrics = fetch(&host_a, "http://127.0.0.1:9090/metrics", None);
    for (dest, kind) in [("orders", "http"), ("greeter", "grpc")] {
        let series = format!(
            "dapr_service_invocation_req_sent_total{{app_id=\"shop\",dest_app_id=\"{dest}\",type=\"{kind}\"}}"
        );
        assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    }

    // The retry policy goes, without restarting anything: the next flaky
    // path's first 503 reaches the client; then it comes back.
    let policy = std::fs::read_to_string(resources.join("resiliency.yaml")).unwrap();
    let generation = || {
        let status = fetch(
            &host_a,
            "http://127.0.0.1:3500/v1.0-alpha1/tandem/status",
            None,
        );
        serde_json::from_str::<serde_json::Value>(&status).unwrap()["generation"]
            .as_u64()
            .unwrap()
    };
    let g = generation();
    std::fs::remove_file(resources.join("resiliency.yaml")).unwrap();
    let t = Instant::now();
    while generation() == g {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the removal not applied within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = fetch(&host_a, "http://orders/flaky-again", None);
    assert!(got.starts_with("503"), "not retried any more: {got}");
    std::fs::write(resources.join("resiliency.yaml"), &policy).unwrap();
    let t = Instant::now();
    while generation() == g + 1 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the policy not back within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The app dies: four failed tries trip the breaker, then calls fail
    // fast without trying.
    let mut app = procs.0.remove(0);
    let _ = app.kill();
    let _ = app.wait();
    let got = fetch(&host_a, "http://orders/gone", None);
    assert!(got.starts_with("500"), "{got}");
    let got = fetch(&host_a, "http://orders/gone", None);
    assert!(got.contains("circuit breaker is open"), "{got}");

    // The caller's sidecar counted what its doors did.
    let metrics = fetch(&host_a, "http://127.0.0.1:9090/metrics", None);
    for line in [
        "tandem_transparent_connections_total{app_id=\"shop\",direction=\"outbound\",route=\"tunnel\"} 1",
        "tandem_transparent_connections_total{app_id=\"shop\",direction=\"outbound\",route=\"refused\"} 1",
        "tandem_transparent_bytes_total{app_id=\"shop\",direction=\"outbound\",flow=\"sent\",route=\"tunnel\"} 13",
        "tandem_resiliency_circuit_breaker_state{app_id=\"shop\",flow_direction=\"outbound\",target=\"app_orders\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Python sending each path given, as is, to `http://orders/`: one line
/// per path, the status and the body.
const RAW_PATHS: &str = r#"
import http.client, sys
for p in sys.argv[1:]:
    c = http.client.HTTPConnection("orders", 80, timeout=5)
    c.request("GET", p)
    r = c.getresponse()
    print(r.status, r.read().decode().replace("\n", " "))
"#;

/// The encoded-path table of `tests/paths.rs` through the third door: an
/// unchanged app whose HTTP is redirected to its sidecar's outbound door.
/// The callee lets `shop` call only `GET /public/**`; encodings that would
/// reach `/admin` are refused with 400 at the door, the app receives
/// exactly the path that was checked.
fn encoded_paths_through_the_transparent_door(mtls: bool) {
    let tag = if mtls { "tppm" } else { "tpp" };
    let (app_ns, _outside) = Netns::pair(tag, "10.99.0.50 orders\n");
    let home = TempDir::new("transparent-paths");
    std::fs::create_dir_all(home.path().join("registry")).unwrap();
    let acl = home.write(
        "acl.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: shop\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /public/**\n        httpVerb: [\"GET\"]\n        action: allow\n",
    );
    if mtls {
        let init = std::process::Command::new(common::BIN)
            .args([
                "ca",
                "init",
                "--dir",
                home.path().join("ca").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(init.status.success(), "{}", text(&init));
    }
    open_to_proxy(&home);
    let env = [format!(
        "TANDEM_CA_DIR={}",
        home.path().join("ca").display()
    )];
    let with_mtls = |mut args: Vec<&'static str>| {
        if mtls {
            args.push("--enable-mtls");
        }
        args
    };
    let acl_arg: &'static str = Box::leak(acl.to_str().unwrap().to_string().into_boxed_str());
    let _procs = Killed(vec![
        app_ns.spawn("python3", &["-c", APP, "orders-app", "127.0.0.1", "8081"]),
        proxy_sidecar(
            &app_ns,
            &home,
            &env,
            "orders",
            &with_mtls(vec![
                "--app-port",
                "8081",
                "--config",
                acl_arg,
                "--dapr-http-port",
                "3510",
                "--dapr-grpc-port",
                "50011",
                "--metrics-port",
                "9091",
            ]),
        ),
        proxy_sidecar(
            &app_ns,
            &home,
            &env,
            "shop",
            &with_mtls(vec![
                "--dapr-http-port",
                "3500",
                "--dapr-grpc-port",
                "50001",
                "--metrics-port",
                "9090",
                "--transparent-outbound-port",
                "15001",
            ]),
        ),
    ]);
    wait_http(&app_ns, "http://127.0.0.1:3500/v1.0/healthz");
    wait_http(&app_ns, "http://127.0.0.1:3510/v1.0/healthz");
    wait_http(&app_ns, "http://127.0.0.1:8081/ready");
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

    // (path as sent, status, path the app gets)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/public/a", 200, Some("/public/a")),
        ("/public/%61", 200, Some("/public/a")),
        ("/public//a", 200, Some("/public/a")),
        ("/public/./a", 200, Some("/public/a")),
        ("/public/../admin", 403, None),
        ("/public/%2e%2e/admin", 400, None),
        ("/public/%2E%2E/admin", 400, None),
        ("/public/.%2e/admin", 400, None),
        ("/public/..%2fadmin", 400, None),
        ("/public%2f..%2fadmin", 400, None),
        ("/public/%252e%252e/admin", 400, None),
        ("/public/..;/admin", 400, None),
        ("/public/..%5cadmin", 400, None),
        ("/admin", 403, None),
    ];
    let mut args = vec!["-c", RAW_PATHS];
    args.extend(cases.iter().map(|c| c.0));
    let got = text(&app_ns.run("python3", &args));
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{got}");
    for ((path, status, app_got), line) in cases.iter().zip(&lines) {
        assert!(
            line.starts_with(&format!("{status} ")),
            "{path} (mTLS {mtls}): {line}"
        );
        match app_got {
            Some(p) => assert!(
                line.contains(&format!("orders-app {p} caller=shop")),
                "{path}: the app gets the checked path: {line}"
            ),
            None => assert!(!line.contains("orders-app"), "{path}: {line}"),
        }
        if *status == 400 {
            assert!(
                line.contains("refused before any policy or app sees it"),
                "{path}: {line}"
            );
        }
    }
    // Nothing but the allowed paths reached the app (asked directly, on
    // loopback, which the rules leave alone).
    let hits = fetch(&app_ns, "http://127.0.0.1:8081/hits/admin", None);
    assert_eq!(hits.trim(), "0", "the app was asked for /admin");
}

#[test]
fn encoded_paths_through_the_transparent_door_without_mtls() {
    encoded_paths_through_the_transparent_door(false);
}

#[test]
fn encoded_paths_through_the_transparent_door_with_mtls() {
    encoded_paths_through_the_transparent_door(true);
}
