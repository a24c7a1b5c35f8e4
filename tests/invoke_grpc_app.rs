//! Invoking a gRPC app (`OnInvoke`) through two sidecars under a retry
//! policy with `matching.gRPCStatusCodes`: the app's gRPC code decides what
//! is retried, and `InvokeService` callers get the app's exact code back
//! (not one guessed from the HTTP status).

mod common;

use common::{TempDir, sidecar};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tandem_proto::common::v1 as cv1;
use tandem_proto::runtime::v1 as rt;
use tonic::Status;

type Hits = Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

/// The app: `OnInvoke` answers by method name and counts the calls.
fn app(hits: Hits) -> common::callback::Callbacks {
    let flaky = Arc::new(AtomicUsize::new(0));
    common::callback::Callbacks {
        on_invoke: Some(common::callback::handler(move |req: cv1::InvokeRequest| {
            let (hits, flaky) = (hits.clone(), flaky.clone());
            async move {
                let method = req.method;
                *hits.lock().unwrap().entry(method.clone()).or_default() += 1;
                match method.as_str() {
                    "flaky" if flaky.fetch_add(1, Ordering::SeqCst) < 2 => {
                        Err(Status::unavailable("warming up"))
                    }
                    "missing" => Err(Status::not_found("no such order")),
                    "down" => Err(Status::unavailable("down for maintenance")),
                    "slow" => {
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        Err(Status::ok("too late"))
                    }
                    "precondition" => Err(Status::failed_precondition("order is closed")),
                    _ => Ok(cv1::InvokeResponse {
                        data: Some(prost_types::Any {
                            type_url: String::new(),
                            value: b"ok".to_vec(),
                        }),
                        content_type: "text/plain".into(),
                    }),
                }
            }
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_codes_decide_retries_and_reach_grpc_callers_exactly() {
    let hits = Hits::default();
    let port = common::callback::serve(app(hits.clone())).await;
    let home = TempDir::new("grpc-app-home");
    let res = TempDir::new("grpc-app-res");
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      unavailable:\n        policy: constant\n        duration: 10ms\n        maxRetries: 3\n        matching:\n          gRPCStatusCodes: \"14\"\n    timeouts:\n      half: 500ms\n    circuitBreakers:\n      fuse:\n        maxRequests: 1\n        timeout: 30s\n        trip: consecutiveFailures >= 3\n  targets:\n    apps:\n      orders:\n        retry: unavailable\n        timeout: half\n        circuitBreaker: fuse\n",
    );
    let h = home.path().to_str().unwrap();
    let _orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &port.to_string(), "--app-protocol", "grpc"])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let count = |m: &str| hits.lock().unwrap().get(m).copied().unwrap_or(0);

    // UNAVAILABLE twice, then OK: retried because 14 is listed.
    let r = shop.request("POST", "/v1.0/invoke/orders/method/flaky", b"{}");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(count("flaky"), 3);

    // NOT_FOUND is not listed: one try, Dapr's HTTP mapping, and no
    // internal header shown to the caller.
    let r = shop.request("POST", "/v1.0/invoke/orders/method/missing", b"{}");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["code"], 5);
    assert!(r.headers.iter().all(|(k, _)| !k.starts_with("tandem-")));
    assert_eq!(count("missing"), 1);

    // An InvokeService caller gets the app's own code back: 9, although
    // the HTTP status it rode on (400) would say INVALID_ARGUMENT.
    let mut client = rt::dapr_client::DaprClient::connect(shop.grpc_endpoint())
        .await
        .unwrap();
    let call = |method: &str| rt::InvokeServiceRequest {
        id: "orders".into(),
        message: Some(cv1::InvokeRequest {
            method: method.into(),
            http_extension: Some(cv1::HttpExtension {
                verb: cv1::http_extension::Verb::Post as i32,
                querystring: String::new(),
            }),
            ..Default::default()
        }),
    };
    let err = client
        .invoke_service(call("precondition"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(count("precondition"), 1);
    let ok = client.invoke_service(call("hello")).await.unwrap();
    assert_eq!(ok.into_inner().data.unwrap().value, b"ok");

    // gRPC proxying (any service, here the app's own AppCallback, called
    // with `dapr-app-id`) runs under the same policy, without retries (a
    // stream cannot be replayed): the timeout bounds the wait for the
    // answer ...
    let mut proxied = rt::app_callback_client::AppCallbackClient::connect(shop.grpc_endpoint())
        .await
        .unwrap();
    let on_invoke = |method: &str| {
        let mut r = tonic::Request::new(cv1::InvokeRequest {
            method: method.into(),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("dapr-app-id", "orders".parse().unwrap());
        r
    };
    let t = std::time::Instant::now();
    let err = proxied.on_invoke(on_invoke("slow")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(t.elapsed() < std::time::Duration::from_millis(1500));
    // ... and failing answers (UNAVAILABLE is listed) count for the
    // breaker: with the timeout that makes three in a row, and it opens.
    for _ in 0..2 {
        let err = proxied.on_invoke(on_invoke("down")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(
            err.message(),
            "down for maintenance",
            "the app's own answer"
        );
    }
    let err = proxied.on_invoke(on_invoke("down")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("circuit breaker is open"), "{err:?}");
    assert_eq!(
        count("down"),
        2,
        "the open breaker kept the third from the app"
    );
}
