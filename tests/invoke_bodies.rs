//! Request bodies through two sidecars: a body without a length is
//! streamed to the app as it arrives (the app sees the first chunk while
//! the caller is still sending) and cut off past `--max-body-size`; and
//! what may be sent again under a retry policy — a request the app may
//! already have acted on is repeated only when it is idempotent.

mod common;

use bytes::Bytes;
use common::{Sidecar, TempDir, sidecar};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    /// "METHOD /path" → requests that reached the app.
    hits: HashMap<String, usize>,
    /// Bytes of `/upload` received so far.
    upload_bytes: usize,
}

async fn app(seen: Arc<Mutex<Seen>>) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            if path.starts_with("/dapr/") {
                return hyper::Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            *seen
                .lock()
                .unwrap()
                .hits
                .entry(format!("{} {path}", req.method()))
                .or_default() += 1;
            let (status, body) = match path.as_str() {
                "/down" => (503, Bytes::from("down")),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    (200, Bytes::from("slow"))
                }
                "/upload" => {
                    let mut body = req.into_body();
                    let mut all = Vec::new();
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else { break };
                        if let Ok(data) = frame.into_data() {
                            seen.lock().unwrap().upload_bytes += data.len();
                            all.extend_from_slice(&data);
                        }
                    }
                    (200, Bytes::from(all))
                }
                _ => (200, Bytes::from("ok")),
            };
            hyper::Response::builder()
                .status(status)
                .body(Full::new(body))
                .unwrap()
        }
    })
    .await
}

/// `orders` (the app) and `shop`, whose calls to orders are under a
/// policy: 300 ms timeout, two retries.
async fn pair(seen: Arc<Mutex<Seen>>) -> (Sidecar, Sidecar, TempDir, TempDir) {
    let port = app(seen).await;
    let home = TempDir::new("bodies-home");
    let res = TempDir::new("bodies-res");
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      quick: 300ms\n    retries:\n      twice:\n        policy: constant\n        duration: 10ms\n        maxRetries: 2\n  targets:\n    apps:\n      orders:\n        timeout: quick\n        retry: twice\n",
    );
    let h = home.path().to_str().unwrap();
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &port.to_string()])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--max-body-size", "64Ki"])
        .start();
    (orders, shop, home, res)
}

type Chunks = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

/// Starts a POST with a body of unknown length (chunked) to `shop`; the
/// body is whatever is pushed into the returned sender until it is dropped.
async fn chunked_post(port: u16, path: &str) -> (Chunks, tokio::task::JoinHandle<(u16, Bytes)>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .body(body)
        .unwrap();
    let call = tokio::spawn(async move {
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    (tx, call)
}

fn hits(seen: &Arc<Mutex<Seen>>, key: &str) -> usize {
    seen.lock().unwrap().hits.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_length_is_streamed_not_buffered() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (_orders, shop, _h, _r) = pair(seen.clone()).await;

    let (tx, call) = chunked_post(shop.http, "/v1.0/invoke/orders/method/upload").await;
    tx.send(Ok(Frame::data(Bytes::from("first part; "))))
        .await
        .unwrap();
    // The app holds the first part while the caller has not finished:
    // nothing on the way waits for the whole body.
    let end = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().upload_bytes == 0 {
        assert!(
            Instant::now() < end,
            "the first chunk never reached the app before the body ended: buffered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(Ok(Frame::data(Bytes::from("second part"))))
        .await
        .unwrap();
    drop(tx);
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, Bytes::from("first part; second part"));
    assert_eq!(hits(&seen, "POST /upload"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_past_the_limit_is_cut_off_with_413() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (_orders, shop, _h, _r) = pair(seen.clone()).await;
    let (tx, call) = chunked_post(shop.http, "/v1.0/invoke/orders/method/upload").await;
    let feeder = tokio::spawn(async move {
        for _ in 0..100 {
            // 100 × 1 KiB against a 64 KiB limit.
            if tx
                .send(Ok(Frame::data(Bytes::from(vec![b'x'; 1024]))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let (status, body) = call.await.unwrap();
    feeder.abort();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("ERR_BODY_TOO_LARGE"));
    assert!(seen.lock().unwrap().upload_bytes <= 64 * 1024);
    // The sidecar is fine.
    let r = shop.request("GET", "/v1.0/invoke/orders/method/hello", b"");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_sent_again_once_the_app_may_have_them() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (_orders, shop, _h, _r) = pair(seen.clone()).await;

    // Cut off by the timeout while the app works on it: a POST is not
    // repeated (the app may act on it twice) ...
    let r = shop.request("POST", "/v1.0/invoke/orders/method/slow", b"{}");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert_eq!(hits(&seen, "POST /slow"), 1, "one try only");
    // ... a PUT is (same request, same effect) ...
    let r = shop.request("PUT", "/v1.0/invoke/orders/method/slow", b"{}");
    assert_eq!(r.status, 500);
    assert_eq!(hits(&seen, "PUT /slow"), 3, "one try and two retries");
    // ... and so is a POST the caller marks idempotent.
    let r = shop
        .try_request(
            "POST",
            "/v1.0/invoke/orders/method/slow",
            &[("idempotency-key", "order-7")],
            b"{}",
        )
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(hits(&seen, "POST /slow"), 4, "1 before + 3 now");

    // A 503 is the app's own answer: status retries follow the policy,
    // whatever the method.
    let r = shop.request("POST", "/v1.0/invoke/orders/method/down", b"{}");
    assert_eq!((r.status, r.text().as_str()), (503, "down"));
    assert_eq!(hits(&seen, "POST /down"), 3);

    // A body of unknown length cannot be replayed: one try, the app's
    // answer relayed.
    let (tx, call) = chunked_post(shop.http, "/v1.0/invoke/orders/method/down").await;
    tx.send(Ok(Frame::data(Bytes::from("once")))).await.unwrap();
    drop(tx);
    let (status, body) = call.await.unwrap();
    assert_eq!((status, body), (503, Bytes::from("down")));
    assert_eq!(hits(&seen, "POST /down"), 4, "3 before + 1 now");
}
