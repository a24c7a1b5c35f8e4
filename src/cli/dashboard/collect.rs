//! What the dashboard knows: the sidecars it found (the run registry, as
//! `tandem list` reads it; addresses given with `--sidecar`; apps heard on
//! mDNS), read every interval through their existing APIs — metadata,
//! the control API's status, `/metrics` — and the last ten minutes of
//! metric samples, from which rates, success and latency are computed.

use super::prom::{self, Sample};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Metric families read; everything else in `/metrics` is skipped.
const FAMILIES: &[&str] = &[
    "dapr_service_invocation_",
    "dapr_http_server_",
    "dapr_grpc_io_server_",
    "dapr_resiliency_activations_total",
    "tandem_resiliency_circuit_breaker_state",
];
/// How much history is kept per sidecar.
const KEEP: Duration = Duration::from_secs(600);
/// Rates and latencies are over this window.
const WINDOW: f64 = 60.0;
/// Plots: one point per step over the kept history…
const STEP: f64 = 10.0;
/// …and never more points than this.
const POINTS: f64 = 60.0;
/// One call to a sidecar gives up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bodies larger than this are refused (a sidecar is not trusted).
const MAX_BODY: usize = 4 << 20;
/// Samples kept per scrape (ten minutes of history stay bounded whatever
/// a sidecar's metrics hold).
const MAX_SAMPLES: usize = 5_000;
/// Sidecars read at most (mDNS answers from a busy link included).
const MAX_SIDECARS: usize = 256;

pub struct Options {
    pub token: Option<String>,
    /// Dapr HTTP APIs on other hosts (see [`split_address`]).
    pub sidecars: Vec<(String, u16)>,
    pub mdns: bool,
    pub interval: Duration,
}

/// Where one sidecar is and how it was found.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    host: String,
    http_port: u16,
    grpc_port: Option<u16>,
    metrics_port: Option<u16>,
    /// The app id known before reading it (run registry, mDNS).
    app_id: Option<String>,
    source: Source,
}

/// How a sidecar was found.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// The run registry (`tandem list`'s apps).
    Run,
    /// An address the user gave (`--sidecar`).
    Named,
    /// An announcement heard on mDNS.
    Mdns,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Run => "tandem run",
            Source::Named => "--sidecar",
            Source::Mdns => "mDNS",
        }
    }
}

impl Target {
    fn key(&self) -> String {
        format!("{}:{}", self.host, self.http_port)
    }

    /// Whether the API token may be sent to it: sidecars this host runs and
    /// addresses the user named, not whatever answers on mDNS (anyone on
    /// the link can announce themselves there).
    fn trusted(&self) -> bool {
        self.source != Source::Mdns
    }
}

/// Where the workflow pages call a sidecar, with the token it may be sent.
pub struct GrpcTarget {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
}

struct Scrape {
    at: Instant,
    samples: Vec<Sample>,
    /// The dashboard's own calls to the sidecar's HTTP API answered so far
    /// (they are in its request counts, and are taken out again).
    own: f64,
}

struct Sidecar {
    target: Target,
    metadata: Value,
    status: Value,
    /// Why something could not be read (shown as is).
    problems: Vec<String>,
    scrapes: VecDeque<Scrape>,
    own: f64,
}

impl Sidecar {
    /// Found, not read yet.
    fn new(target: Target) -> Self {
        Sidecar {
            target,
            metadata: Value::Null,
            status: Value::Null,
            problems: Vec::new(),
            scrapes: VecDeque::new(),
            own: 0.0,
        }
    }
}

pub struct Collector {
    opts: Options,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    sidecars: Mutex<BTreeMap<String, Sidecar>>,
    mdns: Option<tandem_proxy::mdns::Mdns>,
    started: Instant,
    /// `/api/overview`'s body, made once per round (not per page asking).
    overview: Mutex<Bytes>,
}

/// The answer of one call: status and body, or why there was none.
type Answer = Result<(u16, Bytes), String>;

