//! Jobs: what scheduling one costs and how fast triggers go, against the
//! raw engine in the same run.
//! - schedule latency: a raw SQLite upsert into the same table in the
//!   same WAL file (the floor), the engine's `put`, and a sidecar's HTTP
//!   `POST /v1.0-alpha1/jobs/<name>` (which also checks and plans the job);
//! - trigger throughput: `JOBS_COUNT` jobs (default 100,000 with
//!   `--bench`) all due, fired by the scheduler loop into a no-op app, with
//!   the per-trigger engine cost (claim + settle) as its ceiling.
//!
//! `cargo bench --bench jobs`; `JOBS_ITERS` sets the latency samples.

mod common;

use common::{measure, row};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_stateful::engine::{Engine, Owner};
use tandem_stateful::job::Job;
use tandem_stateful::scheduler::{Deliver, Scheduler, now_ms};
use tandem_stateful::sqlite::Sqlite;

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
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
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
    let _ = std::fs::remove_dir_all(&dir);
}
