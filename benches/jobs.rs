//! Jobs: what scheduling one costs and how fast triggers go, against the
//! raw engine in the same run.
//! - schedule latency: a raw SQLite upsert into the same table in the
//!   same WAL file (the floor), the engine's `put`, and a sidecar's HTTP
//!   `POST /v1.0-alpha1/jobs/<name>` (which also checks and plans the job);
//! - trigger throughput: `JOBS_COUNT` jobs (default 100,000 with
//!   `--bench`) all due, fired by the scheduler loop into a no-op app, with
//!   the per-trigger engine cost (claim + settle) as its ceiling;
//! - through a sidecar to an HTTP app: the same number of due jobs in the
//!   sidecar's own job file, fired over HTTP (`POST /job/<name>`); trigger
//!   lateness (arrival at the app − due time) of jobs due over 5 s; the
//!   sidecar's RSS with that many jobs stored against one with none;
//! - on a real 3-member etcd cluster on loopback: a raw etcd `Put`, the
//!   etcd engine's `put`, and a sidecar's HTTP schedule with a
//!   `coordination.etcd` component.
//!
//! `cargo bench --bench jobs`; `JOBS_ITERS` sets the latency samples.

mod common;

use bytes::Bytes;
use common::{measure, row};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_stateful::engine::{Engine, Owner};
use tandem_stateful::job::Job;
use tandem_stateful::scheduler::{Deliver, Scheduler, now_ms};
use tandem_stateful::sqlite::Sqlite;

