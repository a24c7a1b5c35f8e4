//! `tandem dashboard`: a web UI on loopback over every sidecar it finds —
//! apps, the traffic graph, resilience, configuration and reloads, actors
//! and workflows. It reads only the sidecars' existing APIs (metadata,
//! `/metrics`, the control API, the workflow gRPC API); the page is one
//! embedded HTML file, script and stylesheet (no build step, nothing
//! fetched at run time), refreshed from `/api/overview`.

mod collect;
mod prom;
mod workflows;

use anyhow::{Context, Result};
use bytes::Bytes;
use collect::{Collector, Options};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The port the dashboard serves on.
    #[arg(long, short = 'p', default_value_t = 8080)]
    port: u16,
    /// The address it listens on (loopback unless you mean it; `localhost`
    /// as with the Dapr CLI).
    #[arg(long, short = 'a', default_value = "localhost")]
    address: String,
    /// Sent to sidecars that need one (never shown on the page).
    #[arg(long = "api-token", env = "DAPR_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// A sidecar on another host: the `host:port` of its Dapr HTTP API
    /// (repeat it, or give several separated by commas).
    #[arg(
        long = "sidecar",
        value_delimiter = ',',
        env = "TANDEM_DASHBOARD_SIDECARS"
    )]
    sidecars: Vec<String>,
    /// Also read sidecars heard on mDNS (`nameResolution: mdns`); their
    /// Dapr API must listen on an address this host reaches.
    #[arg(long)]
    mdns: bool,
    /// Seconds between two reads of every sidecar.
    #[arg(long, default_value_t = 2)]
    interval: u64,
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

struct Server {
    collector: Collector,
    /// `Host` values the page may be reached by (DNS rebinding defence).
    hosts: Vec<String>,
    any_host: bool,
}

pub async fn main(args: Args) -> Result<u8> {
    let ip: std::net::IpAddr = match args.address.as_str() {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        a => a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("--address {a}: not an IP address (or localhost)"))?,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, args.port))
        .await
        .with_context(|| {
            format!(
                "the dashboard cannot listen on {}:{}",
                args.address, args.port
            )
        })?;
    let port = listener.local_addr()?.port();
    let shown = if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    // Host names the page may be reached by, any port (a DNS rebinding
    // page sends its own name).
    let mut hosts = vec![shown.to_ascii_lowercase(), "localhost".to_string()];
    if ip.is_loopback() {
        hosts.push("127.0.0.1".into());
        hosts.push("[::1]".into());
    }
    if ip.is_unspecified() {
        // Every address: this machine's name too (read once, here).
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        if !name.trim().is_empty() {
            hosts.push(name.trim().to_ascii_lowercase());
        }
    }
    let mut sidecars = Vec::new();
    for s in args.sidecars.iter().filter(|s| !s.trim().is_empty()) {
        sidecars.push(collect::split_address(s).with_context(|| {
            format!("--sidecar {s}: give the Dapr HTTP API's host:port (or a port on this host)")
        })?);
    }
    let server = Arc::new(Server {
        collector: Collector::new(Options {
            token: args.api_token.filter(|t| !t.is_empty()),
            sidecars,
            mdns: args.mdns,
            interval: Duration::from_secs(args.interval.clamp(1, 60)),
        }),
        hosts,
        any_host: ip.is_unspecified(),
    });
    let ticker = server.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ticker.collector.interval());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            ticker.collector.tick().await;
        }
    });
    // The Dapr CLI's line (tools such as the VS Code extension start
    // `dashboard --port 0` and read the address from it).
    let host = if ip.is_unspecified() || ip == std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
    {
        "localhost".to_string()
    } else {
        shown.clone()
    };
    println!("Dapr Dashboard running on http://{host}:{port}");
    if !ip.is_loopback() {
        eprintln!(
            "⚠  listening on {shown}: anyone who reaches it sees every sidecar's metadata and can ask for reloads (it has no login)"
        );
    }
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(0),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    // Nothing but this origin: no CDN, font or tracker can be reached,
    // no script but ours runs, and no other site may frame the page.
    h.insert(
        "content-security-policy",
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "referrer-policy",
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Reply {
    reply(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(status, &serde_json::json!({ "error": message.into() }))
}

/// The name part of a `Host` (or origin) value, lower-cased: `[::1]`,
/// `localhost`, `127.0.0.1`.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    match a.rfind(':') {
        Some(i) if !a[i..].contains(']') => a[..i].to_string(),
        _ => a,
    }
}

