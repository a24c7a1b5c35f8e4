//! What the benches share: a sidecar process of the release binary.
#![allow(dead_code)]

#[path = "../../tests/common/netns.rs"]
pub mod netns;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tandem");

pub struct Sidecar {
    child: Child,
    pub http: u16,
    pub grpc: u16,
}

impl Sidecar {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tandem sidecar` on `resources` (and `app_port`), quiet and
/// without metrics, and waits until its HTTP port accepts.
pub fn start(app_id: &str, resources: &std::path::Path, app_port: Option<u16>) -> Sidecar {
    start_with(app_id, resources, app_port, &[], &[])
}

/// The same with extra environment variables (e.g. a shared TANDEM_HOME)
/// and flags.
pub fn start_with(
    app_id: &str,
    resources: &std::path::Path,
    app_port: Option<u16>,
    env: &[(&str, &str)],
    args: &[&str],
) -> Sidecar {
    let (http, grpc) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args([
        "sidecar",
        "--app-id",
        app_id,
        "--log-level",
        "error",
        "--enable-metrics=false",
    ])
    .args([
        "--dapr-http-port",
        &http.to_string(),
        "--dapr-grpc-port",
        &grpc.to_string(),
    ])
    .args(["--resources-path", resources.to_str().unwrap()])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(p) = app_port {
        cmd.args(["--app-port", &p.to_string()]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args);
    let child = cmd.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < end, "sidecar did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let components and subscriptions settle.
    std::thread::sleep(Duration::from_millis(300));
    Sidecar { child, http, grpc }
}

/// Latency percentiles of one measurement, in µs.
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
}

/// `iters` sequential calls of `f` after a tenth as many to warm up.
pub async fn measure<F, Fut>(iters: usize, mut f: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    for _ in 0..iters / 10 {
        f().await; // warm-up
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Stats {
        p50: samples[iters / 2],
        p99: samples[iters * 99 / 100],
    }
}

/// One result line, with what it adds over `base` when given.
pub fn row(name: &str, s: &Stats, base: Option<&Stats>) {
    match base {
        Some(b) => println!(
            "{name:<34} p50 {:>7.1} µs  p99 {:>7.1} µs   added over raw: p50 {:>+7.1} µs  p99 {:>+7.1} µs",
            s.p50,
            s.p99,
            s.p50 - b.p50,
            s.p99 - b.p99
        ),
        None => println!("{name:<34} p50 {:>7.1} µs  p99 {:>7.1} µs", s.p50, s.p99),
    }
}
