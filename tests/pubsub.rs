//! Publish and delivery through a real sidecar to a real HTTP app:
//! CloudEvents, routing rules, the app's answers, retries, dead letters,
//! scoping and errors.

mod common;

use common::event_app::App;
use common::{TempDir, sidecar};
use std::sync::Arc;
use std::time::Duration;
use tandem_proto::runtime::v1 as rt;

const SUBSCRIBE: &str = r#"[
  {"pubsubname":"bus","topic":"orders","route":"/orders"},
  {"pubsubname":"bus","topic":"sizes","routes":{"rules":[{"match":"event.data.kind == \"big\"","path":"/big"}],"default":"/small"}},
  {"pubsubname":"bus","topic":"flaky","route":"/flaky"},
  {"pubsubname":"bus","topic":"poison","route":"/poison","deadLetterTopic":"dead"},
  {"pubsubname":"bus","topic":"dead","route":"/dead"},
  {"pubsubname":"bus","topic":"raw","route":"/raw","metadata":{"rawPayload":"true"}}
]"#;

use common::event_app::serve_app_with_sidecar;

fn bus(dir: &TempDir, extra_metadata: &str) {
    dir.write(
        "bus.yaml",
        &format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bus\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n{extra_metadata}  - name: unused\n    value: \"\"\n"),
    );
    dir.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 20ms\n        maxRetries: 3\n  targets:\n    components:\n      bus:\n        inbound:\n          retry: quick\n",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_route_retry_and_dead_letter() {
    let dir = TempDir::new("pubsub");
    bus(&dir, "");
    let app = Arc::new(App {
        subscribe: SUBSCRIBE.into(),
        ..Default::default()
    });
    app.answers.lock().unwrap().insert(
        "/flaky".into(),
        vec![
            (200, r#"{"status":"RETRY"}"#),
            (500, ""),
            (200, r#"{"status":"SUCCESS"}"#),
        ],
    );
    app.answers
        .lock()
        .unwrap()
        .insert("/poison".into(), vec![(500, "")]);
    let s = serve_app_with_sidecar(&app, &dir, &[]);
    let subs = s.get("/v1.0/metadata").json()["subscriptions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(subs, 6);

    // an ordinary JSON event
    let r = s
        .try_request(
            "POST",
            "/v1.0/publish/bus/orders",
            &[
                ("Content-Type", "application/json"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            ],
            br#"{"id":7,"big":12345678901234567890}"#,
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let got = app.wait_for("/orders", 1).remove(0);
    assert_eq!(got.content_type, "application/cloudevents+json");
    assert_eq!(got.pubsubname, "bus");
    let e = &got.event;
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "com.dapr.event.sent");
    assert_eq!(e["source"], "test-app");
    assert_eq!(e["topic"], "orders");
    assert_eq!(e["pubsubname"], "bus");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["data"]["id"], 7);
    assert_eq!(
        e["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "trace context travels"
    );
    assert_eq!(e["traceid"], e["traceparent"]);
    assert!(e["id"].as_str().unwrap().len() >= 32 && e["time"].as_str().unwrap().ends_with('Z'));

    // text and routing rules
    s.try_request(
        "POST",
        "/v1.0/publish/bus/sizes",
        &[("Content-Type", "application/json")],
        br#"{"kind":"big"}"#,
    )
    .unwrap();
    s.try_request(
        "POST",
        "/v1.0/publish/bus/sizes",
        &[("Content-Type", "application/json")],
        br#"{"kind":"tiny"}"#,
    )
    .unwrap();
    assert_eq!(app.wait_for("/big", 1)[0].event["data"]["kind"], "big");
    assert_eq!(app.wait_for("/small", 1)[0].event["data"]["kind"], "tiny");

    // RETRY and 500 are retried under the inbound policy until SUCCESS
    s.request("POST", "/v1.0/publish/bus/flaky", b"hello");
    let got = app.wait_for("/flaky", 3);
    assert_eq!(got[0].event["data"], "hello", "text/plain by default");
    assert_eq!(got[0].event["datacontenttype"], "text/plain");
    assert_eq!(
        got[0].event["id"], got[2].event["id"],
        "the same message redelivered"
    );

    // a poison message: retries exhausted, then the dead-letter topic
    s.request("POST", "/v1.0/publish/bus/poison", b"bad");
    let dead = app.wait_for("/dead", 1).remove(0);
    assert_eq!(dead.event["data"], "bad");
    assert_eq!(
        app.wait_for("/poison", 4).len(),
        4,
        "one try and three retries"
    );

    // a user CloudEvent keeps its fields; topic and pubsubname are set
    let ce = br#"{"specversion":"1.0","id":"mine-1","source":"elsewhere","type":"custom.type","datacontenttype":"application/json","data":{"x":1},"topic":"wrong"}"#;
    s.try_request(
        "POST",
        "/v1.0/publish/bus/orders",
        &[("Content-Type", "application/cloudevents+json")],
        ce,
    )
    .unwrap();
    let got = app.wait_for("/orders", 2).remove(1);
    assert_eq!(
        (
            got.event["id"].as_str(),
            got.event["source"].as_str(),
            got.event["type"].as_str()
        ),
        (Some("mine-1"), Some("elsewhere"), Some("custom.type"))
    );
    assert_eq!(got.event["topic"], "orders");

    // raw payloads: published as-is, wrapped for a raw subscription
    s.try_request(
        "POST",
        "/v1.0/publish/bus/raw?metadata.rawPayload=true",
        &[("Content-Type", "application/octet-stream")],
        b"\x01\x02raw",
    )
    .unwrap();
    let got = app.wait_for("/raw", 1).remove(0);
    assert_eq!(got.event["datacontenttype"], "application/octet-stream");
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(got.event["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, b"\x01\x02raw");

    // gRPC publish
    let mut c = rt::dapr_client::DaprClient::connect(s.grpc_endpoint())
        .await
        .unwrap();
    c.publish_event(rt::PublishEventRequest {
        pubsub_name: "bus".into(),
        topic: "orders".into(),
        data: br#"{"via":"grpc"}"#.to_vec(),
        data_content_type: "application/json".into(),
        metadata: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!(app.wait_for("/orders", 3)[2].event["data"]["via"], "grpc");
}

#[test]
fn publish_errors_and_scoping() {
    let dir = TempDir::new("pubsub-errors");
    bus(
        &dir,
        "  - name: publishingScopes\n    value: \"test-app=orders\"\n",
    );
    let s = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start();
    assert_eq!(
        s.request("POST", "/v1.0/publish/bus/orders", b"x").status,
        204
    );
    let r = s.request("POST", "/v1.0/publish/bus/payments", b"x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "ERR_PUBSUB_FORBIDDEN")
    );
    let r = s.request("POST", "/v1.0/publish/nope/orders", b"x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_PUBSUB_NOT_FOUND")
    );
    assert!(r.text().contains("bus"), "{}", r.text());
    let r = s
        .try_request(
            "POST",
            "/v1.0/publish/bus/orders",
            &[("Content-Type", "application/cloudevents+json")],
            b"{not json",
        )
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_CLOUD_EVENTS_SER")
    );
    let r = s.request(
        "POST",
        "/v1.0/publish/bus/orders?metadata.ttlInSeconds=soon",
        b"x",
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_REQUEST_METADATA")
    );

    let plain = sidecar().start();
    let r = plain.request("POST", "/v1.0/publish/bus/orders", b"x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_NOT_CONFIGURED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_publish_over_http_and_grpc() {
    let dir = TempDir::new("bulk");
    bus(&dir, "");
    let app = Arc::new(App {
        subscribe: SUBSCRIBE.into(),
        ..Default::default()
    });
    let s = serve_app_with_sidecar(&app, &dir, &[]);
    let body = br#"[
        {"entryId":"1","event":{"n":1},"contentType":"application/json"},
        {"entryId":"2","event":"plain words","contentType":"text/plain"},
        {"entryId":"3","event":"AQID","contentType":"application/octet-stream","metadata":{"cloudevent.type":"bytes.v1"}}
    ]"#;
    let r = s.request("POST", "/v1.0/publish/bulk/bus/orders", body);
    assert_eq!(r.status, 204, "{}", r.text());
    let got = app.wait_for("/orders", 3);
    let mut seen: Vec<String> = got
        .iter()
        .map(|g| g.event["datacontenttype"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["application/json", "application/octet-stream", "text/plain"]
    );
    let bytes = got
        .iter()
        .find(|g| g.event["datacontenttype"] == "application/octet-stream")
        .unwrap();
    assert_eq!(bytes.event["data_base64"], "AQID");
    assert_eq!(
        bytes.event["type"], "bytes.v1",
        "entry metadata applies to its entry"
    );

    for (bad, why) in [
        (&br#"[{"entryId":"1","event":1,"contentType":"application/json"},{"entryId":"1","event":2,"contentType":"application/json"}]"#[..], "repeated"),
        (br#"[{"entryId":"1","event":1}]"#, "contentType is required"),
        (br#"[{"entryId":"1","event":"%%","contentType":"application/octet-stream"}]"#, "base64"),
        (br#"{"not":"a list"}"#, "JSON array"),
    ] {
        let r = s.request("POST", "/v1.0-alpha1/publish/bulk/bus/orders", bad);
        assert_eq!((r.status, r.error_code().as_str()), (400, "ERR_PUBSUB_EVENTS_SER"), "{why}: {}", r.text());
        assert!(r.text().contains(why), "{why}: {}", r.text());
    }

    let mut c = rt::dapr_client::DaprClient::connect(s.grpc_endpoint())
        .await
        .unwrap();
    let resp = c
        .bulk_publish_event(rt::BulkPublishRequest {
            pubsub_name: "bus".into(),
            topic: "orders".into(),
            entries: (0..2)
                .map(|i| rt::BulkPublishRequestEntry {
                    entry_id: i.to_string(),
                    event: format!("{{\"g\":{i}}}").into_bytes(),
                    content_type: "application/json".into(),
                    metadata: Default::default(),
                })
                .collect(),
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.failed_entries.is_empty());
    assert_eq!(app.wait_for("/orders", 5).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_events_for_an_unhealthy_app_and_none_lost() {
    let dir = TempDir::new("unhealthy");
    let db = dir.path().join("log.db");
    dir.write(
        "bus.yaml",
        &common::component(
            "bus",
            "pubsub.embedded",
            &[("path", db.to_str().unwrap()), ("pollInterval", "20ms")],
        ),
    );
    let app = Arc::new(App {
        subscribe: r#"[{"pubsubname":"bus","topic":"orders","route":"/orders"}]"#.into(),
        ..Default::default()
    });
    let s = serve_app_with_sidecar(
        &app,
        &dir,
        &[
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "50ms",
            "--app-health-threshold",
            "1",
        ],
    );
    s.request("POST", "/v1.0/publish/bus/orders", b"first");
    app.wait_for("/orders", 1);

    app.answers
        .lock()
        .unwrap()
        .insert("/healthz".into(), vec![(503, "")]);
    assert!(
        s.stderr
            .wait_for("pausing event delivery", Duration::from_secs(5)),
        "{}",
        s.stderr.text()
    );
    s.request("POST", "/v1.0/publish/bus/orders", b"while-down");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        app.wait_for("/orders", 1).len(),
        1,
        "nothing delivered while the app is unhealthy"
    );

    app.answers
        .lock()
        .unwrap()
        .insert("/healthz".into(), vec![(200, "")]);
    let got = app.wait_for("/orders", 2);
    assert_eq!(
        got[1].event["data"], "while-down",
        "delivered after recovery, not lost"
    );
}

/// A streaming subscriber keeps every event of its topic when the app's
/// own deliveries start again (the app recovering from a failed health
/// check): the stream is the topic's only consumer here, not one of two
/// with a route-less delivery that would drop half of its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_subscriber_keeps_its_events_when_app_delivery_restarts() {
    use rt::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
    use rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
    let dir = TempDir::new("stream-restart");
    bus(&dir, "");
    let app = Arc::new(App {
        subscribe: r#"[{"pubsubname":"bus","topic":"orders","route":"/orders"}]"#.into(),
        ..Default::default()
    });
    let s = serve_app_with_sidecar(
        &app,
        &dir,
        &[
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "50ms",
            "--app-health-threshold",
            "1",
        ],
    );
    let (tx, mut stream) = common::open_stream(s.grpc_endpoint(), "bus", "stream").await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap_or_else(|_| panic!("nothing on the stream in 5 s:\n{}", s.stderr.text()))
            .unwrap()
            .unwrap()
            .subscribe_topic_events_response_type
    };
    assert!(matches!(next().await, Some(Out::InitialResponse(_))));

    // The app fails its health check and recovers: its deliveries stop
    // and start again.
    app.answers
        .lock()
        .unwrap()
        .insert("/healthz".into(), vec![(503, "")]);
    assert!(
        s.stderr
            .wait_for("pausing event delivery", Duration::from_secs(5)),
        "{}",
        s.stderr.text()
    );
    app.answers
        .lock()
        .unwrap()
        .insert("/healthz".into(), vec![(200, "")]);
    assert!(
        s.stderr
            .wait_for("resuming event delivery", Duration::from_secs(5)),
        "{}",
        s.stderr.text()
    );

    for n in 0..6 {
        s.request(
            "POST",
            "/v1.0/publish/bus/stream",
            format!("{{\"n\":{n}}}").as_bytes(),
        );
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        let Some(Out::EventMessage(e)) = next().await else {
            panic!("not an event")
        };
        let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        seen.push(data["n"].as_i64().unwrap());
        tx.send(rt::SubscribeTopicEventsRequestAlpha1 {
            subscribe_topic_events_request_type: Some(In::EventProcessed(
                rt::SubscribeTopicEventsRequestProcessedAlpha1 {
                    id: e.id,
                    status: Some(rt::TopicEventResponse {
                        status: rt::topic_event_response::TopicEventResponseStatus::Success as i32,
                    }),
                },
            )),
        })
        .await
        .unwrap();
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    assert!(
        !s.stderr.text().contains("no route matched"),
        "{}",
        s.stderr.text()
    );
}
