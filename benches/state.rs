//! State latency through the sidecar against the raw store round trip,
//! measured in the same run: Redis (the same Lua scripts tandem runs, called
//! directly) vs. the sidecar's HTTP and gRPC state API over that Redis; plus
//! the in-memory store, and bulk-get throughput.
//!
//! `cargo bench --bench state` (needs the machine's Redis on 6379).
//! `STATE_ITERS` sets the samples per measurement (default 3000).

mod common;

use common::{measure, row};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Instant;
use tandem_proto::runtime::v1 as rt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("STATE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 3000 } else { 50 });

    let dir = std::env::temp_dir().join(format!("tandem-state-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stores.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cache\nspec:\n  type: state.redis\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: mem\nspec:\n  type: state.in-memory\n  metadata: []\n",
    )
    .unwrap();
    let sc = common::start("bench", &dir, None);

    // Raw Redis: the same scripts the store runs, on one connection.
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let get_script = redis::Script::new(
        r#"local r = redis.call("HMGET", KEYS[1], "data", "version") if not r[1] then return false end return {r[1], r[2], redis.call("PTTL", KEYS[1])}"#,
    );
    let set_script = redis::Script::new(
        r#"redis.call("HINCRBY", KEYS[1], "version", 1) redis.call("HSET", KEYS[1], "data", ARGV[1]) redis.call("PERSIST", KEYS[1]) return "OK""#,
    );
    let raw_key = format!("bench-raw-{}", std::process::id());
    let value = r#"{"order":42,"items":["a","b","c"]}"#;
    let (set_script, get_script, raw_key) = (&set_script, &get_script, &raw_key);
    let raw_set = measure(iters, || {
        let mut c = conn.clone();
        async move {
            let _: redis::Value = set_script
                .key(raw_key)
                .arg(value)
                .invoke_async(&mut c)
                .await
                .unwrap();
        }
    })
    .await;
    let raw_get = measure(iters, || {
        let mut c = conn.clone();
        async move {
            let _: redis::Value = get_script.key(raw_key).invoke_async(&mut c).await.unwrap();
        }
    })
    .await;
    let _: () = redis::AsyncCommands::del(&mut conn, raw_key).await.unwrap();

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let base = format!("http://127.0.0.1:{}", sc.http);
    let save_body = Bytes::from(format!(r#"[{{"key":"k","value":{value}}}]"#));
    let http_call = |method: http::Method, path: String, body: Bytes| {
        let http = http.clone();
        let uri = format!("{base}{path}");
        async move {
            let req = hyper::Request::builder()
                .method(method)
                .uri(uri)
                .body(Full::new(body))
                .unwrap();
            let resp = http.request(req).await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.into_body().collect().await.unwrap();
        }
    };
    let mut grpc = rt::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", sc.grpc))
        .await
        .unwrap();

    println!(
        "state latency, {iters} sequential calls each (value {} bytes)",
        value.len()
    );
    row("raw redis: save script", &raw_set, None);
    row("raw redis: get script", &raw_get, None);
    for store in ["cache", "mem"] {
        let base_set = (store == "cache").then_some(&raw_set);
        let base_get = (store == "cache").then_some(&raw_get);
        let s = measure(iters, || {
            http_call(
                http::Method::POST,
                format!("/v1.0/state/{store}"),
                save_body.clone(),
            )
        })
        .await;
        row(&format!("sidecar HTTP save ({store})"), &s, base_set);
        let s = measure(iters, || {
            http_call(
                http::Method::GET,
                format!("/v1.0/state/{store}/k"),
                Bytes::new(),
            )
        })
        .await;
        row(&format!("sidecar HTTP get ({store})"), &s, base_get);
        let s = measure(iters, || {
            let mut g = grpc.clone();
            let req = rt::SaveStateRequest {
                store_name: store.into(),
                states: vec![tandem_proto::common::v1::StateItem {
                    key: "g".into(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                }],
            };
            async move {
                g.save_state(req).await.unwrap();
            }
        })
        .await;
        row(&format!("sidecar gRPC save ({store})"), &s, base_set);
        let s = measure(iters, || {
            let mut g = grpc.clone();
            let req = rt::GetStateRequest {
                store_name: store.into(),
                key: "g".into(),
                ..Default::default()
            };
            async move {
                g.get_state(req).await.unwrap();
            }
        })
        .await;
        row(&format!("sidecar gRPC get ({store})"), &s, base_get);
    }

    // Bulk get: 100 keys per request.
    let keys: Vec<String> = (0..100).map(|i| format!("bulk-{i}")).collect();
    let items: Vec<String> = keys
        .iter()
        .map(|k| format!(r#"{{"key":"{k}","value":{value}}}"#))
        .collect();
    http_call(
        http::Method::POST,
        "/v1.0/state/cache".into(),
        Bytes::from(format!("[{}]", items.join(","))),
    )
    .await;
    let bulk_body = Bytes::from(serde_json::json!({"keys": keys, "parallelism": 16}).to_string());
    let rounds = (iters / 10).max(5);
    let t = Instant::now();
    for _ in 0..rounds {
        http_call(
            http::Method::POST,
            "/v1.0/state/cache/bulk".into(),
            bulk_body.clone(),
        )
        .await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "bulk get (redis, 100 keys, parallelism 16): {:.0} requests/s = {:.0} keys/s",
        rounds as f64 / secs,
        rounds as f64 * 100.0 / secs
    );
    grpc.delete_bulk_state(rt::DeleteBulkStateRequest {
        store_name: "cache".into(),
        states: keys
            .iter()
            .chain(["k".to_string(), "g".to_string()].iter())
            .map(|k| tandem_proto::common::v1::StateItem {
                key: k.clone(),
                ..Default::default()
            })
            .collect(),
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
