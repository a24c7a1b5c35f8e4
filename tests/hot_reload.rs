//! Hot reload through the real sidecar: files edited while it runs are
//! applied within a second without a restart — a changed component is
//! made again while an unchanged one keeps its state, components and
//! subscriptions come and go, a resiliency policy is tightened and
//! loosened, access control flips — and a broken file is refused with its
//! line while everything keeps working. The control API shows and applies
//! the same.

mod common;

use common::{TempDir, component, sidecar};
use std::time::{Duration, Instant};

/// Waits (up to 1 s past the change, the issue's bound) for `f`.
fn within_a_second(what: &str, s: &common::Sidecar, f: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{what} not seen within 1 s:\n{}",
            s.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn generation(s: &common::Sidecar) -> u64 {
    s.get("/v1.0-alpha1/tandem/status").json()["generation"]
        .as_u64()
        .unwrap()
}

fn redis_cli(db: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "-n", db])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn edited_files_apply_without_a_restart() {
    let res = TempDir::new("reload-res");
    let app = format!("reload{}", std::process::id());
    res.write("mem.yaml", &component("mem", "state.in-memory", &[]));
    res.write(
        "cache.yaml",
        &component(
            "cache",
            "state.redis",
            &[("redisHost", "127.0.0.1:6379"), ("redisDB", "0")],
        ),
    );
    let s = sidecar()
        .app_id(&app)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    assert_eq!(generation(&s), 1);
    let save = |store: &str, value: &str| {
        let r = s.request(
            "POST",
            &format!("/v1.0/state/{store}"),
            format!(r#"[{{"key":"k","value":"{value}"}}]"#).as_bytes(),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    };
    save("mem", "kept");
    save("cache", "in-db-0");

    // The Redis store moves to DB 1: made again; the in-memory store is
    // unchanged and keeps what it holds.
    res.write(
        "cache.yaml",
        &component(
            "cache",
            "state.redis",
            &[("redisHost", "127.0.0.1:6379"), ("redisDB", "1")],
        ),
    );
    let took = within_a_second("the DB change", &s, || generation(&s) == 2);
    eprintln!("DB change applied in {took:?}");
    assert_eq!(s.get("/v1.0/state/cache/k").status, 204, "DB 1 has no k");
    save("cache", "in-db-1");
    assert_eq!(
        redis_cli("1", &["HGET", &format!("{app}||k"), "data"]),
        "\"in-db-1\""
    );
    assert_eq!(
        redis_cli("0", &["HGET", &format!("{app}||k"), "data"]),
        "\"in-db-0\""
    );
    assert_eq!(
        s.get("/v1.0/state/mem/k").text(),
        "\"kept\"",
        "unchanged store kept"
    );
    let last = &s.get("/v1.0-alpha1/tandem/status").json()["lastReload"];
    assert_eq!(
        last["changed"],
        serde_json::json!(["component/cache"]),
        "{last}"
    );

    // A new component appears in the metadata API; a removed one goes.
    res.write("extra.yaml", &component("extra", "state.in-memory", &[]));
    within_a_second("the new component", &s, || {
        s.get("/v1.0/metadata").text().contains("\"extra\"")
    });
    std::fs::remove_file(res.path().join("extra.yaml")).unwrap();
    within_a_second("the removed component", &s, || {
        !s.get("/v1.0/metadata").text().contains("\"extra\"")
    });
    assert_eq!(s.get("/v1.0/state/extra/k").status, 400);

    // A broken file is refused with its line; nothing changes.
    let before = generation(&s);
    res.write(
        "broken.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: broken\nspec:\n  type: state.in-memory\n  metadata: [unclosed\n",
    );
    within_a_second("the refusal", &s, || {
        s.get("/v1.0-alpha1/tandem/status").json()["lastReload"]["ok"] == false
    });
    let last = s.get("/v1.0-alpha1/tandem/status").json()["lastReload"].clone();
    let error = last["error"].as_str().unwrap();
    assert!(error.contains("broken.yaml:"), "{error}");
    assert_eq!(generation(&s), before);
    assert_eq!(s.get("/v1.0/state/mem/k").text(), "\"kept\"");
    assert!(
        s.metrics_text().contains(&format!(
            "tandem_reload_total{{app_id=\"{app}\",result=\"refused\"}} 1"
        )),
        "{}",
        s.metrics_text()
    );
    // An unknown type is refused too, naming the file.
    res.write("broken.yaml", &component("broken", "state.nosuch", &[]));
    within_a_second("the second refusal", &s, || {
        s.get("/v1.0-alpha1/tandem/status").json()["lastReload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("state.nosuch"))
    });
    std::fs::remove_file(res.path().join("broken.yaml")).unwrap();
    within_a_second("recovery", &s, || {
        s.get("/v1.0-alpha1/tandem/status").json()["lastReload"]["ok"] == true
    });
    redis_cli("1", &["DEL", &format!("{app}||k")]);
    redis_cli("0", &["DEL", &format!("{app}||k")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_access_control_follow_their_files() {
    // A target that fails twice, then answers, over and over.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let port = common::serve_http(move |_req: hyper::Request<hyper::body::Incoming>| {
        let n = h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            hyper::Response::builder()
                .status(if n % 3 == 2 { 200 } else { 503 })
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                .unwrap()
        }
    })
    .await;
    let res = TempDir::new("reload-policy");
    res.write(
        "web.yaml",
        &component(
            "web",
            "bindings.http",
            &[("url", &format!("http://127.0.0.1:{port}"))],
        ),
    );
    let cfg = TempDir::new("reload-config");
    let config = |default: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  accessControl:\n    defaultAction: {default}\n"
        )
    };
    let config_file = cfg.write("config.yaml", &config("allow"));
    let home = TempDir::new("reload-home");
    let h = home.path().to_str().unwrap();
    let orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &common::hello_caller_app().await.to_string()])
        .args(["--config", config_file.to_str().unwrap()])
        .start();
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let call = || {
        shop.request("POST", "/v1.0/bindings/web", br#"{"operation":"get"}"#)
            .status
    };

    // No policy: the first 503 is the answer.
    hits.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(), 500);
    // A retry policy appears: the same call now rides out two 503s.
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      thrice:\n        policy: constant\n        duration: 5ms\n        maxRetries: 3\n  targets:\n    components:\n      web:\n        outbound:\n          retry: thrice\n",
    );
    within_a_second("the retry policy", &shop, || generation(&shop) == 2);
    hits.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(), 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Loosened again: removed.
    std::fs::remove_file(res.path().join("resiliency.yaml")).unwrap();
    within_a_second("no retry policy", &shop, || generation(&shop) == 3);
    hits.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(), 500);

    // Access control on the callee flips with its --config file.
    let invoke = || shop.get("/v1.0/invoke/orders/method/hi").status;
    assert_eq!(invoke(), 200);
    std::fs::write(&config_file, config("deny")).unwrap();
    within_a_second("deny", &orders, || invoke() == 403);
    std::fs::write(&config_file, config("allow")).unwrap();
    within_a_second("allow again", &orders, || invoke() == 200);
    let last = &orders.get("/v1.0-alpha1/tandem/status").json()["lastReload"];
    assert_eq!(
        last["changed"],
        serde_json::json!(["configuration/accessControl"])
    );
}

