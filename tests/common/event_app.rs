//! A real HTTP app for pub/sub tests: serves `/dapr/subscribe`, records
//! every delivery, answers as told.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One delivery the app received: path, `pubsubname` header, content type, body.
#[derive(Clone, Debug)]
pub struct Got {
    pub path: String,
    pub pubsubname: String,
    pub content_type: String,
    pub event: serde_json::Value,
}

#[derive(Default)]
pub struct App {
    pub got: Mutex<Vec<Got>>,
    /// Answers per path, used in turn; the last one repeats.
    pub answers: Mutex<std::collections::HashMap<String, Vec<(u16, &'static str)>>>,
    /// The body of `GET /dapr/subscribe`.
    pub subscribe: String,
    /// How long each delivery takes the app.
    pub delay: Duration,
    /// For bulk deliveries: the status of each entry, from its event.
    pub bulk: Option<BulkAnswer>,
}

pub type BulkAnswer = Box<dyn Fn(&serde_json::Value) -> &'static str + Send + Sync>;

impl App {
    pub fn wait_for(&self, path: &str, n: usize) -> Vec<Got> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<Got> = self
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|g| g.path == path)
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < end,
                "waited for {n} deliveries to {path}, got {got:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Serves `app`, starts its sidecar on the resources in `dir` (plus
/// `extra` flags) and waits until the app is ready.
pub fn serve_app_with_sidecar(
    app: &Arc<App>,
    dir: &super::TempDir,
    extra: &[&str],
) -> super::Sidecar {
    let port = start_app(app.clone());
    let s = super::sidecar()
        .args([
            "--app-port",
            &port.to_string(),
            "--resources-path",
            dir.path().to_str().unwrap(),
        ])
        .args(extra)
        .start();
    assert!(
        s.wait_healthz(204, Duration::from_secs(10)),
        "{}",
        s.stderr.text()
    );
    s
}

/// Binds the app's port now (so nothing can take it) and serves on it.
pub fn start_app(app: Arc<App>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        tokio::net::TcpListener::from_std(listener).unwrap(),
        app,
    ));
    port
}

async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let path = req.uri().path().to_string();
                    if path == "/dapr/subscribe" {
                        return Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(app.subscribe.clone()),
                        )));
                    }
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    let (pubsubname, content_type) = (h("pubsubname"), h("content-type"));
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let event = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    tokio::time::sleep(app.delay).await;
                    let bulk_answer = app.bulk.as_ref().and_then(|answer| {
                        let entries = event.get("entries")?.as_array()?;
                        let statuses: Vec<_> = entries
                            .iter()
                            .map(|e| {
                                serde_json::json!({
                                    "entryId": e["entryId"],
                                    "status": answer(&e["event"]),
                                })
                            })
                            .collect();
                        Some(serde_json::json!({ "statuses": statuses }).to_string())
                    });
                    app.got.lock().unwrap().push(Got {
                        path: path.clone(),
                        pubsubname,
                        content_type,
                        event,
                    });
                    if let Some(body) = bulk_answer {
                        return Ok(hyper::Response::new(Full::new(Bytes::from(body))));
                    }
                    let (status, body) = {
                        let mut answers = app.answers.lock().unwrap();
                        match answers.get_mut(&path) {
                            Some(list) if list.len() > 1 => list.remove(0),
                            Some(list) => list[0],
                            None => (200, ""),
                        }
                    };
                    Ok(hyper::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap())
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
