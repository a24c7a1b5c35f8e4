//! mTLS between sidecars: the internal leg is TLS 1.3 with certificates
//! from the local CA; a sidecar without mTLS or with a certificate from
//! another CA is refused; the callee learns the caller from its certificate.

mod common;

use common::{Sidecar, TempDir, sidecar};
use std::io::{Read, Write};
use std::time::Duration;

fn start(
    app_id: &str,
    home: &TempDir,
    ca: &std::path::Path,
    mtls: bool,
    app_port: Option<u16>,
) -> Sidecar {
    let mut b = sidecar()
        .app_id(app_id)
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .env("TANDEM_CA_DIR", ca.to_str().unwrap());
    if mtls {
        b = b.arg("--enable-mtls");
    }
    if let Some(p) = app_port {
        b = b.args(["--app-port", &p.to_string()]);
    }
    let s = b.start();
    assert!(
        s.wait_healthz(204, Duration::from_secs(10)),
        "{}",
        s.stderr.text()
    );
    s
}

/// The internal address `app_id` registered.
fn internal_port(home: &TempDir, app_id: &str) -> u16 {
    let dir = home.path().join("registry").join(app_id);
    let entry = std::fs::read_dir(dir).unwrap().flatten().next().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    v["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_talk_over_mtls_and_refuse_strangers() {
    let home = TempDir::new("mtls-home");
    let ca = home.path().join("ca");
    let out = std::process::Command::new(common::BIN)
        .args(["ca", "init", "--dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"));
    assert!(ca.join("ca.crt").exists());

    let port = common::hello_caller_app().await;
    let orders = start("orders", &home, &ca, true, Some(port));
    let shop = start("shop", &home, &ca, true, None);
    assert!(
        orders
            .stderr
            .text()
            .contains("spiffe://public/ns/default/orders")
    );

    let r = shop.request("GET", "/v1.0/invoke/orders/method/hi", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello shop"),
        "{}",
        shop.stderr.text()
    );

    // The internal port speaks TLS only: a plaintext HTTP/2 client gets no
    // HTTP answer, only a TLS alert or a closed connection.
    let mut raw =
        std::net::TcpStream::connect(("127.0.0.1", internal_port(&home, "orders"))).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "not TLS: {:?}", &buf[..n]);

    // A sidecar without mTLS cannot get in.
    let plain = start("plain", &home, &ca, false, None);
    let r = plain.request("GET", "/v1.0/invoke/orders/method/hi", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");

    // Nor one whose certificate comes from another CA.
    let other_ca = home.path().join("other-ca");
    let stranger = start("stranger", &home, &other_ca, true, None);
    let r = stranger.request("GET", "/v1.0/invoke/orders/method/hi", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("mTLS handshake"), "{}", r.text());

    // And the legitimate caller still gets through.
    let r = shop.request("GET", "/v1.0/invoke/orders/method/again", b"");
    assert_eq!(r.status, 200);

    // Handshakes are counted on both sides, refused ones apart.
    let value = |text: &str, parts: &[&str]| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("tandem_mtls_handshakes_total{"))
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let served = orders.metrics_text();
    assert!(
        value(&served, &["side=\"server\"", "result=\"ok\""]) >= 1,
        "{served}"
    );
    assert!(
        value(&served, &["side=\"server\"", "result=\"failed\""]) >= 1,
        "{served}"
    );
    let sent = shop.metrics_text();
    assert!(
        value(&sent, &["side=\"client\"", "result=\"ok\""]) >= 1,
        "{sent}"
    );
    let refused = stranger.metrics_text();
    assert!(
        value(&refused, &["side=\"client\"", "result=\"failed\""]) >= 1,
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_is_decided_by_the_callers_certificate() {
    let home = TempDir::new("acl-home");
    let ca = home.path().join("ca");
    let config = home.write(
        "acl.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: shop\n      defaultAction: deny\n      trustDomain: public\n      namespace: default\n      operations:\n      - name: /allowed/*\n        httpVerb: [\"GET\"]\n        action: allow\n",
    );
    let port = common::hello_caller_app().await;
    let orders = {
        let s = sidecar()
            .app_id("orders")
            .env("TANDEM_HOME", home.path().to_str().unwrap())
            .env("TANDEM_CA_DIR", ca.to_str().unwrap())
            .args([
                "--enable-mtls",
                "--app-port",
                &port.to_string(),
                "--config",
                config.to_str().unwrap(),
            ])
            .start();
        assert!(
            s.wait_healthz(204, Duration::from_secs(10)),
            "{}",
            s.stderr.text()
        );
        s
    };
    let shop = start("shop", &home, &ca, true, None);
    let billing = start("billing", &home, &ca, true, None);

    let r = shop.request("GET", "/v1.0/invoke/orders/method/allowed/1", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "hello shop"));
    let r = shop.request("POST", "/v1.0/invoke/orders/method/allowed/1", b"");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("access control policy has denied access to app id: shop"),
        "{}",
        r.text()
    );
    let r = shop.request("GET", "/v1.0/invoke/orders/method/secret", b"");
    assert_eq!(r.status, 403, "the policy's default");
    let r = billing.request("GET", "/v1.0/invoke/orders/method/allowed/1", b"");
    assert_eq!(r.status, 403, "no policy: the global default");
    assert!(
        orders.stderr.wait_for(
            "access control policy has denied access to app id: billing",
            Duration::from_secs(5)
        ),
        "denials are logged with the caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_they_expire() {
    let home = TempDir::new("mtls-rotate");
    let ca = home.path().join("ca");
    let port = common::hello_caller_app().await;
    let with_short_certs = |app_id: &str, app_port: Option<u16>| {
        let mut b = sidecar()
            .app_id(app_id)
            .env("TANDEM_HOME", home.path().to_str().unwrap())
            .env("TANDEM_CA_DIR", ca.to_str().unwrap())
            .env("TANDEM_WORKLOAD_CERT_TTL", "3s")
            .arg("--enable-mtls");
        if let Some(p) = app_port {
            b = b.args(["--app-port", &p.to_string()]);
        }
        b.start()
    };
    let orders = with_short_certs("orders", Some(port));
    let shop = with_short_certs("shop", None);
    assert_eq!(
        shop.request("GET", "/v1.0/invoke/orders/method/a", b"")
            .status,
        200
    );
    // Every first certificate has expired by now.
    std::thread::sleep(Duration::from_millis(4500));
    assert!(
        orders
            .stderr
            .text()
            .contains("workload certificate renewed"),
        "{}",
        orders.stderr.text()
    );
    let r = shop.request("GET", "/v1.0/invoke/orders/method/b", b"");
    assert_eq!(
        r.status,
        200,
        "the open connection carries on: {}",
        r.text()
    );
    // A new connection sees orders' current certificate, which is valid.
    let late = with_short_certs("late", None);
    let r = late.request("GET", "/v1.0/invoke/orders/method/c", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello late"),
        "{}",
        late.stderr.text()
    );
}

/// A CA rotation without restarts: the CA folder gets a bundle of the old
/// and the new root and the new issuer; running sidecars reload the bundle
/// and renew their certificates from it within a couple of seconds, so a
/// sidecar that knows only the new CA can call them, and once the old
/// root leaves the bundle a sidecar that knows only the old one cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_needs_no_restart() {
    let home = TempDir::new("mtls-rotate");
    let (ca, new_ca, old_copy) = (
        home.path().join("ca"),
        home.path().join("new-ca"),
        home.path().join("old-ca"),
    );
    for dir in [&ca, &new_ca] {
        let out = std::process::Command::new(common::BIN)
            .args(["ca", "init", "--dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    std::fs::create_dir_all(&old_copy).unwrap();
    for f in ["ca.crt", "ca.key", "issuer.crt", "issuer.key"] {
        std::fs::copy(ca.join(f), old_copy.join(f)).unwrap();
    }
    let port = common::hello_caller_app().await;
    let orders = start("orders", &home, &ca, true, Some(port));
    let shop = start("shop", &home, &ca, true, None);
    assert_eq!(shop.get("/v1.0/invoke/orders/method/hi").status, 200);

    // Step 1: both roots trusted, the new issuer signs.
    let (old_root, new_root) = (
        std::fs::read_to_string(ca.join("ca.crt")).unwrap(),
        std::fs::read_to_string(new_ca.join("ca.crt")).unwrap(),
    );
    std::fs::write(ca.join("ca.crt"), format!("{old_root}{new_root}")).unwrap();
    for f in ["issuer.crt", "issuer.key"] {
        std::fs::copy(new_ca.join(f), ca.join(f)).unwrap();
    }
    let reloaded = |s: &common::Sidecar| s.stderr.text().contains("trust bundle reloaded");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !(reloaded(&orders) && reloaded(&shop)) {
        assert!(
            std::time::Instant::now() < end,
            "no reload:\n{}",
            orders.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A sidecar of the new CA only: it trusts orders' renewed certificate,
    // and orders trusts its.
    let fresh = start("fresh", &home, &new_ca, true, None);
    let r = fresh.get("/v1.0/invoke/orders/method/hi");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello fresh"),
        "{}",
        r.text()
    );
    assert_eq!(shop.get("/v1.0/invoke/orders/method/hi").status, 200);

    // Step 2: the old root leaves the bundle.
    std::fs::write(ca.join("ca.crt"), &new_root).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while orders
        .stderr
        .text()
        .matches("trust bundle reloaded")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < end, "no second reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stale = start("stale", &home, &old_copy, true, None);
    let r = stale.get("/v1.0/invoke/orders/method/hi");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("mTLS handshake"), "{}", r.text());
    assert_eq!(fresh.get("/v1.0/invoke/orders/method/again").status, 200);
}
