//! Access control cannot be walked around with encoded paths. The callee
//! lets app `shop` call only `GET /public/**`; encodings that would reach
//! `/admin` are refused with 400 at the caller's door, before any policy or
//! app sees them, or made canonical and then judged; the app receives
//! exactly the path that was checked. Through the explicit route and the
//! `dapr-app-id` header, with and without mTLS.

mod common;

use common::{Sidecar, TempDir, sidecar};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ACL: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: shop\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /public/**\n        httpVerb: [\"GET\"]\n        action: allow\n";

/// An app that answers with the path it received, and remembers it.
async fn path_app(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let p = req.uri().path().to_string();
            seen.lock().unwrap().push(p.clone());
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(p)))
        }
    })
    .await
}

fn start(app_id: &str, home: &TempDir, mtls: bool, extra: &[&str]) -> Sidecar {
    let mut b = sidecar()
        .app_id(app_id)
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .env("TANDEM_CA_DIR", home.path().join("ca").to_str().unwrap())
        .args(extra);
    if mtls {
        b = b.arg("--enable-mtls");
    }
    let s = b.start();
    assert!(
        s.wait_healthz(204, Duration::from_secs(10)),
        "{}",
        s.stderr.text()
    );
    s
}

async fn encoded_paths_cannot_reach_admin(mtls: bool) {
    let home = TempDir::new("paths");
    let config = home.write("acl.yaml", ACL);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = path_app(seen.clone()).await;
    let _callee = start(
        "callee",
        &home,
        mtls,
        &[
            "--app-port",
            &port.to_string(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let shop = start("shop", &home, mtls, &[]);

    // (method path as sent, expected status, path the app gets)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("public/a", 200, Some("/public/a")),
        ("public/%61", 200, Some("/public/a")),
        ("public//a", 200, Some("/public/a")),
        ("public/./a", 200, Some("/public/a")),
        ("public/../admin", 403, None),
        ("public/%2e%2e/admin", 400, None),
        ("public/%2E%2E/admin", 400, None),
        ("public/.%2e/admin", 400, None),
        ("public/..%2fadmin", 400, None),
        ("public%2f..%2fadmin", 400, None),
        ("public/%252e%252e/admin", 400, None),
        ("public/..;/admin", 400, None),
        ("public/..%5cadmin", 400, None),
        ("admin", 403, None),
    ];
    for (path, status, got) in cases {
        for via_header in [false, true] {
            seen.lock().unwrap().clear();
            let r = if via_header {
                shop.try_request(
                    "GET",
                    &format!("/{path}"),
                    &[("dapr-app-id", "callee")],
                    b"",
                )
                .unwrap()
            } else {
                shop.request("GET", &format!("/v1.0/invoke/callee/method/{path}"), b"")
            };
            assert_eq!(
                r.status,
                *status,
                "{path} (header: {via_header}): {}",
                r.text()
            );
            let seen = seen.lock().unwrap().clone();
            match got {
                Some(p) => assert_eq!(
                    seen,
                    [p.to_string()],
                    "{path}: the app gets the checked path"
                ),
                None => assert!(seen.is_empty(), "{path}: the app saw {seen:?}"),
            }
            if *status == 400 {
                assert!(
                    r.text()
                        .contains("refused before any policy or app sees it"),
                    "{}",
                    r.text()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_paths_cannot_reach_admin_with_mtls() {
    encoded_paths_cannot_reach_admin(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_paths_cannot_reach_admin_without_mtls() {
    encoded_paths_cannot_reach_admin(false).await;
}
