//! Tracing through two sidecars to real receivers of the test's own — an
//! OTLP/HTTP (JSON) collector, an OTLP/gRPC collector and a Zipkin v2 one:
//! the caller's trace context is continued, the caller's sidecar records a
//! CLIENT span, the callee's a SERVER span under it, and the app sees that
//! SERVER span as its parent.

mod common;

use bytes::Bytes;
use common::{TempDir, sidecar};
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as any of the receivers got it.
#[derive(Clone, Debug, Default)]
struct Got {
    service: String,
    kind: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    ok: bool,
    links: Vec<(String, String)>,
}

impl From<common::otlp::Span> for Got {
    fn from(s: common::otlp::Span) -> Self {
        Got {
            kind: s.kind_name().into(),
            service: s.service,
            trace: s.trace,
            id: s.id,
            parent: s.parent,
            name: s.name,
            ok: s.ok,
            links: s.links,
        }
    }
}

type Spans = Arc<Mutex<Vec<Got>>>;

/// A Configuration that samples everything and exports OTLP/HTTP to the
/// collector on `port`.
fn otlp_http_config(port: u16) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{port}\n      isSecure: false\n      protocol: http\n"
    )
}
/// The headers of each export an OTLP/HTTP receiver got.
type Heads = Arc<Mutex<Vec<http::HeaderMap>>>;

/// An OTLP/HTTP collector: protobuf bodies (what Configuration `protocol:
/// http` sends, as daprd) or JSON ones (`http/json`).
async fn otlp_http_receiver(spans: Spans) -> u16 {
    otlp_http_receiver_with(spans, Heads::default()).await
}

async fn otlp_http_receiver_with(spans: Spans, heads: Heads) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (spans, heads) = (spans.clone(), heads.clone());
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            let ct = req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            heads.lock().unwrap().push(req.headers().clone());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let got = common::otlp::decode(&ct, &body);
            spans.lock().unwrap().extend(got.into_iter().map(Got::from));
            hyper::Response::builder()
                .header("content-type", ct)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
    .await
}

/// A Zipkin v2 collector.
async fn zipkin_receiver(spans: Spans) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let spans = spans.clone();
        async move {
            assert_eq!(req.uri().path(), "/api/v2/spans");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for s in v.as_array().unwrap() {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                assert!(
                    s["timestamp"].as_u64().unwrap() > 0 && s["duration"].as_u64().unwrap() > 0
                );
                spans.lock().unwrap().push(Got {
                    service: s["localEndpoint"]["serviceName"].as_str().unwrap().into(),
                    kind: text("kind"),
                    trace: text("traceId"),
                    id: text("id"),
                    parent: text("parentId"),
                    name: text("name"),
                    ok: s["tags"].get("error").is_none(),
                    links: Vec::new(),
                });
            }
            hyper::Response::builder()
                .status(202)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
    .await
}

