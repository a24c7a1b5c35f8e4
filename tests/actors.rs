//! Actors through real sidecars to an actor host that checks what the
//! runtime promises: one call at a time per actor id across every host,
//! no acknowledged state write lost while hosts join and are SIGKILLed,
//! reminders that outlive their host, and clear errors for bad input.

mod common;

use bytes::Bytes;
use common::{Sidecar, TempDir, sidecar};
use http_body_util::{BodyExt, Full};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_stateful::etcd_cluster::Cluster;

/// The actor host: records every call's enter and exit per actor id.
#[derive(Default)]
struct Checker {
    inside: Mutex<HashSet<String>>,
    overlaps: Mutex<Vec<String>>,
    /// Sidecars the app may use for its own calls (state, reentrant calls).
    sidecars: Mutex<Vec<u16>>,
    reminded: Mutex<Vec<(String, String)>>,
    deactivated: AtomicUsize,
    /// Calls of the `flaky` and `broken` methods, per actor id.
    tries: Mutex<HashMap<String, u32>>,
}

/// A call's mark in `Checker::inside`, taken off when dropped.
struct Inside {
    c: Arc<Checker>,
    id: String,
}

impl Inside {
    fn enter(c: &Arc<Checker>, id: &str) -> Self {
        if !c.inside.lock().unwrap().insert(id.to_string()) {
            c.overlaps.lock().unwrap().push(id.to_string());
        }
        Self {
            c: c.clone(),
            id: id.to_string(),
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.c.inside.lock().unwrap().remove(&self.id);
    }
}

const CONFIG: &str = r#"{"entities":["Checker"],"actorIdleTimeout":"1h","actorScanInterval":"30s",
  "drainOngoingCallTimeout":"5s","drainRebalancedActors":true,
  "reentrancy":{"enabled":true,"maxStackDepth":3}}"#;

/// A call from the app to one of its sidecars (blocking; off the
/// runtime's threads).
async fn to_sidecar(
    c: &Checker,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Option<common::Resp> {
    let ports = c.sidecars.lock().unwrap().clone();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ports
            .iter()
            .find_map(|p| common::http(*p, method, &path, &h, &body).ok())
    })
    .await
    .unwrap()
}

async fn checker_app(c: Arc<Checker>) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let c = c.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_string();
            let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let reply = |status: u16, body: Vec<u8>| {
                hyper::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap()
            };
            match (parts.method.as_str(), segs.as_slice()) {
                ("GET", ["dapr", "config"]) => reply(200, CONFIG.into()),
                ("GET", ["healthz"]) => reply(200, vec![]),
                ("DELETE", ["actors", "Checker", _]) => {
                    c.deactivated.fetch_add(1, Ordering::SeqCst);
                    reply(200, vec![])
                }
                ("PUT", ["actors", "Checker", id, "method", "remind", name]) => {
                    c.reminded
                        .lock()
                        .unwrap()
                        .push((id.to_string(), name.to_string()));
                    reply(200, vec![])
                }
                // An app that never answers (past the actor call timeout,
                // whatever it does after is its own business).
                ("PUT", ["actors", "Checker", _, "method", "hang"]) => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    reply(200, vec![])
                }
                ("PUT", ["actors", "Checker", id, "method", m]) => {
                    let id = id.to_string();
                    // Marked inside until this call ends — or until its
                    // future is dropped (hyper drops it when the sidecar
                    // that sent it dies: the call is not running then).
                    let _inside = Inside::enter(&c, &id);
                    match *m {
                        "work" => work(&c, &id).await,
                        "dive" => dive(&c, &id, &parts.headers, &body).await,
                        "echo" => {
                            let mut r = reply(200, body.to_vec());
                            if &body[..] == b"fail" {
                                r.headers_mut()
                                    .insert("X-DaprErrorResponseHeader", "yes".parse().unwrap());
                            }
                            r
                        }
                        "query" => reply(200, parts.uri.query().unwrap_or("").as_bytes().to_vec()),
                        // Fails its first two calls per id, then answers.
                        "flaky" | "broken" => {
                            let n = {
                                let mut t = c.tries.lock().unwrap();
                                let n = t.entry(id.clone()).or_default();
                                *n += 1;
                                *n
                            };
                            if *m == "broken" || n <= 2 {
                                reply(500, format!("try {n} failed").into_bytes())
                            } else {
                                reply(200, format!("try {n}").into_bytes())
                            }
                        }
                        "slow" => {
                            tokio::time::sleep(Duration::from_millis(1200)).await;
                            reply(200, b"late".to_vec())
                        }
                        _ => {
                            *c.tries.lock().unwrap().entry(id.clone()).or_default() += 1;
                            reply(404, b"no such method".to_vec())
                        }
                    }
                }
                _ => reply(404, vec![]),
            }
        }
    })
    .await
}

/// Reads the actor's `n`, waits a little, writes `n + 1`; answers it.
async fn work(c: &Checker, id: &str) -> hyper::Response<Full<Bytes>> {
    let fail = |why: String| {
        hyper::Response::builder()
            .status(500)
            .body(Full::new(Bytes::from(why)))
            .unwrap()
    };
    let Some(r) = to_sidecar(
        c,
        "GET",
        format!("/v1.0/actors/Checker/{id}/state/n"),
        vec![],
        vec![],
    )
    .await
    else {
        return fail("no sidecar".into());
    };
    let n: u64 = match r.status {
        204 => 0,
        200 => r.text().trim().parse().unwrap_or(0),
        s => return fail(format!("state read {s}: {}", r.text())),
    };
    tokio::time::sleep(Duration::from_millis(2)).await;
    let ops = format!(
        r#"[{{"operation":"upsert","request":{{"key":"n","value":{}}}}}]"#,
        n + 1
    );
    match to_sidecar(
        c,
        "POST",
        format!("/v1.0/actors/Checker/{id}/state"),
        vec![("content-type".into(), "application/json".into())],
        ops.into_bytes(),
    )
    .await
    {
        Some(r) if r.status == 204 => hyper::Response::builder()
            .status(200)
            .body(Full::new(Bytes::from((n + 1).to_string())))
            .unwrap(),
        Some(r) => fail(format!("state write {}: {}", r.status, r.text())),
        None => fail("no sidecar".into()),
    }
}

