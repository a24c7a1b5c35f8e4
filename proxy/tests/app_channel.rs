//! The app channel against a real HTTP server on a real port.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tandem_config::AppProtocol;
use tandem_proxy::{AppChannel, AppChannelConfig};

/// Serves `/slow` (holds the request 150 ms) and `/healthz`; tracks the
/// most `/slow` requests in flight at once.
async fn app(in_flight: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    async move {
                        if req.uri().path() == "/slow" {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn channel(port: u16, max: Option<usize>) -> Arc<AppChannel> {
    Arc::new(
        AppChannel::new(AppChannelConfig {
            app_id: "a".into(),
            address: "127.0.0.1".into(),
            port,
            protocol: AppProtocol::Http,
            api_token: None,
            max_concurrency: max,
        })
        .unwrap(),
    )
}

async fn slow_call(ch: Arc<AppChannel>) {
    let req = hyper::Request::get("/slow")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = ch.send_http(req).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
}

#[tokio::test]
async fn max_concurrency_holds_app_work_but_not_health_probes() {
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let port = app(in_flight.clone(), peak.clone()).await;
    let ch = channel(port, Some(2));
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(slow_call(ch.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // While app work is queued, a probe still gets through at once.
    let start = std::time::Instant::now();
    assert!(ch.probe("/healthz", Duration::from_millis(100)).await);
    assert!(start.elapsed() < Duration::from_millis(100));
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "never more than --app-max-concurrency"
    );

    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let port = app(in_flight, peak.clone()).await;
    let ch = channel(port, None);
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(slow_call(ch.clone())))
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 6, "unlimited by default");
}

#[tokio::test]
async fn an_app_that_is_not_listening_is_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ch = channel(port, None);
    assert!(!ch.probe("/healthz", Duration::from_millis(200)).await);
    let err = ch.subscriptions().await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}