#[test]
fn the_control_api_applies_documents_and_refuses_broken_ones() {
    let res = TempDir::new("reload-api");
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let doc = component("fresh", "state.in-memory", &[]);
    let r = s.request("PUT", "/v1.0-alpha1/tandem/resources/fresh", doc.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["changed"],
        serde_json::json!(["component/fresh (added)"])
    );
    assert_eq!(
        std::fs::read_to_string(res.path().join("fresh.yaml")).unwrap(),
        doc,
        "written through to the resources dir"
    );
    let r = s.request("POST", "/v1.0/state/fresh", br#"[{"key":"a","value":1}]"#);
    assert_eq!(r.status, 204);

    // Broken YAML: 400 with its line, not written.
    let r = s.request(
        "PUT",
        "/v1.0-alpha1/tandem/resources/bad",
        b"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: bad\nspec: [\n",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("bad.yaml:"), "{}", r.text());
    assert!(!res.path().join("bad.yaml").exists());
    // A document that loads but whose component fails: refused and put back.
    let r = s.request(
        "PUT",
        "/v1.0-alpha1/tandem/resources/fresh",
        component("fresh", "state.redis", &[("redisHost", "127.0.0.1:1")]).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("127.0.0.1:1"), "{}", r.text());
    assert_eq!(
        std::fs::read_to_string(res.path().join("fresh.yaml")).unwrap(),
        doc
    );
    assert_eq!(
        s.get("/v1.0/state/fresh/a").text(),
        "1",
        "still the old store"
    );
    let r = s.request(
        "PUT",
        "/v1.0-alpha1/tandem/resources/..%2Fescape",
        doc.as_bytes(),
    );
    assert_eq!(r.status, 400);

    // DELETE removes the file and the component.
    let r = s.request("DELETE", "/v1.0-alpha1/tandem/resources/fresh", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!res.path().join("fresh.yaml").exists());
    let r = s.get("/v1.0/state/fresh/a");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_STATE_STORE_NOT_CONFIGURED"),
        "no state store left"
    );
    assert_eq!(
        s.request("DELETE", "/v1.0-alpha1/tandem/resources/fresh", b"")
            .status,
        404
    );
    let st = s.get("/v1.0-alpha1/tandem/status").json();
    assert_eq!(st["generation"], 3);
    assert_eq!(st["hotReload"], true);
}

