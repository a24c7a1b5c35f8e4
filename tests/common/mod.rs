//! Helpers shared by the end-to-end tests: start the real `tandem` binary,
//! talk to it over real sockets, write resource files.
#![allow(dead_code)]

pub mod callback;
pub mod event_app;
pub mod nats;
pub mod netns;
pub mod otlp;
pub mod workflow;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tandem");

/// Processes killed (and reaped) when this goes out of scope.
pub struct Killed(pub Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port that is free now, chosen below the kernel's ephemeral range
/// (32768+) so that the many `port 0` binds of parallel tests can never take
/// it before the test uses it.
/// Ports already handed out are never handed out again in this process,
/// even before their user binds them.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    let seed = std::process::id() * 7919;
    for i in 0..12_000u32 {
        let port = 20_000 + ((seed + i * 7) % 12_000) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range")
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "tandem-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects a child's output lines in the background.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<String>>);

impl Output {
    pub fn capture(stream: impl Read + Send + 'static) -> Self {
        let out = Output::default();
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut s = sink.0.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        out
    }
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    /// Waits until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

pub struct Sidecar {
    pub child: Child,
    pub http: u16,
    pub grpc: u16,
    pub metrics: u16,
    pub stderr: Output,
    pub token: Option<String>,
}

pub struct Builder {
    app_id: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    token: Option<String>,
}

pub fn sidecar() -> Builder {
    Builder {
        app_id: "test-app".into(),
        args: Vec::new(),
        env: Vec::new(),
        token: None,
    }
}

impl Builder {
    pub fn app_id(mut self, id: &str) -> Self {
        self.app_id = id.into();
        self
    }
    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.args.push(a.as_ref().to_string());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        for a in args {
            self.args.push(a.as_ref().to_string());
        }
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        if k == "DAPR_API_TOKEN" {
            self.token = Some(v.to_string());
        }
        self.env.push((k.into(), v.into()));
        self
    }

    /// Spawns with port 0 everywhere (no race with other tests for ports);
    /// the ports are read from the sidecar's "serving" log line.
    fn spawn(self) -> Sidecar {
        let mut cmd = Command::new(BIN);
        cmd.arg("sidecar")
            .args(["--app-id", &self.app_id])
            .args([
                "--dapr-http-port",
                "0",
                "--dapr-grpc-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .args(&self.args)
            .env_remove("DAPR_API_TOKEN")
            .env_remove("APP_API_TOKEN")
            .env("TANDEM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("tandem binary starts");
        let stderr = Output::capture(child.stderr.take().unwrap());
        Sidecar {
            child,
            http: 0,
            grpc: 0,
            metrics: 0,
            stderr,
            token: self.token,
        }
    }

    /// Starts and waits for `healthz/outbound`; panics with the sidecar's log
    /// if it exits or never becomes ready.
    pub fn start(self) -> Sidecar {
        let mut s = self.spawn();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("sidecar exited early ({status}):\n{}", s.stderr.text());
            }
            if s.http == 0 {
                let log = s.stderr.text();
                if let Some(line) = log.lines().find(|l| l.contains("dapr APIs are serving")) {
                    s.http = port_in(line, "http_port");
                    s.grpc = port_in(line, "grpc_port");
                    s.metrics = port_in(line, "metrics_port");
                }
            }
            if s.http != 0
                && let Ok(r) = s.try_request("GET", "/v1.0/healthz/outbound", &[], b"")
                && r.status == 204
            {
                return s;
            }
            assert!(
                Instant::now() < end,
                "sidecar not ready:\n{}",
                s.stderr.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a sidecar that is expected to refuse to start; returns its exit
    /// status and log.
    pub fn start_failing(self) -> (ExitStatus, String) {
        let mut s = self.spawn();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, s.stderr.text());
            }
            assert!(
                Instant::now() < end,
                "sidecar should have exited:\n{}",
                s.stderr.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The number after `name` in a text (`name=123`) or JSON (`"name":123`) log line.
pub fn port_in(line: &str, name: &str) -> u16 {
    let rest = &line[line
        .find(name)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {line}"))
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The Dapr `errorCode` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["errorCode"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // The server may answer (413, 401) and close before it reads the whole
    // body; a failed body write is fine as long as the answer can be read.
    let _ = write_body(&mut s, body, chunked);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn write_body(s: &mut TcpStream, body: &[u8], chunked: bool) -> std::io::Result<()> {
    if chunked {
        for chunk in body.chunks(1024) {
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            s.write_all(chunk)?;
            s.write_all(b"\r\n")?;
        }
        s.write_all(b"0\r\n\r\n")?;
    } else {
        s.write_all(body)?;
    }
    Ok(())
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("incomplete response: {raw:?}")))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..pos]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[pos + 2..pos + 2 + size]);
            rest = &rest[pos + 4 + size..];
        }
        body = out;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

impl Sidecar {
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        http(self.http, method, path, headers, body)
    }

    /// A request carrying the API token when the sidecar has one.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        let token = self.token.clone();
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| ("dapr-api-token", t))
            .into_iter()
            .collect();
        self.try_request(method, path, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.stderr.text()))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, b"")
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    pub fn metrics_text(&self) -> String {
        http(self.metrics, "GET", "/metrics", &[], b"")
            .unwrap()
            .text()
    }

    /// Waits for `GET /v1.0/healthz` to answer `status`.
    pub fn wait_healthz(&self, status: u16, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self
                .try_request("GET", "/v1.0/healthz", &[], b"")
                .map(|r| r.status)
                .ok()
                == Some(status)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A component YAML document.
pub fn component(name: &str, type_: &str, metadata: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  version: v1\n  metadata:\n"
    );
    if metadata.is_empty() {
        s = s.replace("  metadata:\n", "  metadata: []\n");
    }
    for (k, v) in metadata {
        s.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    s
}

/// Writes `res/state.yaml` in `home`: a `state.sqlite` actor state store in
/// a file of the home (one every sidecar of the test shares, and a
/// restarted one finds again); returns the `res` folder.
pub fn actor_state_resources(home: &TempDir) -> String {
    let db = home.path().join("actor-state.db");
    home.write(
        "res/state.yaml",
        &component(
            "actorstate",
            "state.sqlite",
            &[
                ("connectionString", db.to_str().unwrap()),
                ("actorStateStore", "true"),
            ],
        ),
    );
    home.path().join("res").display().to_string()
}

/// A server process of the test's own (Redis, NATS, Mosquitto, …), which
/// it can stop and start again on the same port and data directory.
pub struct OwnServer {
    child: Option<Child>,
    start: Box<dyn Fn() -> Child + Send>,
    port: u16,
}

impl OwnServer {
    pub fn new(port: u16, start: impl Fn() -> Child + Send + 'static) -> Self {
        let mut b = Self {
            child: None,
            start: Box::new(start),
            port,
        };
        b.up();
        b
    }

    pub fn up(&mut self) {
        self.child = Some((self.start)());
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "broker on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (a crash) or SIGTERM (a clean stop), then wait for the exit.
    pub fn down(&mut self, signal: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.down("-KILL");
    }
}

/// Starts a program with its output discarded.
pub fn spawn_quiet(cmd: &str, args: &[&str]) -> Child {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} is installed: {e}"))
}

/// A name no earlier run used: topics, groups and keys of one test run.
pub fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Serves `handler` over HTTP/1.1 and h2c on a port of its own (bound as
/// port 0, so nothing can take it first); returns the port.
pub async fn serve_http<F, Fut, B>(handler: F) -> u16
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
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

/// An app that answers `hello <caller>`, the caller being the app id its
/// sidecar was told (`dapr-caller-app-id`).
pub async fn hello_caller_app() -> u16 {
    serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        let caller = req
            .headers()
            .get("dapr-caller-app-id")
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_default();
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
            "hello {caller}"
        ))))
    })
    .await
}

/// `redis-cli` against the machine's Redis; fails the test if it fails.
pub fn redis_cli(args: &[&str]) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}");
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Opens a streaming subscription (`SubscribeTopicEventsAlpha1`) on the
/// sidecar at `endpoint`: the initial request sent, the stream returned
/// with the sender for acknowledgements.
pub async fn open_stream(
    endpoint: String,
    pubsub: &str,
    topic: &str,
) -> (
    tokio::sync::mpsc::Sender<tandem_proto::runtime::v1::SubscribeTopicEventsRequestAlpha1>,
    tonic::Streaming<tandem_proto::runtime::v1::SubscribeTopicEventsResponseAlpha1>,
) {
    use rt::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
    use tandem_proto::runtime::v1 as rt;
    let mut client = rt::dapr_client::DaprClient::connect(endpoint)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(rt::SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(In::InitialRequest(
            rt::SubscribeTopicEventsRequestInitialAlpha1 {
                pubsub_name: pubsub.into(),
                topic: topic.into(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let stream = client
        .subscribe_topic_events_alpha1(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}
