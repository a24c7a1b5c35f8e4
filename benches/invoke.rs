//! Service invocation through two sidecars against calling the app
//! directly, measured in the same run: sequential latency (p50/p99/p99.9),
//! latency at fixed rates (100, 1000, 5000 rps), throughput with 16
//! concurrent clients, the sidecars' CPU per 1000 rps and their RSS
//! afterwards — HTTP (`/v1.0/invoke`) and gRPC (`InvokeService`, what the
//! SDKs call) invocation, over plaintext and mTLS sidecar pairs, and a pair
//! of nginx reverse proxies as a reference. Then, as root, transparent mode
//! in a network namespace: the same app called directly, explicitly
//! through its sidecar, and by name through the iptables redirect (the
//! load runs inside the namespace: this binary again, `--netns-load`).
//!
//! `cargo bench --bench invoke`; `INVOKE_ITERS` sets the sequential samples
//! (default 5000); `INVOKE_ONLY=transparent` runs the namespace part alone.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type DaprClient = tandem_proto::runtime::v1::dapr_client::DaprClient<tonic::transport::Channel>;

/// One way of making the measured call.
#[derive(Clone)]
enum Call {
    /// GET this URL.
    Http(HttpClient, String),
    /// `InvokeService` of `hello` on this app through a sidecar.
    Grpc(DaprClient, String),
}

impl Call {
    async fn once(&self) {
        match self {
            Call::Http(client, uri) => get(client, uri).await,
            Call::Grpc(client, app) => {
                use tandem_proto::common::v1 as c;
                let req = tandem_proto::runtime::v1::InvokeServiceRequest {
                    id: app.clone(),
                    message: Some(c::InvokeRequest {
                        method: "hello".into(),
                        http_extension: Some(c::HttpExtension {
                            verb: c::http_extension::Verb::Get as i32,
                            querystring: String::new(),
                        }),
                        ..Default::default()
                    }),
                };
                let resp = client.clone().invoke_service(req).await.unwrap();
                assert!(resp.into_inner().data.is_some());
            }
        }
    }
}

async fn app() -> u16 {
    serve_app("127.0.0.1", 0).await
}

/// The measured app: `{"ok":true}` to everything, on `ip`:`port` (0: any).
async fn serve_app(ip: &str, port: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{\"ok\":true}"),
                    )))
                });
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

