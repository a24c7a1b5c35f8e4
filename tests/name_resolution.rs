//! Name resolution other than the local registry, through real sidecars
//! that share nothing on disk (each has its own tandem home, so the local
//! registry cannot be what finds the peer): `dns` against a real DNS server
//! (dnsmasq, started here), `static`, `mdns` on this host's network, and
//! refused configurations.

mod common;

use common::{Sidecar, TempDir, free_port, sidecar};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn config(home: &TempDir, component: &str, configuration: &str) -> String {
    home.write(
        "config.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: nr\nspec:\n  nameResolution:\n    component: {component}\n    version: v1\n    configuration: {configuration}\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// The callee `orders` (an app that answers with its path) and the caller
/// `shop`, each with its own home and the same Configuration.
async fn pair(
    component: &str,
    configuration: &str,
    orders_internal: u16,
) -> (Sidecar, Sidecar, TempDir, TempDir) {
    let app = common::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
            "orders saw {}",
            req.uri().path()
        ))))
    })
    .await;
    let (h1, h2) = (TempDir::new("nr-orders"), TempDir::new("nr-shop"));
    let mut orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h1.path().to_str().unwrap())
        .args(["--config", &config(&h1, component, configuration)])
        .args(["--app-port", &app.to_string()]);
    if orders_internal != 0 {
        orders = orders.args(["--dapr-internal-grpc-port", &orders_internal.to_string()]);
    }
    let orders = orders.start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h2.path().to_str().unwrap())
        .args(["--config", &config(&h2, component, configuration)])
        .start();
    (orders, shop, h1, h2)
}

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DNS server on 127.0.0.1:`port` that knows `records` (name → ip) and
/// nothing else.
async fn dnsmasq(port: u16, records: &[(&str, &str)]) -> Dnsmasq {
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        // Authoritative for the cluster domain: unknown names are NXDOMAIN.
        "--local=/cluster.local/",
        "--user=root",
        "--pid-file=",
        &format!("--port={port}"),
    ]);
    for (name, ip) in records {
        cmd.arg(format!("--host-record={name},{ip}"));
    }
    let server = Dnsmasq(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (scripts/services.sh installs dnsmasq-base)"),
    );
    // Ready when it answers.
    let end = Instant::now() + Duration::from_secs(10);
    while tandem_proxy::resolve::dns::lookup(([127, 0, 0, 1], port).into(), records[0].0)
        .await
        .is_err()
    {
        assert!(Instant::now() < end, "dnsmasq did not start on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_resolution_through_a_real_dns_server() {
    let (dns_port, orders_port) = (free_port(), free_port());
    let mut server = Some(
        dnsmasq(
            dns_port,
            &[("orders-dapr.default.svc.cluster.local", "127.0.0.1")],
        )
        .await,
    );
    let cfg = format!("{{servers: [\"127.0.0.1:{dns_port}\"], port: {orders_port}}}");
    let (orders, shop, _h1, _h2) = pair("dns", &cfg, orders_port).await;
    assert!(
        orders.stderr.text().contains("resolver=\"dns\"")
            || orders.stderr.text().contains("resolver=dns"),
        "{}",
        orders.stderr.text()
    );

    let r = shop.request("GET", "/v1.0/invoke/orders/method/items/1", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "orders saw /items/1");

    // A name the DNS server does not have is an unknown app.
    let r = shop.request("GET", "/v1.0/invoke/billing/method/x", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        r.text().contains("couldn't find service: billing"),
        "{}",
        r.text()
    );

    // The DNS server goes away: once the cached answer is old, calls fail
    // with a message that names DNS, and the sidecar keeps serving.
    drop(server.take());
    std::thread::sleep(Duration::from_millis(1200));
    let r = shop.request("GET", "/v1.0/invoke/orders/method/items/2", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        r.text().contains("failed to resolve address for 'orders'") && r.text().contains("DNS"),
        "{}",
        r.text()
    );
    assert_eq!(shop.get("/v1.0/healthz").status, 204);

    // Back again: resolution recovers by itself.
    server = Some(
        dnsmasq(
            dns_port,
            &[("orders-dapr.default.svc.cluster.local", "127.0.0.1")],
        )
        .await,
    );
    let r = shop.request("GET", "/v1.0/invoke/orders/method/items/3", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_resolution_from_the_configuration() {
    let orders_port = free_port();
    let cfg = format!("{{apps: {{orders: [\"127.0.0.1:{orders_port}\"]}}}}");
    let (_orders, shop, _h1, _h2) = pair("static", &cfg, orders_port).await;
    let r = shop.request("POST", "/v1.0/invoke/orders/method/pay", b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "orders saw /pay");
    let r = shop.request("GET", "/v1.0/invoke/billing/method/x", b"");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("couldn't find service: billing"),
        "{}",
        r.text()
    );
}

/// An app whose name resolves to a dead address and a live one (an mDNS
/// instance heard with an address that cannot be dialled, a stale static
/// entry): every call reaches the live one, and the dead address is not a
/// failure of the app — a breaker that trips on the first failure stays
/// closed. A blackholed address (nothing answers, not even a refusal) only
/// delays the first call by the happy-eyeballs step, not the connect
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_of_an_app_is_skipped_and_spares_its_breaker() {
    let orders_port = free_port();
    let dead = free_port();
    // 192.0.2.0/24 is TEST-NET-1: routed nowhere, so a SYN goes unanswered
    // (or fails at once where there is no route; either way it is skipped).
    let cfg_text = format!(
        "{{apps: {{orders: [\"127.0.0.1:{dead}\", \"192.0.2.1:{dead}\", \"127.0.0.1:{orders_port}\"]}}}}"
    );
    let app = common::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
            "orders saw {}",
            req.uri().path()
        ))))
    })
    .await;
    let (h1, h2) = (TempDir::new("nr-dead-orders"), TempDir::new("nr-dead-shop"));
    let _orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h1.path().to_str().unwrap())
        .args(["--config", &config(&h1, "static", &cfg_text)])
        .args(["--app-port", &app.to_string()])
        .args(["--dapr-internal-grpc-port", &orders_port.to_string()])
        .start();
    h2.write(
        "resources/resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    circuitBreakers:\n      touchy:\n        maxRequests: 1\n        timeout: 60s\n        trip: consecutiveFailures >= 1\n  targets:\n    apps:\n      orders:\n        circuitBreaker: touchy\n",
    );
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h2.path().to_str().unwrap())
        .args(["--config", &config(&h2, "static", &cfg_text)])
        .args([
            "--resources-path",
            h2.path().join("resources").to_str().unwrap(),
        ])
        .start();
    for i in 0..30 {
        let r = shop.request("GET", &format!("/v1.0/invoke/orders/method/n/{i}"), b"");
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
        assert_eq!(r.text(), format!("orders saw /n/{i}"));
    }
    let started = Instant::now();
    let r = shop.request("POST", "/v1.0/invoke/orders/method/late", b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_resolution_on_the_local_network() {
    let (mut orders, shop, _h1, _h2) = pair("mdns", "{}", 0).await;
    // Announcements take a moment to be heard.
    let end = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = shop.request("GET", "/v1.0/invoke/orders/method/hello", b"");
        if r.status == 200 || Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(r.status, 200, "{}\n{}", r.text(), shop.stderr.text());
    assert_eq!(r.text(), "orders saw /hello");

    // A sidecar that stops says goodbye; its peers stop calling it.
    let _ = Command::new("kill")
        .args(["-TERM", &orders.child.id().to_string()])
        .status();
    let _ = orders.child.wait();
    let end = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = shop.request("GET", "/v1.0/invoke/orders/method/hello", b"");
        if r.text().contains("couldn't find service") || Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("couldn't find service: orders"),
        "{}",
        r.text()
    );
}

#[test]
fn unsupported_or_malformed_name_resolution_is_refused_at_start() {
    let home = TempDir::new("nr-bad");
    for (component, configuration, says) in [
        (
            "consul",
            "{}",
            "nameResolution component `consul` is not supported",
        ),
        ("dns", "{}", "internal port"),
        ("dns", "{port: 5, template: \"{{.Name}}\"}", ".Name"),
        (
            "static",
            "{apps: {orders: [\"no-port\"]}}",
            "needs host:port",
        ),
    ] {
        let (status, log) = sidecar()
            .app_id("bad")
            .env("TANDEM_HOME", home.path().to_str().unwrap())
            .args(["--config", &config(&home, component, configuration)])
            .start_failing();
        assert!(!status.success());
        assert!(log.contains(says), "{component}: {log}");
    }
}
