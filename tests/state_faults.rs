//! Store outages through a running sidecar: the caller gets a clear 500
//! naming the store, the sidecar keeps serving, and it recovers by itself.

mod common;

use common::{TempDir, component, sidecar};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct OwnRedis(Child);

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let end = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn redis_stopped_mid_run_then_back() {
    let port = common::free_port();
    let redis = OwnRedis::start(port);
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

    let _redis = OwnRedis::start(port);
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
