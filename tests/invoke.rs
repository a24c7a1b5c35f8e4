//! Service invocation through two real sidecars on one host: the local name
//! registry, the internal leg (pooled HTTP/1.1, HTTP/2), verbs, paths, query strings, headers
//! and bodies both ways, the `dapr-app-id` header, calls to oneself,
//! `InvokeService` over gRPC, and the errors of an unknown app.

mod common;

use bytes::Bytes;
use common::{Sidecar, TempDir, sidecar};
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tandem_proto::common::v1 as cv1;
use tandem_proto::runtime::v1 as rt;

/// An app that answers every request with what it saw, as JSON; under
/// `/status/<n>` it answers status n with a header of its own.
async fn echo_app() -> u16 {
    common::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
            .collect();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let status = path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(200);
        let answer = serde_json::json!({
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-app", "echo")
            .body(Full::new(Bytes::from(answer.to_string())))
            .unwrap()
    })
    .await
}

/// Two sidecars sharing one tandem home (and so one name registry):
/// `orders` in front of the echo app, `shop` with no app.
async fn pair(home: &TempDir) -> (Sidecar, Sidecar) {
    let port = echo_app().await;
    let home = home.path().to_str().unwrap();
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", home)
        .args(["--app-port", &port.to_string()])
        .start();
    let shop = sidecar().app_id("shop").env("TANDEM_HOME", home).start();
    assert!(orders.wait_healthz(204, Duration::from_secs(10)));
    assert!(shop.wait_healthz(204, Duration::from_secs(10)));
    (orders, shop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_invocation_between_two_sidecars() {
    let home = TempDir::new("invoke-home");
    let (orders, shop) = pair(&home).await;

    let r = shop
        .try_request(
            "POST",
            "/v1.0/invoke/orders/method/items/7?x=1&y=two%20words",
            &[
                ("content-type", "text/plain"),
                ("x-custom", "kept"),
                ("dapr-api-token", "not for the app"),
            ],
            b"hello orders",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-app"),
        Some("echo"),
        "the app's headers come back"
    );
    let e = r.json();
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/items/7");
    assert_eq!(e["query"], "x=1&y=two%20words", "query forwarded verbatim");
    assert_eq!(e["body"], "hello orders");
    let h = &e["headers"];
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["dapr-caller-app-id"], "shop");
    assert_eq!(h["dapr-callee-app-id"], "orders");
    assert!(
        h.get("dapr-api-token").is_none(),
        "the caller's token stays home"
    );
    assert!(
        h.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("tandem-")),
        "internal headers are not shown to the app: {h}"
    );

    for verb in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = shop.request(verb, "/v1.0/invoke/orders/method/v", b"");
        assert_eq!(r.status, 200, "{verb}: {}", r.text());
        assert_eq!(r.json()["method"], verb);
    }

    // The app's status is relayed as it is.
    let r = shop.request("GET", "/v1.0/invoke/orders/method/status/418", b"");
    assert_eq!(r.status, 418);
    assert_eq!(r.json()["path"], "/status/418");

    // The dapr-app-id header on any path, and a path that tries to climb.
    let r = shop
        .try_request("GET", "/stock/9?all=1", &[("dapr-app-id", "orders")], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/stock/9");
    assert_eq!(r.json()["query"], "all=1");
    assert!(r.json()["headers"].get("dapr-app-id").is_none());
    let r = shop.request(
        "GET",
        "/v1.0/invoke/orders/method/a/../../../etc/passwd",
        b"",
    );
    assert_eq!(r.json()["path"], "/etc/passwd");

    // An app may call itself: no network hop.
    let r = orders.request("GET", "/v1.0/invoke/orders/method/self", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["dapr-caller-app-id"], "orders");

    // Nobody by that name.
    let r = shop.request("GET", "/v1.0/invoke/nobody/method/x", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        r.text().contains("failed to invoke, id: nobody")
            && r.text().contains("couldn't find service"),
        "{}",
        r.text()
    );
    // A sidecar without an app is found but cannot deliver.
    let r = orders.request("GET", "/v1.0/invoke/shop/method/x", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("no app channel"), "{}", r.text());

    let m = shop.metrics_text();
    assert!(
        m.contains(r#"dapr_service_invocation_req_sent_total{app_id="shop",dest_app_id="orders",type="http"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"dapr_service_invocation_res_recv_total{app_id="shop",dest_app_id="orders",status="418",type="http"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"dest_app_id="nobody",status="error""#), "{m}");
    let served = orders.metrics_text();
    assert!(
        served.contains(r#"dapr_service_invocation_res_sent_total{app_id="orders",src_app_id="shop",status="418",type="http"} 1"#),
        "{served}"
    );
    assert!(
        served.contains(r#"dapr_service_invocation_req_recv_total{app_id="orders",src_app_id="shop",type="http"}"#),
        "{served}"
    );

    // A stopped sidecar leaves the registry.
    drop(orders);
    let r = shop.request("GET", "/v1.0/invoke/orders/method/x", b"");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("couldn't find service"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_invoke_service_reaches_an_http_app() {
    let home = TempDir::new("invoke-grpc");
    let (_orders, shop) = pair(&home).await;
    let mut c = rt::dapr_client::DaprClient::connect(shop.grpc_endpoint())
        .await
        .unwrap();
    let resp = c
        .invoke_service(rt::InvokeServiceRequest {
            id: "orders".into(),
            message: Some(cv1::InvokeRequest {
                method: "items/8".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"{\"n\":8}".to_vec(),
                }),
                content_type: "application/json".into(),
                http_extension: Some(cv1::HttpExtension {
                    verb: cv1::http_extension::Verb::Put as i32,
                    querystring: "a=b".into(),
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.content_type, "application/json");
    let e: serde_json::Value = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    assert_eq!(e["method"], "PUT");
    assert_eq!(e["path"], "/items/8");
    assert_eq!(e["query"], "a=b");
    assert_eq!(e["body"], "{\"n\":8}");
    assert_eq!(e["headers"]["content-type"], "application/json");

    let err = c
        .invoke_service(rt::InvokeServiceRequest {
            id: "orders".into(),
            message: Some(cv1::InvokeRequest {
                method: "status/404".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = c
        .invoke_service(rt::InvokeServiceRequest {
            id: "nobody".into(),
            message: Some(cv1::InvokeRequest::default()),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("couldn't find service"), "{err:?}");
}

/// An app whose `/flaky` answers 503 twice and then 200, whose `/slow`
/// takes two seconds, and which counts the requests it gets.
async fn flaky_app(hits: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    use std::sync::atomic::Ordering;
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let (hits, flaky) = (hits.clone(), flaky.clone());
        async move {
            let path = req.uri().path().to_string();
            if path.starts_with("/dapr/") || path == "/healthz" {
                return hyper::Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            hits.fetch_add(1, Ordering::SeqCst);
            let status = match path.as_str() {
                "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) < 2 => 503,
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    200
                }
                "/teapot" => 418,
                _ => 200,
            };
            hyper::Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(format!("{path} {status}"))))
                .unwrap()
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_resiliency_retries_times_out_and_breaks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let home = TempDir::new("invoke-resiliency");
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let port = flaky_app(hits.clone()).await;
    let res = TempDir::new("invoke-resiliency-res");
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      quick: 300ms\n    retries:\n      thrice:\n        policy: constant\n        duration: 20ms\n        maxRetries: 3\n    circuitBreakers:\n      fuse:\n        maxRequests: 1\n        timeout: 1s\n        trip: consecutiveFailures >= 4\n  targets:\n    apps:\n      orders:\n        timeout: quick\n        retry: thrice\n        circuitBreaker: fuse\n",
    );
    let h = home.path().to_str().unwrap();
    let _orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &port.to_string()])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();

    // 503, 503, then 200: the caller sees only the success.
    let r = shop.request("GET", "/v1.0/invoke/orders/method/flaky", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "/flaky 200"));
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two retries");

    // A 4xx is the app's answer, not a failure: no retry.
    let r = shop.request("GET", "/v1.0/invoke/orders/method/teapot", b"");
    assert_eq!(r.status, 418);
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // Too slow every time: each try is cut at 300 ms, then the error.
    let t = std::time::Instant::now();
    let r = shop.request("GET", "/v1.0/invoke/orders/method/slow", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "four tries of 300 ms"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 8);

    // Four failures in a row tripped the breaker: calls fail fast, the app
    // sees nothing, until its timeout lets one through.
    let r = shop.request("GET", "/v1.0/invoke/orders/method/ok", b"");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("circuit breaker is open"), "{}", r.text());
    assert_eq!(hits.load(Ordering::SeqCst), 8, "nothing reached the app");
    std::thread::sleep(Duration::from_millis(1100));
    let r = shop.request("GET", "/v1.0/invoke/orders/method/ok", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "/ok 200"),
        "half-open, then closed"
    );

    // Every activation was counted, under Dapr's metric name.
    let m = shop.metrics_text();
    let count = |parts: &[&str]| -> i64 {
        m.lines()
            .filter(|l| {
                l.starts_with("dapr_resiliency_activations_total{")
                    || l.starts_with("tandem_resiliency_circuit_breaker_state{")
            })
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {parts:?} in\n{m}"))
    };
    let app = "target=\"app_orders\"";
    assert_eq!(
        count(&["activations", app, "policy=\"retry\""]),
        5,
        "2 + 3 retries"
    );
    assert_eq!(count(&["activations", app, "policy=\"timeout\""]), 4);
    for (status, n) in [("open", 2), ("half-open", 1), ("closed", 1)] {
        // `open`: the trip, and the one call refused while open.
        assert_eq!(
            count(&[
                "activations",
                app,
                "policy=\"circuitbreaker\"",
                &format!("status=\"{status}\"")
            ]),
            n,
            "{status}"
        );
    }
    assert_eq!(count(&["breaker_state", app]), 0, "closed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxying_checks_the_token_and_names_unknown_apps() {
    let home = TempDir::new("invoke-proxy");
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .env("DAPR_API_TOKEN", "s3cret")
        .start();
    let mut c = rt::app_callback_health_check_client::AppCallbackHealthCheckClient::connect(
        shop.grpc_endpoint(),
    )
    .await
    .unwrap();
    let call = |token: Option<&str>| {
        let mut req = tonic::Request::new(());
        req.metadata_mut()
            .insert("dapr-app-id", "nobody".parse().unwrap());
        if let Some(t) = token {
            req.metadata_mut()
                .insert("dapr-api-token", t.parse().unwrap());
        }
        req
    };
    let err = c.health_check(call(None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = c.health_check(call(Some("s3cret"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("couldn't find service: nobody"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_and_urls_outside_the_mesh() {
    let port = echo_app().await;
    let res = TempDir::new("invoke-endpoints");
    res.write(
        "billing.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: billing-api\nspec:\n  baseUrl: http://127.0.0.1:{port}/v2\n  headers:\n  - name: x-api-key\n    value: k123\n"
        ),
    );
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", res.path().to_str().unwrap())
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();

    let r = shop.request(
        "POST",
        "/v1.0/invoke/billing-api/method/charge?x=1",
        b"7 EUR",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["path"], "/v2/charge");
    assert_eq!(e["query"], "x=1");
    assert_eq!(e["body"], "7 EUR");
    assert_eq!(
        e["headers"]["x-api-key"], "k123",
        "the endpoint's headers are added"
    );

    let r = shop
        .try_request("GET", "/ping", &[("dapr-app-id", "billing-api")], b"")
        .unwrap();
    assert_eq!(r.json()["path"], "/v2/ping");

    let url = format!("/v1.0/invoke/http%3A%2F%2F127.0.0.1%3A{port}/method/direct");
    let r = shop.request("GET", &url, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/direct");

    let r = shop.request(
        "GET",
        "/v1.0/invoke/https%3A%2F%2F127.0.0.1%3A1/method/x",
        b"",
    );
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("cannot call https://127.0.0.1:1") && r.text().contains("refused"),
        "{}",
        r.text()
    );
    let r = shop.request(
        "GET",
        "/v1.0/invoke/http%3A%2F%2F127.0.0.1%3A1/method/x",
        b"",
    );
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("cannot call http://127.0.0.1:1"),
        "{}",
        r.text()
    );
}

/// An app that answers `/stream` with ten chunks, 150 ms apart.
async fn streaming_app() -> u16 {
    use http_body_util::StreamBody;
    type Chunk = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
    common::serve_http(|_req: hyper::Request<hyper::body::Incoming>| async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(1);
        tokio::spawn(async move {
            for i in 0..10 {
                let frame = hyper::body::Frame::data(Bytes::from(format!("chunk-{i};")));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        hyper::Response::new(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_and_a_killed_peer_ends_the_call() {
    let home = TempDir::new("invoke-stream");
    let port = streaming_app().await;
    let h = home.path().to_str().unwrap();
    let mut orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &port.to_string()])
        .start();
    let shop = sidecar().app_id("shop").env("TANDEM_HOME", h).start();

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri = format!(
        "http://127.0.0.1:{}/v1.0/invoke/orders/method/stream",
        shop.http
    );
    let call = |client: &hyper_util::client::legacy::Client<_, Full<Bytes>>| {
        client.request(
            hyper::Request::get(uri.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };

    // The first chunk arrives long before the app is done: streamed.
    let t = std::time::Instant::now();
    let mut body = call(&client).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"chunk-0;");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "first chunk after {:?}",
        t.elapsed()
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(rest.ends_with(b"chunk-9;"), "{rest:?}");

    // The callee's sidecar dies mid-response: the caller's body ends in an
    // error instead of hanging, and the caller's sidecar goes on serving.
    let mut body = call(&client).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    orders.child.kill().unwrap();
    let _ = orders.child.wait();
    let ended = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the body ends with an error, promptly"
    );
    let r = shop.request("GET", "/v1.0/invoke/orders/method/stream", b"");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("couldn't find service: orders"),
        "{}",
        r.text()
    );
    assert_eq!(shop.get("/v1.0/healthz").status, 204);
}

/// An app that says who it is, after `delay`.
async fn named_app(name: &'static str, delay: Duration) -> u16 {
    common::serve_http(
        move |_req: hyper::Request<hyper::body::Incoming>| async move {
            tokio::time::sleep(delay).await;
            hyper::Response::new(Full::new(Bytes::from(name)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faster_of_two_instances_gets_most_calls() {
    let home = TempDir::new("invoke-p2c");
    let h = home.path().to_str().unwrap();
    let (fast, slow) = (
        named_app("fast", Duration::ZERO).await,
        named_app("slow", Duration::from_millis(40)).await,
    );
    let replica = |port: u16| {
        sidecar()
            .app_id("orders")
            .env("TANDEM_HOME", h)
            .args(["--app-port", &port.to_string()])
            .start()
    };
    let (_a, _b) = (replica(fast), replica(slow));
    let shop = sidecar().app_id("shop").env("TANDEM_HOME", h).start();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..40 {
        let r = shop.request("GET", "/v1.0/invoke/orders/method/who", b"");
        assert_eq!(r.status, 200);
        *answers.entry(r.text()).or_default() += 1;
    }
    assert!(
        answers.get("slow").is_some_and(|n| *n >= 1),
        "both replicas are used: {answers:?}"
    );
    assert!(
        answers.get("fast").is_some_and(|n| *n >= 34),
        "latency decides: {answers:?}"
    );
}

/// An app of the HTTP/1.0 era: every answer `HTTP/1.0` with
/// `Connection: close` and `Keep-Alive`, then the connection closed.
async fn http10_app() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.0 200 OK\r\nConnection: close, x-conn-private\r\n\
                          Keep-Alive: timeout=1\r\nX-Conn-Private: 1\r\nX-App: old\r\n\
                          Content-Length: 2\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

/// Reads one HTTP/1.1 answer with a `Content-Length` from `s`: its head
/// (lower-cased) and body.
async fn read_answer(s: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "the sidecar closed the client's connection: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_app_closes_neither_the_clients_connection_nor_the_pooled_one() {
    use tokio::io::AsyncWriteExt;
    let home = TempDir::new("invoke-http10");
    let app = http10_app().await;
    let internal = common::free_port();
    let h = home.path().to_str().unwrap();
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &app.to_string()])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .start();
    let shop = sidecar().app_id("shop").env("TANDEM_HOME", h).start();
    assert!(orders.wait_healthz(204, Duration::from_secs(10)));
    assert!(shop.wait_healthz(204, Duration::from_secs(10)));
    // One client connection, several calls on it: through two sidecars
    // and to the sidecar's own app.
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", shop.http))
        .await
        .unwrap();
    let mut own = tokio::net::TcpStream::connect(("127.0.0.1", orders.http))
        .await
        .unwrap();
    for i in 0..5 {
        for (s, host) in [(&mut client, "shop"), (&mut own, "orders")] {
            let req =
                format!("GET /v1.0/invoke/orders/method/old/{i} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let (head, body) = read_answer(s).await;
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert_eq!(body, "ok");
            assert!(head.contains("\r\nx-app: old"), "{head}");
            for gone in ["connection:", "keep-alive:", "x-conn-private:"] {
                assert!(!head.contains(gone), "{gone} reached the client: {head}");
            }
        }
    }
    // The two sidecars kept one HTTP/1.1 connection between them for the
    // five sequential calls.
    let ss = std::process::Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( dport = :{internal} )"),
        ])
        .output()
        .expect("ss (iproute2)");
    let conns = String::from_utf8_lossy(&ss.stdout).lines().count();
    assert_eq!(conns, 1, "{}", String::from_utf8_lossy(&ss.stdout));
}
