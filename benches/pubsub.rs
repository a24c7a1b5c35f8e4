//! Publish latency through the sidecar against the raw broker round trip
//! (Redis XADD on the same Redis, measured in the same run), and end-to-end
//! publish → deliver throughput and latency per broker to a real HTTP app.
//!
//! `cargo bench --bench pubsub` (needs the machine's Redis, RabbitMQ, NATS
//! and Mosquitto).
//! `PUBSUB_ITERS` sets the samples per measurement (default 2000).

mod common;
#[path = "../tests/common/nats.rs"]
mod nats;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_proto::runtime::v1 as rt;

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

/// A subscriber app that counts deliveries and records publish→deliver
/// latency from the `sent` field (µs since the Unix epoch).
async fn app(count: Arc<AtomicUsize>, lat: Arc<std::sync::Mutex<Vec<f64>>>, topic: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (count, lat, topic) = (count.clone(), lat.clone(), topic.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (count, lat, topic) = (count.clone(), lat.clone(), topic.clone());
                        async move {
                            if req.uri().path() == "/dapr/subscribe" {
                                let body = format!(
                                    r#"[{{"pubsubname":"bus","topic":"{topic}","route":"/in"}}]"#
                                );
                                return Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    Full::new(Bytes::from(body)),
                                ));
                            }
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                                && let Some(sent) = v["data"]["sent"].as_u64()
                            {
                                lat.lock()
                                    .unwrap()
                                    .push(now_us().saturating_sub(sent) as f64);
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    port
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn component(name: &str, type_: &str, md: &[(&str, String)]) -> String {
    let mut s = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  metadata:\n"
    );
    if md.is_empty() {
        s = s.replace("  metadata:\n", "  metadata: []\n");
    }
    for (k, v) in md {
        s.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("PUBSUB_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 2000 } else { 30 });
    let run = format!("{}-{}", std::process::id(), now_us());
    let dir = std::env::temp_dir().join(format!("tandem-pubsub-bench-{run}"));
    let payload = r#"{"order":42,"items":["a","b","c"]}"#;

    // Publish latency: raw XADD vs the sidecar over HTTP and gRPC, on Redis.
    let topic = format!("bench-{run}");
    std::fs::create_dir_all(dir.join("redis")).unwrap();
    std::fs::write(
        dir.join("redis/bus.yaml"),
        component(
            "bus",
            "pubsub.redis",
            &[("redisHost", "127.0.0.1:6379".into())],
        ),
    )
    .unwrap();
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut raw = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let _: String = redis::cmd("XADD")
            .arg(&topic)
            .arg("*")
            .arg("data")
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
        raw.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (raw50, raw99) = percentiles(raw);
    let sc = common::start(
        &format!("bench-{}", std::process::id()),
        &dir.join("redis"),
        None,
    );
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri = format!("http://127.0.0.1:{}/v1.0/publish/bus/{topic}", sc.http);
    let mut via_http = Vec::with_capacity(iters);
    for _ in 0..iters {
        let req = hyper::Request::post(uri.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .unwrap();
        let t = Instant::now();
        let resp = http.request(req).await.unwrap();
        assert_eq!(resp.status(), 204);
        resp.into_body().collect().await.unwrap();
        via_http.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut grpc = rt::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", sc.grpc))
        .await
        .unwrap();
    let mut via_grpc = Vec::with_capacity(iters);
    for _ in 0..iters {
        let req = rt::PublishEventRequest {
            pubsub_name: "bus".into(),
            topic: topic.clone(),
            data: payload.as_bytes().to_vec(),
            data_content_type: "application/json".into(),
            metadata: Default::default(),
        };
        let t = Instant::now();
        grpc.publish_event(req).await.unwrap();
        via_grpc.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(sc);
    let _: () = redis::AsyncCommands::del(&mut conn, &topic).await.unwrap();
    let (h50, h99) = percentiles(via_http);
    let (g50, g99) = percentiles(via_grpc);
    println!(
        "publish latency on Redis Streams, {iters} sequential publishes ({} byte payload)",
        payload.len()
    );
    println!("raw XADD                  p50 {raw50:>7.1} µs  p99 {raw99:>7.1} µs");
    println!(
        "sidecar HTTP publish      p50 {h50:>7.1} µs  p99 {h99:>7.1} µs   added: p50 {:+.1} µs",
        h50 - raw50
    );
    println!(
        "sidecar gRPC publish      p50 {g50:>7.1} µs  p99 {g99:>7.1} µs   added: p50 {:+.1} µs",
        g50 - raw50
    );

    // End to end: publish → app, per broker.
    println!(
        "end to end publish → delivery, {iters} messages published as fast as one HTTP client can"
    );
    for (name, type_, md) in [
        ("in-memory", "pubsub.in-memory", vec![]),
        (
            "embedded",
            "pubsub.embedded",
            vec![
                ("path", dir.join("e2e.db").display().to_string()),
                ("pollInterval", "5ms".to_string()),
            ],
        ),
        (
            "redis",
            "pubsub.redis",
            vec![("redisHost", "127.0.0.1:6379".to_string())],
        ),
        (
            "rabbitmq",
            "pubsub.rabbitmq",
            vec![(
                "connectionString",
                "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            )],
        ),
        (
            "jetstream",
            "pubsub.jetstream",
            vec![("natsURL", "nats://127.0.0.1:4222".to_string())],
        ),
        (
            "mqtt3",
            "pubsub.mqtt3",
            vec![("url", "tcp://127.0.0.1:1883".to_string())],
        ),
    ] {
        let res = dir.join(name);
        std::fs::create_dir_all(&res).unwrap();
        std::fs::write(
            res.join("bus.yaml"),
            component(
                "bus",
                type_,
                &md.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>(),
            ),
        )
        .unwrap();
        let topic = format!("e2e-{name}-{run}");
        let (count, lat) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(std::sync::Mutex::new(Vec::new())),
        );
        let port = app(count.clone(), lat.clone(), topic.clone()).await;
        let sc = common::start(&format!("bench-{}", std::process::id()), &res, Some(port));
        // RabbitMQ binds the group's queue, MQTT subscribes, asynchronously.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let uri = format!("http://127.0.0.1:{}/v1.0/publish/bus/{topic}", sc.http);
        let t = Instant::now();
        for _ in 0..iters {
            let body = format!(r#"{{"sent":{}}}"#, now_us());
            let req = hyper::Request::post(uri.as_str())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = http.request(req).await.unwrap();
            assert_eq!(resp.status(), 204);
            resp.into_body().collect().await.unwrap();
        }
        let end = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::SeqCst) < iters {
            assert!(
                Instant::now() < end,
                "{name}: delivered {} of {iters}",
                count.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(lat.lock().unwrap().clone());
        println!(
            "{name:<10} {:>7.0} msg/s   publish→deliver p50 {p50:>8.1} µs  p99 {p99:>8.1} µs",
            iters as f64 / secs
        );
        drop(sc);
        if name == "redis" {
            let _: () = redis::AsyncCommands::del(&mut conn, &topic).await.unwrap();
        }
        if name == "jetstream" {
            nats::delete_stream(&format!("tandem-{topic}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
