//! The transactional outbox through a real sidecar on a real Redis: the
//! upserts of a committed transaction reach subscribers, a transaction that
//! fails publishes nothing, projections replace the published value, the
//! marker is removed afterwards, and bad outbox metadata is refused.

mod common;

use common::event_app::{App, serve_app_with_sidecar};
use common::{TempDir, component, run_id, sidecar};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn data_seen(app: &App) -> Vec<serde_json::Value> {
    app.got
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.path == "/orders")
        .map(|g| g.event["data"].clone())
        .collect()
}

fn redis_keys(pattern: &str) -> Vec<String> {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_connection().unwrap();
    redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_upserts_are_published_and_failed_transactions_are_not() {
    let run = run_id();
    let prefix = format!("outbox{run}");
    let dir = TempDir::new("outbox");
    dir.write("bus.yaml", &component("bus", "pubsub.in-memory", &[]));
    dir.write(
        "store.yaml",
        &component(
            "store",
            "state.redis",
            &[
                ("redisHost", "127.0.0.1:6379"),
                ("keyPrefix", &prefix),
                ("outboxPublishPubsub", "bus"),
                ("outboxPublishTopic", "orders"),
            ],
        ),
    );
    let app = Arc::new(App {
        subscribe: r#"[{"pubsubname":"bus","topic":"orders","route":"/orders"}]"#.into(),
        ..Default::default()
    });
    let s = serve_app_with_sidecar(&app, &dir, &[]);

    // A committed transaction: both upserts are published, the delete is not.
    let tx = br#"{"operations":[
        {"operation":"upsert","request":{"key":"o1","value":{"id":1}}},
        {"operation":"upsert","request":{"key":"o2","value":{"id":2}}},
        {"operation":"delete","request":{"key":"gone"}}
    ]}"#;
    let r = s.request("POST", "/v1.0/state/store/transaction", tx);
    assert_eq!(r.status, 204, "{}", r.text());
    let end = Instant::now() + Duration::from_secs(10);
    while data_seen(&app).len() < 2 {
        assert!(Instant::now() < end, "outbox events not delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = app.got.lock().unwrap().clone();
    let e = &got.iter().find(|g| g.path == "/orders").unwrap().event;
    assert_eq!(e["source"], "test-app");
    assert_eq!(e["topic"], "orders");
    assert_eq!(e["pubsubname"], "bus");
    assert_eq!(e["datacontenttype"], "application/json");
    let mut ids: Vec<i64> = data_seen(&app)
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        s.get("/v1.0/state/store/o1").json()["id"],
        1,
        "and it was saved"
    );

    // A transaction that fails at commit (stale ETag) publishes nothing.
    let etag = s
        .get("/v1.0/state/store/o1")
        .header("etag")
        .unwrap()
        .to_string();
    let bad = format!(
        r#"{{"operations":[
            {{"operation":"upsert","request":{{"key":"o3","value":{{"id":3}}}}}},
            {{"operation":"upsert","request":{{"key":"o1","value":{{"id":11}},"etag":"{}9"}}}}
        ]}}"#,
        etag
    );
    let r = s.request("POST", "/v1.0/state/store/transaction", bad.as_bytes());
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(s.get("/v1.0/state/store/o3").status, 204, "nothing saved");

    // A projection: the saved value stays whole, the event carries the
    // projected one.
    let tx = br#"{"operations":[
        {"operation":"upsert","request":{"key":"o4","value":{"id":4,"secret":"s3cr3t"}}},
        {"operation":"upsert","request":{"key":"o4","value":{"id":4},"metadata":{"outbox.projection":"true"}}}
    ]}"#;
    let r = s.request("POST", "/v1.0/state/store/transaction", tx);
    assert_eq!(r.status, 204, "{}", r.text());
    let end = Instant::now() + Duration::from_secs(10);
    while data_seen(&app).len() < 3 {
        assert!(Instant::now() < end, "projection not delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = data_seen(&app)[2].clone();
    assert_eq!(
        last,
        serde_json::json!({"id": 4}),
        "the projection is published"
    );
    assert_eq!(s.get("/v1.0/state/store/o4").json()["secret"], "s3cr3t");

    // The failed transaction's events never show up; markers are removed.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        data_seen(&app)
            .iter()
            .all(|d| d["id"] != 3 && d["id"] != 11),
        "a failed transaction published: {:?}",
        data_seen(&app)
    );
    assert_eq!(data_seen(&app).len(), 3, "no duplicates");
    assert!(
        redis_keys(&format!("{prefix}||tandem-outbox-*")).is_empty(),
        "markers of committed transactions are removed"
    );

    // A projection without its upsert is refused.
    let r = s.request(
        "POST",
        "/v1.0/state/store/transaction",
        br#"{"operations":[{"operation":"upsert","request":{"key":"x","value":1,"metadata":{"outbox.projection":"true"}}}]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("projection"), "{}", r.text());

    let mut c = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_connection()
        .unwrap();
    let keys = redis_keys(&format!("{prefix}||*"));
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(&mut c).unwrap();
    }
}

#[test]
fn outbox_metadata_errors_are_clear() {
    let dir = TempDir::new("outbox-bad");
    dir.write(
        "store.yaml",
        &component(
            "store",
            "state.in-memory",
            &[
                ("outboxPublishPubsub", "nowhere"),
                ("outboxPublishTopic", "t"),
            ],
        ),
    );
    let (status, err) = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start_failing();
    assert!(!status.success());
    assert!(
        err.contains("pubsub `nowhere`") && err.contains("not loaded"),
        "{err}"
    );

    dir.write(
        "store.yaml",
        &component(
            "store",
            "state.in-memory",
            &[("outboxPublishPubsub", "bus")],
        ),
    );
    let (status, err) = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start_failing();
    assert!(!status.success());
    assert!(err.contains("outboxPublishTopic"), "{err}");
}
