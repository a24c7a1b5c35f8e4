//! Invocation of services outside the mesh over HTTPS: an `HTTPEndpoint`
//! whose `clientTLS.rootCA` and headers come from a secret store reaches a
//! real TLS server (the test's own, certificate from its own CA); without
//! that root the server is not trusted; a missing secret is named.

mod common;

use bytes::Bytes;
use common::{TempDir, sidecar};
use http_body_util::Full;

/// An HTTPS server (HTTP/2 by ALPN) for `localhost` whose certificate
/// chains to the CA in `ca`; answers with the path and `x-secret` it got.
async fn https_server(ca: &std::path::Path) -> u16 {
    tandem_proxy::identity::init_ca(ca).unwrap();
    let tls = tandem_proxy::identity::service_server_config(ca, "localhost").unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let secret = req
                            .headers()
                            .get("x-secret")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(format!("{} secret={secret}", req.uri().path())),
                        )))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    port
}

fn endpoint(name: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: {name}\nspec:\n  baseUrl: https://localhost:{port}\n{extra}auth:\n  secretStore: vault\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_with_secrets_and_their_own_root() {
    let dir = TempDir::new("https-out");
    let ca = dir.path().join("ca");
    let port = https_server(&ca).await;
    let ca_pem = std::fs::read_to_string(ca.join("ca.crt")).unwrap();
    let secrets = dir.write(
        "secrets.json",
        &serde_json::json!({"api-key": "s3cret", "ca": ca_pem}).to_string(),
    );
    let res = dir.path().join("res");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(
        res.join("vault.yaml"),
        common::component(
            "vault",
            "secretstores.local.file",
            &[("secretsFile", secrets.to_str().unwrap())],
        ),
    )
    .unwrap();
    let trusted = "  headers:\n  - name: x-secret\n    secretKeyRef:\n      name: api-key\n      key: api-key\n  clientTLS:\n    rootCA:\n      secretKeyRef:\n        name: ca\n        key: ca\n";
    let inline = format!(
        "  clientTLS:\n    rootCA:\n      value: |\n{}",
        ca_pem
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    );
    let missing = "  headers:\n  - name: x-secret\n    secretKeyRef:\n      name: no-such-secret\n";
    let docs = [
        endpoint("payments", port, trusted),
        endpoint("inline", port, &inline),
        endpoint("untrusted", port, ""),
        endpoint("broken", port, missing),
    ];
    std::fs::write(res.join("endpoints.yaml"), docs.join("---\n")).unwrap();

    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", dir.path().to_str().unwrap())
        .args(["--resources-path", res.to_str().unwrap()])
        .start();

    let r = shop.request("GET", "/v1.0/invoke/payments/method/charge", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "/charge secret=s3cret",
        "header from the secret store"
    );
    let r = shop.request("POST", "/v1.0/invoke/inline/method/refund", b"{}");
    assert_eq!((r.status, r.text().as_str()), (200, "/refund secret="));

    // Without the root the server's certificate is not trusted.
    let r = shop.request("GET", "/v1.0/invoke/untrusted/method/x", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert!(
        r.text().to_lowercase().contains("certificate"),
        "{}",
        r.text()
    );
    // The same for a full URL as the target.
    let r = shop
        .try_request(
            "GET",
            "/x",
            &[("dapr-app-id", &format!("https://localhost:{port}"))],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 500, "{}", r.text());

    // A secret that is not there is named, and nothing is sent.
    let r = shop.request("GET", "/v1.0/invoke/broken/method/x", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("no-such-secret"), "{}", r.text());
}
