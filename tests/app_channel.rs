//! The app channel against real apps listening on real ports: the startup
//! sequence (wait for the port, `/dapr/config`, `/dapr/subscribe`), the app
//! token, health probing with a threshold, and gRPC apps.

mod common;

use bytes::Bytes;
use common::{TempDir, free_port, sidecar};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the test app received: method, path, `dapr-app-id`, `dapr-api-token`.
type Seen = (String, String, Option<String>, Option<String>);

/// What the test app saw, and how it answers `/healthz`.
#[derive(Default)]
struct AppState {
    seen: Mutex<Vec<Seen>>,
    health_status: AtomicU16,
}

impl AppState {
    fn calls(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == path)
            .cloned()
            .collect()
    }
}

const SUBSCRIBE_BODY: &str = r#"[
  {"pubsubname": "pubsub", "topic": "orders", "route": "/orders"},
  {"pubsubname": "pubsub", "topic": "audit", "routes": {"rules": [{"match": "event.type == \"x\"", "path": "/x"}], "default": "/audit"}, "deadLetterTopic": "dead"},
  {"pubsubname": "pubsub", "topic": "no-route"}
]"#;

async fn serve_app(port: u16, state: Arc<AppState>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_string())
                    };
                    state.seen.lock().unwrap().push((
                        req.method().to_string(),
                        req.uri().path().to_string(),
                        h("dapr-app-id"),
                        h("dapr-api-token"),
                    ));
                    let (status, body) = match req.uri().path() {
                        "/dapr/subscribe" => (200, SUBSCRIBE_BODY),
                        "/dapr/config" => (200, r#"{"entities": []}"#),
                        "/healthz" => (state.health_status.load(Ordering::SeqCst), ""),
                        _ => (404, ""),
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_app_startup_sequence() {
    let dir = TempDir::new("appchan");
    dir.write(
        "sub.yaml",
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: decl\nspec:\n  pubsubname: pubsub\n  topic: declared\n  routes:\n    default: /declared\n",
    );
    let app_port = free_port();
    let s = sidecar()
        .args([
            "--app-port",
            &app_port.to_string(),
            "--resources-path",
            dir.path().to_str().unwrap(),
        ])
        .env("APP_API_TOKEN", "app-secret")
        .start();

    // outbound is up, but the app is not listening yet
    let r = s.get("/v1.0/healthz");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_HEALTH_NOT_READY")
    );

    let state = Arc::new(AppState::default());
    tokio::spawn(serve_app(app_port, state.clone()));
    assert!(
        s.wait_healthz(204, Duration::from_secs(10)),
        "{}",
        s.stderr.text()
    );

    for path in ["/dapr/config", "/dapr/subscribe"] {
        let calls = state.calls(path);
        assert_eq!(calls.len(), 1, "{path} called once: {calls:?}");
        assert_eq!(calls[0].0, "GET");
        assert_eq!(
            calls[0].2.as_deref(),
            Some("test-app"),
            "dapr-app-id header"
        );
        assert_eq!(
            calls[0].3.as_deref(),
            Some("app-secret"),
            "APP_API_TOKEN sent to the app"
        );
    }

    let m = s.get("/v1.0/metadata").json();
    assert_eq!(m["appConnectionProperties"]["port"], app_port);
    assert_eq!(m["appConnectionProperties"]["protocol"], "http");
    let subs = m["subscriptions"].as_array().unwrap();
    let summary: Vec<(String, String)> = subs
        .iter()
        .map(|s| {
            (
                s["topic"].as_str().unwrap().into(),
                s["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("declared".to_string(), "DECLARATIVE".to_string()),
            ("orders".into(), "PROGRAMMATIC".into()),
            ("audit".into(), "PROGRAMMATIC".into()),
        ],
        "the entry without a route is dropped"
    );
    assert_eq!(subs[2]["deadLetterTopic"], "dead");
    assert_eq!(subs[2]["rules"][0]["match"], "event.type == \"x\"");
    assert_eq!(subs[2]["rules"][1]["path"], "/audit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_health_checks_gate_readiness_and_count_failures() {
    let app_port = free_port();
    let state = Arc::new(AppState::default());
    state.health_status.store(503, Ordering::SeqCst);
    tokio::spawn(serve_app(app_port, state.clone()));
    let s = sidecar()
        .args([
            "--app-port",
            &app_port.to_string(),
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "50ms",
            "--app-health-probe-timeout",
            "200",
            "--app-health-threshold",
            "3",
        ])
        .start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.get("/v1.0/healthz").status,
        500,
        "not ready while the app is unhealthy"
    );
    assert!(state.calls("/healthz").len() >= 3, "probed repeatedly");

    state.health_status.store(200, Ordering::SeqCst);
    assert!(
        s.wait_healthz(204, Duration::from_secs(5)),
        "{}",
        s.stderr.text()
    );
    let m = s.get("/v1.0/metadata").json();
    assert_eq!(m["appConnectionProperties"]["health"]["healthThreshold"], 3);
    assert_eq!(
        m["appConnectionProperties"]["health"]["healthProbeInterval"],
        "50ms"
    );

    state.health_status.store(500, Ordering::SeqCst);
    assert!(
        s.stderr.wait_for(
            "app is unhealthy: health probe failed 3 times",
            Duration::from_secs(5)
        ),
        "{}",
        s.stderr.text()
    );
    let before = s.stderr.text().matches("app is healthy").count();
    state.health_status.store(200, Ordering::SeqCst);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while s.stderr.text().matches("app is healthy").count() == before {
        assert!(
            std::time::Instant::now() < end,
            "recovery not seen:\n{}",
            s.stderr.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod grpc_app {
    use tandem_proto::common::v1 as common;
    use tandem_proto::runtime::v1 as rt;
    use tonic::{Request, Response, Status};

    #[derive(Default)]
    pub struct App {
        pub health_calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl rt::app_callback_server::AppCallback for App {
        async fn on_invoke(
            &self,
            _: Request<common::InvokeRequest>,
        ) -> Result<Response<common::InvokeResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn list_topic_subscriptions(
            &self,
            req: Request<()>,
        ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
            assert_eq!(
                req.metadata().get("dapr-api-token").unwrap(),
                "grpc-app-token"
            );
            Ok(Response::new(rt::ListTopicSubscriptionsResponse {
                subscriptions: vec![rt::TopicSubscription {
                    pubsub_name: "pubsub".into(),
                    topic: "grpc-topic".into(),
                    ..Default::default()
                }],
            }))
        }
        async fn on_topic_event(
            &self,
            _: Request<rt::TopicEventRequest>,
        ) -> Result<Response<rt::TopicEventResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn list_input_bindings(
            &self,
            _: Request<()>,
        ) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
            Ok(Response::new(Default::default()))
        }
        async fn on_binding_event(
            &self,
            _: Request<rt::BindingEventRequest>,
        ) -> Result<Response<rt::BindingEventResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn on_bulk_topic_event(
            &self,
            _: Request<rt::TopicEventBulkRequest>,
        ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn on_job_event(
            &self,
            _: Request<rt::JobEventRequest>,
        ) -> Result<Response<rt::JobEventResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    pub struct Health(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

    #[tonic::async_trait]
    impl rt::app_callback_health_check_server::AppCallbackHealthCheck for Health {
        async fn health_check(
            &self,
            _: Request<()>,
        ) -> Result<Response<rt::HealthCheckResponse>, Status> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Response::new(rt::HealthCheckResponse {}))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_app_subscriptions_and_health() {
    use tandem_proto::runtime::v1 as rt;
    let app = grpc_app::App::default();
    let health_calls = app.health_calls.clone();
    // Bound as port 0: no other test can take the port between choosing
    // and binding it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rt::app_callback_server::AppCallbackServer::new(app))
            .add_service(
                rt::app_callback_health_check_server::AppCallbackHealthCheckServer::new(
                    grpc_app::Health(health_calls.clone()),
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let s = sidecar()
        .args([
            "--app-port",
            &app_port.to_string(),
            "--app-protocol",
            "grpc",
            "--enable-app-health-check",
            "--app-health-probe-interval",
            "50ms",
        ])
        .env("APP_API_TOKEN", "grpc-app-token")
        .start();
    assert!(
        s.wait_healthz(204, Duration::from_secs(10)),
        "{}",
        s.stderr.text()
    );
    assert!(
        health_calls.load(Ordering::SeqCst) >= 1,
        "gRPC health check called"
    );
    let m = s.get("/v1.0/metadata").json();
    assert_eq!(m["appConnectionProperties"]["protocol"], "grpc");
    assert_eq!(m["subscriptions"][0]["topic"], "grpc-topic");
    assert_eq!(m["subscriptions"][0]["type"], "PROGRAMMATIC");
}