impl Collector {
    pub fn new(opts: Options) -> Self {
        let mdns = if opts.mdns {
            match tandem_proxy::mdns::Mdns::new() {
                Ok(m) => Some(m),
                Err(e) => {
                    eprintln!("⚠  {e}: sidecars on other hosts are not looked for");
                    None
                }
            }
        } else {
            None
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http();
        Self {
            opts,
            client,
            sidecars: Mutex::default(),
            mdns,
            started: Instant::now(),
            overview: Mutex::new(Bytes::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.opts.interval
    }

    /// Every sidecar there is to read now.
    fn targets(&self) -> Vec<Target> {
        let mut out: Vec<Target> = crate::home::RunRecord::all_live()
            .into_iter()
            .map(|r| Target {
                host: "127.0.0.1".into(),
                http_port: r.http_port,
                grpc_port: Some(r.grpc_port),
                metrics_port: r.metrics_enabled.then_some(r.metrics_port),
                app_id: Some(r.app_id),
                source: Source::Run,
            })
            .collect();
        for (host, port) in &self.opts.sidecars {
            out.push(Target {
                host: host.clone(),
                http_port: *port,
                grpc_port: None,
                metrics_port: None,
                app_id: None,
                source: Source::Named,
            });
        }
        if let Some(m) = &self.mdns {
            for (app, _ns, addr, http) in m.heard_all() {
                let Some(http) = http else { continue };
                let t = Target {
                    host: addr.ip().to_string(),
                    http_port: http,
                    grpc_port: None,
                    metrics_port: None,
                    app_id: Some(app),
                    source: Source::Mdns,
                };
                if !out
                    .iter()
                    .any(|o| o.key() == t.key() || is_local_twin(o, &t))
                {
                    out.push(t);
                }
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|t| seen.insert(t.key()));
        out.truncate(MAX_SIDECARS);
        out
    }

    /// One round: every sidecar read at once; sidecars that went away
    /// forgotten.
    pub async fn tick(&self) {
        self.read_all().await;
        let body = serde_json::to_vec(&self.overview()).unwrap_or_default();
        *self.overview.lock().expect("overview") = Bytes::from(body);
    }

    /// The overview as of the last round (computed now before the first).
    pub fn overview_body(&self) -> Bytes {
        let body = self.overview.lock().expect("overview").clone();
        if body.is_empty() {
            Bytes::from(serde_json::to_vec(&self.overview()).unwrap_or_default())
        } else {
            body
        }
    }

    async fn read_all(&self) {
        let targets = self.targets();
        let reads = targets.iter().map(|t| self.read(t));
        let results = futures_util::future::join_all(reads).await;
        let now = Instant::now();
        let mut all = self.sidecars.lock().expect("sidecars");
        all.retain(|k, _| targets.iter().any(|t| &t.key() == k));
        for (t, (metadata, status, samples, problems, own)) in targets.into_iter().zip(results) {
            let s = all
                .entry(t.key())
                .or_insert_with(|| Sidecar::new(t.clone()));
            s.own += own;
            s.target = t;
            s.problems = problems;
            if !metadata.is_null() {
                s.metadata = metadata;
            }
            if !status.is_null() {
                s.status = status;
            }
            if let Some(samples) = samples {
                s.scrapes.push_back(Scrape {
                    at: now,
                    samples,
                    own: s.own,
                });
            }
            thin(&mut s.scrapes, now);
        }
    }

    /// Metadata, status, metric samples (read after both, so they count
    /// them), problems, and how many of the two calls were answered.
    async fn read(&self, t: &Target) -> (Value, Value, Option<Vec<Sample>>, Vec<String>, f64) {
        let mut problems = Vec::new();
        let token = self.token_for(t);
        let (meta, status) = tokio::join!(
            self.get(&t.host, t.http_port, "/v1.0/metadata", token),
            self.get(&t.host, t.http_port, "/v1.0-alpha1/tandem/status", token)
        );
        let own = [&meta, &status].iter().filter(|a| a.is_ok()).count() as f64;
        let metadata = self.json("metadata API", meta, t.trusted(), &mut problems);
        let status = self.json("control API", status, t.trusted(), &mut problems);
        let metrics_port = t
            .metrics_port
            .or_else(|| status["ports"]["metrics"].as_u64().map(|p| p as u16));
        let samples = match metrics_port {
            Some(port) => match self.get(&t.host, port, "/metrics", None).await {
                Ok((200, body)) => {
                    let mut samples =
                        prom::parse(&String::from_utf8_lossy(&body), FAMILIES, MAX_SAMPLES + 1);
                    if samples.len() > MAX_SAMPLES {
                        problems.push(format!(
                            "metrics: more than {MAX_SAMPLES} samples of the families shown, only the first {MAX_SAMPLES} kept"
                        ));
                        samples.truncate(MAX_SAMPLES);
                    }
                    Some(samples)
                }
                Ok((code, _)) => {
                    problems.push(format!("metrics on port {port}: HTTP {code}"));
                    None
                }
                Err(e) => {
                    problems.push(format!("metrics on port {port}: {e}"));
                    None
                }
            },
            None => {
                if !metadata.is_null() {
                    problems.push(
                        "metrics are off (--enable-metrics=false): no traffic numbers".into(),
                    );
                }
                None
            }
        };
        problems.dedup();
        if t.source == Source::Mdns && metadata.is_null() && status.is_null() {
            problems.push(
                "heard on mDNS but its Dapr API does not answer from here: it may listen on loopback only (start it with --dapr-listen-addresses)".into(),
            );
        }
        (metadata, status, samples, problems, own)
    }

    fn json(&self, what: &str, answer: Answer, trusted: bool, problems: &mut Vec<String>) -> Value {
        match answer {
            Ok((200, body)) => serde_json::from_slice(&body).unwrap_or_else(|e| {
                problems.push(format!("{what}: not JSON ({e})"));
                Value::Null
            }),
            Ok((401, _)) if !trusted => {
                problems.push(
                    "the sidecar needs an API token (401); heard on mDNS, it is not sent one: name it with --sidecar host:port to send the token".into(),
                );
                Value::Null
            }
            Ok((401, _)) => {
                problems.push(if self.opts.token.is_some() {
                    "the sidecar refused the API token given (401): check --api-token / DAPR_API_TOKEN".to_string()
                } else {
                    "the sidecar needs an API token (401): start the dashboard with --api-token or DAPR_API_TOKEN".to_string()
                });
                Value::Null
            }
            Ok((code, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                problems.push(format!("{what}: HTTP {code} {text}"));
                Value::Null
            }
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                Value::Null
            }
        }
    }

    /// GET (or POST), with `token` when given ([`Self::token_for`]).
    async fn call(
        &self,
        method: http::Method,
        host: &str,
        port: u16,
        path: &str,
        token: Option<&str>,
    ) -> Answer {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", authority(host, port)));
        if let Some(t) = token {
            req = req.header("dapr-api-token", t);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let mut s = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(inner) = src {
                    s = format!("{s}: {inner}");
                    src = inner.source();
                }
                format!("does not answer ({s})")
            })?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("answer cut off: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))
    }

    async fn get(&self, host: &str, port: u16, path: &str, token: Option<&str>) -> Answer {
        self.call(http::Method::GET, host, port, path, token).await
    }

    /// Where the sidecar `key` serves gRPC, for the workflow pages.
    pub fn grpc_address(&self, key: &str) -> Option<GrpcTarget> {
        let all = self.sidecars.lock().expect("sidecars");
        let s = all.get(key)?;
        let port = s
            .target
            .grpc_port
            .or_else(|| s.status["ports"]["grpc"].as_u64().map(|p| p as u16))?;
        Some(GrpcTarget {
            host: s.target.host.clone(),
            port,
            token: self.token_for(&s.target).map(String::from),
        })
    }

    /// The API token for `t`: only to sidecars of this host and addresses
    /// the user named (`Target::trusted`).
    fn token_for(&self, t: &Target) -> Option<&str> {
        self.opts.token.as_deref().filter(|_| t.trusted())
    }

    /// Asks the sidecar `key` to read its resources again.
    pub async fn reload(&self, key: &str) -> Result<Value, (u16, String)> {
        let target = {
            let all = self.sidecars.lock().expect("sidecars");
            all.get(key).map(|s| s.target.clone())
        }
        .ok_or((404, format!("no sidecar `{key}` is known")))?;
        match self
            .call(
                http::Method::POST,
                &target.host,
                target.http_port,
                "/v1.0-alpha1/tandem/reload",
                self.token_for(&target),
            )
            .await
        {
            Ok((200, body)) => Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)),
            Ok((code, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let msg = v["message"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                Err((if code == 401 { 502 } else { code }, msg))
            }
            Err(e) => Err((502, e)),
        }
    }

    /// Everything the pages show, computed now.
    fn overview(&self) -> Value {
        let now = Instant::now();
        let all = self.sidecars.lock().expect("sidecars");
        let mtls_of: BTreeMap<String, bool> = all
            .values()
            .filter_map(|s| Some((app_id(s)?, s.status["mtls"].as_bool()?)))
            .collect();
        let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
        let mut sidecars = Vec::new();
        for (key, s) in all.iter() {
            let id = app_id(s).unwrap_or_default();
            let latest = s.scrapes.back();
            let base = latest.and_then(|l| window_start(&s.scrapes, l.at, WINDOW));
            if let (Some(new), Some(old)) = (latest, base) {
                let secs = new.at.duration_since(old.at).as_secs_f64();
                for (to, e) in edges_of(&new.samples, &old.samples, secs) {
                    edges.entry((id.clone(), to)).or_default().add(e);
                }
            }
            sidecars.push(json!({
                "key": key,
                "appId": id,
                "address": key,
                "source": s.target.source.label(),
                "problems": s.problems,
                "readable": !s.metadata.is_null(),
                "metadata": s.metadata,
                "status": s.status,
                "uptimeSecs": s.status["uptimeSecs"],
                "golden": golden(&s.scrapes, now),
                "resilience": resilience(&s.scrapes),
            }));
        }
        // Apps by name (unread ones last), not by the order ports fell in.
        sidecars.sort_by(|a, b| {
            let name = |v: &Value| v["appId"].as_str().unwrap_or("").to_string();
            (name(a).is_empty(), name(a), a["address"].to_string()).cmp(&(
                name(b).is_empty(),
                name(b),
                b["address"].to_string(),
            ))
        });
        let edges: Vec<Value> = edges
            .iter()
            .map(|((from, to), e)| {
                let mtls = mtls_of.get(from).copied().unwrap_or(false)
                    && mtls_of.get(to).copied().unwrap_or(false);
                e.json(from, to, mtls)
            })
            .collect();
        json!({
            "sidecars": sidecars,
            "edges": edges,
            "windowSecs": WINDOW,
            "stepSecs": STEP,
            "intervalSecs": self.opts.interval.as_secs_f64(),
            "collectingSecs": now.duration_since(self.started).as_secs(),
        })
    }
}

/// Drops scrapes older than [`KEEP`], and thins those older than the
/// window to one per [`STEP`]: ten minutes of history are ~80 scrapes a
/// sidecar, whatever the interval.
fn thin(scrapes: &mut VecDeque<Scrape>, now: Instant) {
    let mut last: Option<Instant> = None;
    scrapes.retain(|sc| {
        let age = now.duration_since(sc.at);
        let old = age.as_secs_f64() > WINDOW + STEP;
        let keep = age <= KEEP
            && !(old && last.is_some_and(|l| sc.at.duration_since(l).as_secs_f64() < STEP));
        if keep {
            last = Some(sc.at);
        }
        keep
    });
}

/// `host:port` for a URL, an IPv6 address in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port` (or `[v6]:port`, or a bare port meaning loopback).
pub fn split_address(s: &str) -> Option<(String, u16)> {
    let s = s.trim().trim_start_matches("http://").trim_end_matches('/');
    if let Ok(port) = s.parse::<u16>() {
        return Some(("127.0.0.1".into(), port));
    }
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// An mDNS announcement of a sidecar this host already reads by loopback.
fn is_local_twin(known: &Target, heard: &Target) -> bool {
    known.host == "127.0.0.1"
        && known.http_port == heard.http_port
        && known.app_id == heard.app_id
        && local_ips().contains(&heard.host)
}

fn local_ips() -> Vec<String> {
    // The host's addresses as the kernel routes to them: enough to tell
    // an announcement of our own sidecars.
    let mut v = vec!["127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = text.lines().collect();
        for w in lines.windows(2) {
            if let (true, Some(ip)) = (
                w[1].contains("/32 host LOCAL"),
                w[0].split_whitespace().last(),
            ) {
                v.push(ip.to_string());
            }
        }
    }
    v
}

fn app_id(s: &Sidecar) -> Option<String> {
    s.metadata["id"]
        .as_str()
        .or(s.status["appId"].as_str())
        .map(String::from)
        .or_else(|| s.target.app_id.clone())
}

/// The oldest scrape at most `secs` before `at` (the newest when only one).
fn window_start(scrapes: &VecDeque<Scrape>, at: Instant, secs: f64) -> Option<&Scrape> {
    scrapes
        .iter()
        .find(|s| at.duration_since(s.at).as_secs_f64() <= secs + 0.5)
        .filter(|s| s.at < at)
}

/// Whether a status label value is a failure: 5xx, no answer, or a
/// server-side gRPC code.
fn failed(status: &str) -> bool {
    match status.parse::<u16>() {
        Ok(code) => code >= 500,
        Err(_) => matches!(
            status,
            "error"
                | "UNKNOWN"
                | "INTERNAL"
                | "UNAVAILABLE"
                | "DATA_LOSS"
                | "DEADLINE_EXCEEDED"
                | "UNIMPLEMENTED"
                | "RESOURCE_EXHAUSTED"
        ),
    }
}

/// Counter increase from `old` to `new` of the samples `pick` selects,
/// summed by the key it gives (a reset counts what the new one holds).
fn increase<K: Ord>(
    new: &[Sample],
    old: &[Sample],
    pick: impl Fn(&Sample) -> Option<K>,
) -> BTreeMap<K, f64> {
    let picked: Vec<(K, &Sample)> = new.iter().filter_map(|n| Some((pick(n)?, n))).collect();
    let mut out: BTreeMap<K, f64> = BTreeMap::new();
    if picked.is_empty() {
        return out;
    }
    // The old values of the same series, found by name and labels in one
    // pass (a scrape holds up to MAX_SAMPLES of them).
    let names: BTreeSet<&str> = picked.iter().map(|(_, n)| n.name.as_str()).collect();
    let before: std::collections::HashMap<(&str, &BTreeMap<String, String>), f64> = old
        .iter()
        .filter(|o| names.contains(o.name.as_str()))
        .map(|o| ((o.name.as_str(), &o.labels), o.value))
        .collect();
    for (k, n) in picked {
        let was = before
            .get(&(n.name.as_str(), &n.labels))
            .copied()
            .unwrap_or(0.0);
        let d = if n.value >= was {
            n.value - was
        } else {
            n.value
        };
        *out.entry(k).or_default() += d;
    }
    out
}

/// Histogram bucket increases of `family` over the samples `keep` takes,
/// as cumulative (upper bound, count) pairs.
fn bucket_increase(
    new: &[Sample],
    old: &[Sample],
    family: &str,
    keep: impl Fn(&Sample) -> bool,
) -> Vec<(f64, f64)> {
    let name = format!("{family}_bucket");
    let by_le = increase(new, old, |s| {
        (s.name == name && keep(s)).then(|| s.label("le").to_string())
    });
    let mut v: Vec<(f64, f64)> = by_le
        .into_iter()
        .filter_map(|(le, n)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The calls one sidecar made to one app over the window; replicas of a
/// caller add up ([`Edge::add`]).
#[derive(Default)]
struct Edge {
    rps: f64,
    ok: f64,
    bad: f64,
    /// Cumulative latency bucket increases.
    buckets: Vec<(f64, f64)>,
}

impl Edge {
    fn add(&mut self, other: Edge) {
        self.rps += other.rps;
        self.ok += other.ok;
        self.bad += other.bad;
        merge(&mut self.buckets, &other.buckets);
    }

    fn json(&self, from: &str, to: &str, mtls: bool) -> Value {
        let total = self.ok + self.bad;
        json!({
            "from": from, "to": to, "rps": self.rps, "requests": total,
            "success": (total > 0.0).then(|| self.ok / total),
            "p50": prom::quantile(0.5, &self.buckets),
            "p99": prom::quantile(0.99, &self.buckets),
            "mtls": mtls,
        })
    }
}

/// The calls this sidecar made to each app over the window.
fn edges_of(new: &[Sample], old: &[Sample], secs: f64) -> BTreeMap<String, Edge> {
    let recv = "dapr_service_invocation_res_recv_total";
    let by_dest = increase(new, old, |s| {
        (s.name == recv).then(|| {
            (
                s.label("dest_app_id").to_string(),
                failed(s.label("status")),
            )
        })
    });
    let dests: BTreeSet<&String> = new
        .iter()
        .filter(|s| s.name == recv)
        .filter_map(|s| s.labels.get("dest_app_id"))
        .collect();
    dests
        .into_iter()
        .map(|dest| {
            let ok = by_dest.get(&(dest.clone(), false)).copied().unwrap_or(0.0);
            let bad = by_dest.get(&(dest.clone(), true)).copied().unwrap_or(0.0);
            let buckets = bucket_increase(
                new,
                old,
                "dapr_service_invocation_res_recv_latency_ms",
                |s| s.label("dest_app_id") == dest,
            );
            let edge = Edge {
                rps: if secs > 0.0 { (ok + bad) / secs } else { 0.0 },
                ok,
                bad,
                buckets,
            };
            (dest.clone(), edge)
        })
        .collect()
}

/// Requests/s, success and latency of what a sidecar served (its Dapr
/// HTTP and gRPC APIs, and invocations from other apps) between two
/// scrapes.
/// The dashboard's own reads are taken out of the counts (not out of the
/// latency buckets, where they cannot be told apart).
fn served(new_scrape: &Scrape, old_scrape: &Scrape, secs: f64) -> Value {
    let (new, old) = (&new_scrape.samples[..], &old_scrape.samples[..]);
    let counts = increase(new, old, |s| match s.name.as_str() {
        "dapr_http_server_request_count" => Some(failed(s.label("status"))),
        "dapr_grpc_io_server_completed_rpcs" => Some(failed(s.label("grpc_server_status"))),
        "dapr_service_invocation_res_sent_total" => Some(failed(s.label("status"))),
        _ => None,
    });
    let ok =
        (counts.get(&false).copied().unwrap_or(0.0) - (new_scrape.own - old_scrape.own)).max(0.0);
    let bad = counts.get(&true).copied().unwrap_or(0.0);
    let total = ok + bad;
    let mut buckets = bucket_increase(new, old, "dapr_http_server_latency", |_| true);
    let grpc = bucket_increase(new, old, "dapr_grpc_io_server_server_latency", |_| true);
    merge(&mut buckets, &grpc);
    json!({
        "rps": if secs > 0.0 { total / secs } else { 0.0 },
        "requests": total,
        "success": (total > 0.0).then(|| ok / total),
        "p50": prom::quantile(0.5, &buckets),
        "p99": prom::quantile(0.99, &buckets),
    })
}

/// Adds `other`'s cumulative counts into `into` (same bucket bounds).
fn merge(into: &mut Vec<(f64, f64)>, other: &[(f64, f64)]) {
    if into.is_empty() {
        into.extend_from_slice(other);
        return;
    }
    for (le, n) in other {
        if let Some(slot) = into.iter_mut().find(|(l, _)| l == le) {
            slot.1 += n;
        }
    }
}

/// The sidecar's golden metrics over the window, and a series of them
/// for the plots (one point per [`STEP`]).
fn golden(scrapes: &VecDeque<Scrape>, now: Instant) -> Value {
    let Some(latest) = scrapes.back() else {
        return Value::Null;
    };
    let current = window_start(scrapes, latest.at, WINDOW)
        .map(|old| served(latest, old, latest.at.duration_since(old.at).as_secs_f64()));
    // At most [`POINTS`] points: one per scrape while the history is
    // short, one per [`STEP`] or more once it is long.
    let span = scrapes
        .front()
        .map_or(0.0, |f| latest.at.duration_since(f.at).as_secs_f64());
    let step = (span / POINTS).min(STEP);
    let mut series = Vec::new();
    let mut prev: Option<&Scrape> = None;
    for s in scrapes {
        if let Some(p) = prev {
            let secs = s.at.duration_since(p.at).as_secs_f64();
            if secs < step && !std::ptr::eq(s, latest) {
                continue;
            }
            let mut point = served(s, p, secs);
            point["ago"] = json!(now.duration_since(s.at).as_secs_f64().round());
            series.push(point);
        }
        prev = Some(s);
    }
    json!({ "current": current, "series": series })
}

/// Each breaker's state, the policies' activations over the window, and
/// what changed between scrapes over the kept history (newest first).
fn resilience(scrapes: &VecDeque<Scrape>) -> Value {
    let Some(latest) = scrapes.back() else {
        return Value::Null;
    };
    let breakers: Vec<Value> = latest
        .samples
        .iter()
        .filter(|s| s.name == "tandem_resiliency_circuit_breaker_state")
        .map(|s| {
            json!({
                "target": s.label("target"),
                "direction": s.label("flow_direction"),
                "state": match s.value as i64 { 2 => "open", 1 => "half-open", _ => "closed" },
            })
        })
        .collect();
    let key = |s: &Sample| {
        (s.name == "dapr_resiliency_activations_total").then(|| {
            (
                s.label("target").to_string(),
                s.label("flow_direction").to_string(),
                s.label("policy").to_string(),
                s.label("status").to_string(),
            )
        })
    };
    let window = window_start(scrapes, latest.at, WINDOW)
        .map(|old| increase(&latest.samples, &old.samples, key))
        .unwrap_or_default();
    let totals = increase(&latest.samples, &[], key);
    let activations: Vec<Value> = totals
        .iter()
        .map(|((target, dir, policy, status), total)| {
            json!({
                "target": target, "direction": dir, "policy": policy, "status": status,
                "total": total,
                "lastMinute": window.get(&(target.clone(), dir.clone(), policy.clone(), status.clone())).copied().unwrap_or(0.0),
            })
        })
        .collect();
    // What changed between scrapes, newest first; the same activation in
    // consecutive scrapes is one line (a breaker refusing calls for a
    // minute is one line with its count, not thirty).
    let mut events: Vec<Value> = Vec::new();
    let mut open: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    let pairs: Vec<(&Scrape, &Scrape)> = scrapes.iter().zip(scrapes.iter().skip(1)).collect();
    for (old, new) in pairs.into_iter().rev() {
        let ago = latest.at.duration_since(new.at).as_secs();
        let seen = increase(&new.samples, &old.samples, key);
        open.retain(|k, _| seen.get(k).is_some_and(|n| *n > 0.0));
        for (k, n) in seen.into_iter().filter(|(_, n)| *n > 0.0) {
            if let Some(&i) = open.get(&k) {
                let e = &mut events[i];
                e["count"] = json!(e["count"].as_f64().unwrap_or(0.0) + n);
                e["sinceAgo"] = json!(ago);
            } else if events.len() < 50 {
                let (target, dir, policy, status) = k.clone();
                open.insert(k, events.len());
                events.push(json!({
                    "ago": ago, "sinceAgo": ago,
                    "target": target, "direction": dir, "policy": policy, "status": status, "count": n,
                }));
            }
        }
    }
    json!({ "breakers": breakers, "activations": activations, "events": events })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn an_edge_has_its_rate_success_and_latency_over_the_window() {
        let recv = "dapr_service_invocation_res_recv_total";
        let lat = "dapr_service_invocation_res_recv_latency_ms_bucket";
        let old = vec![
            s(recv, &[("dest_app_id", "b"), ("status", "200")], 10.0),
            s(lat, &[("dest_app_id", "b"), ("le", "1")], 5.0),
            s(lat, &[("dest_app_id", "b"), ("le", "+Inf")], 10.0),
        ];
        let new = vec![
            s(recv, &[("dest_app_id", "b"), ("status", "200")], 100.0),
            s(recv, &[("dest_app_id", "b"), ("status", "500")], 10.0),
            s(lat, &[("dest_app_id", "b"), ("le", "1")], 55.0),
            s(lat, &[("dest_app_id", "b"), ("le", "2")], 105.0),
            s(lat, &[("dest_app_id", "b"), ("le", "+Inf")], 110.0),
        ];
        let e = edges_of(&new, &old, 50.0);
        assert_eq!(e.len(), 1);
        let v = e["b"].json("a", "b", false);
        assert_eq!(v["requests"], 100.0);
        assert_eq!(v["rps"], 2.0);
        assert_eq!(v["success"], 0.9);
        let p50 = v["p50"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= 2.0, "{p50}");
        // A second replica of the caller: the edge adds up.
        let mut sum = edges_of(&new, &old, 50.0).remove("b").unwrap();
        sum.add(edges_of(&new, &old, 50.0).remove("b").unwrap());
        let v = sum.json("a", "b", false);
        assert_eq!(v["requests"], 200.0);
        assert_eq!(v["rps"], 4.0);
        assert_eq!(v["success"], 0.9);
    }

    #[test]
    fn the_dashboard_s_own_reads_are_not_traffic() {
        let count = "dapr_http_server_request_count";
        let at = Instant::now();
        let scrape = |n: f64, own: f64, later: u64| Scrape {
            at: at + Duration::from_secs(later),
            samples: vec![s(count, &[("method", "GET"), ("status", "200")], n)],
            own,
        };
        // 20 GETs in 10 s, 20 of them the dashboard's: nothing served.
        let v = served(&scrape(120.0, 60.0, 10), &scrape(100.0, 40.0, 0), 10.0);
        assert_eq!(v["requests"], 0.0);
        assert_eq!(v["success"], Value::Null);
        // 30 GETs, 20 the dashboard's: 10 served, 1 a second.
        let v = served(&scrape(130.0, 60.0, 10), &scrape(100.0, 40.0, 0), 10.0);
        assert_eq!(v["requests"], 10.0);
        assert_eq!(v["rps"], 1.0);
    }

    #[test]
    fn history_is_thinned_to_one_scrape_per_step_past_the_window() {
        let start = Instant::now();
        let now = start + Duration::from_secs(700);
        let mut scrapes: VecDeque<Scrape> = (0..=350)
            .map(|i| Scrape {
                at: start + Duration::from_secs(i * 2),
                samples: Vec::new(),
                own: 0.0,
            })
            .collect();
        thin(&mut scrapes, now);
        let ages: Vec<u64> = scrapes.iter().map(|s| (now - s.at).as_secs()).collect();
        // Nothing older than ten minutes; every scrape of the last 70 s.
        assert!(ages[0] <= 600, "{ages:?}");
        let recent = ages.iter().filter(|a| **a <= 70).count();
        assert_eq!(recent, 36, "{ages:?}");
        // Older ones 10 s apart.
        let old: Vec<u64> = ages.iter().copied().filter(|a| *a > 70).collect();
        assert!(old.windows(2).all(|w| w[0] - w[1] >= 10), "{old:?}");
        assert!(scrapes.len() < 100, "{}", scrapes.len());
    }

    #[test]
    fn the_token_goes_to_this_host_s_sidecars_and_named_addresses_only() {
        let c = Collector::new(Options {
            token: Some("secret".into()),
            sidecars: Vec::new(),
            mdns: false,
            interval: Duration::from_secs(1),
        });
        let target = |source| Target {
            host: "10.0.0.9".into(),
            http_port: 3500,
            grpc_port: Some(50001),
            metrics_port: None,
            app_id: Some("a".into()),
            source,
        };
        assert_eq!(c.token_for(&target(Source::Run)), Some("secret"));
        assert_eq!(c.token_for(&target(Source::Named)), Some("secret"));
        assert_eq!(c.token_for(&target(Source::Mdns)), None);
        // The workflow pages' gRPC calls follow the same rule.
        for (source, want) in [(Source::Mdns, None), (Source::Named, Some("secret"))] {
            let t = target(source);
            c.sidecars
                .lock()
                .unwrap()
                .insert(t.key(), Sidecar::new(t.clone()));
            let g = c.grpc_address(&t.key()).unwrap();
            assert_eq!(g.token.as_deref(), want, "{source:?}");
        }
    }

    #[test]
    fn failures_are_5xx_no_answer_and_server_side_grpc_codes() {
        for bad in ["500", "503", "error", "UNAVAILABLE", "INTERNAL"] {
            assert!(failed(bad), "{bad}");
        }
        for good in ["200", "204", "404", "OK", "NOT_FOUND", "INVALID_ARGUMENT"] {
            assert!(!failed(good), "{good}");
        }
    }

    #[test]
    fn addresses_take_host_port_v6_and_bare_ports() {
        assert_eq!(
            split_address("10.0.0.2:3500"),
            Some(("10.0.0.2".into(), 3500))
        );
        assert_eq!(split_address("http://h:1/"), Some(("h".into(), 1)));
        assert_eq!(
            split_address("[fe80::1]:3500"),
            Some(("fe80::1".into(), 3500))
        );
        assert_eq!(split_address("3501"), Some(("127.0.0.1".into(), 3501)));
        assert_eq!(split_address(":3500"), None);
        assert_eq!(split_address("host:99999"), None);
        assert_eq!(split_address("host"), None);
    }
}
