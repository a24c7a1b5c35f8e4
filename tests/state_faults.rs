//! Store outages through a running sidecar: the caller gets a clear 500
//! naming the store, the sidecar keeps serving, and it recovers by itself.

mod common;

use common::{OwnServer, TempDir, component, sidecar, spawn_quiet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis of the test's own on `port`, that it may stop and start.
fn own_redis(port: u16) -> OwnServer {
    OwnServer::new(port, move || {
        spawn_quiet(
            "redis-server",
            &[
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ],
        )
    })
}

#[test]
fn redis_stopped_mid_run_then_back() {
    let port = common::free_port();
    let redis = own_redis(port);
    let dir = TempDir::new("redis-outage");
    dir.write(
        "cache.yaml",
        &component(
            "cache",
            "state.redis",
            &[("redisHost", &format!("127.0.0.1:{port}"))],
        ),
    );
    let s = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start();
    assert_eq!(
        s.request(
            "POST",
            "/v1.0/state/cache",
            br#"[{"key":"k","value":"before"}]"#
        )
        .status,
        204
    );

    drop(redis);
    let r = s.request(
        "POST",
        "/v1.0/state/cache",
        br#"[{"key":"k","value":"during"}]"#,
    );
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_STATE_SAVE"));
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("state store cache") && msg.contains("redis"),
        "{msg}"
    );
    let r = s.get("/v1.0/state/cache/k");
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_STATE_GET"));
    assert_eq!(
        s.get("/v1.0/healthz").status,
        204,
        "the sidecar keeps serving"
    );

    let _redis = own_redis(port);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.request(
            "POST",
            "/v1.0/state/cache",
            br#"[{"key":"k","value":"after"}]"#,
        );
        if r.status == 204 {
            break;
        }
        assert!(Instant::now() < end, "no recovery: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.get("/v1.0/state/cache/k").text(), "\"after\"");
}

#[test]
fn an_unreachable_store_at_startup_names_itself() {
    let port = common::free_port();
    let dir = TempDir::new("redis-down");
    dir.write(
        "cache.yaml",
        &component(
            "cache",
            "state.redis",
            &[("redisHost", &format!("127.0.0.1:{port}"))],
        ),
    );
    let (status, log) = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start_failing();
    assert!(!status.success());
    assert!(
        log.contains("component `cache`") && log.contains("cannot connect to redis"),
        "{log}"
    );
}

fn redis_cli(port: u16, args: &[&str]) {
    let ok = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "redis-cli {args:?}");
}

/// `cache` on a private Redis at `port`, with `policies` as the
/// Resiliency targeting it.
fn resilient_cache(dir: &TempDir, port: u16, policies: &str, target: &str) -> common::Sidecar {
    dir.write(
        "cache.yaml",
        &component(
            "cache",
            "state.redis",
            &[("redisHost", &format!("127.0.0.1:{port}"))],
        ),
    );
    dir.write(
        "resiliency.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n{policies}  targets:\n    components:\n      cache:\n        outbound:\n{target}"
        ),
    );
    sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start()
}

#[test]
fn outbound_retries_ride_out_a_short_outage() {
    let port = common::free_port();
    let redis = own_redis(port);
    let dir = TempDir::new("retry");
    let s = resilient_cache(
        &dir,
        port,
        "    retries:\n      patient:\n        policy: constant\n        duration: 100ms\n        maxRetries: 50\n",
        "          retry: patient\n",
    );
    drop(redis);
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        own_redis(port)
    });
    let t = Instant::now();
    let r = s.request(
        "POST",
        "/v1.0/state/cache",
        br#"[{"key":"k","value":"saved through the outage"}]"#,
    );
    assert_eq!(r.status, 204, "retried until Redis was back: {}", r.text());
    assert!(t.elapsed() >= Duration::from_millis(500), "it did wait");
    let _redis = restart.join().unwrap();
    assert_eq!(
        s.get("/v1.0/state/cache/k").text(),
        "\"saved through the outage\""
    );
}

#[test]
fn outbound_timeout_and_circuit_breaker() {
    let port = common::free_port();
    let redis = own_redis(port);
    let dir = TempDir::new("breaker");
    let s = resilient_cache(
        &dir,
        port,
        "    timeouts:\n      quick: 200ms\n    circuitBreakers:\n      cb:\n        maxRequests: 1\n        timeout: 30s\n        trip: consecutiveFailures >= 2\n",
        "          timeout: quick\n          circuitBreaker: cb\n",
    );
    assert_eq!(
        s.request("POST", "/v1.0/state/cache", br#"[{"key":"k","value":1}]"#)
            .status,
        204
    );

    // A Redis that stalls: the call is cut at the timeout.
    let stall = std::thread::spawn(move || redis_cli(port, &["DEBUG", "SLEEP", "1.5"]));
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let r = s.get("/v1.0/state/cache/k");
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_STATE_GET"));
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "cut at the timeout, not after the stall"
    );
    stall.join().unwrap();

    // Two failures in a row open the breaker; then calls fail at once.
    drop(redis);
    for _ in 0..2 {
        assert_eq!(s.get("/v1.0/state/cache/k").status, 500);
    }
    let _redis = own_redis(port);
    let r = s.get("/v1.0/state/cache/k");
    assert_eq!(
        r.status, 500,
        "the breaker is open even though Redis is back"
    );
    assert!(r.text().contains("circuit breaker is open"), "{}", r.text());
    assert_eq!(s.get("/v1.0/healthz").status, 204);
}