/// An OTLP/gRPC collector.
async fn otlp_grpc_receiver(spans: Spans) -> u16 {
    use tandem_proto::otlp as o;
    struct Collector(Spans);
    #[tonic::async_trait]
    impl o::trace_service_server::TraceService for Collector {
        async fn export(
            &self,
            req: tonic::Request<o::ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<o::ExportTraceServiceResponse>, tonic::Status> {
            self.0.lock().unwrap().extend(
                common::otlp::from_request(req.into_inner())
                    .into_iter()
                    .map(Got::from),
            );
            Ok(tonic::Response::new(
                o::ExportTraceServiceResponse::default(),
            ))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(o::trace_service_server::TraceServiceServer::new(Collector(
                spans,
            )))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
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

/// One call through two sidecars whose Configuration has `tracing`
/// (`sink`: its exporter part); the spans `spans` got are checked.
async fn two_hop_call_is_one_trace(sink: &str, spans: Spans) {
    let home = TempDir::new("tracing-home");
    let config = home.write(
        "tracing.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n{sink}"
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
            .find(|g| g.service == service)
            .cloned()
            .unwrap_or_else(|| panic!("no span from {service}: {spans:?}"))
    };
    let (client, server) = (find("shop"), find("orders"));
    assert_eq!(client.kind, "CLIENT");
    assert_eq!(server.kind, "SERVER");
    assert_eq!(client.trace, trace);
    assert_eq!(server.trace, trace);
    assert_eq!(client.parent, caller_span, "under the caller's span");
    assert_eq!(
        server.parent, client.id,
        "the server span is the client span's child"
    );
    let app_parent = seen_by_app.split('-').nth(2).unwrap();
    assert_eq!(server.id, app_parent, "the app's parent is the server span");
    assert!(client.name.contains("orders"), "{client:?}");
    assert!(client.ok && server.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_call_is_one_trace_over_otlp_http() {
    let spans = Spans::default();
    let port = otlp_http_receiver(spans.clone()).await;
    let sink = format!(
        "    otel:\n      endpointAddress: 127.0.0.1:{port}\n      isSecure: false\n      protocol: http\n"
    );
    two_hop_call_is_one_trace(&sink, spans).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_call_is_one_trace_over_otlp_grpc() {
    let spans = Spans::default();
    let port = otlp_grpc_receiver(spans.clone()).await;
    // gRPC is the default protocol, as in Dapr.
    let sink =
        format!("    otel:\n      endpointAddress: 127.0.0.1:{port}\n      isSecure: false\n");
    two_hop_call_is_one_trace(&sink, spans).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_call_is_one_trace_in_zipkin() {
    let spans = Spans::default();
    let port = zipkin_receiver(spans.clone()).await;
    let sink =
        format!("    zipkin:\n      endpointAddress: http://127.0.0.1:{port}/api/v2/spans\n");
    two_hop_call_is_one_trace(&sink, spans).await;
}

#[test]
fn a_bad_tracing_configuration_is_refused_at_start() {
    let home = TempDir::new("tracing-bad");
    for (sink, says) in [
        (
            "    otel:\n      endpointAddress: 127.0.0.1:4317\n      protocol: carrier-pigeon\n",
            "protocol `carrier-pigeon`",
        ),
        (
            "    zipkin:\n      endpointAddress: localhost:9411\n",
            "must be an http:// or https:// URL",
        ),
        (
            "    otel:\n      endpointAddress: 127.0.0.1:4317\n      headers: \"x-api-key\"\n",
            "`x-api-key` is not key=value",
        ),
        (
            "    otel:\n      endpointAddress: 127.0.0.1:4317\n      timeout: soon\n",
            "timeout `soon`",
        ),
    ] {
        let config = home.write(
            "bad.yaml",
            &format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n{sink}"),
        );
        let (status, log) = sidecar()
            .app_id("bad")
            .env("TANDEM_HOME", home.path().to_str().unwrap())
            .args(["--config", config.to_str().unwrap()])
            .start_failing();
        assert!(!status.success());
        assert!(log.contains(says), "{log}");
    }
}

/// `tracing.otel.headers` (daprd's `key=value,…` text, values
/// percent-decoded) ride on every export, in protobuf as daprd sends
/// OTLP/HTTP; and the OpenTelemetry environment alone sets up an exporter,
/// its `http/json` protocol and headers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_headers_and_the_environments_protocol() {
    let home = TempDir::new("tracing-headers");
    home.write(
        "res/state.yaml",
        &common::component("store", "state.in-memory", &[]),
    );
    let res = home.path().join("res");
    let save_and_wait = |s: &common::Sidecar, spans: &Spans, heads: &Heads| {
        let r = s.request("POST", "/v1.0/state/store", br#"[{"key":"k","value":1}]"#);
        assert_eq!(r.status, 204, "{}", r.text());
        let end = Instant::now() + Duration::from_secs(10);
        while !spans
            .lock()
            .unwrap()
            .iter()
            .any(|g| g.name == "POST /v1.0/state/store")
        {
            assert!(Instant::now() < end, "no span: {}", s.stderr.text());
            std::thread::sleep(Duration::from_millis(50));
        }
        heads.lock().unwrap()[0].clone()
    };

    let (spans, heads) = (Spans::default(), Heads::default());
    let port = otlp_http_receiver_with(spans.clone(), heads.clone()).await;
    let config = home.write(
        "headers.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{port}\n      isSecure: false\n      protocol: http\n      headers: \"x-api-key=s3cret, x-team=a%2Cb\"\n      timeout: 5000\n"
        ),
    );
    let s = sidecar()
        .app_id("headers")
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .args(["--config", config.to_str().unwrap()])
        .args(["--resources-path", res.to_str().unwrap()])
        .start();
    let h = save_and_wait(&s, &spans, &heads);
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-api-key"], "s3cret");
    assert_eq!(h["x-team"], "a,b");
    drop(s);

    let (spans, heads) = (Spans::default(), Heads::default());
    let port = otlp_http_receiver_with(spans.clone(), heads.clone()).await;
    let config = home.write(
        "env.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n",
    );
    let s = sidecar()
        .app_id("from-env")
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-env=yes")
        .args(["--config", config.to_str().unwrap()])
        .args(["--resources-path", res.to_str().unwrap()])
        .start();
    let h = save_and_wait(&s, &spans, &heads);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-env"], "yes");
    let got = spans.lock().unwrap().clone();
    assert!(
        got.iter()
            .all(|g| g.service == "from-env" && g.kind == "SERVER"),
        "{got:?}"
    );
}

/// gRPC proxying (a call with `dapr-app-id` on the caller's gRPC port, to
/// a gRPC app behind another sidecar) is traced and counted like any
/// invocation: the caller's sidecar records a CLIENT span named by the
/// method under the caller's span, the callee's a SERVER span under it,
/// and both sidecars count the call in `dapr_service_invocation_*` with
/// the gRPC status — that of the answer's trailers, for a streamed answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxying_is_one_trace_and_is_counted() {
    use tandem_proto::common::v1 as cv1;
    use tandem_proto::runtime::v1 as rt;
    let spans = Spans::default();
    let port = otlp_http_receiver(spans.clone()).await;
    let home = TempDir::new("tracing-grpc-proxy");
    let config = home.write("tracing.yaml", &otlp_http_config(port));
    let (h, c) = (home.path().to_str().unwrap(), config.to_str().unwrap());
    let app_port = common::callback::serve(common::callback::Callbacks {
        on_invoke: Some(common::callback::handler(
            |req: cv1::InvokeRequest| async move {
                if req.method == "missing" {
                    return Err(tonic::Status::not_found("no such thing"));
                }
                Ok(cv1::InvokeResponse {
                    data: Some(prost_types::Any {
                        type_url: String::new(),
                        value: b"ok".to_vec(),
                    }),
                    content_type: "text/plain".into(),
                })
            },
        )),
        ..Default::default()
    })
    .await;
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args([
            "--app-port",
            &app_port.to_string(),
            "--app-protocol",
            "grpc",
        ])
        .args(["--config", c])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--config", c])
        .start();
    let mut client = rt::app_callback_client::AppCallbackClient::connect(shop.grpc_endpoint())
        .await
        .unwrap();
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "10f067aa0ba902b7";
    let call = |method: &str| {
        let mut r = tonic::Request::new(cv1::InvokeRequest {
            method: method.into(),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("dapr-app-id", "orders".parse().unwrap());
        r.metadata_mut().insert(
            "traceparent",
            format!("00-{trace}-{caller_span}-01").parse().unwrap(),
        );
        r
    };
    let ok = client.on_invoke(call("hello")).await.unwrap();
    assert_eq!(ok.into_inner().data.unwrap().value, b"ok");
    let err = client.on_invoke(call("missing")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    let end = Instant::now() + Duration::from_secs(10);
    while spans.lock().unwrap().len() < 4 {
        assert!(
            Instant::now() < end,
            "spans not exported: {:?}",
            spans.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let spans = spans.lock().unwrap().clone();
    let clients: Vec<&Got> = spans.iter().filter(|g| g.service == "shop").collect();
    let servers: Vec<&Got> = spans.iter().filter(|g| g.service == "orders").collect();
    assert_eq!((clients.len(), servers.len()), (2, 2), "{spans:?}");
    for c in &clients {
        assert_eq!(c.kind, "CLIENT");
        assert_eq!(c.trace, trace);
        assert_eq!(c.parent, caller_span, "under the caller's span");
        assert_eq!(c.name, "/dapr.proto.runtime.v1.AppCallback/OnInvoke");
        let s = servers
            .iter()
            .find(|s| s.parent == c.id)
            .unwrap_or_else(|| panic!("no SERVER span under {c:?}: {spans:?}"));
        assert_eq!(s.kind, "SERVER");
        assert_eq!(s.trace, trace);
    }
    assert_eq!(
        clients.iter().filter(|c| c.ok).count(),
        1,
        "NOT_FOUND is a failed span: {clients:?}"
    );

    let sent = shop.metrics_text();
    for status in ["OK", "NOT_FOUND"] {
        let line = format!(
            "dapr_service_invocation_res_recv_total{{app_id=\"shop\",dest_app_id=\"orders\",status=\"{status}\",type=\"grpc\"}} 1"
        );
        assert!(sent.contains(&line), "{line} not in\n{sent}");
    }
    assert!(
        sent.contains(
            "dapr_service_invocation_req_sent_total{app_id=\"shop\",dest_app_id=\"orders\",type=\"grpc\"} 2"
        ),
        "{sent}"
    );
    let served = orders.metrics_text();
    assert!(
        served.contains(
            "dapr_service_invocation_req_recv_total{app_id=\"orders\",src_app_id=\"shop\",type=\"grpc\"} 2"
        ),
        "{served}"
    );
}

/// One request through invocation, state and pub/sub reads as one trace:
/// a client calls `orders` through `shop`'s sidecar; `orders`' app, with
/// the context its sidecar gave it, saves state and publishes through its
/// own sidecar; the event comes back to the same app. In the collector:
/// shop's CLIENT span, orders' SERVER span under it, the state and
/// publish SERVER spans under the app's context, and the delivery's
/// CONSUMER span under the publish span (the trace travelled in the
/// CloudEvent) — whose context the subscriber receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_state_and_pubsub_are_one_trace() {
    use std::sync::OnceLock;
    let spans = Spans::default();
    let port = otlp_http_receiver(spans.clone()).await;
    let home = TempDir::new("tracing-one-trace");
    let config = home.write("tracing.yaml", &otlp_http_config(port));
    home.write(
        "res/state.yaml",
        &common::component("store", "state.in-memory", &[]),
    );
    home.write(
        "res/pubsub.yaml",
        &common::component("bus", "pubsub.in-memory", &[]),
    );
    let sidecar_port: Arc<OnceLock<u16>> = Arc::default();
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let (sp, got) = (sidecar_port.clone(), delivered.clone());
    let app_port = common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (sp, got) = (sp.clone(), got.clone());
        async move {
            let tp = req
                .headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = match req.uri().path() {
                "/dapr/subscribe" => {
                    r#"[{"pubsubname":"bus","topic":"orders","route":"/deliver"}]"#.to_string()
                }
                "/work" => {
                    let port = *sp.get().unwrap();
                    let tp2 = tp.clone();
                    tokio::task::spawn_blocking(move || {
                        let h = [
                            ("traceparent", tp2.as_str()),
                            ("content-type", "application/json"),
                        ];
                        let r = common::http(
                            port,
                            "POST",
                            "/v1.0/state/store",
                            &h,
                            br#"[{"key":"k","value":1}]"#,
                        )
                        .unwrap();
                        assert_eq!(r.status, 204, "{}", r.text());
                        let r = common::http(
                            port,
                            "POST",
                            "/v1.0/publish/bus/orders",
                            &h,
                            br#"{"id":1}"#,
                        )
                        .unwrap();
                        assert_eq!(r.status, 204, "{}", r.text());
                    })
                    .await
                    .unwrap();
                    "done".to_string()
                }
                "/deliver" => {
                    got.lock().unwrap().push(tp);
                    r#"{"status":"SUCCESS"}"#.to_string()
                }
                _ => String::new(),
            };
            hyper::Response::new(Full::new(Bytes::from(body)))
        }
    })
    .await;
    let h = home.path().to_str().unwrap();
    let c = config.to_str().unwrap();
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &app_port.to_string(), "--config", c])
        .args([
            "--resources-path",
            home.path().join("res").to_str().unwrap(),
        ])
        .start();
    sidecar_port.set(orders.http).unwrap();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--config", c])
        .start();
    let trace = "6bf92f3577b34da6a3ce929d0e0e4736";
    let r = shop
        .try_request(
            "POST",
            "/v1.0/invoke/orders/method/work",
            &[("traceparent", &format!("00-{trace}-20f067aa0ba902b7-01"))],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let end = Instant::now() + Duration::from_secs(10);
    let find = |all: &[Got], service: &str, kind: &str, name: &str| {
        all.iter()
            .find(|g| g.service == service && g.kind == kind && g.name == name)
            .cloned()
    };
    let (client, server, state, publish, consumer) = loop {
        let all = spans.lock().unwrap().clone();
        let got = (
            find(&all, "shop", "CLIENT", "/v1.0/invoke/orders/method/work"),
            find(&all, "orders", "SERVER", "CallLocal/orders/work"),
            find(&all, "orders", "SERVER", "POST /v1.0/state/store"),
            find(&all, "orders", "SERVER", "POST /v1.0/publish/bus"),
            find(&all, "orders", "CONSUMER", "pubsub/orders"),
        );
        if let (Some(a), Some(b), Some(c), Some(d), Some(e)) = got {
            break (a, b, c, d, e);
        }
        assert!(Instant::now() < end, "spans missing: {all:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for s in [&client, &server, &state, &publish, &consumer] {
        assert_eq!(s.trace, trace, "one trace: {s:?}");
    }
    assert_eq!(server.parent, client.id);
    assert_eq!(
        state.parent, server.id,
        "the app's context is the SERVER span"
    );
    assert_eq!(publish.parent, server.id);
    assert_eq!(
        consumer.parent, publish.id,
        "the delivery continues the publish"
    );
    let seen = delivered.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0],
        format!("00-{trace}-{}-01", consumer.id),
        "the subscriber gets the delivery span's context"
    );
}

/// Deliveries other than one-by-one are traced too: a bulk delivery is
/// one CONSUMER span linked to each event's publish span (the events
/// belong to different traces), whose context the app gets with the
/// request; a streaming subscriber's event gets a CONSUMER span under its
/// publish span, ended — OK — when the subscriber acknowledges it. The
/// publisher's `tracestate` rides in each CloudEvent, bulk publish too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_streaming_deliveries_are_traced() {
    use tandem_proto::runtime::v1 as rt;
    let spans = Spans::default();
    let port = otlp_http_receiver(spans.clone()).await;
    let home = TempDir::new("tracing-bulk");
    let config = home.write("tracing.yaml", &otlp_http_config(port));
    home.write(
        "res/pubsub.yaml",
        &common::component("bus", "pubsub.in-memory", &[]),
    );
    // The bulk request's traceparent, per request; each event's tracestate.
    let bulk_heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let states: Arc<Mutex<Vec<String>>> = Arc::default();
    let (heads, st) = (bulk_heads.clone(), states.clone());
    let app_port = common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (heads, st) = (heads.clone(), st.clone());
        async move {
            let tp = req
                .headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let answer = match path.as_str() {
                "/dapr/subscribe" => r#"[{"pubsubname":"bus","topic":"orders","route":"/bulk",
                    "bulkSubscribe":{"enabled":true,"maxMessagesCount":10,"maxAwaitDurationMs":500}}]"#
                    .to_string(),
                "/bulk" => {
                    heads.lock().unwrap().push(tp);
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    for e in v["entries"].as_array().unwrap() {
                        st.lock().unwrap().push(
                            e["event"]["tracestate"].as_str().unwrap_or("none").to_string(),
                        );
                    }
                    let statuses: Vec<serde_json::Value> = v["entries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| serde_json::json!({"entryId": e["entryId"], "status": "SUCCESS"}))
                        .collect();
                    serde_json::json!({ "statuses": statuses }).to_string()
                }
                _ => String::new(),
            };
            hyper::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer)))
                .unwrap()
        }
    })
    .await;
    let s = sidecar()
        .app_id("bulky")
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .args(["--app-port", &app_port.to_string()])
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--resources-path",
            home.path().join("res").to_str().unwrap(),
        ])
        .start();

    // A streaming subscriber on another topic.
    use rt::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
    use rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
    let (tx, mut stream) = common::open_stream(s.grpc_endpoint(), "bus", "stream").await;
    // Every read of the stream is bounded: a lost event fails the test
    // with the sidecar's log instead of hanging it.
    let within = |what: &'static str| {
        let log = s.stderr.clone();
        move |r: Result<_, tokio::time::error::Elapsed>| {
            r.unwrap_or_else(|_| panic!("no {what} within 10 s; sidecar log:\n{}", log.text()))
        }
    };
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    assert!(matches!(
        within("initial response")(first)
            .unwrap()
            .unwrap()
            .subscribe_topic_events_response_type,
        Some(Out::InitialResponse(_))
    ));

    // Three publishers, three traces, one bulk topic, the caller's
    // tracestate carried in each CloudEvent; then a bulk publish of two
    // more; one streamed event.
    let traces: Vec<String> = (0..3)
        .map(|i| format!("6bf92f3577b34da6a3ce929d0e0e473{i}"))
        .collect();
    for t in &traces {
        let r = s
            .try_request(
                "POST",
                "/v1.0/publish/bus/orders",
                &[
                    ("traceparent", &format!("00-{t}-00f067aa0ba902b7-01")),
                    ("tracestate", "congo=single"),
                ],
                b"{\"n\":1}",
            )
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let r = s
        .try_request(
            "POST",
            "/v1.0-alpha1/publish/bulk/bus/orders",
            &[
                (
                    "traceparent",
                    "00-8bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "congo=bulk"),
                ("content-type", "application/json"),
            ],
            br#"[{"entryId":"a","event":{"n":3},"contentType":"application/json"},
                 {"entryId":"b","event":{"n":4},"contentType":"application/json"}]"#,
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let streamed = "7bf92f3577b34da6a3ce929d0e0e4736";
    let r = s
        .try_request(
            "POST",
            "/v1.0/publish/bus/stream",
            &[("traceparent", &format!("00-{streamed}-00f067aa0ba902b7-01"))],
            b"{\"n\":2}",
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    let event = match within("streamed event")(next)
        .unwrap()
        .unwrap()
        .subscribe_topic_events_response_type
    {
        Some(Out::EventMessage(e)) => e,
        other => panic!("{other:?}"),
    };
    tx.send(rt::SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(In::EventProcessed(
            rt::SubscribeTopicEventsRequestProcessedAlpha1 {
                id: event.id.clone(),
                status: Some(rt::TopicEventResponse {
                    status: rt::topic_event_response::TopicEventResponseStatus::Success as i32,
                }),
            },
        )),
    })
    .await
    .unwrap();

    let publish_span = |all: &[Got], trace: &str| {
        all.iter()
            .find(|g| g.trace == trace && g.kind == "SERVER")
            .map(|g| g.id.clone())
    };
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let all = spans.lock().unwrap().clone();
        let linked: Vec<&Got> = all
            .iter()
            .filter(|g| g.kind == "CONSUMER" && g.name == "pubsub/orders")
            .collect();
        let streamed_consumer = all
            .iter()
            .find(|g| g.kind == "CONSUMER" && g.name == "pubsub/stream");
        let links_seen: usize = linked.iter().map(|g| g.links.len()).sum();
        if links_seen >= 5
            && let Some(c) = streamed_consumer
        {
            for t in &traces {
                let p = publish_span(&all, t).unwrap_or_else(|| panic!("no publish span in {t}"));
                assert!(
                    linked
                        .iter()
                        .any(|g| g.links.contains(&(t.clone(), p.clone()))),
                    "no bulk CONSUMER span links to {t}/{p}: {linked:?}"
                );
            }
            for g in &linked {
                assert!(g.ok, "{g:?}");
                assert!(!traces.contains(&g.trace), "a trace of its own: {g:?}");
                let heads = bulk_heads.lock().unwrap();
                assert!(
                    heads
                        .iter()
                        .any(|h| h.contains(&g.id) && h.contains(&g.trace)),
                    "the app got the bulk span's context: {heads:?} / {g:?}"
                );
            }
            assert_eq!(c.trace, streamed);
            assert_eq!(Some(c.parent.clone()), publish_span(&all, streamed));
            assert!(c.ok, "acknowledged: {c:?}");
            let mut states = states.lock().unwrap().clone();
            states.sort();
            assert_eq!(
                states,
                [
                    "congo=bulk",
                    "congo=bulk",
                    "congo=single",
                    "congo=single",
                    "congo=single"
                ]
            );
            break;
        }
        assert!(Instant::now() < end, "consumer spans missing: {all:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An OTLP/gRPC collector over TLS (grpcio, raw bytes, no generated
/// code): each export's bytes appended to the file given.
/// argv: file, port, certificate, key.
const TLS_GRPC_COLLECTOR: &str = r#"
import grpc, sys
from concurrent import futures
def export(req, ctx):
    with open(sys.argv[1], "ab") as f: f.write(req + b"\n")
    return b""
s = grpc.server(futures.ThreadPoolExecutor(2))
s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
creds = grpc.ssl_server_credentials([(open(sys.argv[4], "rb").read(), open(sys.argv[3], "rb").read())])
s.add_secure_port("127.0.0.1:" + sys.argv[2], creds); s.start(); s.wait_for_termination()
"#;

/// A CA and a `localhost` / 127.0.0.1 server certificate it signed, made
/// with openssl in `dir`: (ca.pem, leaf.pem, leaf.key).
fn test_pki(dir: &std::path::Path) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tandem test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    (p("ca.pem"), p("leaf.pem"), p("leaf.key"))
}

/// Traces reach collectors over TLS (`isSecure: true`), OTLP over HTTP and
/// over gRPC, the collector's certificate checked against the CA in
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`; and a collector that is away when the
/// spans end gets them once it is up (the batch is retried with backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_tls_collectors_and_wait_for_one_that_is_away() {
    let Ok(venv) = std::env::var("TANDEM_SDK_VENV") else {
        panic!(
            "TANDEM_SDK_VENV is not set: run through scripts/test.sh (tests/sdk/venv.sh makes the venv with grpcio)"
        );
    };
    let python = format!("{venv}/bin/python");
    let home = TempDir::new("tracing-tls");
    let (ca, cert, key) = test_pki(home.path());
    let (http_port, grpc_port) = (common::free_port(), common::free_port());
    let (http_file, grpc_file) = (home.path().join("http.lines"), home.path().join("grpc.bin"));
    let mut procs = common::Killed(vec![
        std::process::Command::new(&python)
            .args([
                "-c",
                TLS_GRPC_COLLECTOR,
                grpc_file.to_str().unwrap(),
                &grpc_port.to_string(),
                &cert,
                &key,
            ])
            .spawn()
            .unwrap(),
    ]);
    home.write(
        "res/state.yaml",
        &common::component("store", "state.in-memory", &[]),
    );
    let sidecar_with = |name: &str, protocol: &str, port: u16| {
        let config = home.write(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: localhost:{port}\n      isSecure: true\n      protocol: {protocol}\n"
            ),
        );
        sidecar()
            .app_id(name)
            .env("TANDEM_HOME", home.path().to_str().unwrap())
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)
            .args(["--config", config.to_str().unwrap()])
            .args([
                "--resources-path",
                home.path().join("res").to_str().unwrap(),
            ])
            .start()
    };
    let over_http = sidecar_with("over-http", "http", http_port);
    let over_grpc = sidecar_with("over-grpc", "grpc", grpc_port);
    for s in [&over_http, &over_grpc] {
        let r = s.request("POST", "/v1.0/state/store", br#"[{"key":"k","value":1}]"#);
        assert_eq!(r.status, 204, "{}", r.text());
    }
    // The HTTP collector comes up only now: the first tries fail.
    std::thread::sleep(Duration::from_millis(1500));
    procs.0.push(
        std::process::Command::new(&python)
            .args([
                "-c",
                common::otlp::PYTHON_COLLECTOR,
                http_file.to_str().unwrap(),
                "127.0.0.1",
                &http_port.to_string(),
                &cert,
                &key,
            ])
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let http_got: Vec<String> = common::otlp::read_collected(&http_file)
            .into_iter()
            .map(|s| s.name)
            .collect();
        let grpc_got = std::fs::read(&grpc_file).unwrap_or_default();
        let has =
            |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
        if http_got.iter().any(|n| n == "POST /v1.0/state/store")
            && has(&grpc_got, "POST /v1.0/state/store")
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "spans not exported over TLS: http {http_got:?}; grpc {} bytes\n{}\n{}",
            grpc_got.len(),
            over_http.stderr.text(),
            over_grpc.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An actor call through the caller's sidecar to the host's: one trace —
/// the caller's sidecar records a CLIENT span `CallActor/{type}/{method}`
/// for the hop, the host's a SERVER span for what it received and a
/// CLIENT span for its call to the app, under it; the app sees that last
/// span as its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_call_is_one_trace() {
    let spans = Spans::default();
    let port = otlp_http_receiver(spans.clone()).await;
    let home = TempDir::new("tracing-actors");
    let config = home.write("tracing.yaml", &otlp_http_config(port));
    let app_port = common::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        let body = if req.uri().path() == "/dapr/config" {
            r#"{"entities":["Traced"]}"#.to_string()
        } else {
            req.headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        hyper::Response::new(Full::new(Bytes::from(body)))
    })
    .await;
    let (h, c) = (
        home.path().to_str().unwrap().to_string(),
        config.to_str().unwrap().to_string(),
    );
    let (host, caller) = tokio::task::spawn_blocking(move || {
        let host = sidecar()
            .app_id("actorhost")
            .env("TANDEM_HOME", &h)
            .args(["--app-port", &app_port.to_string(), "--config", &c])
            .start();
        let caller = sidecar()
            .app_id("actorcaller")
            .env("TANDEM_HOME", &h)
            .args(["--config", &c])
            .start();
        (host, caller)
    })
    .await
    .unwrap();
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let r = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let r = caller
                .try_request(
                    "PUT",
                    "/v1.0/actors/Traced/t-1/method/look",
                    &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
                    b"",
                )
                .unwrap();
            if r.status == 200 || Instant::now() > end {
                return (r, caller);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let (r, _caller) = r;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen_by_app = r.text();
    assert!(seen_by_app.contains(trace), "{seen_by_app}");
    let end = Instant::now() + Duration::from_secs(10);
    let named = |spans: &[Got], service: &str| {
        spans
            .iter()
            .find(|g| g.service == service && g.name == "CallActor/Traced/look")
            .cloned()
    };
    let (hop, callback) = loop {
        let got = spans.lock().unwrap().clone();
        if let (Some(a), Some(b)) = (named(&got, "actorcaller"), named(&got, "actorhost")) {
            break (a, b);
        }
        assert!(Instant::now() < end, "actor spans not exported: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (hop.kind.as_str(), callback.kind.as_str()),
        ("CLIENT", "CLIENT")
    );
    assert_eq!(
        (hop.trace.as_str(), callback.trace.as_str()),
        (trace, trace)
    );
    // Between them, the host sidecar's SERVER span of the mesh's inbound
    // pipeline.
    let all = spans.lock().unwrap().clone();
    let server = all
        .iter()
        .find(|g| g.service == "actorhost" && g.kind == "SERVER")
        .unwrap_or_else(|| panic!("no SERVER span on the host: {all:#?}"));
    assert_eq!(
        server.parent, hop.id,
        "the host's SERVER span is under the hop"
    );
    assert_eq!(
        callback.parent, server.id,
        "the app call is under it: {all:#?}"
    );
    assert_eq!(
        seen_by_app.split('-').nth(2).unwrap(),
        callback.id,
        "the app's parent is the host's span"
    );
    assert!(hop.ok && callback.ok);
    drop(host);
}

/// A workflow started with a `traceparent` is one trace: the sidecar's
/// `create_orchestration||chain` span under the caller, then
/// `orchestration||chain` and an `activity||inc` span per activity in the
/// same trace; `dapr_runtime_workflow_*` count the run and its activities,
/// and the metadata API shows the connected worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_is_one_trace_with_its_metrics() {
    use common::workflow as w;
    let spans = Spans::default();
    let port = otlp_http_receiver(spans.clone()).await;
    let home = TempDir::new("tracing-workflows");
    let config = home.write("tracing.yaml", &otlp_http_config(port));
    let res = common::actor_state_resources(&home);
    let (h, c) = (
        home.path().to_str().unwrap().to_string(),
        config.to_str().unwrap().to_string(),
    );
    let s = tokio::task::spawn_blocking(move || {
        sidecar()
            .app_id("wftraced")
            .env("TANDEM_HOME", &h)
            .args(["--config", &c, "--resources-path", &res])
            .start()
    })
    .await
    .unwrap();
    let endpoint = format!("http://127.0.0.1:{}", s.grpc);
    let worker = w::Worker::new(endpoint.clone());
    tokio::spawn(worker.clone().run());
    let mut client = w::connect(&endpoint).await.unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4737";
    let mut req = tonic::Request::new(tandem_proto::durabletask::CreateInstanceRequest {
        instance_id: "traced-1".into(),
        name: "chain".into(),
        input: Some("1".into()),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    client.start_instance(req).await.unwrap();
    let st = w::finished(&mut client, "traced-1", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.output.as_deref(), Some("4"));
    let end = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = spans.lock().unwrap().clone();
        let n = |name: &str| got.iter().filter(|g| g.name == name).count();
        if n("orchestration||chain") == 1 && n("activity||inc") == 3 {
            break got;
        }
        assert!(
            Instant::now() < end,
            "workflow spans not exported: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let create = got
        .iter()
        .find(|g| g.name == "create_orchestration||chain")
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert_eq!(create.trace, trace);
    assert_eq!(create.parent, "00f067aa0ba902b7");
    for g in got
        .iter()
        .filter(|g| g.name == "orchestration||chain" || g.name == "activity||inc")
    {
        assert_eq!(g.trace, trace, "{g:?}");
        assert_eq!(g.parent, create.id, "{g:?}");
        assert!(g.ok, "{g:?}");
    }
    let metadata = s.get("/v1.0/metadata").json();
    assert_eq!(metadata["workflows"]["connectedWorkers"], 1, "{metadata}");
    let text = s.metrics_text();
    for needle in [
        r#"dapr_runtime_workflow_execution_count{app_id="wftraced",namespace="default",status="success",workflow_name="chain"} 1"#,
        r#"dapr_runtime_workflow_activity_execution_count{activity_name="inc",app_id="wftraced",namespace="default",status="success"} 3"#,
        r#"dapr_runtime_workflow_operation_count{app_id="wftraced",namespace="default",operation="create_workflow",status="success"} 1"#,
        "dapr_runtime_workflow_scheduling_latency_count{",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    worker
        .stopped
        .store(true, std::sync::atomic::Ordering::Release);
}
