//! Hot reload under steady load (issue 8's acceptance test): invocations,
//! state operations and publishes flow through two sidecars while the test
//! edits their files — swaps the state store's Redis DB, removes and
//! re-adds a subscription, tightens and loosens a retry policy, flips an
//! access-control rule, raises the trace sampling rate, drops in a broken
//! YAML. No request fails that the old or the new configuration allows;
//! each change is seen within a second; the broken file is refused with
//! its line and changes nothing; every published message arrives, and
//! none more than once beyond what a delivery restart redelivers.

mod common;

use bytes::Bytes;
use common::{TempDir, component, sidecar};
use http_body_util::{BodyExt, Full};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request of the load: what, when it started, its status (0: no
/// answer).
#[derive(Clone, Debug)]
struct Call {
    what: &'static str,
    at: Instant,
    status: u16,
}

fn subscription(topic: &str) -> String {
    format!(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: events-sub\nspec:\n  pubsubname: bus\n  topic: {topic}\n  routes:\n    default: /events\n"
    )
}

fn shop_config(rate: &str, collector: u16) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    samplingRate: \"{rate}\"\n    otel:\n      endpointAddress: 127.0.0.1:{collector}\n      isSecure: false\n      protocol: http\n"
    )
}

fn orders_config(secret: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: allow\n    policies:\n    - appId: shop\n      defaultAction: allow\n      operations:\n      - name: /secret\n        httpVerb: ['*']\n        action: {secret}\n"
    )
}

fn retry(max: u32) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      some:\n        policy: constant\n        duration: 10ms\n        maxRetries: {max}\n  targets:\n    apps:\n      orders:\n        retry: some\n"
    )
}