/// A query parameter, percent-decoded.
fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Server {
    /// Whether a `Host` names this server: its address, `localhost`,
    /// loopback; listening on every address, any IP literal or this
    /// machine's name (never a DNS name of someone else's, which is what a
    /// rebinding page sends).
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if self.hosts.contains(&name) {
            return true;
        }
        self.any_host
            && name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
    }

    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(host) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                format!("this dashboard answers to {} only", self.hosts.join(", ")),
            );
        }
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => {
                reply(StatusCode::OK, "text/html; charset=utf-8", INDEX)
            }
            (&Method::GET, "/app.js") => {
                reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
            }
            (&Method::GET, "/app.css") => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
            (&Method::GET, "/api/overview") => reply(
                StatusCode::OK,
                "application/json",
                self.collector.overview_body(),
            ),
            (&Method::GET, "/api/workflows") => self.workflows(&req).await,
            (&Method::POST, "/api/reload") => self.reload(&req).await,
            (
                _,
                "/" | "/index.html" | "/app.js" | "/app.css" | "/api/overview" | "/api/workflows"
                | "/api/reload",
            ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => error(StatusCode::NOT_FOUND, format!("no page {path}")),
        }
    }

    /// `?sidecar=<key>` lists its instances; with `&id=<instance>`, that
    /// instance's history.
    async fn workflows(&self, req: &Request<Incoming>) -> Reply {
        let Some(key) = query(req, "sidecar") else {
            return error(
                StatusCode::BAD_REQUEST,
                "name the sidecar: ?sidecar=<host:port>",
            );
        };
        let Some(target) = self.collector.grpc_address(&key) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no sidecar `{key}` is known (or its gRPC port is not)"),
            );
        };
        let (host, port, token) = (&target.host, target.port, target.token.as_deref());
        let result = match query(req, "id") {
            Some(id) if id.is_empty() || id.len() > 1024 => {
                return error(StatusCode::BAD_REQUEST, "an instance id is 1 to 1024 bytes");
            }
            Some(id) => workflows::history(host, port, token, &id).await,
            None => workflows::list(host, port, token).await,
        };
        match result {
            Ok(v) => json_reply(StatusCode::OK, &v),
            Err(e) => error(StatusCode::BAD_GATEWAY, e),
        }
    }

    /// The reload button. A page on another site could make a browser
    /// send a simple POST here; it cannot add a custom header without a
    /// CORS preflight, which this server never grants, and its Origin
    /// would not be ours.
    async fn reload(&self, req: &Request<Incoming>) -> Reply {
        let h = req.headers();
        if h.get("x-tandem-dashboard").is_none() {
            return error(
                StatusCode::FORBIDDEN,
                "reloads are asked from the dashboard page (x-tandem-dashboard header missing)",
            );
        }
        if let Some(origin) = h.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            // Same origin: the page this server sent, at the name the
            // browser used for it (`Host` was checked already).
            let host = h
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ours = origin
                .strip_prefix("http://")
                .is_some_and(|o| o.eq_ignore_ascii_case(host));
            if !ours {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("origin {origin} may not ask for reloads"),
                );
            }
        }
        let Some(key) = query(req, "sidecar") else {
            return error(
                StatusCode::BAD_REQUEST,
                "name the sidecar: ?sidecar=<host:port>",
            );
        };
        match self.collector.reload(&key).await {
            Ok(v) => json_reply(StatusCode::OK, &v),
            Err((code, message)) => error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                message,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_every_address_ip_literals_pass_and_other_names_do_not() {
        let server = super::Server {
            collector: super::Collector::new(super::Options {
                token: None,
                sidecars: Vec::new(),
                mdns: false,
                interval: std::time::Duration::from_secs(1),
            }),
            hosts: vec!["0.0.0.0".into(), "localhost".into()],
            any_host: true,
        };
        for ok in [
            "10.1.2.3:8080",
            "[fe80::1]:8080",
            "localhost:8080",
            "0.0.0.0",
        ] {
            assert!(server.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "", "10.1.2.3.evil.example"] {
            assert!(!server.host_allowed(bad), "{bad}");
        }
        let loopback = super::Server {
            any_host: false,
            hosts: vec!["127.0.0.1".into(), "localhost".into(), "[::1]".into()],
            ..server
        };
        assert!(loopback.host_allowed("127.0.0.1:9"));
        assert!(!loopback.host_allowed("10.1.2.3:8080"));
    }

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(super::host_name("LocalHost:8080"), "localhost");
        assert_eq!(super::host_name("[::1]:8080"), "[::1]");
        assert_eq!(super::host_name("[::1]"), "[::1]");
        assert_eq!(super::host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(super::host_name("evil.example:8080"), "evil.example");
    }

    #[test]
    fn query_values_are_percent_decoded_and_bad_escapes_kept() {
        assert_eq!(super::decode("a%3Ab+c"), "a:b c");
        assert_eq!(super::decode("%zz%4"), "%zz%4");
        assert_eq!(super::decode("%"), "%");
        assert_eq!(super::decode("%e2%82%ac"), "€");
        assert_eq!(super::decode("%ff"), "\u{fffd}");
        assert_eq!(super::decode("%é1"), "%é1");
    }
}
