//! Tracing through two sidecars to a real OTLP/HTTP receiver (this test's
//! own): the caller's trace context is continued, the caller's sidecar
//! records a CLIENT span, the callee's a SERVER span under it, and the app
//! sees that SERVER span as its parent.

mod common;

use bytes::Bytes;
use common::{TempDir, sidecar};
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Spans = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Collects every span it is sent, with the service that sent it.
async fn otlp_receiver(spans: Spans) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let spans = spans.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for rs in v["resourceSpans"].as_array().unwrap() {
                let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                    .as_str()
                    .unwrap()
                    .to_string();
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for s in ss["spans"].as_array().unwrap() {
                        spans.lock().unwrap().push((service.clone(), s.clone()));
                    }
                }
            }
            hyper::Response::new(Full::new(Bytes::from_static(b"{}")))
        }
    })
    .await
}

/// Answers with the `traceparent` it was given.
async fn app() -> u16 {
    common::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        let tp = req
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        hyper::Response::new(Full::new(Bytes::from(tp)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_call_is_one_trace() {
    let spans = Spans::default();
    let collector = otlp_receiver(spans.clone()).await;
    let home = TempDir::new("tracing-home");
    let config = home.write(
        "tracing.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{collector}\n      isSecure: false\n      protocol: http\n"
        ),
    );
    let h = home.path().to_str().unwrap();
    let c = config.to_str().unwrap();
    let app_port = app().await;
    let _orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &app_port.to_string(), "--config", c])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--config", c])
        .start();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = shop
        .try_request(
            "GET",
            "/v1.0/invoke/orders/method/traced",
            &[("traceparent", &format!("00-{trace}-{caller_span}-01"))],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen_by_app = r.text();
    assert!(
        seen_by_app.starts_with(&format!("00-{trace}-")),
        "same trace: {seen_by_app}"
    );
    assert!(
        r.header("traceparent").is_some_and(|t| t.contains(trace)),
        "returned to the caller"
    );

    let end = Instant::now() + Duration::from_secs(10);
    while spans.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < end,
            "spans not exported: {:?}",
            spans.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let spans = spans.lock().unwrap().clone();
    let find = |service: &str| {
        spans
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, span)| span.clone())
            .unwrap_or_else(|| panic!("no span from {service}: {spans:?}"))
    };
    let (client, server) = (find("shop"), find("orders"));
    assert_eq!(client["kind"], 3, "CLIENT");
    assert_eq!(server["kind"], 2, "SERVER");
    assert_eq!(client["traceId"], trace);
    assert_eq!(server["traceId"], trace);
    assert_eq!(
        client["parentSpanId"], caller_span,
        "under the caller's span"
    );
    assert_eq!(
        server["parentSpanId"], client["spanId"],
        "the server span is the client span's child"
    );
    let app_parent = seen_by_app.split('-').nth(2).unwrap();
    assert_eq!(
        server["spanId"], app_parent,
        "the app's parent is the server span"
    );
    assert!(
        client["name"].as_str().unwrap().contains("orders"),
        "{client}"
    );
    assert_eq!(client["status"]["code"], 1);
}