fn generation(port: u16) -> u64 {
    common::http(port, "GET", "/v1.0-alpha1/tandem/status", &[], b"")
        .map(|r| r.json()["generation"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

/// Waits for `f` and returns how long it took; fails past one second.
fn within_a_second(what: &str, f: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{what} not seen within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_nothing_and_lose_nothing() {
    let run = common::run_id();
    let topic = format!("events-{run}");
    // The callee app: /ping and /secret answer 200; /events records the
    // sequence numbers of the events it gets.
    let delivered: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen = delivered.clone();
    let app_port = common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let status = match path.as_str() {
                "/ping" | "/secret" => 200,
                "/events" => {
                    let ce: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(ce["data"]["seq"].as_u64().unwrap());
                    200
                }
                "/dapr/subscribe" => {
                    return hyper::Response::new(Full::new(Bytes::from_static(b"[]")));
                }
                _ => 404,
            };
            hyper::Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
    .await;
    // A trace collector: counts exported spans.
    let spans = Arc::new(AtomicU64::new(0));
    let counted = spans.clone();
    let collector = common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let counted = counted.clone();
        async move {
            let ct = req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let n = common::otlp::decode(&ct, &body).len();
            counted.fetch_add(n as u64, Ordering::SeqCst);
            hyper::Response::new(Full::new(Bytes::new()))
        }
    })
    .await;

    let home = TempDir::new("reload-load-home");
    let (shop_res, orders_res, cfg) = (
        TempDir::new("reload-load-shop"),
        TempDir::new("reload-load-orders"),
        TempDir::new("reload-load-cfg"),
    );
    let redis = |db: &str| {
        component(
            "cache",
            "state.redis",
            &[("redisHost", "127.0.0.1:6379"), ("redisDB", db)],
        )
    };
    let bus = component("bus", "pubsub.redis", &[("redisHost", "127.0.0.1:6379")]);
    shop_res.write("cache.yaml", &redis("0"));
    shop_res.write("bus.yaml", &bus);
    shop_res.write("resiliency.yaml", &retry(3));
    orders_res.write("bus.yaml", &bus);
    orders_res.write("sub.yaml", &subscription(&topic));
    let orders_cfg = cfg.write("orders.yaml", &orders_config("allow"));
    let shop_cfg = cfg.write("shop.yaml", &shop_config("0", collector));
    let h = home.path().to_str().unwrap();
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &app_port.to_string()])
        .args(["--resources-path", orders_res.path().to_str().unwrap()])
        .args(["--config", orders_cfg.to_str().unwrap()])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", shop_res.path().to_str().unwrap()])
        .args(["--config", shop_cfg.to_str().unwrap()])
        .start();
    assert!(orders.wait_healthz(204, Duration::from_secs(10)));

    // Steady load from two threads: invocations, state, publishes.
    let stop = Arc::new(AtomicBool::new(false));
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let published = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for worker in 0..2 {
        let (stop, calls, published, port) =
            (stop.clone(), calls.clone(), published.clone(), shop.http);
        let publish_path = format!("/v1.0/publish/bus/{topic}");
        load.push(std::thread::spawn(move || {
            let record = |what: &'static str, at: Instant, r: std::io::Result<common::Resp>| {
                calls.lock().unwrap().push(Call {
                    what,
                    at,
                    status: r.map(|r| r.status).unwrap_or(0),
                });
            };
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let t = Instant::now();
                record(
                    "ping",
                    t,
                    common::http(port, "GET", "/v1.0/invoke/orders/method/ping", &[], b""),
                );
                let t = Instant::now();
                record(
                    "secret",
                    t,
                    common::http(port, "GET", "/v1.0/invoke/orders/method/secret", &[], b""),
                );
                let t = Instant::now();
                let key = format!("k{worker}");
                let body = format!(r#"[{{"key":"{key}","value":{i}}}]"#);
                record(
                    "save",
                    t,
                    common::http(port, "POST", "/v1.0/state/cache", &[], body.as_bytes()),
                );
                let t = Instant::now();
                record(
                    "get",
                    t,
                    common::http(port, "GET", &format!("/v1.0/state/cache/{key}"), &[], b""),
                );
                if worker == 0 {
                    let seq = published.fetch_add(1, Ordering::SeqCst);
                    let t = Instant::now();
                    let body = format!(r#"{{"seq":{seq}}}"#);
                    let r = common::http(
                        port,
                        "POST",
                        &publish_path,
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    );
                    record("publish", t, r);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut took = BTreeMap::new();
    // 1. The state store moves to Redis DB 1.
    let g = generation(shop.http);
    shop_res.write("cache.yaml", &redis("1"));
    took.insert(
        "redis DB swap",
        within_a_second("the DB swap", || generation(shop.http) == g + 1),
    );
    std::thread::sleep(Duration::from_millis(300));

    // 2. The subscription goes, then comes back; what was published
    // meanwhile waits in the broker.
    let g = generation(orders.http);
    std::fs::remove_file(orders_res.path().join("sub.yaml")).unwrap();
    took.insert(
        "subscription removed",
        within_a_second("the removal", || generation(orders.http) == g + 1),
    );
    std::thread::sleep(Duration::from_millis(400));
    orders_res.write("sub.yaml", &subscription(&topic));
    took.insert(
        "subscription added",
        within_a_second("the addition", || generation(orders.http) == g + 2),
    );

    // 3. The retry policy is tightened, then loosened.
    for max in [0, 3] {
        let g = generation(shop.http);
        shop_res.write("resiliency.yaml", &retry(max));
        took.insert(
            if max == 0 {
                "retry tightened"
            } else {
                "retry loosened"
            },
            within_a_second("the policy", || generation(shop.http) == g + 1),
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 4. The caller's trace sampling rate goes from 0 to 1: its spans
    // reach the collector (which batches for 200 ms).
    assert_eq!(spans.load(Ordering::SeqCst), 0, "rate 0: nothing sampled");
    std::fs::write(&shop_cfg, shop_config("1", collector)).unwrap();
    took.insert(
        "sampling raised",
        within_a_second("spans", || spans.load(Ordering::SeqCst) > 0),
    );

    // 5. /secret is denied to shop, then allowed again.
    let deny_written = Instant::now();
    std::fs::write(&orders_cfg, orders_config("deny")).unwrap();
    took.insert(
        "access denied",
        within_a_second("the denial", || {
            common::http(
                shop.http,
                "GET",
                "/v1.0/invoke/orders/method/secret",
                &[],
                b"",
            )
            .is_ok_and(|r| r.status == 403)
        }),
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&orders_cfg, orders_config("allow")).unwrap();
    took.insert(
        "access allowed",
        within_a_second("the allowance", || {
            common::http(
                shop.http,
                "GET",
                "/v1.0/invoke/orders/method/secret",
                &[],
                b"",
            )
            .is_ok_and(|r| r.status == 200)
        }),
    );
    let allow_seen = Instant::now();

    // 6. A broken file: refused with its line, nothing changes.
    let g = generation(shop.http);
    shop_res.write(
        "broken.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec: {type: [\n",
    );
    took.insert(
        "broken file refused",
        within_a_second("the refusal", || {
            common::http(shop.http, "GET", "/v1.0-alpha1/tandem/status", &[], b"")
                .is_ok_and(|r| r.json()["lastReload"]["ok"] == false)
        }),
    );
    let status = shop.get("/v1.0-alpha1/tandem/status").json();
    let error = status["lastReload"]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("broken.yaml:5"),
        "the line of the broken file: {error}"
    );
    assert_eq!(status["generation"], g, "nothing changed");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(shop_res.path().join("broken.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    eprintln!("time from write to applied: {took:#?}");

    // No request failed that either configuration allows.
    let calls = calls.lock().unwrap().clone();
    let failed: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            let ok = matches!(c.status, 200 | 204);
            let denied_in_window =
                c.what == "secret" && c.status == 403 && c.at >= deny_written && c.at <= allow_seen;
            !ok && !denied_in_window
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        calls.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.what == "secret" && c.status == 403)
            .count()
            > 0
    );
    assert!(calls.len() > 200, "steady load: {} requests", calls.len());

    // Every published message arrived; duplicates only from the delivery
    // restarts (the subscription's removal and return).
    let n = published.load(Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let got = delivered.lock().unwrap().clone();
        let distinct: std::collections::BTreeSet<u64> = got.iter().copied().collect();
        if distinct.len() as u64 == n {
            let dups = got.len() - distinct.len();
            assert!(dups <= 3, "{dups} duplicates");
            break;
        }
        assert!(
            Instant::now() < end,
            "{} of {n} messages delivered; missing {:?}",
            distinct.len(),
            (0..n)
                .filter(|i| !distinct.contains(i))
                .take(20)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
