//! At-least-once through real sidecars on Redis Streams: a subscriber's
//! sidecar killed mid-stream loses nothing once it is back, and another
//! consumer group gets every message too.

mod common;

use common::event_app::{App, start_app};
use common::{TempDir, component, sidecar};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn payloads(app: &App) -> BTreeSet<String> {
    app.got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|g| g.event["data"].as_str().map(String::from))
        .collect()
}

fn wait_all(app: &App, expected: &BTreeSet<String>, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while &payloads(app) != expected {
        assert!(
            Instant::now() < end,
            "{what}: got {} of {}",
            payloads(app).len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_subscriber_sidecar_loses_nothing() {
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let topic = format!("durable-{run}");
    let dir = TempDir::new("durable");
    dir.write(
        "bus.yaml",
        &component(
            "bus",
            "pubsub.redis",
            &[
                ("redisHost", "127.0.0.1:6379"),
                ("processingTimeout", "1s"),
                ("redeliverInterval", "200ms"),
            ],
        ),
    );
    let res = dir.path().to_str().unwrap().to_string();
    let subscribe = format!(r#"[{{"pubsubname":"bus","topic":"{topic}","route":"/in"}}]"#);
    let slow = Arc::new(App {
        subscribe: subscribe.clone(),
        delay: Duration::from_millis(30),
        ..Default::default()
    });
    let other = Arc::new(App {
        subscribe,
        ..Default::default()
    });
    let (slow_port, other_port) = (start_app(slow.clone()), start_app(other.clone()));

    let start_sub = |app_id: &str, port: u16| {
        let s = sidecar()
            .app_id(app_id)
            .args(["--app-port", &port.to_string(), "--resources-path", &res])
            .start();
        assert!(s.wait_healthz(204, Duration::from_secs(10)));
        s
    };
    let mut first = start_sub(&format!("orders-{run}"), slow_port);
    let _audit = start_sub(&format!("audit-{run}"), other_port);
    let publisher = sidecar()
        .app_id(&format!("shop-{run}"))
        .args(["--resources-path", &res])
        .start();

    let expected: BTreeSet<String> = (0..40).map(|i| format!("m-{i}")).collect();
    for p in &expected {
        let r = publisher.request("POST", &format!("/v1.0/publish/bus/{topic}"), p.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    // Kill the subscriber's sidecar part-way through.
    let end = Instant::now() + Duration::from_secs(10);
    while payloads(&slow).len() < 5 {
        assert!(Instant::now() < end, "no deliveries started");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let before = payloads(&slow).len();
    assert!(
        before < expected.len(),
        "the kill happened mid-stream ({before} delivered)"
    );

    let _second = start_sub(&format!("orders-{run}"), slow_port);
    wait_all(&slow, &expected, "the restarted subscriber");
    wait_all(&other, &expected, "the other consumer group");
    let deliveries = slow.got.lock().unwrap().len();
    assert!(deliveries >= expected.len(), "at least once: {deliveries}");
    let got = other.got.lock().unwrap();
    let events: Vec<_> = got.iter().filter(|g| g.path == "/in").collect();
    assert!(
        events.iter().all(|g| g.event["topic"] == topic.as_str()),
        "only this topic"
    );
    let _ = std::process::Command::new("redis-cli")
        .args(["DEL", &topic])
        .output();
}
