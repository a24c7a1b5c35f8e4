//! Two hosts on one link (network namespaces joined by a veth pair, IPv4
//! and IPv6 — a unique-local address and the kernel's link-local one), each
//! an app under `tandem run --transparent` with its own home and
//! `nameResolution: mdns`, the self-hosted multi-host default. Every call
//! from one to the other succeeds, by name through the transparent door
//! and through the Dapr API; the callee's sidecar is reached over IPv4 and
//! over IPv6; the caller's breaker for the app never opens.

mod common;

use common::TempDir;
use common::netns::{Netns, text};
use std::time::{Duration, Instant};

/// An HTTP server printing its name and the path it was asked for.
const APP: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("orders-app %s caller=%s" % (self.path, self.headers.get("dapr-caller-app-id"))).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8081), H).serve_forever()
"#;

/// The caller: waits until `orders` answers (announcements take a moment
/// to be heard), then calls it 40 times by name and 40 times through the
/// Dapr API, printing each failure and the count.
const CLIENT: &str = r#"
import urllib.request, urllib.error, time
def get(u):
    try:
        return urllib.request.urlopen(u, timeout=10).read().decode()
    except urllib.error.HTTPError as e:
        return "ERR %s %s" % (e.code, e.read().decode())
    except Exception as e:
        return "ERR %s" % e
end = time.time() + 30
while True:
    r = get("http://127.0.0.1:3500/v1.0/invoke/orders/method/warm")
    if r.startswith("orders-app") or time.time() > end: break
    time.sleep(0.3)
print("warm:", r)
bad = 0
for i in range(40):
    for u in ("http://orders/n/%d" % i, "http://127.0.0.1:3500/v1.0/invoke/orders/method/e/%d" % i):
        r = get(u)
        if not r.startswith("orders-app"):
            bad += 1
            print("FAIL", u, r)
print("failures=%d" % bad)
import subprocess
for line in subprocess.run(["ss", "-Htn"], capture_output=True, text=True).stdout.splitlines():
    if ":50002" in line: print("conn", line.split()[-1])
"#;

fn config(home: &TempDir) -> String {
    home.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: mdns\n",
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// Waits until no IPv6 address of `ns` is tentative (duplicate address
/// detection done), so every address is usable when the sidecars start.
fn ipv6_settled(ns: &Netns) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = text(&ns.run("ip", &["-6", "addr", "show"]));
        if out.contains("fe80::") && !out.contains("tentative") {
            return;
        }
        assert!(Instant::now() < end, "IPv6 never settled:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_hosts_on_mdns_reach_each_other_over_ipv4_and_ipv6() {
    // A: the caller (its /etc/hosts names orders, as a cluster's DNS would).
    let (host_a, host_b) = Netns::pair("mdns", "10.99.0.2 orders\n");
    for (ns, dev, addr) in [(&host_a, "v0", "fd99::1/64"), (&host_b, "v1", "fd99::2/64")] {
        let out = ns.run("ip", &["-6", "addr", "add", addr, "dev", dev, "nodad"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    ipv6_settled(&host_a);
    ipv6_settled(&host_b);
    let (home_a, home_b) = (TempDir::new("mdns-a"), TempDir::new("mdns-b"));
    home_a.write(
        "resources/resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    circuitBreakers:\n      touchy:\n        maxRequests: 1\n        timeout: 2s\n        trip: consecutiveFailures >= 2\n  targets:\n    apps:\n      orders:\n        circuitBreaker: touchy\n",
    );
    let orders = host_b
        .command("env")
        .args([
            &format!("TANDEM_HOME={}", home_b.path().display()),
            common::BIN,
            "run",
            "--app-id",
            "orders",
            "--app-port",
            "8081",
            "--config",
            &config(&home_b),
            "--dapr-internal-grpc-port",
            "50002",
            "--transparent",
            "--app-uid",
            "2103",
            "--",
            "python3",
            "-c",
            APP,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut orders = Stopped(orders);
    let orders_out = common::Output::capture(orders.0.stdout.take().unwrap());
    let _orders_err = common::Output::capture(orders.0.stderr.take().unwrap());
    assert!(
        orders_out.wait_for("You're up and running", Duration::from_secs(30)),
        "{}",
        orders_out.text()
    );

    let run = host_a
        .command("env")
        .args([
            &format!("TANDEM_HOME={}", home_a.path().display()),
            common::BIN,
            "run",
            "--app-id",
            "shop",
            "--config",
            &config(&home_a),
            "--resources-path",
            home_a.path().join("resources").to_str().unwrap(),
            "--transparent",
            "--app-uid",
            "2103",
            "--dapr-http-port",
            "3500",
            "--",
            "python3",
            "-c",
            CLIENT,
        ])
        .output()
        .unwrap();
    let out = text(&run);
    assert!(run.status.success(), "{out}");
    assert!(out.contains("warm: orders-app /warm"), "{out}");
    assert!(out.contains("== APP == failures=0"), "{out}");

    // Which of B's addresses the caller's sidecar reached (its pooled
    // connections to B's internal port, listed by the client before it
    // ended).
    let peers: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("== APP == conn "))
        .collect();
    drop(orders);
    assert!(
        peers.iter().any(|l| l.contains("10.99.0.2:50002")),
        "no IPv4 connection to B:\n{out}"
    );
    assert!(
        peers
            .iter()
            .any(|l| l.contains("[fd99::2]:50002") || l.contains("[fe80::")),
        "no IPv6 connection to B:\n{out}"
    );
}

/// A `tandem run` stopped as a user stops it (SIGTERM: it ends its app and
/// sidecar and takes its rules out) when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if common::wait_exit(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