async fn get(client: &HttpClient, uri: &str) {
    let resp = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn sequential(call: &Call, n: usize) -> Vec<f64> {
    for _ in 0..n.min(200) {
        call.once().await;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call.once().await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    lat
}

/// Child processes killed and reaped when dropped.
struct Reaped(Vec<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Requests started every `1/rate` s for `secs`, each on its own task.
async fn fixed_rate(call: &Call, rate: u64, secs: f64) -> Vec<f64> {
    let n = (rate as f64 * secs) as u64;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            call.once().await;
            t.elapsed().as_secs_f64() * 1e6
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    lat
}

async fn throughput(call: &Call, workers: usize, secs: f64) -> f64 {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (call, count) = (call.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                call.once().await;
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One nginx process proxying everything to `upstream`.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &std::path::Path, upstream: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = common::free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; \
             fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;\n\
             upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; \
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new("nginx")
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < end,
                "nginx did not start; see {d}/error.log"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, port }
    }
}

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers. (SIGKILL orphaned them: each
    /// run left nginx workers behind, busy, slowing every later run.)
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Pair<'a> {
    direct: &'a Call,
    invoked: &'a Call,
    iters: usize,
    secs: f64,
}

fn added(label: &str, d: &[f64], i: &[f64]) {
    println!(
        "    {label:<22} direct p50 {:>6.0} p99 {:>6.0} p99.9 {:>6.0} | invoked p50 {:>6.0} p99 {:>6.0} p99.9 {:>6.0} | added p50 {:>+5.0} p99 {:>+5.0} p99.9 {:>+6.0} µs",
        pct(d, 0.5),
        pct(d, 0.99),
        pct(d, 0.999),
        pct(i, 0.5),
        pct(i, 0.99),
        pct(i, 0.999),
        pct(i, 0.5) - pct(d, 0.5),
        pct(i, 0.99) - pct(d, 0.99),
        pct(i, 0.999) - pct(d, 0.999)
    );
}

/// `pids`: the two proxies in the path (caller's side first).
async fn measure(p: &Pair<'_>, pids: [u32; 2]) {
    let (direct, invoked) = (p.direct, p.invoked);
    let d = sequential(direct, p.iters).await;
    let i = sequential(invoked, p.iters).await;
    added(&format!("sequential ({})", p.iters), &d, &i);
    for rate in [100, 1000, 5000] {
        let d = fixed_rate(direct, rate, p.secs).await;
        let i = fixed_rate(invoked, rate, p.secs).await;
        added(&format!("{rate} rps for {} s", p.secs), &d, &i);
    }
    let direct_rps = throughput(direct, 16, p.secs).await;
    let cpu = || cpu_secs(pids[0]) + cpu_secs(pids[1]);
    let cpu_before = cpu();
    let invoked_rps = throughput(invoked, 16, p.secs).await;
    let cores = (cpu() - cpu_before) / p.secs;
    println!(
        "    max throughput, 16 clients: direct {direct_rps:.0} req/s, invoked {invoked_rps:.0} req/s ({:.0} %); both proxies {:.2} cores = {:.3} cores per 1000 rps",
        invoked_rps / direct_rps * 100.0,
        cores,
        cores / (invoked_rps / 1000.0)
    );
    println!(
        "    RSS after the load: caller side {:.1} MiB, callee side {:.1} MiB",
        rss_mib(pids[0]),
        rss_mib(pids[1])
    );
}

/// Inside the namespace: sequential then fixed-rate latencies of `url`,
/// printed as one line per measurement.
async fn netns_load(url: &str, iters: usize, secs: f64) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let call = Call::Http(client, url.to_string());
    let s = sequential(&call, iters).await;
    println!(
        "sequential {} {} {}",
        pct(&s, 0.5),
        pct(&s, 0.99),
        pct(&s, 0.999)
    );
    let r = fixed_rate(&call, 1000, secs).await;
    println!(
        "rate1000 {} {} {}",
        pct(&r, 0.5),
        pct(&r, 0.99),
        pct(&r, 0.999)
    );
}

/// Transparent mode against explicit invocation and direct calls, across
/// two network namespaces joined by a veth pair (needs root, iproute2 and
/// iptables): host A has the calling sidecar (outbound door, rules
/// installed) and the load generator; host B the app (on every address)
/// and its sidecar; static name resolution. Measured from A: the app
/// directly (before the rules go in), explicit invocation, transparent by
/// name (`http://orders/…`) and transparent by B's address.
fn transparent(iters: usize, secs: f64) {
    use common::netns::Netns;
    if Command::new("iptables-restore")
        .arg("--version")
        .output()
        .is_err()
        || !std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        println!("  transparent mode: needs root and iptables; skipped");
        return;
    }
    let (a, b) = Netns::pair("bench", "10.99.0.50 orders\n");
    let home = std::env::temp_dir().join(format!("tandem-tp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: static\n    configuration:\n      apps:\n        orders: [\"10.99.0.2:50002\"]\n        shop: [\"10.99.0.1:50012\"]\n",
    )
    .unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "a+rwx", home.to_str().unwrap()])
        .status();
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let h = format!("TANDEM_HOME={}", home.display());
    let config = config.to_str().unwrap();
    let sidecar = |ns: &Netns, args: &[&str]| {
        let mut all = vec![
            "--reuid=2102",
            "--regid=2102",
            "--clear-groups",
            "env",
            &h,
            common::BIN,
            "sidecar",
            "--log-level",
            "error",
            "--enable-metrics=false",
            "--config",
            config,
        ];
        all.extend_from_slice(args);
        ns.spawn("setpriv", &all)
    };
    // Killed when this function ends, by a panic too: the sidecars must not
    // outlive the namespaces (nor hold the binary busy).
    let _procs = Reaped(vec![
        b.spawn(exe, &["--netns-app", "8081", "0.0.0.0"]),
        sidecar(
            &b,
            &[
                "--app-id",
                "orders",
                "--app-port",
                "8081",
                "--dapr-http-port",
                "3510",
                "--dapr-grpc-port",
                "50011",
                "--dapr-internal-grpc-port",
                "50002",
            ],
        ),
        sidecar(
            &a,
            &[
                "--app-id",
                "shop",
                "--dapr-http-port",
                "3500",
                "--dapr-grpc-port",
                "50001",
                "--dapr-internal-grpc-port",
                "50012",
                "--transparent-outbound-port",
                "15001",
            ],
        ),
    ]);
    let ready = |ns: &Netns, url: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        let code = format!("import urllib.request\nurllib.request.urlopen('{url}', timeout=1)");
        while !ns.run("python3", &["-c", &code]).status.success() {
            assert!(Instant::now() < end, "{url} never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ready(&a, "http://127.0.0.1:3500/v1.0/healthz");
    ready(&b, "http://127.0.0.1:3510/v1.0/healthz");
    ready(&a, "http://10.99.0.2:8081/hello");
    let load = |label: &str, url: &str| -> (Vec<f64>, Vec<f64>) {
        let out = a.run(
            exe,
            &["--netns-load", url, &iters.to_string(), &secs.to_string()],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let nums = |key: &str| -> Vec<f64> {
            text.lines()
                .find(|l| l.starts_with(key))
                .map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let (s, r) = (nums("sequential"), nums("rate1000"));
        assert!(
            s.len() == 3 && r.len() == 3,
            "{label}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "    {label:<22} sequential p50 {:>6.0} p99 {:>6.0} p99.9 {:>6.0} | 1000 rps p50 {:>6.0} p99 {:>6.0} p99.9 {:>6.0}",
            s[0], s[1], s[2], r[0], r[1], r[2]
        );
        (s, r)
    };
    println!("  transparent mode, two hosts in network namespaces (µs, sequential then 1000 rps):");
    // Direct, before the rules would redirect it.
    let mut results = vec![load("direct", "http://10.99.0.2:8081/hello")];
    let out = a.tandem(&[
        "install",
        "--proxy-uid",
        "2102",
        "--outbound-port",
        "15001",
        "--inbound-port",
        "15006",
    ]);
    assert!(out.status.success(), "{}", common::netns::text(&out));
    for (label, url) in [
        (
            "explicit",
            "http://127.0.0.1:3500/v1.0/invoke/orders/method/hello",
        ),
        ("transparent by name", "http://orders/hello"),
        ("transparent by address", "http://10.99.0.2:8081/hello"),
    ] {
        results.push(load(label, url));
    }
    let added = |i: usize| results[i].0[0] - results[0].0[0];
    println!(
        "    added over direct, sequential p50: explicit {:+.0}, by name {:+.0} ({:.0} % of explicit), by address {:+.0} ({:.0} % of by name)",
        added(1),
        added(2),
        added(2) / added(1) * 100.0,
        added(3),
        added(3) / added(2) * 100.0
    );
    let _ = a.tandem(&["remove"]);
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--netns-app") {
        let port: u16 = args[i + 1].parse().unwrap();
        serve_app(&args[i + 2], port).await;
        std::future::pending::<()>().await;
    }
    if let Some(i) = args.iter().position(|a| a == "--netns-load") {
        netns_load(
            &args[i + 1],
            args[i + 2].parse().unwrap(),
            args[i + 3].parse().unwrap(),
        )
        .await;
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("INVOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 5000 } else { 50 });
    let secs = if benching { 3.0 } else { 0.3 };
    // INVOKE_ONLY=transparent: only the network-namespace part.
    if std::env::var("INVOKE_ONLY").is_ok_and(|v| v == "transparent") {
        tokio::task::spawn_blocking(move || transparent(iters, secs))
            .await
            .unwrap();
        return;
    }
    let dir = std::env::temp_dir().join(format!("tandem-invoke-bench-{}", std::process::id()));
    let (home, res) = (dir.join("home"), dir.join("res"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&res).unwrap();
    let home_s = home.display().to_string();
    let env = [("TANDEM_HOME", home_s.as_str())];

    let port = app().await;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let direct = Call::Http(client.clone(), format!("http://127.0.0.1:{port}/hello"));
    println!(
        "Invocation through two sidecars vs the app called directly (HTTP), same run; latencies in µs"
    );
    for (label, flags) in [
        ("plaintext h2", &[][..]),
        ("mTLS 1.3", &["--enable-mtls"][..]),
    ] {
        // Each pair has its own app ids, so they never resolve each other.
        let suffix = if flags.is_empty() { "" } else { "-tls" };
        let callee = format!("orders{suffix}");
        let orders = common::start_with(&callee, &res, Some(port), &env, flags);
        let shop = common::start_with(&format!("shop{suffix}"), &res, None, &env, flags);
        let http = Call::Http(
            client.clone(),
            format!(
                "http://127.0.0.1:{}/v1.0/invoke/{callee}/method/hello",
                shop.http
            ),
        );
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", shop.grpc))
                .unwrap()
                .tcp_nodelay(true)
                .connect()
                .await
                .unwrap();
        let grpc = Call::Grpc(DaprClient::new(channel), callee.clone());
        for (api, invoked) in [("HTTP /v1.0/invoke", &http), ("gRPC InvokeService", &grpc)] {
            println!("  {api}, sidecar to sidecar over {label}:");
            let pair = Pair {
                direct: &direct,
                invoked,
                iters,
                secs,
            };
            measure(&pair, [shop.pid(), orders.pid()]).await;
        }
    }
    // The same two-hop shape through nginx, a mature proxy, as a reference
    // (scripts/services.sh installs nginx-light).
    if std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok()
    {
        let callee = Nginx::start(&dir.join("nginx-b"), port);
        let caller = Nginx::start(&dir.join("nginx-a"), callee.port);
        let through = Call::Http(
            client.clone(),
            format!("http://127.0.0.1:{}/hello", caller.port),
        );
        println!("  reference: two nginx reverse proxies (HTTP/1.1 keepalive upstreams):");
        let pair = Pair {
            direct: &direct,
            invoked: &through,
            iters,
            secs,
        };
        measure(&pair, [caller.child.id(), callee.child.id()]).await;
    } else {
        println!("  reference: nginx is not installed; no reference pair");
    }
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::spawn_blocking(move || transparent(iters, secs))
        .await
        .unwrap();
}
