//! Workflows: the engine's capacity and latency with a worker that speaks
//! the protocol from the bench itself (no SDK cost), against the raw
//! store's transaction rate measured in the same run.
//! - raw: SQLite transactions shaped like a turn (3 upserts, 1 delete) in
//!   a WAL file with the state store's pragmas, one connection;
//! - latency: one three-activity workflow at a time, StartInstance to
//!   WaitForInstanceCompletion, on an idle sidecar;
//! - throughput: `WF_COUNT` three-activity workflows (5,000 with
//!   `--bench`) started by 64 callers at once, until all are done;
//! - the same end to end with the Python SDK's worker and client, when
//!   its venv is there (`TANDEM_SDK_VENV`, made by tests/sdk/venv.sh).
//!
//! `cargo bench --bench workflows`; `WF_ITERS` sets the latency samples.

mod common;
#[path = "../tests/common/workflow.rs"]
mod workflow;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use workflow as w;

/// Turn-shaped transactions per second straight into SQLite.
fn raw_store_rate(dir: &std::path::Path, seconds: f64) -> f64 {
    let db = dir.join("raw.db");
    let mut c = rusqlite::Connection::open(&db).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c.execute(
        "CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL, etag TEXT, expires_at INTEGER)",
        [],
    )
    .unwrap();
    let value = vec![7u8; 200];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        for k in 0..3 {
            tx.execute(
                "INSERT OR REPLACE INTO state (key, value, etag) VALUES (?1, ?2, ?3)",
                rusqlite::params![format!("wf-{n}-{k}"), value, n.to_string()],
            )
            .unwrap();
        }
        tx.execute(
            "DELETE FROM state WHERE key = ?1",
            rusqlite::params![format!("wf-{}-0", n.saturating_sub(1))],
        )
        .unwrap();
        tx.commit().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn python_end_to_end(res: &std::path::Path, home: &std::path::Path, count: usize) -> Option<f64> {
    let venv = std::env::var("TANDEM_SDK_VENV").ok()?;
    let python = std::path::Path::new(&venv).join("bin/python");
    if !python.exists() {
        return None;
    }
    let app = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workflow_sdk.py");
    let out = std::process::Command::new(common::BIN)
        .args(["run", "--app-id", "wfbench-py", "--log-level", "error"])
        .args(["--resources-path", res.to_str().unwrap()])
        .arg("--")
        .arg(&python)
        .arg(&app)
        .arg(count.to_string())
        .env("TANDEM_HOME", home)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("WORKFLOWS/S ").nth(1))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("WF_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 500 } else { 10 });
    let count: usize = std::env::var("WF_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 5_000 } else { 100 });
    let dir = std::env::temp_dir().join(format!("tandem-wf-bench-{}", std::process::id()));
    let res = dir.join("res");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(
        res.join("state.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: {}\n  - name: actorStateStore\n    value: \"true\"\n",
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();

    let raw = raw_store_rate(&dir, if benching { 3.0 } else { 0.3 });
    println!("raw SQLite, turn-shaped transactions   {raw:>9.0} tx/s (baseline, same run)");

    let env = [("TANDEM_HOME", home.to_str().unwrap())];
    let s = common::start_with("wfbench", &res, None, &env, &[]);
    let endpoint = format!("http://127.0.0.1:{}", s.grpc);
    let worker = w::Worker::new(endpoint.clone());
    tokio::spawn(worker.clone().run());
    let mut c = w::connect(&endpoint).await.unwrap();
    // Warm: the engine, the placement lease and a worker connected.
    w::start(&mut c, "chain", "warm", "0").await.unwrap();
    w::finished(&mut c, "warm", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    let n = AtomicUsize::new(0);
    let lat = common::measure(iters, || {
        let mut c = c.clone();
        let id = format!("lat-{}", n.fetch_add(1, Ordering::Relaxed));
        async move {
            w::start(&mut c, "chain", &id, "1").await.unwrap();
            let st = w::finished(&mut c, &id, Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(st.output.as_deref(), Some("4"));
        }
    })
    .await;
    common::row("three-activity workflow, start to end", &lat, None);

    let callers = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (next, mut c) = (next.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let id = format!("tp-{i}");
                w::start(&mut c, "chain", &id, "1").await.unwrap();
                let st = w::finished(&mut c, &id, Duration::from_secs(120))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(st.output.as_deref(), Some("4"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    println!(
        "three-activity workflows, {callers} callers  {rate:>9.0} workflows/s ({count} workflows, ~5 turns and 3 activities each; raw store / workflows = {:.1} tx per workflow of headroom)",
        raw / rate
    );
    worker
        .stopped
        .store(true, std::sync::atomic::Ordering::Release);
    drop(s);

    let py_count = if benching { 500 } else { 20 };
    match python_end_to_end(&res, &home, py_count) {
        Some(r) => println!(
            "Python SDK worker and client, end to end {r:>9.0} workflows/s ({py_count} three-activity workflows)"
        ),
        None => println!("Python SDK end to end: skipped (no TANDEM_SDK_VENV)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