/// Calls itself `k` levels deep in the same reentrant chain.
async fn dive(
    c: &Checker,
    id: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> hyper::Response<Full<Bytes>> {
    let k: u32 = std::str::from_utf8(body).unwrap().trim().parse().unwrap();
    if k == 0 {
        return hyper::Response::new(Full::new(Bytes::from_static(b"bottom")));
    }
    let chain = headers
        .get("dapr-reentrancy-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // The app's own nested call leaves the checker's "inside" mark: the
    // chain re-enters on purpose.
    c.inside.lock().unwrap().remove(id);
    let r = to_sidecar(
        c,
        "PUT",
        format!("/v1.0/actors/Checker/{id}/method/dive"),
        vec![("dapr-reentrancy-id".into(), chain)],
        (k - 1).to_string().into_bytes(),
    )
    .await
    .unwrap();
    c.inside.lock().unwrap().insert(id.to_string());
    hyper::Response::builder()
        .status(r.status)
        .body(Full::new(Bytes::from(r.body.clone())))
        .unwrap()
}

/// The host's resources: the actor state store, and with `timeout` a
/// 2 s `targets.actors` timeout (calls past it free the actor while the
/// app may still run them: only the stuck-app test wants that).
fn resources(home: &TempDir, timeout: bool) -> String {
    resources_on(home, timeout, None)
}

/// The resources: the actor state store (one file every host shares, as
/// they would share a database), a coordination component when the
/// placement table and reminders live in `etcd`.
fn resources_on(home: &TempDir, timeout: bool, etcd: Option<&Cluster>) -> String {
    let res = common::actor_state_resources(home);
    if let Some(cluster) = etcd {
        home.write(
            "res/etcd.yaml",
            &common::component(
                "coordination",
                "coordination.etcd",
                &[
                    ("endpoints", &cluster.endpoints().join(",")),
                    ("keyPrefix", &format!("actors-{}", common::run_id())),
                    ("leaseDuration", "3s"),
                    ("timeout", "1s"),
                ],
            ),
        );
    }
    if timeout {
        home.write(
        "res/resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: actor-timeouts\nspec:\n  policies:\n    timeouts:\n      actorCall: 2s\n  targets:\n    actors:\n      Checker:\n        timeout: actorCall\n",
    );
    }
    res
}

/// The checker app, a home with its resources, and the app's port.
async fn setup(tag: &str) -> (Arc<Checker>, u16, TempDir, String) {
    setup_on(tag, false, None).await
}

/// As `setup`, with the `targets.actors` timeout and the engine's
/// coordination component when given.
async fn setup_on(
    tag: &str,
    timeout: bool,
    etcd: Option<&Cluster>,
) -> (Arc<Checker>, u16, TempDir, String) {
    let c = Arc::new(Checker::default());
    let app_port = checker_app(c.clone()).await;
    let home = TempDir::new(tag);
    let res = resources_on(&home, timeout, etcd);
    (c, app_port, home, res)
}

fn host(home: &TempDir, res: &str, app_port: u16) -> Sidecar {
    host_at(home.path(), res, app_port)
}

fn host_at(home: &std::path::Path, res: &str, app_port: u16) -> Sidecar {
    sidecar()
        .app_id("checker")
        .env("TANDEM_HOME", home.to_str().unwrap())
        .args(["--app-port", &app_port.to_string()])
        .args(["--resources-path", res])
        .start()
}

/// Where the hosts of a test keep their placement table and reminders:
/// the file of the home they share, or a 3-member etcd cluster (each
/// host then has a home of its own, as on separate machines).
enum Engine {
    Embedded,
    Etcd(Cluster),
}

impl Engine {
    /// A 3-member cluster (started off the async workers: it blocks).
    async fn etcd() -> Self {
        Engine::Etcd(
            tokio::task::spawn_blocking(|| Cluster::start(3))
                .await
                .unwrap(),
        )
    }

    fn cluster(&self) -> Option<&Cluster> {
        match self {
            Engine::Embedded => None,
            Engine::Etcd(c) => Some(c),
        }
    }

    /// Host number `n`'s sidecar.
    fn host(&self, home: &TempDir, res: &str, app_port: u16, n: usize) -> Sidecar {
        match self {
            Engine::Embedded => host(home, res, app_port),
            Engine::Etcd(_) => {
                let own = home.path().join(format!("host-{n}"));
                std::fs::create_dir_all(&own).unwrap();
                host_at(&own, res, app_port)
            }
        }
    }
}

fn call(port: u16, id: &str, method: &str, body: &[u8]) -> std::io::Result<common::Resp> {
    common::http(
        port,
        "PUT",
        &format!("/v1.0/actors/Checker/{id}/method/{method}"),
        &[],
        body,
    )
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 200 actor ids called without pause through every live sidecar while a
/// third host joins and the first is SIGKILLed: no two calls of one id
/// ever overlap (the app checks), every acknowledged increment is in the
/// store, and afterwards every id answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_per_actor_while_hosts_join_and_die() {
    churn(Engine::Embedded).await;
}

/// The same on a 3-member etcd cluster, each host with a home of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_per_actor_while_hosts_join_and_die_on_etcd() {
    churn(Engine::etcd().await).await;
}

async fn churn(engine: Engine) {
    let (c, app_port, home, res) = setup_on("actors-churn", false, engine.cluster()).await;
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        let mut a = engine.host(&home, &res, app_port, 0);
        let b = engine.host(&home, &res, app_port, 1);
        let expected = if engine.cluster().is_some() {
            "placement=etcd"
        } else {
            "placement=the placement table"
        };
        wait_until("the actor runtime", Duration::from_secs(10), || {
            b.stderr.text().contains(expected)
        });
        *c2.sidecars.lock().unwrap() = vec![b.http, a.http];
        let live: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(vec![a.http, b.http]));
        let stop = Arc::new(AtomicBool::new(false));
        // Per id: calls acknowledged (200) and calls tried.
        let tally: Arc<Mutex<HashMap<String, (u64, u64)>>> = Arc::default();
        let workers: Vec<_> = (0..6)
            .map(|w| {
                let (live, stop, tally) = (live.clone(), stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    let mut i: u64 = w;
                    while !stop.load(Ordering::Relaxed) {
                        i = i
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let id = format!("id-{}", (i >> 33) % 200);
                        let ports = live.lock().unwrap().clone();
                        let port = ports[(i >> 20) as usize % ports.len()];
                        tally.lock().unwrap().entry(id.clone()).or_default().1 += 1;
                        if let Ok(r) = call(port, &id, "work", b"")
                            && r.status == 200
                        {
                            tally.lock().unwrap().entry(id).or_default().0 += 1;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let c3 = engine.host(&home, &res, app_port, 2);
        c2.sidecars.lock().unwrap().push(c3.http);
        live.lock().unwrap().push(c3.http);
        std::thread::sleep(Duration::from_millis(1500));
        // SIGKILL a: its actors move once its lease lapses.
        live.lock().unwrap().retain(|p| *p != a.http);
        c2.sidecars.lock().unwrap().retain(|p| *p != a.http);
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        assert!(
            c2.overlaps.lock().unwrap().is_empty(),
            "calls of one actor overlapped: {:?}",
            c2.overlaps.lock().unwrap()
        );
        // Every id answers now, and its count holds every acknowledged
        // increment (and no more than were tried).
        let tally = tally.lock().unwrap().clone();
        let acked: u64 = tally.values().map(|t| t.0).sum();
        assert!(
            acked > 500,
            "too few calls went through: {acked} ({tally:?})"
        );
        for (id, (ok, tried)) in &tally {
            let r = call(b.http, id, "work", b"").unwrap();
            assert_eq!(r.status, 200, "{id}: {}\n{}", r.text(), b.stderr.text());
            let n: u64 = r.text().trim().parse().unwrap();
            assert!(
                n > *ok && n <= tried + 1,
                "{id}: stored {n} after {ok} acknowledged of {tried} tried"
            );
        }
        assert!(c2.overlaps.lock().unwrap().is_empty());
        drop((b, c3));
    })
    .await
    .unwrap();
}

/// A reminder fires on whichever host runs its actor: the host that
/// registered it SIGKILLed, another fires it; every sidecar stopped and a
/// new one started, it fires again (it lives in the engine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_outlive_their_host_and_every_restart() {
    reminders_survive(Engine::Embedded).await;
}

/// The same with reminders and placement on a 3-member etcd cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_outlive_their_host_and_every_restart_on_etcd() {
    reminders_survive(Engine::etcd().await).await;
}

async fn reminders_survive(engine: Engine) {
    let (c, app_port, home, res) = setup_on("actors-remind", false, engine.cluster()).await;
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        let mut a = engine.host(&home, &res, app_port, 0);
        let b = engine.host(&home, &res, app_port, 1);
        *c2.sidecars.lock().unwrap() = vec![a.http, b.http];
        // The caller's query string reaches the app, through either
        // sidecar.
        for s in [&a, &b] {
            let r = common::http(
                s.http,
                "PUT",
                "/v1.0/actors/Checker/q-1/method/query?x=1&y=a%20b",
                &[],
                b"",
            )
            .unwrap();
            assert_eq!((r.status, r.text()), (200, "x=1&y=a%20b".to_string()));
        }
        // Ids with escaped slashes and spaces reach the actor through
        // either sidecar (one of them sends the call on to the other).
        for id in ["x%2Fy", "p%20q%2F%2E%2E", "plain"] {
            for s in [&a, &b] {
                let r = common::http(
                    s.http,
                    "PUT",
                    &format!("/v1.0/actors/Checker/{id}/method/echo"),
                    &[],
                    id.as_bytes(),
                )
                .unwrap();
                assert_eq!((r.status, r.text()), (200, id.to_string()), "{id}");
            }
        }
        let r = common::http(
            a.http,
            "PUT",
            "/v1.0/actors/Checker/r-1/reminders/beat",
            &[("content-type", "application/json")],
            br#"{"dueTime":"0s","period":"500ms","data":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        let got = a.get("/v1.0/actors/Checker/r-1/reminders/beat");
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["period"], "500ms", "{}", got.text());
        assert_eq!(got.json()["data"], serde_json::json!({"x": 1}));
        let count = || c2.reminded.lock().unwrap().len();
        wait_until("2 reminders", Duration::from_secs(10), || count() >= 2);
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        c2.sidecars.lock().unwrap().retain(|p| *p == b.http);
        let before = count();
        // A tick claimed by the killed sidecar waits out its lease (12 s
        // embedded, 3 s on etcd here); then they fire from b.
        wait_until("reminders after the kill", Duration::from_secs(30), || {
            count() >= before + 3
        });
        drop(b);
        let stopped_at = count();
        std::thread::sleep(Duration::from_millis(800));
        let d = engine.host(&home, &res, app_port, 3);
        *c2.sidecars.lock().unwrap() = vec![d.http];
        let restarted = count();
        assert!(restarted <= stopped_at + 1, "fired with no sidecar up");
        wait_until(
            "reminders after a full restart",
            Duration::from_secs(45),
            || count() >= restarted + 2,
        );
        // Unregistered: no more.
        let r = common::http(
            d.http,
            "DELETE",
            "/v1.0/actors/Checker/r-1/reminders/beat",
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        std::thread::sleep(Duration::from_millis(700));
        let last = count();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(count(), last, "fired after it was unregistered");
        let r = d.get("/v1.0/actors/Checker/r-1/reminders/beat");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "ERR_ACTOR_REMINDER_NOT_FOUND"),
            "{}",
            r.text()
        );
        assert!(
            c2.reminded
                .lock()
                .unwrap()
                .iter()
                .all(|(id, n)| id == "r-1" && n == "beat")
        );
    })
    .await
    .unwrap();
}