#[test]
fn hot_reload_off_waits_for_an_explicit_reload() {
    let res = TempDir::new("reload-off");
    let cfg = TempDir::new("reload-off-cfg");
    let config = cfg.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  features:\n  - name: HotReload\n    enabled: false\n",
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .start();
    res.write("later.yaml", &component("later", "state.in-memory", &[]));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(generation(&s), 1, "not watched");
    let r = s.request("POST", "/v1.0-alpha1/tandem/reload", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["changed"],
        serde_json::json!(["component/later (added)"])
    );
    assert_eq!(generation(&s), 2);
}

#[test]
fn tandem_apply_and_status_talk_to_a_running_sidecar() {
    let res = TempDir::new("reload-cli");
    let docs = TempDir::new("reload-cli-docs");
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let port = s.http.to_string();
    let tandem = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .args(["--dapr-http-port", &port])
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let good = docs.write(
        "orders-store.yaml",
        &component("orders", "state.in-memory", &[]),
    );
    let (code, out) = tandem(&["apply", "-f", good.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("applied orders-store: generation 2"), "{out}");
    assert!(res.path().join("orders-store.yaml").exists());
    let (code, out) = tandem(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("generation 2") && out.contains("orders") && out.contains("state.in-memory"),
        "{out}"
    );
    assert!(out.contains("orders-store.yaml:"), "{out}");

    let bad = docs.write(
        "bad.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [\n",
    );
    let (code, out) = tandem(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("bad not applied (400)") && out.contains("bad.yaml:"),
        "{out}"
    );
    let (code, out) = tandem(&["apply", "--delete", "-f", good.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("deleted orders-store: generation 3"), "{out}");
    let (_, out) = tandem(&["status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["generation"], 3);
    assert_eq!(
        v["lastReload"]["changed"],
        serde_json::json!(["component/orders (removed)"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_resolution_follows_the_configuration() {
    let home = TempDir::new("reload-nr-home");
    let h = home.path().to_str().unwrap();
    let internal = common::free_port();
    let _orders = sidecar()
        .app_id("orders")
        .env("TANDEM_HOME", h)
        .args(["--app-port", &common::hello_caller_app().await.to_string()])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .start();
    let cfg = TempDir::new("reload-nr-cfg");
    let config = |port: u16| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: static\n    configuration:\n      apps:\n        orders: [\"127.0.0.1:{port}\"]\n"
        )
    };
    // Pointed at a port where nothing listens.
    let file = cfg.write("config.yaml", &config(1));
    let shop = sidecar()
        .app_id("shop")
        .env("TANDEM_HOME", h)
        .args(["--config", file.to_str().unwrap()])
        .start();
    let r = shop.get("/v1.0/invoke/orders/method/hi");
    assert_eq!(r.status, 500, "{}", r.text());
    std::fs::write(&file, config(internal)).unwrap();
    within_a_second("the new address", &shop, || {
        shop.get("/v1.0/invoke/orders/method/hi").status == 200
    });
    let last = &shop.get("/v1.0-alpha1/tandem/status").json()["lastReload"];
    assert_eq!(
        last["changed"],
        serde_json::json!(["configuration/nameResolution"])
    );
}

/// The names of the components the metadata API lists.
fn component_names(s: &common::Sidecar) -> Vec<String> {
    let mut names: Vec<String> = s.get("/v1.0/metadata").json()["components"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Kubernetes mounts a ConfigMap as a folder of symlinks into `..data`,
/// itself a symlink to a timestamped folder, and updates it by making a
/// new timestamped folder and renaming a new `..data` over the old one;
/// no file the sidecar reads is written in place. Then the whole folder
/// is removed and made again. Each is applied within a second (inotify
/// on the folder and on its parent, not the 5 s look).
#[test]
fn a_configmap_swap_and_a_folder_made_again_reload_within_a_second() {
    use std::os::unix::fs::symlink;
    let root = TempDir::new("reload-cm");
    let res = root.path().join("res");
    let stamp = |n: u32, files: &[(&str, &str)]| {
        let d = res.join(format!("..2026_12_02_{n}"));
        std::fs::create_dir_all(&d).unwrap();
        for (file, name) in files {
            std::fs::write(d.join(file), component(name, "state.in-memory", &[])).unwrap();
        }
        d
    };
    let first = stamp(1, &[("one.yaml", "one")]);
    symlink(first.file_name().unwrap(), res.join("..data")).unwrap();
    symlink("..data/one.yaml", res.join("one.yaml")).unwrap();
    let s = sidecar()
        .args(["--resources-path", res.to_str().unwrap()])
        .start();
    assert_eq!(component_names(&s), ["one"]);

    // kubelet's atomic update: new folder, `..data_tmp` renamed over
    // `..data`, the visible links follow, the old folder goes.
    let second = stamp(2, &[("two.yaml", "two")]);
    symlink(second.file_name().unwrap(), res.join("..data_tmp")).unwrap();
    std::fs::rename(res.join("..data_tmp"), res.join("..data")).unwrap();
    symlink("..data/two.yaml", res.join("two.yaml")).unwrap();
    std::fs::remove_file(res.join("one.yaml")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    within_a_second("the ConfigMap swap", &s, || component_names(&s) == ["two"]);

    // The folder removed and made again: the parent's watch sees it come
    // back, and the new folder is watched from then on.
    std::fs::remove_dir_all(&res).unwrap();
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(
        res.join("three.yaml"),
        component("three", "state.in-memory", &[]),
    )
    .unwrap();
    within_a_second("the folder made again", &s, || {
        component_names(&s) == ["three"]
    });
    std::fs::write(
        res.join("four.yaml"),
        component("four", "state.in-memory", &[]),
    )
    .unwrap();
    within_a_second("a file in the new folder", &s, || {
        component_names(&s) == ["four", "three"]
    });
    assert!(
        s.wait_healthz(204, Duration::from_secs(1)),
        "{}",
        s.stderr.text()
    );
}

/// Dapr's own layout keeps the config file beside the components folder
/// (`~/.dapr/config.yaml`, `~/.dapr/components`): the folder holding both
/// is watched for two names, and a change to either applies within a
/// second.
#[test]
fn a_config_file_beside_the_resources_folder_is_watched_too() {
    let home = TempDir::new("reload-beside");
    home.write(
        "components/mem.yaml",
        &component("mem", "state.in-memory", &[]),
    );
    let config = |rate: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    samplingRate: \"{rate}\"\n"
        )
    };
    let file = home.write("config.yaml", &config("0"));
    let s = sidecar()
        .args([
            "--resources-path",
            home.path().join("components").to_str().unwrap(),
        ])
        .args(["--config", file.to_str().unwrap()])
        .start();
    assert_eq!(generation(&s), 1);
    std::fs::write(&file, config("1")).unwrap();
    within_a_second("the config file's change", &s, || generation(&s) == 2);
    home.write(
        "components/two.yaml",
        &component("two", "state.in-memory", &[]),
    );
    within_a_second("a new component", &s, || {
        component_names(&s) == ["mem", "two"]
    });
}