/// An HTTP app that takes job triggers: counts them, and records the
/// lateness of those named `late-<due ms>-<i>`.
async fn app(count: Arc<AtomicUsize>, late: Arc<std::sync::Mutex<Vec<f64>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (count, late) = (count.clone(), late.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (count, late) = (count.clone(), late.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            req.into_body().collect().await.unwrap();
                            if let Some(name) = path.strip_prefix("/job/") {
                                if let Some(due) = name
                                    .strip_prefix("late-")
                                    .and_then(|r| r.split('-').next())
                                    .and_then(|d| d.parse::<i64>().ok())
                                {
                                    late.lock().unwrap().push((now_ms() - due) as f64);
                                }
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
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

/// A process's resident memory, KiB.
fn rss_kib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Waits until `n` reaches `want` (10 minutes at most).
async fn until(n: &AtomicUsize, want: usize, what: &str) {
    let t = Instant::now();
    while n.load(Ordering::SeqCst) < want {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "{what} stalled at {}",
            n.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Count(Arc<AtomicUsize>);

impl Deliver for Count {
    fn deliver(
        &self,
        _: Job,
        _: i64,
    ) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("JOBS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 2000 } else { 20 });
    let count: usize = std::env::var("JOBS_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 100_000 } else { 200 });
    let dir = std::env::temp_dir().join(format!("tandem-jobs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("jobs.db");
    let engine = Arc::new(Sqlite::open(&db).unwrap());
    let owner = Owner {
        namespace: "default".into(),
        app_id: "bench".into(),
    };

    // The floor: the same upsert on a plain connection to the same file.
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    let raw = std::sync::Mutex::new(raw);
    let n = AtomicUsize::new(0);
    let raw_put = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let c = raw.lock().unwrap();
        c.execute(
            "INSERT INTO tandem_jobs (owner, name, job, next_ms) VALUES ('raw', ?1, '{}', 0)
             ON CONFLICT (owner, name) DO UPDATE SET job = excluded.job",
            rusqlite::params![format!("raw-{i}")],
        )
        .unwrap();
        async {}
    })
    .await;
    let job = |name: String| Job {
        name,
        schedule: Some("@every 1h".into()),
        ..Job::default()
    };
    let engine_put = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let (engine, owner) = (engine.clone(), owner.clone());
        async move {
            engine
                .put(
                    &owner,
                    &job(format!("put-{i}")),
                    now_ms() + 3_600_000,
                    None,
                    true,
                )
                .await
                .unwrap();
        }
    })
    .await;

    // Through a sidecar (no app: nothing fires).
    let home = dir.join("home");
    std::fs::create_dir_all(dir.join("res")).unwrap();
    let sc = common::start_with(
        "jobs-bench",
        &dir.join("res"),
        None,
        &[("TANDEM_HOME", home.to_str().unwrap())],
        &[],
    );
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let sidecar_put = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let req = hyper::Request::post(format!(
            "http://127.0.0.1:{}/v1.0-alpha1/jobs/http-{i}",
            sc.http
        ))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"schedule":"@every 1h","data":{"order":42},"overwrite":true}"#,
        )))
        .unwrap();
        let http = http.clone();
        async move {
            let resp = http.request(req).await.unwrap();
            assert_eq!(resp.status(), 204);
            resp.into_body().collect().await.unwrap();
        }
    })
    .await;
    drop(sc);
    println!("job scheduling latency, {iters} sequential calls each (same run)");
    row("raw SQLite upsert (same file)", &raw_put, None);
    row("engine put", &engine_put, Some(&raw_put));
    row("sidecar HTTP schedule", &sidecar_put, Some(&raw_put));

    // Triggers: `count` jobs due now, one scheduler, a no-op app.
    let due = Owner {
        namespace: "default".into(),
        app_id: "due".into(),
    };
    let t = Instant::now();
    for i in 0..count {
        let j = Job {
            name: format!("due-{i}"),
            due_time: Some("0s".into()),
            ..Job::default()
        };
        engine.put(&due, &j, 0, None, true).await.unwrap();
    }
    let stored = t.elapsed();
    let rss = || rss_kib("self");
    let fired = Arc::new(AtomicUsize::new(0));
    let before = rss();
    let t = Instant::now();
    let s = Scheduler::start(
        engine.clone(),
        due.clone(),
        "bench".into(),
        Arc::new(Count(fired.clone())),
    );
    while fired.load(Ordering::Relaxed) < count {
        assert!(t.elapsed() < Duration::from_secs(600), "triggers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(s);
    println!(
        "\n{count} due jobs stored in {:.2} s; fired by one scheduler in {secs:.2} s: {:.0} triggers/s (no-op app; claim + settle per trigger); RSS {:+.1} MiB while firing",
        stored.as_secs_f64(),
        count as f64 / secs,
        (rss() - before) / 1024.0
    );

    // Through a sidecar to an HTTP app: `count` jobs due now in the job
    // file of the sidecar's home (its app id's), fired once it starts.
    let home = dir.join("home-http");
    std::fs::create_dir_all(&home).unwrap();
    let file = Arc::new(Sqlite::open(&home.join("jobs.db")).unwrap());
    let trig = Owner {
        namespace: "default".into(),
        app_id: "jobs-trig".into(),
    };
    for i in 0..count {
        let j = Job {
            name: format!("due-{i}"),
            due_time: Some("0s".into()),
            ..Job::default()
        };
        file.put(&trig, &j, 0, None, true).await.unwrap();
    }
    let got = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = app(got.clone(), late.clone()).await;
    let t = Instant::now();
    let sc = common::start_with(
        "jobs-trig",
        &dir.join("res"),
        Some(port),
        &[("TANDEM_HOME", home.to_str().unwrap())],
        &[],
    );
    until(&got, 1, "the first trigger").await;
    let first = t.elapsed();
    until(&got, count, "triggers to the HTTP app").await;
    let secs = (t.elapsed() - first).as_secs_f64();
    if secs < 0.05 {
        // A brief run's few jobs arrive in one batch: no rate to give.
        println!(
            "\n{count} due jobs fired through a sidecar to an HTTP app (POST /job/<name>) within {secs:.3} s of the first (too few to give a rate)"
        );
    } else {
        println!(
            "\n{count} due jobs fired through a sidecar to an HTTP app (POST /job/<name>) in {secs:.2} s after the first: {:.0} triggers/s",
            count as f64 / secs
        );
    }
    // Lateness: jobs due over 5 s from 2 s on, put beside the sidecar (it
    // looks at the engine at least once a second).
    let lateness_jobs = count.min(10_000);
    let start_at = now_ms() + 2_000;
    for i in 0..lateness_jobs {
        let due = start_at + (i as i64 * 5_000) / lateness_jobs as i64;
        let j = Job {
            name: format!("late-{due}-{i}"),
            due_time: Some("1s".into()),
            ..Job::default()
        };
        file.put(&trig, &j, due, None, true).await.unwrap();
    }
    until(&got, count + lateness_jobs, "the lateness jobs").await;
    let mut l = late.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    println!(
        "trigger lateness of {lateness_jobs} jobs due over 5 s (arrival at the app − due): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l[l.len() / 2],
        l[l.len() * 99 / 100],
        l[l.len() - 1]
    );
    drop(sc);

    // Memory: a sidecar with `count` jobs stored (due in an hour) against
    // one with none, both firing for their app.
    for i in 0..count {
        let j = Job {
            name: format!("stored-{i}"),
            due_time: Some("1h".into()),
            ..Job::default()
        };
        file.put(&trig, &j, now_ms() + 3_600_000, None, true)
            .await
            .unwrap();
    }
    let empty_home = dir.join("home-empty");
    std::fs::create_dir_all(&empty_home).unwrap();
    let mut kib = Vec::new();
    for h in [&empty_home, &home] {
        let sc = common::start_with(
            "jobs-trig",
            &dir.join("res"),
            Some(port),
            &[("TANDEM_HOME", h.to_str().unwrap())],
            &[],
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        kib.push(rss_kib(&sc.pid().to_string()));
    }
    println!(
        "sidecar RSS: {:.1} MiB with no jobs, {:.1} MiB with {count} stored: {:+.1} bytes per stored job",
        kib[0] / 1024.0,
        kib[1] / 1024.0,
        (kib[1] - kib[0]) * 1024.0 / count as f64
    );

    etcd(&dir, iters).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scheduling on a real 3-member etcd cluster on loopback.
async fn etcd(dir: &std::path::Path, iters: usize) {
    use tandem_proto::etcd::{PutRequest, kv_client::KvClient};
    use tandem_stateful::etcd::{Etcd, EtcdOptions};
    let cluster = tandem_stateful::etcd_cluster::Cluster::start(3);
    let endpoints = cluster.endpoints();
    let kv = KvClient::connect(format!("http://{}", endpoints[0]))
        .await
        .unwrap();
    let n = AtomicUsize::new(0);
    let raw_put = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let mut kv = kv.clone();
        async move {
            kv.put(PutRequest {
                key: format!("raw/{i}").into_bytes(),
                value: br#"{"job":{"name":"x","schedule":"@every 1h"},"next":0}"#.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await;
    let engine = Arc::new(
        Etcd::new(&EtcdOptions {
            endpoints: endpoints.clone(),
            prefix: "bench".into(),
            timeout: Duration::from_secs(3),
        })
        .unwrap(),
    );
    let owner = Owner {
        namespace: "default".into(),
        app_id: "bench".into(),
    };
    let engine_put = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let (engine, owner) = (engine.clone(), owner.clone());
        async move {
            let job = Job {
                name: format!("put-{i}"),
                schedule: Some("@every 1h".into()),
                ..Job::default()
            };
            engine
                .put(&owner, &job, now_ms() + 3_600_000, None, true)
                .await
                .unwrap();
        }
    })
    .await;
    let res = dir.join("res-etcd");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(
        res.join("etcd.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: coordination\nspec:\n  type: coordination.etcd\n  version: v1\n  metadata:\n  - name: endpoints\n    value: \"{}\"\n",
            endpoints.join(",")
        ),
    )
    .unwrap();
    let home = dir.join("home-etcd");
    let sc = common::start_with(
        "jobs-bench-etcd",
        &res,
        None,
        &[("TANDEM_HOME", home.to_str().unwrap())],
        &[],
    );
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let sidecar_put = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let req = hyper::Request::post(format!(
            "http://127.0.0.1:{}/v1.0-alpha1/jobs/http-{i}",
            sc.http
        ))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"schedule":"@every 1h","data":{"order":42},"overwrite":true}"#,
        )))
        .unwrap();
        let http = http.clone();
        async move {
            let resp = http.request(req).await.unwrap();
            assert_eq!(resp.status(), 204);
            resp.into_body().collect().await.unwrap();
        }
    })
    .await;
    drop(sc);
    println!(
        "\njob scheduling latency on a 3-member etcd cluster (loopback), {iters} sequential calls each"
    );
    row("raw etcd Put (one key)", &raw_put, None);
    row("etcd engine put", &engine_put, Some(&raw_put));
    row("sidecar HTTP schedule (etcd)", &sidecar_put, Some(&raw_put));
}
