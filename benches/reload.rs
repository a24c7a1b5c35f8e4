//! Hot reload's cost to traffic, measured in the same run: the p50/p99 of
//! sequential state reads (in-memory store, HTTP) in steady state, then
//! while a resources file changes every 100 ms (each change rebuilds one
//! Redis component and swaps the snapshot); and the time from a file write
//! to the change being applied (the generation moving), over 20 writes.
//!
//! `cargo bench --bench reload` (needs the machine's Redis on 6379).
//! `RELOAD_ITERS` sets the samples per measurement (default 4000).

mod common;

use bytes::Bytes;
use common::{measure, row};
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
    let iters: usize = std::env::var("RELOAD_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 4000 } else { 50 });
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

    println!(
        "hot reload: sequential HTTP state reads (in-memory store), {iters} each; latencies in µs"
    );
    let steady = measure(iters, || call(http::Method::GET, "/v1.0/state/mem/k", "")).await;
    row("steady state", &steady, None);

    // A writer on its own thread changes the Redis component every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let (s, d) = (stop.clone(), dir.clone());
    let writer = std::thread::spawn(move || {
        let mut db = 0;
        let mut writes = 0;
        while !s.load(Ordering::SeqCst) {
            db = (db + 1) % 2;
            std::fs::write(d.join("cache.yaml"), redis_store(db)).unwrap();
            writes += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        writes
    });
    let g0 = generation().await;
    let reloading = measure(iters, || call(http::Method::GET, "/v1.0/state/mem/k", "")).await;
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    let applied = generation().await - g0;
    row(
        &format!("while reloading ({applied} reloads applied of {writes} writes)"),
        &reloading,
        None,
    );
    println!(
        "  while reloading vs steady: p50 {:+.1} µs, p99 {:+.1} µs (p99 ratio {:.2})",
        reloading.p50 - steady.p50,
        reloading.p99 - steady.p99,
        reloading.p99 / steady.p99
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
        "file write → applied ({rounds} writes): p50 {:.0} ms, max {:.0} ms (100 ms poll + 150 ms settle + rebuild)",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