/// Bad input gets a clear answer and nothing is left stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_stuck_calls_get_clear_answers() {
    bad_input(Engine::Embedded).await;
}

/// The same with the placement table and reminders in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_stuck_calls_get_clear_answers_on_etcd() {
    bad_input(Engine::etcd().await).await;
}

async fn bad_input(engine: Engine) {
    let (c, app_port, home, res) = setup_on("actors-bad", true, engine.cluster()).await;
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        let s = engine.host(&home, &res, app_port, 0);
        *c2.sidecars.lock().unwrap() = vec![s.http];
        let code = |r: &common::Resp| (r.status, r.error_code());
        // Unknown type: daprd's error naming it.
        let r = common::http(s.http, "POST", "/v1.0/actors/Nobody/1/method/m", &[], b"").unwrap();
        assert_eq!(code(&r), (500, "ERR_ACTOR_INVOKE_METHOD".into()), "{}", r.text());
        assert!(r.text().contains("Nobody"), "{}", r.text());
        // Empty and forbidden ids.
        for path in [
            "/v1.0/actors/Checker/%20/method/echo",
            "/v1.0/actors/Checker/a%7C%7Cb/method/echo",
            "/v1.0/actors/Checker/a%0Ab/method/echo",
        ] {
            let r = common::http(s.http, "PUT", path, &[], b"x").unwrap();
            assert_eq!(code(&r), (400, "ERR_MALFORMED_REQUEST".into()), "{path}: {}", r.text());
        }
        // An id with an escaped slash and a space is one id.
        let r = common::http(s.http, "PUT", "/v1.0/actors/Checker/a%2Fb%20c/method/echo", &[], b"hi")
            .unwrap();
        assert_eq!((r.status, r.text()), (200, "hi".to_string()));
        // The app's own error marker is passed on as it is.
        let r = call(s.http, "e-1", "echo", b"fail").unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header("x-daprerrorresponseheader").is_some(), "{:?}", r.headers);
        // A method the app does not know: its 404 as daprd reports it.
        let r = call(s.http, "e-1", "nope", b"").unwrap();
        assert_eq!(code(&r), (500, "ERR_ACTOR_INVOKE_METHOD".into()), "{}", r.text());
        assert!(r.text().contains("actor method not found"), "{}", r.text());
        assert!(r.text().contains("no such method"), "{}", r.text());
        // Bad durations for timers and reminders.
        for (path, body, err) in [
            ("timers/t", r#"{"dueTime":"soon"}"#, "ERR_ACTOR_TIMER_CREATE"),
            ("timers/t", r#"{"period":"R2/often"}"#, "ERR_ACTOR_TIMER_CREATE"),
            ("reminders/r", r#"{"period":"every day"}"#, "ERR_ACTOR_REMINDER_CREATE"),
            ("reminders/r", r#"{"period":"R0/PT1S"}"#, "ERR_ACTOR_REMINDER_CREATE"),
            ("reminders/r", r#"{"period":"-1s"}"#, "ERR_ACTOR_REMINDER_CREATE"),
            ("reminders/r", r#"{"dueTime":5}"#, "ERR_MALFORMED_REQUEST"),
            ("reminders/r", r#"[1]"#, "ERR_MALFORMED_REQUEST"),
        ] {
            let r = common::http(
                s.http,
                "PUT",
                &format!("/v1.0/actors/Checker/e-1/{path}"),
                &[],
                body.as_bytes(),
            )
            .unwrap();
            assert_eq!(code(&r), (400, err.into()), "{path} {body}: {}", r.text());
        }
        let r = common::http(s.http, "GET", "/v1.0/actors/Checker/e-1/reminders/none", &[], b"")
            .unwrap();
        assert_eq!(code(&r), (404, "ERR_ACTOR_REMINDER_NOT_FOUND".into()), "{}", r.text());
        // State: missing is 204; a 1 MiB value round-trips; bad bodies 400.
        let r = s.get("/v1.0/actors/Checker/e-1/state/none");
        assert_eq!(r.status, 204);
        let big = "x".repeat(1 << 20);
        let ops = format!(r#"[{{"operation":"upsert","request":{{"key":"big","value":"{big}"}}}}]"#);
        let r = common::http(s.http, "POST", "/v1.0/actors/Checker/e-1/state", &[], ops.as_bytes())
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        let r = s.get("/v1.0/actors/Checker/e-1/state/big");
        assert_eq!(r.body.len(), big.len() + 2);
        for body in [
            "{}",
            r#"[{"operation":"merge","request":{"key":"k"}}]"#,
            r#"[{"operation":"upsert","request":{}}]"#,
            "not json",
        ] {
            let r = common::http(s.http, "POST", "/v1.0/actors/Checker/e-1/state", &[], body.as_bytes())
                .unwrap();
            assert_eq!(code(&r), (400, "ERR_MALFORMED_REQUEST".into()), "{body}: {}", r.text());
        }
        // Reentrancy: within maxStackDepth (3) a chain re-enters; past it,
        // a clear error.
        let r = call(s.http, "deep", "dive", b"2").unwrap();
        assert_eq!((r.status, r.text()), (200, "bottom".to_string()));
        let r = call(s.http, "deep", "dive", b"5").unwrap();
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.text().contains("maximum stack depth"), "{}", r.text());
        // A caller that gives up does not free the actor while the app
        // still runs its call: the next call waits for the app's answer
        // (no overlap), then runs.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.http)).unwrap();
        use std::io::Write;
        stream
            .write_all(b"PUT /v1.0/actors/Checker/stuck/method/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(stream);
        let t = Instant::now();
        let r = call(s.http, "stuck", "echo", b"free").unwrap();
        assert_eq!((r.status, r.text()), (200, "free".to_string()));
        assert!(
            t.elapsed() > Duration::from_millis(500),
            "ran beside the abandoned call ({:?})",
            t.elapsed()
        );
        // An app that never answers: the targets.actors timeout (2 s) ends
        // the call with a clear error and frees the actor.
        let t = Instant::now();
        let r = call(s.http, "hung", "hang", b"").unwrap();
        assert_eq!(code(&r), (500, "ERR_ACTOR_INVOKE_METHOD".into()), "{}", r.text());
        assert!(r.text().contains("did not answer within 2s"), "{}", r.text());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let t = Instant::now();
        let r = call(s.http, "hung", "echo", b"next").unwrap();
        assert_eq!((r.status, r.text()), (200, "next".to_string()));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Metadata: the type, its active actors, placement connected.
        let m = s.get("/v1.0/metadata").json();
        assert_eq!(m["actorRuntime"]["runtimeStatus"], "RUNNING", "{m}");
        assert_eq!(m["actorRuntime"]["hostReady"], true, "{m}");
        assert_eq!(m["actorRuntime"]["placement"], "placement: connected", "{m}");
        let active = &m["actorRuntime"]["activeActors"][0];
        assert_eq!(active["type"], "Checker", "{m}");
        assert!(active["count"].as_u64().unwrap() >= 3, "{m}");
        assert!(c2.overlaps.lock().unwrap().is_empty());
    })
    .await
    .unwrap();
}

/// The actor RPCs on the gRPC API: the same runtime as the HTTP door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_actor_api() {
    use tandem_proto::runtime::v1 as rt;
    let (c, app_port, home, res) = setup("actors-grpc").await;
    let s = tokio::task::spawn_blocking(move || (host(&home, &res, app_port), home))
        .await
        .unwrap();
    *c.sidecars.lock().unwrap() = vec![s.0.http];
    let mut client = rt::dapr_client::DaprClient::connect(s.0.grpc_endpoint())
        .await
        .unwrap();
    let r = client
        .invoke_actor(rt::InvokeActorRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            method: "echo".into(),
            data: b"over grpc".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.data, b"over grpc");
    // The app's error marker is an error here.
    let e = client
        .invoke_actor(rt::InvokeActorRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            method: "echo".into(),
            data: b"fail".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    let e = client
        .invoke_actor(rt::InvokeActorRequest {
            actor_type: "Checker".into(),
            actor_id: "".into(),
            method: "echo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    client
        .execute_actor_state_transaction(rt::ExecuteActorStateTransactionRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            operations: vec![rt::TransactionalActorStateOperation {
                operation_type: "upsert".into(),
                key: "k".into(),
                value: Some(prost_types::Any {
                    type_url: String::new(),
                    value: br#"{"v":1}"#.to_vec(),
                }),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let got = client
        .get_actor_state(rt::GetActorStateRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            key: "k".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, br#"{"v":1}"#);
    // The HTTP door reads what gRPC wrote (one key layout).
    let r = common::http(
        s.0.http,
        "GET",
        "/v1.0/actors/Checker/g-1/state/k",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.text(), r#"{"v":1}"#);

    for id in ["g-1", "g-2"] {
        client
            .register_actor_reminder(rt::RegisterActorReminderRequest {
                actor_type: "Checker".into(),
                actor_id: id.into(),
                name: "later".into(),
                due_time: "1h".into(),
                period: "R2/PT1H".into(),
                data: br#"{"n":2}"#.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Not again without overwrite.
    let e = client
        .register_actor_reminder(rt::RegisterActorReminderRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            name: "later".into(),
            due_time: "1h".into(),
            overwrite: Some(false),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let got = client
        .get_actor_reminder(rt::GetActorReminderRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            name: "later".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.period.as_deref(), Some("R2/PT1H"));
    // As daprd keeps bytes given over gRPC: a base64 string, in a
    // BytesValue holding its JSON.
    let any = got.data.unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/google.protobuf.BytesValue"
    );
    let json = <Vec<u8> as prost::Message>::decode(any.value.as_slice()).unwrap();
    let text: String = serde_json::from_slice(&json).unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
        br#"{"n":2}"#
    );
    let list = client
        .list_actor_reminders(rt::ListActorRemindersRequest {
            actor_type: "Checker".into(),
            actor_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<_> = list
        .reminders
        .iter()
        .map(|r| (r.name.clone(), r.reminder.clone().unwrap().actor_id))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("later".into(), "g-1".into()),
            ("later".into(), "g-2".into())
        ]
    );
    client
        .unregister_actor_reminders_by_type(rt::UnregisterActorRemindersByTypeRequest {
            actor_type: "Checker".into(),
            actor_id: Some("g-1".into()),
        })
        .await
        .unwrap();
    let list = client
        .list_actor_reminders(rt::ListActorRemindersRequest {
            actor_type: "Checker".into(),
            actor_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.reminders.len(), 1);
    // The Jobs API does not see reminders.
    let jobs = client
        .list_jobs_alpha1(rt::ListJobsRequestAlpha1::default())
        .await
        .unwrap()
        .into_inner();
    assert!(jobs.jobs.is_empty(), "{jobs:?}");
    // A timer registered and removed over gRPC.
    client
        .register_actor_timer(rt::RegisterActorTimerRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            name: "t".into(),
            due_time: "1h".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = client
        .register_actor_timer(rt::RegisterActorTimerRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            name: "t".into(),
            due_time: "whenever".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    client
        .unregister_actor_timer(rt::UnregisterActorTimerRequest {
            actor_type: "Checker".into(),
            actor_id: "g-1".into(),
            name: "t".into(),
        })
        .await
        .unwrap();
    drop(s);
}

/// An app that hosts its actors over the stream it opens
/// (`SubscribeActorEventsAlpha1`), driven by hand: the registration rules,
/// calls and answers paired by id, an app's failure, and what callers see
/// when the app's stream goes away with a call unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_host_over_the_grpc_stream() {
    use rt::subscribe_actor_events_request_alpha1::RequestType as FromApp;
    use rt::subscribe_actor_events_response_alpha1::ResponseType as ToApp;
    use tandem_proto::runtime::v1 as rt;
    use tokio_stream::StreamExt;
    let home = TempDir::new("actors-stream");
    let res = resources(&home, false);
    // The app's gRPC port: the sidecar only needs it to listen.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let s = tokio::task::spawn_blocking(move || {
        let s = sidecar()
            .app_id("streamhost")
            .env("TANDEM_HOME", home.path().to_str().unwrap())
            .args([
                "--app-port",
                &app_port.to_string(),
                "--app-protocol",
                "grpc",
            ])
            .args(["--resources-path", &res])
            .start();
        (s, home)
    })
    .await
    .unwrap();
    let mut client = rt::dapr_client::DaprClient::connect(s.0.grpc_endpoint())
        .await
        .unwrap();
    let open = |first: Option<FromApp>| {
        let (tx, rx) = tokio::sync::mpsc::channel::<rt::SubscribeActorEventsRequestAlpha1>(16);
        if let Some(m) = first {
            tx.try_send(rt::SubscribeActorEventsRequestAlpha1 {
                request_type: Some(m),
            })
            .unwrap();
        }
        (tx, tokio_stream::wrappers::ReceiverStream::new(rx))
    };

    // A stream that does not register first, and one that names no type.
    for (first, says) in [
        (
            FromApp::DeactivateResponse(rt::SubscribeActorEventsRequestDeactivateResponseAlpha1 {
                id: "1".into(),
            }),
            "initial_request",
        ),
        (
            FromApp::InitialRequest(rt::SubscribeActorEventsRequestInitialAlpha1::default()),
            "names no actor types",
        ),
    ] {
        let (_tx, rx) = open(Some(first));
        let Err(e) = client.subscribe_actor_events_alpha1(rx).await else {
            panic!("a stream that does not register first is refused")
        };
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }

    // Registered: the acknowledgement first, then calls.
    let (tx, rx) = open(Some(FromApp::InitialRequest(
        rt::SubscribeActorEventsRequestInitialAlpha1 {
            entities: vec!["Streamed".into()],
            ..Default::default()
        },
    )));
    let mut events = client
        .subscribe_actor_events_alpha1(rx)
        .await
        .unwrap()
        .into_inner();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(
        first.response_type,
        Some(ToApp::InitialResponse(_))
    ));
    let http = s.0.http;
    let invoke = move |id: &'static str, method: &'static str| {
        tokio::task::spawn_blocking(move || {
            common::http(
                http,
                "PUT",
                &format!("/v1.0/actors/Streamed/{id}/method/{method}"),
                &[("x-trail", "kept")],
                b"{\"n\":1}",
            )
            .unwrap()
        })
    };
    let pending = invoke("s-1", "greet");
    let Some(ToApp::InvokeRequest(r)) = events.next().await.unwrap().unwrap().response_type else {
        panic!("expected an invoke request")
    };
    assert_eq!(
        (
            r.actor_type.as_str(),
            r.actor_id.as_str(),
            r.method.as_str()
        ),
        ("Streamed", "s-1", "greet")
    );
    assert_eq!(r.data, b"{\"n\":1}");
    assert_eq!(r.metadata.get("x-trail").map(String::as_str), Some("kept"));
    tx.send(rt::SubscribeActorEventsRequestAlpha1 {
        request_type: Some(FromApp::InvokeResponse(
            rt::SubscribeActorEventsRequestInvokeResponseAlpha1 {
                id: r.id.clone(),
                data: b"\"hello\"".to_vec(),
                metadata: [("content-type".to_string(), "application/json".to_string())].into(),
                error: false,
            },
        )),
    })
    .await
    .unwrap();
    let got = pending.await.unwrap();
    assert_eq!((got.status, got.text().as_str()), (200, "\"hello\""));

    // The app says the method does not exist: a clear error.
    let pending = invoke("s-1", "nothing");
    let Some(ToApp::InvokeRequest(r)) = events.next().await.unwrap().unwrap().response_type else {
        panic!("expected an invoke request")
    };
    tx.send(rt::SubscribeActorEventsRequestAlpha1 {
        request_type: Some(FromApp::RequestFailed(
            rt::SubscribeActorEventsRequestFailedAlpha1 {
                id: r.id,
                code: tonic::Code::NotFound as u32,
                message: "no method nothing".into(),
            },
        )),
    })
    .await
    .unwrap();
    let got = pending.await.unwrap();
    assert_eq!(got.status, 500, "{}", got.text());
    assert!(
        got.text().contains("actor method not found"),
        "{}",
        got.text()
    );

    // An answer for an id nobody waits for is dropped, nothing breaks.
    tx.send(rt::SubscribeActorEventsRequestAlpha1 {
        request_type: Some(FromApp::DeactivateResponse(
            rt::SubscribeActorEventsRequestDeactivateResponseAlpha1 { id: "999".into() },
        )),
    })
    .await
    .unwrap();

    // The app goes away with a call unanswered: the caller hears so at
    // once, and the type leaves the table.
    let pending = invoke("s-2", "slow");
    let Some(ToApp::InvokeRequest(_)) = events.next().await.unwrap().unwrap().response_type else {
        panic!("expected an invoke request")
    };
    drop(tx);
    drop(events);
    let got = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the caller is told when the host goes away")
        .unwrap();
    assert_eq!(got.status, 500, "{}", got.text());
    assert!(got.text().contains("disconnected"), "{}", got.text());
    let mut last = String::new();
    for _ in 0..100 {
        let r = invoke("s-3", "any").await.unwrap();
        last = r.text();
        if last.contains("no host of actor type Streamed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.contains("no host of actor type Streamed"), "{last}");
    drop(s);
}

/// Two hosts on a 3-member etcd cluster while calls flow: one member
/// SIGKILLed changes nothing callers see; all three down, calls fail with
/// an error naming the engine and the hosts let their actors go as their
/// leases lapse; members back, calls succeed again without a restart, no
/// two calls of one actor ever overlapped and no acknowledged write is
/// missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_ride_out_etcd_members_dying() {
    let mut engine = Engine::etcd().await;
    let (c, app_port, home, res) = setup_on("actors-etcd-faults", false, engine.cluster()).await;
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        let a = engine.host(&home, &res, app_port, 0);
        let b = engine.host(&home, &res, app_port, 1);
        *c2.sidecars.lock().unwrap() = vec![a.http, b.http];
        let ports = [a.http, b.http];
        let stop = Arc::new(AtomicBool::new(false));
        let tally: Arc<Mutex<HashMap<String, (u64, u64)>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (stop, tally, errors) = (stop.clone(), tally.clone(), errors.clone());
                std::thread::spawn(move || {
                    let mut i: u64 = w;
                    while !stop.load(Ordering::Relaxed) {
                        i = i
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let id = format!("f-{}", (i >> 33) % 50);
                        let port = ports[(i >> 20) as usize % 2];
                        tally.lock().unwrap().entry(id.clone()).or_default().1 += 1;
                        match call(port, &id, "work", b"") {
                            Ok(r) if r.status == 200 => {
                                tally.lock().unwrap().entry(id).or_default().0 += 1;
                            }
                            Ok(r) => {
                                errors.lock().unwrap().push(r.text());
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
            })
            .collect();
        let Engine::Etcd(cluster) = &mut engine else {
            unreachable!()
        };
        let acked = |t: &Mutex<HashMap<String, (u64, u64)>>| -> u64 {
            t.lock().unwrap().values().map(|v| v.0).sum()
        };
        std::thread::sleep(Duration::from_secs(1));
        cluster.kill(0);
        // Calls go on (after an election, if the leader was killed).
        let before = acked(&tally);
        wait_until(
            "calls with one member of three down",
            Duration::from_secs(15),
            || acked(&tally) > before + 20,
        );
        cluster.kill(1);
        cluster.kill(2);
        // Past the lease: every host has let its actors go.
        std::thread::sleep(Duration::from_secs(8));
        let during = errors.lock().unwrap().len();
        assert!(during > 0, "no call failed with the whole cluster down");
        let last = errors.lock().unwrap().last().cloned().unwrap_or_default();
        assert!(
            last.contains("placement") || last.contains("lease"),
            "the error says what is wrong: {last}"
        );
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        let back = acked(&tally);
        wait_until(
            "calls after the cluster is back",
            Duration::from_secs(30),
            || acked(&tally) > back + 50,
        );
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        assert!(
            c2.overlaps.lock().unwrap().is_empty(),
            "calls of one actor overlapped: {:?}",
            c2.overlaps.lock().unwrap()
        );
        for (id, (ok, tried)) in tally.lock().unwrap().iter() {
            let r = call(a.http, id, "work", b"").unwrap();
            assert_eq!(r.status, 200, "{id}: {}", r.text());
            let n: u64 = r.text().trim().parse().unwrap();
            assert!(
                n > *ok && n <= tried + 1,
                "{id}: stored {n} after {ok} acknowledged of {tried} tried"
            );
        }
        drop((a, b));
    })
    .await
    .unwrap();
}

/// `targets.actors` retry and circuit breaker (scope `id`): a failing call
/// is tried again until it answers; an actor that keeps failing trips its
/// own breaker, which refuses its calls without reaching the app while
/// other actors of the type go on, and closes again after its timeout. A
/// breaker without a scope is refused with a message saying what to add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_retries_and_breakers_per_id() {
    let (c, app_port, home, res) = setup("actors-resiliency").await;
    let policy = |scope: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: actor-policy\nspec:\n  policies:\n    retries:\n      actorRetry:\n        policy: constant\n        duration: 10ms\n        maxRetries: 3\n    circuitBreakers:\n      actorBreaker:\n        maxRequests: 1\n        timeout: 2s\n        trip: consecutiveFailures >= 3\n  targets:\n    actors:\n      Checker:\n        retry: actorRetry\n        circuitBreaker: actorBreaker\n{scope}"
        )
    };
    home.write("res/resiliency.yaml", &policy(""));
    let (bad_home, bad_res) = (home.path().to_path_buf(), res.clone());
    let (status, log) = tokio::task::spawn_blocking(move || {
        sidecar()
            .app_id("checker")
            .env("TANDEM_HOME", bad_home.to_str().unwrap())
            .args(["--resources-path", &bad_res])
            .start_failing()
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(log.contains("circuitBreakerScope"), "{log}");

    home.write(
        "res/resiliency.yaml",
        &policy("        circuitBreakerScope: id\n"),
    );
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        let s = host(&home, &res, app_port);
        *c2.sidecars.lock().unwrap() = vec![s.http];
        let tries = |id: &str| c2.tries.lock().unwrap().get(id).copied().unwrap_or(0);
        // Two failures, then an answer: one call for the caller.
        let r = call(s.http, "f-1", "flaky", b"").unwrap();
        assert_eq!((r.status, r.text()), (200, "try 3".to_string()));
        assert_eq!(tries("f-1"), 3);
        // Always failing: tried until the breaker trips (3 failures), and
        // the caller is told the breaker is open.
        let r = call(s.http, "b-1", "broken", b"").unwrap();
        assert_eq!(r.status, 500);
        assert!(r.text().contains("circuit breaker"), "{}", r.text());
        assert_eq!(tries("b-1"), 3);
        // Open: refused without reaching the app.
        let r = call(s.http, "b-1", "echo", b"x").unwrap();
        assert_eq!(r.status, 500);
        assert!(r.text().contains("circuit breaker"), "{}", r.text());
        assert_eq!(tries("b-1"), 3);
        // Another actor of the type is not affected (scope id).
        let r = call(s.http, "b-2", "echo", b"y").unwrap();
        assert_eq!((r.status, r.text()), (200, "y".to_string()));
        // After the breaker's timeout, a good call closes it again.
        std::thread::sleep(Duration::from_millis(2200));
        let r = call(s.http, "b-1", "echo", b"z").unwrap();
        assert_eq!((r.status, r.text()), (200, "z".to_string()));
        let r = call(s.http, "b-1", "echo", b"w").unwrap();
        assert_eq!((r.status, r.text()), (200, "w".to_string()));
        // A method the app does not have (404) is not tried again.
        let r = call(s.http, "n-1", "missing", b"").unwrap();
        assert_eq!(r.status, 500);
        assert!(r.text().contains("actor method not found"), "{}", r.text());
        assert_eq!(tries("n-1"), 1);
        // daprd's actor metrics: f-1, b-1, b-2 and n-1 activated here;
        // nothing waits for a turn now.
        let m = s.metrics_text();
        let value = |name: &str| -> f64 {
            m.lines()
                .find(|l| l.starts_with(name) && l.contains(r#"actor_type="Checker""#))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in:\n{m}"))
        };
        assert_eq!(value("dapr_runtime_actor_activated_total"), 4.0);
        assert_eq!(value("dapr_runtime_actor_pending_actor_calls"), 0.0);
        drop(s);
    })
    .await
    .unwrap();
}

/// Actor state in each of the four state stores marked
/// `actorStateStore: "true"` (Redis, PostgreSQL, SQLite, in-memory): the
/// checker's read-then-write turns count, and the value sits under daprd's
/// key `<app>||<type>||<id>||<key>` (read from the store itself), so state
/// daprd wrote reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_state_in_every_store() {
    let c = Arc::new(Checker::default());
    let app_port = checker_app(c.clone()).await;
    let run = common::run_id();
    let stores: [(&str, Vec<(&str, String)>); 4] = [
        ("state.redis", vec![("redisHost", "127.0.0.1:6379".into())]),
        (
            "state.postgresql",
            vec![(
                "connectionString",
                "host=127.0.0.1 user=postgres database=test".into(),
            )],
        ),
        (
            "state.sqlite",
            vec![("connectionString", "STATE_DB".into())],
        ),
        ("state.in-memory", vec![]),
    ];
    for (kind, meta) in stores {
        let home = TempDir::new("actors-stores");
        let db = home.path().join("s.db").display().to_string();
        let mut meta: Vec<(&str, String)> = meta
            .into_iter()
            .map(|(k, v)| (k, if v == "STATE_DB" { db.clone() } else { v }))
            .collect();
        meta.push(("actorStateStore", "true".into()));
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        home.write(
            "res/state.yaml",
            &common::component("actorstate", kind, &pairs),
        );
        let res = home.path().join("res").display().to_string();
        let c2 = c.clone();
        let id = format!("s-{run}-{}", kind.replace('.', "-"));
        tokio::task::spawn_blocking(move || {
            let s = host(&home, &res, app_port);
            *c2.sidecars.lock().unwrap() = vec![s.http];
            for want in ["1", "2", "3"] {
                let r = call(s.http, &id, "work", b"").unwrap();
                assert_eq!((r.status, r.text()), (200, want.to_string()), "{kind}");
            }
            // daprd's key, read from the store itself.
            let key = format!("checker||Checker||{id}||n");
            let stored = match kind {
                "state.redis" => {
                    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
                    let mut conn = client.get_connection().unwrap();
                    let n: i64 = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
                    n == 1
                }
                "state.postgresql" => {
                    let out = std::process::Command::new("psql")
                        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc"])
                        .arg(format!("SELECT count(*) FROM state WHERE key = '{key}'"))
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).trim() == "1"
                }
                "state.sqlite" => {
                    let conn = rusqlite::Connection::open(&db).unwrap();
                    conn.query_row("SELECT count(*) FROM state WHERE key = ?1", [&key], |r| {
                        r.get::<_, i64>(0)
                    })
                    .unwrap()
                        == 1
                }
                // Nothing outside the sidecar to read.
                _ => true,
            };
            assert!(stored, "{kind}: no {key} in the store");
            let r = s.get(&format!("/v1.0/actors/Checker/{id}/state/n"));
            assert_eq!((r.status, r.text()), (200, "3".to_string()), "{kind}");
            // A delete in a transaction, then the key reads empty.
            let r = common::http(
                s.http,
                "POST",
                &format!("/v1.0/actors/Checker/{id}/state"),
                &[("content-type", "application/json")],
                br#"[{"operation":"delete","request":{"key":"n"}}]"#,
            )
            .unwrap();
            assert_eq!(r.status, 204, "{kind}: {}", r.text());
            let r = s.get(&format!("/v1.0/actors/Checker/{id}/state/n"));
            assert_eq!(r.status, 204, "{kind}: {}", r.text());
            drop(s);
        })
        .await
        .unwrap();
    }
}
