//! A circuit breaker cannot wedge shut: open it, let it go half-open, send
//! the probe to a slow method and hang up before the answer — the next call
//! is let through (the probe's slot was given back), not refused with
//! "circuit breaker is open" until a reload.

mod common;

use common::{TempDir, sidecar};
use std::io::Write;
use std::time::Duration;

/// `/fail` answers 500, `/slow` takes a minute, anything else 200.
async fn app() -> u16 {
    common::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let status = if path == "/fail" { 500 } else { 200 };
        hyper::Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from(path)))
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_half_open_probe_does_not_wedge_the_breaker() {
    let home = TempDir::new("breaker-home");
    let port = app().await;
    let res = TempDir::new("breaker-res");
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    circuitBreakers:\n      fuse:\n        maxRequests: 1\n        timeout: 1s\n        trip: consecutiveFailures >= 1\n  targets:\n    apps:\n      slowpoke:\n        circuitBreaker: fuse\n",
    );
    let h = home.path().to_str().unwrap();
    let _callee = sidecar()
        .app_id("slowpoke")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &port.to_string()])
        .start();
    let caller = sidecar()
        .app_id("impatient")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let r = caller.request("GET", "/v1.0/invoke/slowpoke/method/fail", b"");
    assert_eq!(r.status, 500);
    let r = caller.request("GET", "/v1.0/invoke/slowpoke/method/ok", b"");
    assert!(r.text().contains("circuit breaker is open"), "{}", r.text());
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The half-open probe: a slow call whose client hangs up.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", caller.http)).unwrap();
    c.write_all(b"GET /v1.0/invoke/slowpoke/method/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = caller.request("GET", "/v1.0/invoke/slowpoke/method/ok", b"");
    assert_eq!(
        (r.status, r.text()),
        (200, "/ok".to_string()),
        "the next probe goes through"
    );
    let r = caller.request("GET", "/v1.0/invoke/slowpoke/method/ok", b"");
    assert_eq!(r.status, 200, "and the breaker closed again");
}

/// A reload keeps a target's breaker when its policy did not change: open
/// stays open across a change elsewhere (a component added), and only a
/// change to the policy itself starts it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_survives_a_reload_that_leaves_its_policy_alone() {
    let home = TempDir::new("breaker-reload-home");
    let port = app().await;
    let res = TempDir::new("breaker-reload-res");
    let policy = |trip: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    circuitBreakers:\n      fuse:\n        maxRequests: 1\n        timeout: 60s\n        trip: {trip}\n  targets:\n    apps:\n      fragile:\n        circuitBreaker: fuse\n"
        )
    };
    res.write("resiliency.yaml", &policy("consecutiveFailures >= 1"));
    let h = home.path().to_str().unwrap();
    let _callee = sidecar()
        .app_id("fragile")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &port.to_string()])
        .start();
    let caller = sidecar()
        .app_id("careful")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let generation = || {
        caller.get("/v1.0-alpha1/tandem/status").json()["generation"]
            .as_u64()
            .unwrap()
    };
    let reloaded = |from: u64| {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while generation() == from {
            assert!(std::time::Instant::now() < end, "no reload");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let r = caller.request("GET", "/v1.0/invoke/fragile/method/fail", b"");
    assert_eq!(r.status, 500);
    let r = caller.request("GET", "/v1.0/invoke/fragile/method/ok", b"");
    assert!(r.text().contains("circuit breaker is open"), "{}", r.text());

    // Something else changes: the breaker stays open.
    let g = generation();
    res.write(
        "store.yaml",
        &common::component("extra", "state.in-memory", &[]),
    );
    reloaded(g);
    let r = caller.request("GET", "/v1.0/invoke/fragile/method/ok", b"");
    assert!(
        r.text().contains("circuit breaker is open"),
        "the reload reset the breaker: {} {}",
        r.status,
        r.text()
    );

    // The policy changes: a fresh breaker, closed.
    let g = generation();
    res.write("resiliency.yaml", &policy("consecutiveFailures >= 2"));
    reloaded(g);
    let r = caller.request("GET", "/v1.0/invoke/fragile/method/ok", b"");
    assert_eq!(r.status, 200, "{}", r.text());
}
