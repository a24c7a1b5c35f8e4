//! Hot reload's cost to traffic, measured in the same run: the latency
//! percentiles of sequential state reads (in-memory store, HTTP) for a few
//! seconds of steady state, then as long again while a resources file
//! changes every 400 ms (each change rebuilds one Redis component and swaps
//! the snapshot); and the time from a file write to the change being
//! applied (the generation moving), over 20 writes.
//!
//! `cargo bench --bench reload` (needs the machine's Redis on 6379).

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn redis_store(db: u32) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cache\nspec:\n  type: state.redis\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n  - name: redisDB\n    value: \"{db}\"\n"
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let dir = std::env::temp_dir().join(format!("tandem-reload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mem.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: mem\nspec:\n  type: state.in-memory\n  metadata: []\n",
    )
    .unwrap();
    std::fs::write(dir.join("cache.yaml"), redis_store(0)).unwrap();
    let sc = common::start("bench", &dir, None);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let base = format!("http://127.0.0.1:{}", sc.http);
    let call = |method: http::Method, path: &str, body: &'static str| {
        let http = http.clone();
        let uri = format!("{base}{path}");
        async move {
            let req = hyper::Request::builder()
                .method(method)
                .uri(uri)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let resp = http.request(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(status.is_success(), "{status}");
            body
        }
    };
    call(
        http::Method::POST,
        "/v1.0/state/mem",
        r#"[{"key":"k","value":1}]"#,
    )
    .await;
    let generation = || async {
        let body = call(http::Method::GET, "/v1.0-alpha1/tandem/status", "").await;
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["generation"]
            .as_u64()
            .unwrap()
    };

    // Sequential reads for `secs`; their latencies in µs, sorted.
    let sample = |secs: f64| {
        let read = &call;
        async move {
            let mut samples = Vec::new();
            let end = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                let t = Instant::now();
                read(http::Method::GET, "/v1.0/state/mem/k", "").await;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            samples.sort_by(f64::total_cmp);
            samples
        }
    };
    let pct = |s: &[f64], p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)];
    let secs = if benching { 4.0 } else { 1.0 };
    // Warm up, then steady state.
    sample(0.3).await;
    let steady = sample(secs).await;
    // A writer on its own thread changes the Redis component every 400 ms
    // (each change holds still long enough to be applied).
    let stop = Arc::new(AtomicBool::new(false));
    let (s, d) = (stop.clone(), dir.clone());
    let writer = std::thread::spawn(move || {
        let mut db = 0;
        let mut writes = 0;
        while !s.load(Ordering::SeqCst) {
            db = (db + 1) % 2;
            std::fs::write(d.join("cache.yaml"), redis_store(db)).unwrap();
            writes += 1;
            std::thread::sleep(Duration::from_millis(400));
        }
        writes
    });
    let g0 = generation().await;
    let reloading = sample(secs).await;
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let applied = generation().await - g0;
    println!(
        "hot reload: sequential HTTP state reads (in-memory store) for {secs} s each; latencies in µs"
    );
    for (name, s) in [("steady state", &steady), ("while reloading", &reloading)] {
        println!(
            "{name:<18} {:>7} reads  p50 {:>6.1}  p99 {:>6.1}  p99.9 {:>7.1}  max {:>7.1}",
            s.len(),
            pct(s, 0.5),
            pct(s, 0.99),
            pct(s, 0.999),
            s[s.len() - 1]
        );
    }
    println!(
        "  {applied} reloads applied (of {writes} writes), each rebuilding one Redis component; p99 while reloading / steady = {:.2}",
        pct(&reloading, 0.99) / pct(&steady, 0.99)
    );

    // From a file write to the new generation serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut took = Vec::new();
    let rounds = if benching { 20 } else { 3 };
    for i in 0..rounds {
        let g = generation().await;
        let t = Instant::now();
        std::fs::write(dir.join("cache.yaml"), redis_store(i % 2 + 2)).unwrap();
        while generation().await == g {
            assert!(t.elapsed() < Duration::from_secs(5), "never applied");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    println!(
        "file write → applied ({rounds} writes): p50 {:.0} ms, max {:.0} ms (inotify wake-up + 150 ms settle + rebuild)",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
