//! Bindings through the real sidecar: the output API's JSON rules and
//! errors, outbound resiliency on a flaky target, and input bindings
//! reaching a real HTTP app — asked first with `OPTIONS` unless the
//! component says `direction: input`, redelivered when the app fails.

mod common;

use bytes::Bytes;
use common::{TempDir, component, sidecar};
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an app received: method, path, a header or two, body.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    path: String,
    content_type: String,
    time_zone: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Got>>>;

/// An app: `OPTIONS /tick`, `/direct` and `/orders` are answered 200,
/// other OPTIONS 404; the first POST of each body to `/orders` fails with
/// 500. Everything is logged.
async fn app(log: Log) -> u16 {
    let failed_once = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (log, failed_once) = (log.clone(), failed_once.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body =
                String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
            let h = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let got = Got {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                content_type: h("content-type"),
                time_zone: h("timezone"),
                body: body.clone(),
            };
            log.lock().unwrap().push(got);
            let status = match (parts.method.as_str(), parts.uri.path()) {
                ("OPTIONS", "/tick" | "/direct" | "/orders") => 200,
                ("OPTIONS", _) => 404,
                ("POST", "/orders") if failed_once.lock().unwrap().insert(body) => 500,
                _ => 200,
            };
            hyper::Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(b"taken")))
                .unwrap()
        }
    })
    .await
}

/// A target for the http binding: 503 twice, then 200 echoing the body.
async fn flaky(hits: Arc<Mutex<Vec<String>>>) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let hits = hits.clone();
        async move {
            let body =
                String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes())
                    .into_owned();
            let n = {
                let mut h = hits.lock().unwrap();
                h.push(body.clone());
                h.len()
            };
            hyper::Response::builder()
                .status(if n <= 2 { 503 } else { 200 })
                .body(Full::new(Bytes::from(format!("got {body}"))))
                .unwrap()
        }
    })
    .await
}

