//! Bulk subscriptions through a real sidecar: messages gathered into one
//! request per route, each entry settled by its own status (SUCCESS, RETRY
//! sent again, DROP to the dead-letter topic), to an HTTP app and to a gRPC
//! app over `OnBulkTopicEvent`.

mod common;

use common::event_app::{App, serve_app_with_sidecar};
use common::{TempDir, component, sidecar};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn resources() -> TempDir {
    let dir = TempDir::new("bulk");
    dir.write("bus.yaml", &component("bus", "pubsub.in-memory", &[]));
    dir.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 20ms\n        maxRetries: 5\n  targets:\n    components:\n      bus:\n        inbound:\n          retry: quick\n",
    );
    dir
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_app_gets_batches_and_settles_each_entry() {
    let dir = resources();
    let retried = Arc::new(Mutex::new(0));
    let r2 = retried.clone();
    let app = Arc::new(App {
        subscribe: r#"[
          {"pubsubname":"bus","topic":"orders","route":"/bulk","deadLetterTopic":"dead",
           "bulkSubscribe":{"enabled":true,"maxMessagesCount":10,"maxAwaitDurationMs":300}},
          {"pubsubname":"bus","topic":"dead","route":"/dead"}
        ]"#
        .into(),
        bulk: Some(Box::new(move |event| match event["data"].as_str() {
            Some("drop-me") => "DROP",
            Some("retry-me") => {
                let mut n = r2.lock().unwrap();
                *n += 1;
                if *n == 1 { "RETRY" } else { "SUCCESS" }
            }
            _ => "SUCCESS",
        })),
        ..Default::default()
    });
    let s = serve_app_with_sidecar(&app, &dir, &[]);

    let mut sent: Vec<String> = (0..23).map(|i| format!("m-{i}")).collect();
    sent.push("drop-me".into());
    sent.push("retry-me".into());
    for p in &sent {
        let r = s.request("POST", "/v1.0/publish/bus/orders", p.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }

    let delivered = || {
        let got = app.got.lock().unwrap();
        let mut seen = BTreeMap::<String, usize>::new();
        for g in got.iter().filter(|g| g.path == "/bulk") {
            for e in g.event["entries"].as_array().unwrap() {
                *seen
                    .entry(e["event"]["data"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        seen
    };
    wait("every entry delivered, the RETRY one twice", || {
        let seen = delivered();
        sent.iter().all(|p| seen.contains_key(p)) && seen.get("retry-me") == Some(&2)
    });
    let got: Vec<_> = app
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.path == "/bulk")
        .cloned()
        .collect();
    let first = &got[0];
    assert_eq!(first.content_type, "application/json");
    assert_eq!(first.pubsubname, "bus");
    let b = &first.event;
    assert_eq!(b["type"], "com.dapr.event.sent.bulk");
    assert_eq!(b["topic"], "orders");
    assert_eq!(b["pubsubname"], "bus");
    assert!(b["id"].as_str().is_some_and(|id| !id.is_empty()));
    let entry = &b["entries"][0];
    assert!(entry["entryId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(entry["contentType"], "application/cloudevents+json");
    assert_eq!(entry["event"]["specversion"], "1.0");
    assert_eq!(entry["event"]["topic"], "orders");
    assert!(
        got.iter()
            .any(|g| g.event["entries"].as_array().unwrap().len() > 1),
        "messages are gathered into batches"
    );
    assert!(
        got.iter()
            .all(|g| g.event["entries"].as_array().unwrap().len() <= 10),
        "never more than maxMessagesCount in one request"
    );
    let seen = delivered();
    for p in sent.iter().filter(|p| *p != "retry-me") {
        assert_eq!(seen[p], 1, "{p} delivered once");
    }
    // The dropped entry went to the dead-letter topic, the others did not.
    let dead = app.wait_for("/dead", 1);
    assert_eq!(dead[0].event["data"], "drop-me");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.wait_for("/dead", 1).len(), 1);
}

mod grpc_app {
    use super::common::callback::{Callbacks, handler};
    use std::sync::{Arc, Mutex};
    use tandem_proto::runtime::v1 as rt;
    use tonic::Status;

    /// A bulk request: its path and the data of its entries.
    pub type Batch = (String, Vec<String>);

    /// An app subscribed to `bus/orders` in bulk (at most 5 a batch),
    /// recording each batch; single events are not expected.
    pub fn app(batches: Arc<Mutex<Vec<Batch>>>) -> Callbacks {
        Callbacks {
            list_topic_subscriptions: Some(handler(|_| async {
                Ok(rt::ListTopicSubscriptionsResponse {
                    subscriptions: vec![rt::TopicSubscription {
                        pubsub_name: "bus".into(),
                        topic: "orders".into(),
                        bulk_subscribe: Some(rt::BulkSubscribeConfig {
                            enabled: true,
                            max_messages_count: 5,
                            max_await_duration_ms: 300,
                        }),
                        ..Default::default()
                    }],
                })
            })),
            on_topic_event: Some(handler(|_| async {
                Err(Status::internal("single events are not expected"))
            })),
            on_bulk_topic_event: Some(handler(move |req: rt::TopicEventBulkRequest| {
                let batches = batches.clone();
                async move {
                    assert_eq!(req.r#type, "com.dapr.event.sent.bulk");
                    assert_eq!(
                        (req.topic.as_str(), req.pubsub_name.as_str()),
                        ("orders", "bus")
                    );
                    let mut data = Vec::new();
                    let mut statuses = Vec::new();
                    for e in req.entries {
                        let Some(rt::topic_event_bulk_request_entry::Event::CloudEvent(ce)) =
                            e.event
                        else {
                            return Err(Status::invalid_argument("expected a CloudEvent entry"));
                        };
                        assert_eq!(ce.spec_version, "1.0");
                        data.push(String::from_utf8(ce.data).unwrap());
                        statuses.push(rt::TopicEventBulkResponseEntry {
                            entry_id: e.entry_id,
                            status: 0,
                        });
                    }
                    batches.lock().unwrap().push((req.path, data));
                    Ok(rt::TopicEventBulkResponse { statuses })
                }
            })),
            ..Default::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_app_gets_on_bulk_topic_event() {
    let dir = resources();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let app_port = common::callback::serve(grpc_app::app(batches.clone())).await;
    let s = sidecar()
        .args([
            "--app-port",
            &app_port.to_string(),
            "--app-protocol",
            "grpc",
            "--resources-path",
            dir.path().to_str().unwrap(),
        ])
        .start();
    assert!(
        s.wait_healthz(204, Duration::from_secs(10)),
        "{}",
        s.stderr.text()
    );
    let sent: Vec<String> = (0..12).map(|i| format!("g-{i}")).collect();
    for p in &sent {
        let r = s.request("POST", "/v1.0/publish/bus/orders", p.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    wait("every message in some batch", || {
        let got: Vec<String> = batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect();
        sent.iter().all(|p| got.contains(p))
    });
    let b = batches.lock().unwrap();
    assert!(b.iter().all(|(_, d)| d.len() <= 5), "maxMessagesCount 5");
    assert!(b.iter().any(|(_, d)| d.len() > 1), "batched");
    assert_eq!(
        b.iter().map(|(_, d)| d.len()).sum::<usize>(),
        12,
        "each message once"
    );
}
