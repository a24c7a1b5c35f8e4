//! Output-binding and lock round trips through the sidecar against the raw
//! engine, measured in the same run: a Redis `SET` vs `bindings.redis`
//! create (HTTP and gRPC `InvokeBinding`); Redis `SET NX PX` plus the
//! owner-checked delete vs `lock.redis` lock + unlock (HTTP and gRPC); and
//! `lock.in-memory` for the sidecar's own share.
//!
//! `cargo bench --bench bindings` (needs the machine's Redis on 6379).
//! `BINDINGS_ITERS` sets the samples per measurement (default 3000).

mod common;

use bytes::Bytes;
use common::{measure, row};
use http_body_util::{BodyExt, Full};
use tandem_proto::runtime::v1 as rt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("BINDINGS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 3000 } else { 50 });
    let dir = std::env::temp_dir().join(format!("tandem-bindings-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let comp = |name: &str, type_: &str, md: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  metadata:{md}\n"
        )
    };
    let redis_md = "\n  - name: redisHost\n    value: 127.0.0.1:6379";
    std::fs::write(
        dir.join("components.yaml"),
        [
            comp("kv", "bindings.redis", redis_md),
            comp("locks", "lock.redis", redis_md),
            comp("memlocks", "lock.in-memory", " []"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let sc = common::start("bench", &dir, None);
    let value = r#"{"order":42,"items":["a","b","c"]}"#;
    let key = format!("bench-binding-{}", std::process::id());

    // The raw engine: one multiplexed connection, the same commands.
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let unlock = redis::Script::new(
        r#"local v = redis.call("GET", KEYS[1]) if not v then return 1 end if v ~= ARGV[1] then return 2 end redis.call("DEL", KEYS[1]) return 0"#,
    );
    let (key, unlock) = (&key, &unlock);
    let raw_set = measure(iters, || {
        let mut c = conn.clone();
        async move {
            let _: () = redis::AsyncCommands::set(&mut c, key, value).await.unwrap();
        }
    })
    .await;
    let raw_lock = measure(iters, || {
        let mut c = conn.clone();
        async move {
            let lock_key = format!("{key}-lock");
            let taken: Option<String> = redis::cmd("SET")
                .arg(&lock_key)
                .arg("me")
                .arg("NX")
                .arg("PX")
                .arg(10_000)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(taken.is_some());
            let code: i64 = unlock
                .key(&lock_key)
                .arg("me")
                .invoke_async(&mut c)
                .await
                .unwrap();
            assert_eq!(code, 0);
        }
    })
    .await;

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let base = format!("http://127.0.0.1:{}", sc.http);
    let post = |path: String, body: String| {
        let http = http.clone();
        let uri = format!("{base}{path}");
        async move {
            let req = hyper::Request::builder()
                .method(http::Method::POST)
                .uri(uri)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = http.request(req).await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.into_body().collect().await.unwrap().to_bytes()
        }
    };
    let grpc = rt::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", sc.grpc))
        .await
        .unwrap();

    println!("output bindings and locks, {iters} sequential calls each; latencies in µs");
    row("raw redis: SET", &raw_set, None);
    let create =
        serde_json::json!({"operation": "create", "data": value, "metadata": {"key": key}})
            .to_string();
    let s = measure(iters, || post("/v1.0/bindings/kv".into(), create.clone())).await;
    row("sidecar HTTP bindings.redis create", &s, Some(&raw_set));
    let s = measure(iters, || {
        let mut g = grpc.clone();
        let req = rt::InvokeBindingRequest {
            name: "kv".into(),
            data: value.as_bytes().to_vec(),
            metadata: [("key".to_string(), key.to_string())].into(),
            operation: "create".into(),
        };
        async move {
            g.invoke_binding(req).await.unwrap();
        }
    })
    .await;
    row("sidecar gRPC bindings.redis create", &s, Some(&raw_set));

    row("raw redis: SET NX PX + unlock script", &raw_lock, None);
    for store in ["locks", "memlocks"] {
        let base = (store == "locks").then_some(&raw_lock);
        let resource = format!("{key}-{store}");
        let lock_body =
            serde_json::json!({"resourceId": resource, "lockOwner": "me", "expiryInSeconds": 10})
                .to_string();
        let unlock_body =
            serde_json::json!({"resourceId": resource, "lockOwner": "me"}).to_string();
        let s = measure(iters, || {
            let (l, u) = (lock_body.clone(), unlock_body.clone());
            let post = &post;
            async move {
                let got = post(format!("/v1.0-alpha1/lock/{store}"), l).await;
                assert_eq!(&got[..], br#"{"success":true}"#);
                post(format!("/v1.0-alpha1/unlock/{store}"), u).await;
            }
        })
        .await;
        row(&format!("sidecar HTTP lock + unlock ({store})"), &s, base);
        let s = measure(iters, || {
            let mut g = grpc.clone();
            let resource = resource.clone();
            async move {
                let r = g
                    .try_lock_alpha1(rt::TryLockRequest {
                        store_name: store.into(),
                        resource_id: resource.clone(),
                        lock_owner: "me".into(),
                        expiry_in_seconds: 10,
                    })
                    .await
                    .unwrap();
                assert!(r.into_inner().success);
                g.unlock_alpha1(rt::UnlockRequest {
                    store_name: store.into(),
                    resource_id: resource,
                    lock_owner: "me".into(),
                })
                .await
                .unwrap();
            }
        })
        .await;
        row(&format!("sidecar gRPC lock + unlock ({store})"), &s, base);
    }
    let mut c = conn.clone();
    let _: () = redis::AsyncCommands::del(&mut c, key).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
