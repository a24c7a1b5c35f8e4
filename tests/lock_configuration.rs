//! The distributed lock and configuration APIs through the real sidecar:
//! Dapr's statuses and errors, lock expiry while held, and configuration
//! changes pushed to a real HTTP app — including a key deleted while
//! subscribed — until it unsubscribes.

mod common;

use bytes::Bytes;
use common::{TempDir, component, sidecar};
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn lock(s: &common::Sidecar, store: &str, body: &str) -> common::Resp {
    s.request(
        "POST",
        &format!("/v1.0-alpha1/lock/{store}"),
        body.as_bytes(),
    )
}

fn unlock(s: &common::Sidecar, store: &str, body: &str) -> common::Resp {
    s.request(
        "POST",
        &format!("/v1.0-alpha1/unlock/{store}"),
        body.as_bytes(),
    )
}

#[test]
fn locks_over_http() {
    let res = TempDir::new("lock-res");
    res.write("mem.yaml", &component("mem", "lock.in-memory", &[]));
    res.write(
        "red.yaml",
        &component("red", "lock.redis", &[("redisHost", "127.0.0.1:6379")]),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let resource = common::run_id();
    for store in ["mem", "red"] {
        let take = |owner: &str, secs: i64| {
            lock(
                &s,
                store,
                &format!(
                    r#"{{"resourceId":"{resource}","lockOwner":"{owner}","expiryInSeconds":{secs}}}"#
                ),
            )
        };
        let give = |owner: &str| {
            unlock(
                &s,
                store,
                &format!(r#"{{"resourceId":"{resource}","lockOwner":"{owner}"}}"#),
            )
        };
        let r = take("alice", 30);
        assert_eq!(
            (r.status, r.json()),
            (200, serde_json::json!({"success": true}))
        );
        assert_eq!(
            take("bob", 30).json(),
            serde_json::json!({"success": false})
        );
        assert_eq!(
            give("bob").json(),
            serde_json::json!({"status": 2}),
            "belongs to others"
        );
        assert_eq!(give("alice").json(), serde_json::json!({"status": 0}));
        assert_eq!(
            give("alice").json(),
            serde_json::json!({"status": 1}),
            "does not exist"
        );
        // Expiry while held: the lease ends, someone else takes it.
        assert_eq!(
            take("alice", 1).json(),
            serde_json::json!({"success": true})
        );
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(take("bob", 30).json(), serde_json::json!({"success": true}));
        assert_eq!(give("alice").json(), serde_json::json!({"status": 2}));
        assert_eq!(give("bob").json(), serde_json::json!({"status": 0}));
    }
    // Bad input.
    for (body, says) in [
        (
            r#"{"resourceId":"","lockOwner":"a","expiryInSeconds":5}"#,
            "resourceId",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"","expiryInSeconds":5}"#,
            "lockOwner",
        ),
        (
            r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":0}"#,
            "expiryInSeconds",
        ),
        ("{nope", "JSON"),
    ] {
        let r = lock(&s, "mem", body);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ERR_MALFORMED_REQUEST"),
            "{body}"
        );
        assert!(r.text().contains(says), "{}", r.text());
    }
    let r = lock(
        &s,
        "nope",
        r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":5}"#,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_LOCK_STORE_NOT_FOUND")
    );
    assert!(r.text().contains("[mem, red]"), "{}", r.text());
    let bare = sidecar().start();
    let r = lock(
        &bare,
        "mem",
        r#"{"resourceId":"r","lockOwner":"a","expiryInSeconds":5}"#,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_LOCK_STORE_NOT_CONFIGURED")
    );
}

use common::redis_cli;

/// (path, body) of every update the app received.
type Updates = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

fn wait_updates(
    u: &Updates,
    f: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let got = u.lock().unwrap().clone();
        if f(&got) {
            return got;
        }
        assert!(Instant::now() < end, "{got:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_over_http_with_updates_pushed_to_the_app() {
    let updates = Updates::default();
    let seen = updates.clone();
    let port = common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            if req.method() == hyper::Method::POST && path.starts_with("/configuration/") {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                seen.lock()
                    .unwrap()
                    .push((path, serde_json::from_slice(&body).unwrap()));
            }
            hyper::Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    let res = TempDir::new("config-res");
    res.write(
        "cfg.yaml",
        &component(
            "cfg",
            "configuration.redis",
            &[("redisHost", "127.0.0.1:6379")],
        ),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--app-port", &port.to_string()])
        .start();
    let run = common::run_id();
    let (color, size) = (format!("{run}-color"), format!("{run}-size"));
    redis_cli(&["SET", &color, "blue||1"]);
    redis_cli(&["SET", &size, "10"]);

    let r = s.get(&format!("/v1.0/configuration/cfg?key={color}&key={size}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[&color]["value"], "blue");
    assert_eq!(r.json()[&color]["version"], "1");
    assert_eq!(r.json()[&size]["value"], "10");
    let r = s.get(&format!("/v1.0-alpha1/configuration/cfg?key={run}-absent"));
    assert_eq!(r.status, 204);

    let r = s.get(&format!("/v1.0/configuration/cfg/subscribe?key={color}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    redis_cli(&["SET", &size, "11"]);
    redis_cli(&["SET", &color, "green||2"]);
    let path = format!("/configuration/cfg/{color}");
    let got = wait_updates(&updates, |u| {
        u.iter()
            .any(|(p, b)| *p == path && b["items"][&color]["value"] == "green")
    });
    let (_, body) = got.iter().find(|(p, _)| *p == path).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["items"][&color]["version"], "2");
    assert!(
        got.iter().all(|(p, _)| *p == path),
        "only the watched key: {got:?}"
    );
    // Deleted while subscribed: an update with an empty item (`{}`: daprd
    // leaves empty fields out).
    redis_cli(&["DEL", &color]);
    wait_updates(&updates, |u| {
        u.iter()
            .any(|(_, b)| b["items"][&color] == serde_json::json!({}))
    });

    let r = s.get(&format!("/v1.0/configuration/cfg/{id}/unsubscribe"));
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"ok": true})));
    let before = updates.lock().unwrap().len();
    redis_cli(&["SET", &color, "red||3"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        updates.lock().unwrap().len(),
        before,
        "no updates after unsubscribing"
    );
    let r = s.get(&format!("/v1.0/configuration/cfg/{id}/unsubscribe"));
    assert_eq!(r.status, 500);
    assert!(
        r.json().get("ok").is_none() && r.json()["message"].is_string(),
        "daprd's failed unsubscribe: {{\"message\"}} only"
    );
    let r = s.get("/v1.0/configuration/nope?key=a");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_CONFIGURATION_STORE_NOT_FOUND")
    );
    redis_cli(&["DEL", &color, &size]);
}
