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
