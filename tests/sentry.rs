//! `tandem sentry`, the certificate service for several hosts: sidecars
//! that hold only the trust bundle (no issuer key) get their certificates
//! from it over its CSR API, talk mTLS to each other, and renew through
//! it; wrong tokens, wrong trust anchors and a foreign trust domain are
//! refused with what went wrong.

mod common;

use common::{Output, Sidecar, TempDir, sidecar};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Sentry {
    child: Child,
    log: Output,
    port: u16,
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sentry(ca: &std::path::Path, port: u16, extra: &[&str]) -> Sentry {
    let mut child = Command::new(common::BIN)
        .args(["sentry", "--listen-address", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--ca-dir", ca.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Output::capture(child.stderr.take().unwrap());
    assert!(
        log.wait_for("certificate service serving", Duration::from_secs(10)),
        "{}",
        log.text()
    );
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("certificate service serving"))
        .unwrap();
    let port = common::port_in(line, "port");
    Sentry { child, log, port }
}

/// A sidecar on "another host": its own home and an empty CA folder, so it
/// can only get a certificate from the sentry.
fn start(
    app_id: &str,
    s: &Sentry,
    anchors: &str,
    token: Option<&std::path::Path>,
    registry_home: &TempDir,
    app_port: Option<u16>,
) -> common::Builder {
    let own_ca = registry_home.path().join(format!("ca-of-{app_id}"));
    let mut b = sidecar()
        .app_id(app_id)
        // One registry so the two "hosts" find each other; CA folders apart.
        .env("TANDEM_HOME", registry_home.path().to_str().unwrap())
        .env("TANDEM_CA_DIR", own_ca.to_str().unwrap())
        .env("DAPR_TRUST_ANCHORS", anchors)
        .args([
            "--enable-mtls",
            "--sentry-address",
            &format!("127.0.0.1:{}", s.port),
        ]);
    if let Some(t) = token {
        b = b.env("DAPR_SENTRY_TOKEN_FILE", t.to_str().unwrap());
    }
    if let Some(p) = app_port {
        b = b.args(["--app-port", &p.to_string()]);
    }
    b
}

fn call_until_ok(shop: &Sidecar, path: &str) -> common::Resp {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let r = shop.request("GET", path, b"");
        if r.status == 200 || Instant::now() > end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_get_certificates_from_the_sentry_and_renew_them() {
    let home = TempDir::new("sentry-home");
    let ca = home.path().join("sentry-ca");
    let tokens = home.write("tokens", "# accepted\nsecret-one\nsecret-two\n");
    let sentry_port = common::free_port();
    let args = [
        "--token-file",
        tokens.to_str().unwrap(),
        "--workload-cert-ttl",
        "3s",
    ];
    let s = sentry(&ca, sentry_port, &args);
    let anchors = std::fs::read_to_string(ca.join("ca.crt")).unwrap();
    let good = home.write("good-token", "secret-two\n");

    let port = common::hello_caller_app().await;
    let orders = start("orders", &s, &anchors, Some(&good), &home, Some(port)).start();
    let shop = start("shop", &s, &anchors, Some(&good), &home, None).start();
    for (who, sc) in [("orders", &orders), ("shop", &shop)] {
        assert!(
            sc.stderr
                .text()
                .contains("signed by the certificate service"),
            "{who}: {}",
            sc.stderr.text()
        );
    }
    assert!(
        s.log.text().contains("spiffe://public/ns/default/orders")
            && s.log.text().contains("spiffe://public/ns/default/shop"),
        "{}",
        s.log.text()
    );
    // No CA folder was made on the sidecars' "hosts": no issuer key there.
    assert!(!home.path().join("ca-of-orders").exists());
    assert!(!home.path().join("ca-of-shop").exists());

    let r = shop.request("GET", "/v1.0/invoke/orders/method/hi", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello shop"),
        "{}",
        shop.stderr.text()
    );

    // Certificates of 3 s are renewed through the sentry; calls keep working
    // well past the life of the first ones.
    let end = Instant::now() + Duration::from_secs(7);
    while Instant::now() < end {
        let r = shop.request("GET", "/v1.0/invoke/orders/method/hi", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        shop.stderr
            .text()
            .matches("workload certificate renewed")
            .count()
            >= 2,
        "{}",
        shop.stderr.text()
    );
    // A new connection (a fresh sidecar) handshakes with the renewed ones.
    let late = start("late", &s, &anchors, Some(&good), &home, None).start();
    let r = call_until_ok(&late, "/v1.0/invoke/orders/method/hi");
    assert_eq!((r.status, r.text().as_str()), (200, "hello late"));

    // The sentry goes away: renewals fail and are retried; once it is back
    // (same address, same CA folder) they succeed again, and a sidecar
    // that handshakes afresh accepts the renewed certificate.
    drop(s);
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        orders.stderr.text().contains("not renewed; trying again"),
        "{}",
        orders.stderr.text()
    );
    let renewed = orders
        .stderr
        .text()
        .matches("workload certificate renewed")
        .count();
    let _s2 = sentry(&ca, sentry_port, &args);
    let end = Instant::now() + Duration::from_secs(10);
    while orders
        .stderr
        .text()
        .matches("workload certificate renewed")
        .count()
        == renewed
    {
        assert!(Instant::now() < end, "{}", orders.stderr.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let later = start("later", &_s2, &anchors, Some(&good), &home, None).start();
    let r = call_until_ok(&later, "/v1.0/invoke/orders/method/hi");
    assert_eq!((r.status, r.text().as_str()), (200, "hello later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_anchors_and_trust_domains_are_refused() {
    let home = TempDir::new("sentry-bad");
    let ca = home.path().join("sentry-ca");
    let tokens = home.write("tokens", "right\n");
    let s = sentry(&ca, 0, &["--token-file", tokens.to_str().unwrap()]);
    let anchors = std::fs::read_to_string(ca.join("ca.crt")).unwrap();

    // Wrong token.
    let wrong = home.write("wrong", "guess\n");
    let (status, log) = start("a", &s, &anchors, Some(&wrong), &home, None).start_failing();
    assert!(!status.success());
    assert!(
        log.contains("not accepted by this certificate service"),
        "{log}"
    );
    // No token at all.
    let (_, log) = start("a", &s, &anchors, None, &home, None).start_failing();
    assert!(log.contains("not accepted"), "{log}");

    // Trust anchors of another CA: the sentry's certificate is not trusted.
    let other = home.path().join("other-ca");
    tandem_proxy::identity::init_ca(&other).unwrap();
    let foreign = std::fs::read_to_string(other.join("ca.crt")).unwrap();
    let right = home.write("right", "right\n");
    let (_, log) = start("a", &s, &foreign, Some(&right), &home, None).start_failing();
    assert!(
        log.contains("certificate service at") && log.contains("invalid peer certificate"),
        "{log}"
    );
    // Anchors that are not PEM.
    let (_, log) = start("a", &s, "not a certificate", Some(&right), &home, None).start_failing();
    assert!(log.contains("trust anchors"), "{log}");

    // A trust domain the sentry does not issue for.
    let cfg = home.write(
        "td.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: td\nspec:\n  accessControl:\n    trustDomain: elsewhere\n",
    );
    let (_, log) = start("a", &s, &anchors, Some(&right), &home, None)
        .args(["--config", cfg.to_str().unwrap()])
        .start_failing();
    assert!(
        log.contains("issues for trust domain `public`, not `elsewhere`"),
        "{log}"
    );

    // The service itself is unharmed and signs for the right token.
    let ok = start("a", &s, &anchors, Some(&right), &home, None).start();
    assert!(
        ok.stderr
            .text()
            .contains("signed by the certificate service")
    );

    // A sentry with an empty token file would refuse everyone: it says so.
    let empty = home.write("empty", "# none\n");
    let out = Command::new(common::BIN)
        .args(["sentry", "--port", "0", "--ca-dir", ca.to_str().unwrap()])
        .args(["--token-file", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no token"));
}
