//! Sidecar start-up time (process start to `healthz/outbound` = 204) and idle
//! RSS, measured on the real binary. Baseline from the same run: starting
//! the same binary with `--version` (the floor of exec + runtime start).
//! Goals (issue 2): under 50 ms and under 10 MB; daprd needs seconds and ~50 MB.
//!
//! `cargo bench --bench startup` (release profile). Set `STARTUP_RUNS` to
//! change the number of runs (default 30).

mod common;

use common::{BIN, free_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn outbound_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /v1.0/healthz/outbound HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"204")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, …).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Sample {
    ready: Duration,
    rss_kib: u64,
    /// Private memory; the rest of RSS is the binary's pages, shared by
    /// every sidecar on the host.
    anon_kib: u64,
}

fn one_sidecar(extra: &[String]) -> Sample {
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(["sidecar", "--app-id", "bench", "--log-level", "warn"])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tandem starts");
    while !outbound_ready(http) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sidecar never became ready"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let ready = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let rss_kib = status_kib(child.id(), "VmRSS:");
    let anon_kib = status_kib(child.id(), "RssAnon:");
    let _ = child.kill();
    let _ = child.wait();
    Sample {
        ready,
        rss_kib,
        anon_kib,
    }
}

fn baseline_exec() -> Duration {
    let start = Instant::now();
    let status = Command::new(BIN)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, extra: &[String], runs: usize, base_p50: Duration) {
    let samples: Vec<Sample> = (0..runs).map(|_| one_sidecar(extra)).collect();
    let mut ready: Vec<Duration> = samples.iter().map(|s| s.ready).collect();
    ready.sort();
    let mut rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    rss.sort();
    let mut anon: Vec<u64> = samples.iter().map(|s| s.anon_kib).collect();
    anon.sort();
    let p50 = percentile(&ready, 0.5);
    println!(
        "{name:<28} start→healthz/outbound p50 {:>6.2} ms  p95 {:>6.2} ms  min {:>6.2} ms  ({:.1}× the exec baseline)  idle RSS p50 {:>5.1} MiB (private {:>4.1} MiB)  max {:>5.1} MiB",
        ms(p50),
        ms(percentile(&ready, 0.95)),
        ms(ready[0]),
        ms(p50) / ms(base_p50),
        rss[rss.len() / 2] as f64 / 1024.0,
        anon[anon.len() / 2] as f64 / 1024.0,
        rss[rss.len() - 1] as f64 / 1024.0,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either way: run a short version unless asked to bench.
    let benching = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("STARTUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 30 } else { 3 });

    let mut base: Vec<Duration> = (0..runs).map(|_| baseline_exec()).collect();
    base.sort();
    let base_p50 = percentile(&base, 0.5);
    println!(
        "{:<28} exec p50 {:>6.2} ms  p95 {:>6.2} ms",
        "baseline: tandem --version",
        ms(base_p50),
        ms(percentile(&base, 0.95))
    );
    report("sidecar, no resources", &[], runs, base_p50);

    let dir = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets.json");
    std::fs::write(&secrets, r#"{"a": "b", "nested": {"c": "d"}}"#).unwrap();
    std::fs::write(
        dir.join("stores.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: files\nspec:\n  type: secretstores.local.file\n  metadata:\n  - name: secretsFile\n    value: {}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env\nspec:\n  type: secretstores.local.env\n",
            secrets.display()
        ),
    )
    .unwrap();
    report(
        "sidecar, 2 secret stores",
        &["--resources-path".into(), dir.display().to_string()],
        runs,
        base_p50,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