fn post(s: &common::Sidecar, name: &str, body: &str) -> common::Resp {
    s.request("POST", &format!("/v1.0/bindings/{name}"), body.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_bindings_keep_daprs_rules() {
    let files = TempDir::new("bindings-files");
    let res = TempDir::new("bindings-res");
    let hits = Arc::new(Mutex::new(Vec::new()));
    let target = flaky(hits.clone()).await;
    res.write(
        "files.yaml",
        &component(
            "files",
            "bindings.localstorage",
            &[("rootPath", files.path().to_str().unwrap())],
        ),
    );
    res.write(
        "web.yaml",
        &component(
            "web",
            "bindings.http",
            &[("url", &format!("http://127.0.0.1:{target}"))],
        ),
    );
    res.write(
        "down.yaml",
        &component("down", "bindings.http", &[("url", "http://127.0.0.1:1")]),
    );
    res.write(
        "ticks.yaml",
        &component("ticks", "bindings.cron", &[("schedule", "@every 1h")]),
    );
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      thrice:\n        policy: constant\n        duration: 10ms\n        maxRetries: 3\n  targets:\n    components:\n      web:\n        outbound:\n          retry: thrice\n      down:\n        outbound:\n          retry: thrice\n",
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();

    // The metadata API lists them with daprd's capabilities.
    let meta = s.get("/v1.0/metadata").json();
    let caps = |name: &str| {
        meta["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["capabilities"].clone())
    };
    assert_eq!(caps("files"), Some(serde_json::json!(["OUTPUT_BINDING"])));
    assert_eq!(caps("ticks"), Some(serde_json::json!(["INPUT_BINDING"])));

    // create / get / list / delete, the data's JSON text as Dapr hands it on.
    let r = post(
        &s,
        "files",
        r#"{"operation":"create","data":"hello","metadata":{"fileName":"a.txt"}}"#,
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"fileName":"a.txt"}"#)
    );
    let r = post(
        &s,
        "files",
        r#"{"operation":"get","metadata":{"fileName":"a.txt"}}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    let r = post(&s, "files", r#"{"operation":"list"}"#);
    assert_eq!(r.json(), serde_json::json!(["a.txt"]));
    let r = post(
        &s,
        "files",
        r#"{"operation":"delete","metadata":{"fileName":"a.txt"}}"#,
    );
    assert_eq!(r.status, 204);

    // Bad input: a clear status and message, nothing written.
    let r = post(
        &s,
        "files",
        r#"{"operation":"create","data":"x","metadata":{"fileName":"../../escape"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_INVOKE_OUTPUT_BINDING");
    assert!(r.text().contains("leaves"), "{}", r.text());
    let r = post(&s, "files", r#"{"operation":"explode"}"#);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("create, get, list, delete"),
        "{}",
        r.text()
    );
    let r = post(&s, "files", r#"{"data":"x"}"#);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = post(&s, "files", "{not json");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = post(&s, "nope", r#"{"operation":"create"}"#);
    assert_eq!(r.status, 500);
    assert!(r.text().contains("[down, files, web]"), "{}", r.text());
    let r = post(&s, "ticks", r#"{"operation":"create"}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("input binding"), "{}", r.text());
    assert!(std::fs::read_dir(files.path()).unwrap().next().is_none());

    // A flaky target: two 503s retried by the component's policy; the
    // data is the JSON text (quotes included); the status comes back as
    // metadata headers.
    let r = post(
        &s,
        "web",
        r#"{"operation":"post","data":"hi","metadata":{"path":"/x"}}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, r#"got "hi""#));
    assert_eq!(r.header("metadata.statusCode"), Some("200"));
    assert_eq!(hits.lock().unwrap().len(), 3);
    // A target that is down: tried four times, then a clear error.
    let t = Instant::now();
    let r = post(&s, "down", r#"{"operation":"get"}"#);
    assert_eq!(r.status, 500);
    assert!(r.text().contains("127.0.0.1:1"), "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "three pauses of 10 ms"
    );
    let m = s.metrics_text();
    assert!(
        m.lines()
            .any(|l| l.starts_with("dapr_resiliency_activations_total")
                && l.contains("policy=\"retry\"")
                && l.contains("down")),
        "{m}"
    );
    // The sidecar is fine afterwards.
    assert_eq!(s.get("/v1.0/healthz").status, 204);
}

fn wait(log: &Log, what: &str, f: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let got = log.lock().unwrap().clone();
        if f(&got) {
            return got;
        }
        assert!(Instant::now() < end, "{what}: {got:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_bindings_reach_the_app() {
    let log = Log::default();
    let port = app(log.clone()).await;
    let res = TempDir::new("bindings-in");
    let run = common::run_id();
    res.write(
        "tick.yaml",
        &component("tick", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    // The app answers 404 to OPTIONS /elsewhere: not read.
    res.write(
        "unwanted.yaml",
        &component(
            "unwanted",
            "bindings.cron",
            &[("schedule", "@every 1s"), ("route", "/elsewhere")],
        ),
    );
    // `direction: input`: read without asking (the app would say 404).
    res.write(
        "told.yaml",
        &component(
            "told",
            "bindings.cron",
            &[
                ("schedule", "@every 1s"),
                ("route", "/told"),
                ("direction", "input"),
            ],
        ),
    );
    res.write(
        "queue.yaml",
        &component(
            "queue",
            "bindings.rabbitmq",
            &[
                ("host", "amqp://guest:guest@127.0.0.1:5672"),
                ("queueName", &format!("tandem-e2e-{run}")),
                ("deleteWhenUnused", "true"),
                ("route", "/orders"),
                ("direction", "input, output"),
            ],
        ),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--app-port", &port.to_string()])
        .start();
    assert!(s.wait_healthz(204, Duration::from_secs(10)));

    let got = wait(&log, "two ticks at /tick and one at /told", |g| {
        g.iter()
            .filter(|x| x.method == "POST" && x.path == "/tick")
            .count()
            >= 2
            && g.iter().any(|x| x.method == "POST" && x.path == "/told")
    });
    let tick = got
        .iter()
        .find(|x| x.method == "POST" && x.path == "/tick")
        .unwrap();
    assert_eq!(tick.content_type, "application/json");
    assert_eq!(tick.time_zone, "UTC", "binding metadata arrives as headers");
    assert!(
        got.iter()
            .any(|x| x.method == "OPTIONS" && x.path == "/tick")
    );
    assert!(
        got.iter()
            .any(|x| x.method == "OPTIONS" && x.path == "/elsewhere")
    );
    assert!(
        !got.iter()
            .any(|x| x.method == "OPTIONS" && x.path == "/told"),
        "direction: input is not asked"
    );
    assert!(
        !got.iter()
            .any(|x| x.path == "/elsewhere" && x.method == "POST"),
        "the app said no"
    );

    // Output then input through RabbitMQ; the first delivery of each fails
    // and comes again.
    for i in 0..3 {
        let r = post(
            &s,
            "queue",
            &format!(r#"{{"operation":"create","data":"order-{i}"}}"#),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let got = wait(
        &log,
        "each order delivered twice (a 500, then a 200)",
        |g| {
            (0..3).all(|i| {
                g.iter()
                    .filter(|x| {
                        x.method == "POST"
                            && x.path == "/orders"
                            && x.body == format!("\"order-{i}\"")
                    })
                    .count()
                    == 2
            })
        },
    );
    let order: Vec<&str> = got
        .iter()
        .filter(|x| x.method == "POST" && x.path == "/orders")
        .map(|x| x.body.as_str())
        .collect();
    assert_eq!(order.first(), Some(&"\"order-0\""), "{order:?}");
}

/// A gRPC app lists the bindings it takes; its `OnBindingEvent` answer
/// saves state and sends its data on to an output binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_app_answers_binding_events_with_state_and_forwards() {
    use common::callback::{Callbacks, handler};
    use tandem_proto::runtime::v1 as rt;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let port = common::callback::serve(Callbacks {
        list_input_bindings: Some(handler(|_| async {
            Ok(rt::ListInputBindingsResponse {
                bindings: vec!["tick".into()],
            })
        })),
        on_binding_event: Some(handler(move |e: rt::BindingEventRequest| {
            let seen = seen.clone();
            async move {
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push((e.name.clone(), e.metadata.get("timeZone").cloned()));
                    s.len()
                };
                Ok(rt::BindingEventResponse {
                    store_name: "memstore".into(),
                    states: vec![tandem_proto::common::v1::StateItem {
                        key: format!("tick-{n}"),
                        value: b"seen".to_vec(),
                        ..Default::default()
                    }],
                    to: vec!["files".into()],
                    data: format!("forwarded-{n}").into_bytes(),
                    concurrency: 0,
                })
            }
        })),
        ..Default::default()
    })
    .await;
    let files = TempDir::new("bindings-grpc-files");
    let res = TempDir::new("bindings-grpc-res");
    res.write(
        "tick.yaml",
        &component("tick", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    res.write(
        "other.yaml",
        &component("other", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    res.write(
        "memstore.yaml",
        &component("memstore", "state.in-memory", &[]),
    );
    res.write(
        "files.yaml",
        &component(
            "files",
            "bindings.localstorage",
            &[("rootPath", files.path().to_str().unwrap())],
        ),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--app-port", &port.to_string(), "--app-protocol", "grpc"])
        .start();
    let end = Instant::now() + Duration::from_secs(10);
    while events.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < end,
            "no binding events:\n{}",
            s.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = events.lock().unwrap().clone();
    assert!(
        got.iter()
            .all(|(name, tz)| name == "tick" && tz.as_deref() == Some("UTC")),
        "only the listed binding, with its metadata: {got:?}"
    );
    let r = s.get("/v1.0/state/memstore/tick-1");
    assert_eq!((r.status, r.text().as_str()), (200, "seen"));
    let end = Instant::now() + Duration::from_secs(5);
    let forwarded = loop {
        let texts: Vec<String> = std::fs::read_dir(files.path())
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        if texts.iter().any(|t| t == "forwarded-1") {
            break texts;
        }
        assert!(Instant::now() < end, "nothing forwarded: {texts:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!forwarded.is_empty());
}

/// An app that fails its health check gets no input events until it
/// recovers; then they flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_bindings_pause_while_the_app_is_unhealthy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let healthy = Arc::new(AtomicBool::new(true));
    let ticks = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let (h, t) = (healthy.clone(), ticks.clone());
    let port = common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (h, t) = (h.clone(), t.clone());
        async move {
            let status = match (req.method().as_str(), req.uri().path()) {
                ("GET", "/healthz") if !h.load(Ordering::SeqCst) => 503,
                ("POST", "/tick") => {
                    t.lock().unwrap().push(Instant::now());
                    200
                }
                _ => 200,
            };
            hyper::Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
    .await;
    let res = TempDir::new("bindings-health");
    res.write(
        "tick.yaml",
        &component("tick", "bindings.cron", &[("schedule", "@every 1s")]),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--app-port", &port.to_string()])
        .args([
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "100ms",
        ])
        .args(["--app-health-threshold", "1"])
        .start();
    let count = || ticks.lock().unwrap().len();
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "{what}:\n{}", s.stderr.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("a first tick", &|| count() >= 1);
    healthy.store(false, Ordering::SeqCst);
    until("the sidecar sees the app unhealthy", &|| {
        s.stderr.text().contains("pausing event delivery")
    });
    // A tick already on its way may still land.
    std::thread::sleep(Duration::from_millis(300));
    let paused_at = count();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count(), paused_at, "no ticks while the app is unhealthy");
    healthy.store(true, Ordering::SeqCst);
    until("ticks again after recovery", &|| count() > paused_at);
}
