//! Service invocation, the explicit door: a request for app `X` is resolved
//! to a peer sidecar (`crate::resolve`) and sent over pooled, multiplexed
//! HTTP/2 to the peer's internal port; the peer (`serve_inbound`) checks
//! that it hosts `X` and hands the request to its app over the app channel.
//! A call to this sidecar's own app id goes straight to the app channel.
//! Response bodies are streamed through, never buffered.
//!
//! The internal leg is plaintext h2 for now (Dapr's self-hosted default
//! without `--enable-mtls`); the caller's app id travels in a header and is
//! claimed, not proven, until mTLS identities exist.

use crate::app_channel::{AppChannel, AppChannelError};
use crate::resolve::Resolver;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body passed through from wherever it comes.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers of the internal leg; never shown to apps.
pub const CALLEE: &str = "tandem-callee-app-id";
/// Marks a proxied gRPC call: the peer streams it to its app's gRPC port
/// as it is, instead of treating it as an invocation.
pub const GRPC_PROXY: &str = "tandem-grpc-proxy";
pub const CALLER: &str = "tandem-caller-app-id";
/// On an answer of a gRPC app to an invocation (`OnInvoke`): its gRPC
/// status code, which the HTTP status only approximates. Read by the
/// caller's sidecar (retry matching, `InvokeService` errors), never shown
/// to apps.
pub const GRPC_STATUS: &str = "tandem-grpc-status";
pub const CALLER_NAMESPACE: &str = "tandem-caller-namespace";
/// The protobuf type of an invocation's data (`google.protobuf.Any`'s
/// `type_url`), on a request from an `InvokeService` caller and on a gRPC
/// app's answer, so the `Any` arrives whole at the far end. HTTP apps and
/// callers see `Content-Type: application/x-protobuf` instead, as from daprd.
pub const DATA_TYPE_URL: &str = "tandem-data-type-url";
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
/// On a request by address to a mesh app's host (transparent mode): where
/// on its host the peer sidecar delivers it, and in which HTTP version the
/// client spoke (`h1 10.0.0.2:8090`, `h2 …`). Access control judges it as
/// a tunnel to that port (`/tcp/<port>`, `CONNECT`).
pub const FORWARD_TO: &str = "tandem-forward-to";

/// Removes every internal header (`tandem-…`): they come from sidecars,
/// never from an app or a client.
pub fn strip_internal(h: &mut HeaderMap) {
    let internal: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("tandem-"))
        .cloned()
        .collect();
    for k in internal {
        h.remove(k);
    }
}

/// The value of `FORWARD_TO` for a request to `to` in `version`.
pub fn forward_to_value(to: std::net::SocketAddr, version: http::Version) -> HeaderValue {
    let v = if version == http::Version::HTTP_2 {
        "h2"
    } else {
        "h1"
    };
    header_value(&format!("{v} {to}"))
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    boxed(Full::new(bytes.into()))
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("couldn't find service: {0}")]
    NotFound(String),
    #[error("failed to resolve address for '{app}': {reason}")]
    Resolve { app: String, reason: String },
    /// Nothing was sent: the peer could not be reached.
    #[error("cannot reach the sidecar of {app} at {address}: {reason}")]
    PeerUnreachable {
        app: String,
        address: String,
        reason: String,
    },
    /// The request was (perhaps partly) sent, then the exchange failed: the
    /// app may have acted on it.
    #[error("the call to the sidecar of {app} at {address} failed: {reason}")]
    PeerFailed {
        app: String,
        address: String,
        reason: String,
    },
    #[error(transparent)]
    App(#[from] AppChannelError),
    #[error("there is no app channel (no --app-port)")]
    NoApp,
    #[error("service invocation is not ready")]
    NotReady,
    #[error("cannot call {base}: {reason}")]
    External { base: String, reason: String },
    #[error(
        "app {0} does not speak gRPC (--app-protocol grpc): a gRPC call cannot be proxied to it"
    )]
    NotGrpc(String),
    /// The peer sidecar would not open a tunnel to its host.
    #[error("the sidecar of {app} refused a tunnel to {to}: {reason}")]
    Tunnel {
        app: String,
        to: String,
        reason: String,
    },
}

/// Methods whose repetition has the effect of one request (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

impl InvokeError {
    /// Whether the target may have received (and acted on) the request:
    /// such a request is not sent again unless it is idempotent.
    pub fn may_have_reached_target(&self) -> bool {
        matches!(
            self,
            InvokeError::PeerFailed { .. }
                | InvokeError::External { .. }
                | InvokeError::App(AppChannelError::Interrupted { .. })
        )
    }
}

/// Connection-level headers that must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Removes the connection-level headers, except `te: trailers`: it says
/// the client takes trailers, which travel through us, and gRPC servers
/// insist on it (it is the one TE an HTTP/2 request may carry).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// An HTTP/2 client whose request bodies stream (gRPC proxying).
type StreamClient = Client<HttpConnector, ProxyBody>;

/// A pooled, multiplexed HTTP/2 client for the internal leg.
fn h2_client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Sends a gRPC call, body streaming both ways, to `authority` (an app's
/// gRPC port or a peer's internal port).
async fn stream_to(
    client: &StreamClient,
    authority: &str,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, String> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = format!("http://{authority}{path}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    parts.version = http::Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::TE, HeaderValue::from_static("trailers"));
    let resp = client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| crate::app_channel::error_chain(&e))?;
    Ok(resp.map(boxed))
}

/// Connections to peer sidecars: one multiplexed HTTP/2 connection per
/// peer, over mTLS when this sidecar has an identity (the peer's
/// certificate must name the app being called), plaintext otherwise.
struct PeerPool {
    tls: Option<tokio_rustls::TlsConnector>,
    metrics: Option<Arc<crate::telemetry::Metrics>>,
    /// One slot per peer: callers of a peer with no connection wait on its
    /// slot while one of them connects, instead of racing to open several.
    conns: std::sync::Mutex<std::collections::HashMap<(String, std::net::SocketAddr), PeerSlot>>,
    /// When idle connections were last looked for (ms since the epoch).
    last_sweep: std::sync::atomic::AtomicU64,
}

/// A peer's connection and when it was last used (ms since the epoch).
#[derive(Default)]
struct PeerEntry {
    conn: tokio::sync::Mutex<Option<SendRequest>>,
    last_used: std::sync::atomic::AtomicU64,
}

type PeerSlot = Arc<PeerEntry>;

/// A peer connection unused this long is closed (its peer may have gone
/// for good: a scaled-down instance, a reshuffled address).
pub const PEER_IDLE: Duration = Duration::from_secs(300);

/// Drops the peer connections unused for `PEER_IDLE` (one in use — its slot
/// locked — stays).
fn sweep_idle<K: std::hash::Hash + Eq>(
    conns: &mut std::collections::HashMap<K, PeerSlot>,
    now: u64,
) {
    let idle = PEER_IDLE.as_millis() as u64;
    conns.retain(|_, e| {
        now.saturating_sub(e.last_used.load(std::sync::atomic::Ordering::Relaxed)) < idle
            || e.conn.try_lock().is_err()
    });
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How long one address of a peer may take to connect before the next is
/// tried beside it (RFC 8305 recommends 250 ms).
pub const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);
/// Addresses tried for one call before it fails as unreachable.
pub const MAX_ADDRESSES_TRIED: usize = 4;

/// How long an address that could not be connected to is tried after the
/// others (while the rest answer, calls do not wait on it).
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// Peer addresses whose last connection attempt failed, and when.
#[derive(Default)]
struct Unreachable {
    since: std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, std::time::Instant>>,
    /// Whether `since` may hold anything (the common case, nothing, costs
    /// no lock).
    any: std::sync::atomic::AtomicBool,
}

impl Unreachable {
    fn note(&self, a: std::net::SocketAddr) {
        let mut since = self.since.lock().expect("unreachable");
        since.insert(a, std::time::Instant::now());
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn forget(&self, a: std::net::SocketAddr) {
        if self.any.load(std::sync::atomic::Ordering::Relaxed) {
            let mut since = self.since.lock().expect("unreachable");
            since.remove(&a);
            self.any
                .store(!since.is_empty(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Moves the addresses that failed within `UNREACHABLE_FOR` to the end
    /// of `order` (kept in their order), so they are tried last.
    fn demote(&self, order: &mut [std::net::SocketAddr]) {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut since = self.since.lock().expect("unreachable");
        since.retain(|_, t| t.elapsed() < UNREACHABLE_FOR);
        self.any
            .store(!since.is_empty(), std::sync::atomic::Ordering::Relaxed);
        order.sort_by_key(|a| since.contains_key(a));
    }
}

/// The order addresses are tried in: `first` (the balancer's pick), then
/// the rest alternating between address families, starting with the family
/// `first` is not of (RFC 8305 §4), each family in the resolver's order.
fn happy_order(addrs: &[std::net::SocketAddr], first: usize) -> Vec<std::net::SocketAddr> {
    let head = addrs[first];
    let (mut same, mut other): (Vec<_>, Vec<_>) = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, a)| *a)
        .partition(|a| a.is_ipv4() == head.is_ipv4());
    same.reverse();
    other.reverse();
    let mut out = vec![head];
    loop {
        match (other.pop(), same.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Bounds on the mesh's own connections (both sides): a peer that accepts
/// and then says nothing cannot hold a caller, or a listener, for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings between sidecars: a peer that died silently is noticed
/// without waiting for the next request's timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

type SendRequest = hyper::client::conn::http2::SendRequest<ProxyBody>;

enum SendFailure {
    /// Nothing went out; the request is handed back.
    NotSent(Box<Request<ProxyBody>>, String),
    /// It went out, at least in part.
    Failed(String),
}

impl PeerPool {
    /// A ready connection to `peer` (the pooled one, or a new one). Nothing
    /// has been sent when this fails, so the caller may try elsewhere.
    async fn sender(&self, peer: &Peer) -> Result<SendRequest, String> {
        let key = (
            crate::identity::dns_name(&peer.app_id, &peer.namespace),
            peer.address,
        );
        let now = epoch_ms();
        let slot = {
            let mut conns = self.conns.lock().expect("peer pool lock");
            // Now and then (once a minute at most), drop connections nobody
            // used for `PEER_IDLE`; one in use (its slot locked) stays.
            let last = self.last_sweep.load(std::sync::atomic::Ordering::Relaxed);
            if now.saturating_sub(last) > 60_000 {
                self.last_sweep
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                sweep_idle(&mut conns, now);
            }
            conns.entry(key).or_default().clone()
        };
        slot.last_used
            .store(now, std::sync::atomic::Ordering::Relaxed);
        let mut guard = slot.conn.lock().await;
        let mut sender = match guard.as_ref().filter(|s| !s.is_closed()) {
            Some(s) => s.clone(),
            None => {
                let s = self.connect(peer).await?;
                *guard = Some(s.clone());
                s
            }
        };
        drop(guard);
        sender.ready().await.map_err(|e| e.to_string())?;
        Ok(sender)
    }

    /// Sends `req` on `sender`. When it fails before anything was sent,
    /// the request comes back so it can go elsewhere.
    async fn send(
        &self,
        mut sender: SendRequest,
        peer: &Peer,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendFailure> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match format!("{scheme}://{}{path}", peer.address).parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Err(SendFailure::Failed(format!("{e}"))),
        }
        *req.version_mut() = http::Version::HTTP_2;
        sender.try_send_request(req).await.map_err(|mut e| {
            let reason = crate::app_channel::error_chain(e.error());
            match e.take_message() {
                Some(req) => SendFailure::NotSent(Box::new(req), reason),
                None => SendFailure::Failed(reason),
            }
        })
    }

    async fn connect(&self, peer: &Peer) -> Result<SendRequest, String> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(peer.address),
        )
        .await
        .map_err(|_| "connect timed out after 5s".to_string())?
        .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let timed_out =
            || format!("the peer did not finish the handshake within {HANDSHAKE_TIMEOUT:?}");
        let sender = match &self.tls {
            Some(tls) => {
                let name = crate::identity::server_name(&peer.app_id, &peer.namespace)?;
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())?;
                if let Some(m) = &self.metrics {
                    m.tls_handshake("client", stream.is_ok());
                }
                let stream = stream.map_err(|e| format!("mTLS handshake: {e}"))?;
                let (sender, conn) = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    builder.handshake(TokioIo::new(stream)),
                )
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let (sender, conn) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.handshake(TokioIo::new(tcp)))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }
}

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// TLS to a service outside the mesh (an HTTPEndpoint's `clientTLS`), as
/// PEM text. The default trusts the system's roots and presents nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutsideTls {
    /// Trusted besides the system's roots.
    pub root_ca: Option<String>,
    /// A client certificate (chain) and its key, for services that ask.
    pub certificate: Option<String>,
    pub private_key: Option<String>,
}

impl OutsideTls {
    /// A pooled HTTP/1 and HTTP/2 client that verifies servers against the
    /// system's roots and `root_ca`; `https_only` refuses `http://` URLs,
    /// else both schemes work (bindings, which take any URL).
    pub fn client(&self, https_only: bool) -> Result<HttpsClient, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(self.client_config()?);
        let connector = if https_only {
            builder.https_only()
        } else {
            builder.https_or_http()
        }
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector))
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        static SYSTEM: std::sync::OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> =
            std::sync::OnceLock::new();
        let system = SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs);
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(system.iter().cloned());
        if let Some(pem) = &self.root_ca {
            for c in crate::identity::certs_from_pem(pem.as_bytes())
                .map_err(|e| format!("clientTLS rootCA: {e}"))?
            {
                roots.add(c).map_err(|e| format!("clientTLS rootCA: {e}"))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        match (&self.certificate, &self.private_key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
                let chain = crate::identity::certs_from_pem(cert.as_bytes())
                    .map_err(|e| format!("clientTLS certificate: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| format!("clientTLS privateKey: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("clientTLS certificate and privateKey: {e}"))
            }
            _ => Err("clientTLS needs both certificate and privateKey, or neither".into()),
        }
    }
}

/// A peer sidecar: the app it serves (the name its certificate must
/// prove) and where it listens.
#[derive(Clone, Debug)]
struct Peer {
    app_id: String,
    namespace: String,
    address: std::net::SocketAddr,
}

pub struct Invoker {
    peers: PeerPool,
    balancer: crate::balance::Balancer,
    /// HTTP/1 and HTTP/2 to services outside the mesh (full URLs,
    /// HTTPEndpoints).
    outside: Client<HttpConnector, ProxyBody>,
    /// HTTPS to services outside the mesh, one pool per TLS configuration.
    outside_tls: std::sync::Mutex<std::collections::HashMap<OutsideTls, HttpsClient>>,
    streams: StreamClient,
    /// Peer addresses that could not be connected to lately.
    unreachable: Unreachable,
    /// Name resolution as it is now (a reload may swap it).
    resolver: arc_swap::ArcSwap<Resolver>,
    app_id: String,
    namespace: String,
}

impl Invoker {
    /// `tls`: the client side of this sidecar's mTLS identity, if it has
    /// one (`--enable-mtls`).
    pub fn new(
        resolver: Arc<Resolver>,
        app_id: String,
        namespace: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        Self {
            peers: PeerPool {
                tls: tls.map(tokio_rustls::TlsConnector::from),
                metrics: None,
                conns: Default::default(),
                last_sweep: Default::default(),
            },
            streams: h2_client(),
            balancer: Default::default(),
            outside: {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(5)));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(connector)
            },
            outside_tls: Default::default(),
            unreachable: Default::default(),
            resolver: arc_swap::ArcSwap::new(resolver),
            app_id,
            namespace,
        }
    }

    /// Replaces name resolution (a reload changed `nameResolution`).
    pub fn set_resolver(&self, resolver: Arc<Resolver>) {
        self.resolver.store(resolver);
    }

    pub fn resolver(&self) -> Arc<Resolver> {
        self.resolver.load_full()
    }

    /// Counts this invoker's mTLS handshakes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        self.peers.metrics = Some(metrics);
        self
    }

    /// Sends `req` (path relative to the service) to a service outside the
    /// mesh at `base` (`http://host:port[/prefix]`).
    pub async fn external(
        &self,
        base: &str,
        mut req: Request<ProxyBody>,
        tls: Option<&OutsideTls>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        let https = if base.starts_with("https://") {
            Some(
                self.https_client(tls.cloned().unwrap_or_default())
                    .map_err(|reason| InvokeError::External {
                        base: base.into(),
                        reason,
                    })?,
            )
        } else {
            None
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri: Uri = format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e: http::uri::InvalidUri| InvokeError::External {
                base: base.into(),
                reason: e.to_string(),
            })?;
        *req.uri_mut() = uri;
        strip_hop_by_hop(req.headers_mut());
        let sent = match https {
            Some(client) => client.request(req).await,
            // HTTP/2 with prior knowledge (a gRPC client, say) stays HTTP/2.
            None if req.version() == http::Version::HTTP_2 => self.streams.request(req).await,
            None => self.outside.request(req).await,
        };
        let mut resp = sent.map_err(|e| InvokeError::External {
            base: base.into(),
            reason: crate::app_channel::error_chain(&e),
        })?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(boxed))
    }

    /// The pooled HTTPS client for one TLS configuration (made on first use).
    fn https_client(&self, tls: OutsideTls) -> Result<HttpsClient, String> {
        let mut clients = self.outside_tls.lock().expect("https clients");
        if let Some(c) = clients.get(&tls) {
            return Ok(c.clone());
        }
        let client = tls.client(true)?;
        clients.insert(tls, client.clone());
        Ok(client)
    }

    /// A peer of `target` and a ready connection to it. Nothing is sent
    /// until a connection is ready, so when the chosen address cannot be
    /// reached the others are tried in turn (happy eyeballs, RFC 8305: the
    /// next address starts when one fails or after `NEXT_ADDRESS_AFTER`
    /// without an answer; the first connection made wins). An instance
    /// heard with an IPv4 and an IPv6 address (mDNS) is reached on either,
    /// and one dead address is not a failure of the app for its breaker.
    /// When every address failed, the resolver is asked afresh and the
    /// addresses it did not give before are tried too.
    async fn reach(
        &self,
        target: &str,
        h: &mut HeaderMap,
    ) -> Result<(Peer, SendRequest), InvokeError> {
        use futures_util::StreamExt;
        let (app, namespace) = self.split(target);
        let mut tried: Vec<std::net::SocketAddr> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for round in 0..2 {
            let addrs = self.addresses(target, h).await?;
            let first = self.balancer.pick(&addrs);
            let mut order: Vec<_> = happy_order(&addrs, first)
                .into_iter()
                .filter(|a| !tried.contains(a))
                .collect();
            self.unreachable.demote(&mut order);
            order.truncate(MAX_ADDRESSES_TRIED);
            if order.is_empty() {
                break;
            }
            let mut pending = order.iter().copied();
            let mut attempts = futures_util::stream::FuturesUnordered::new();
            let attempt = |address| {
                let peer = Peer {
                    app_id: app.to_string(),
                    namespace: namespace.to_string(),
                    address,
                };
                async move {
                    let got = self.peers.sender(&peer).await;
                    (peer, got)
                }
            };
            if let Some(a) = pending.next() {
                tried.push(a);
                attempts.push(attempt(a));
            }
            let next_after = tokio::time::sleep(NEXT_ADDRESS_AFTER);
            tokio::pin!(next_after);
            let mut more = order.len() > 1;
            loop {
                tokio::select! {
                    done = attempts.next() => match done {
                        Some((peer, Ok(sender))) => {
                            self.unreachable.forget(peer.address);
                            return Ok((peer, sender));
                        }
                        Some((peer, Err(reason))) => {
                            self.unreachable.note(peer.address);
                            tracing::debug!(peer = %peer.address, error = %reason, "cannot reach this address of the peer");
                            failures.push(format!("{}: {reason}", peer.address));
                            if let Some(a) = pending.next() {
                                tried.push(a);
                                attempts.push(attempt(a));
                                next_after.as_mut().reset(tokio::time::Instant::now() + NEXT_ADDRESS_AFTER);
                            } else if attempts.is_empty() {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = &mut next_after, if more => match pending.next() {
                        Some(a) => {
                            tried.push(a);
                            attempts.push(attempt(a));
                            next_after.as_mut().reset(tokio::time::Instant::now() + NEXT_ADDRESS_AFTER);
                        }
                        None => more = false,
                    },
                }
            }
            if round == 0 {
                // Perhaps a stale answer (a peer that moved): ask again.
                self.resolver.load().forget(app, namespace);
            }
        }
        let address = tried.first().map(|a| a.to_string()).unwrap_or_default();
        Err(InvokeError::PeerUnreachable {
            app: target.into(),
            address,
            reason: match failures.len() {
                0 | 1 => failures
                    .pop()
                    .and_then(|f| f.split_once(": ").map(|(_, r)| r.to_string()))
                    .unwrap_or_default(),
                _ => format!("no address answered ({})", failures.join("; ")),
            },
        })
    }

    /// The app (`id`, or `id.namespace` outside this sidecar's namespace)
    /// whose sidecar lives at `ip`, as name resolution knows it.
    pub async fn owner(&self, ip: std::net::IpAddr) -> Option<String> {
        let (id, ns) = self.resolver.load_full().owner(ip).await?;
        Some(if ns.is_empty() || ns == self.namespace {
            id
        } else {
            format!("{id}.{ns}")
        })
    }

    /// A byte stream to `to` (an address on app `target`'s host) through
    /// `target`'s sidecar: an HTTP/2 CONNECT on the (mTLS) connection to
    /// that sidecar, which checks who asks and connects on its host.
    pub async fn tunnel(
        &self,
        target: &str,
        to: std::net::SocketAddr,
    ) -> Result<hyper::upgrade::Upgraded, InvokeError> {
        let mut headers = HeaderMap::new();
        let (peer, mut sender) = self.reach(target, &mut headers).await?;
        let failed = |reason: String| InvokeError::PeerFailed {
            app: target.into(),
            address: peer.address.to_string(),
            reason,
        };
        let mut req = Request::new(full(Bytes::new()));
        *req.method_mut() = http::Method::CONNECT;
        *req.uri_mut() = to
            .to_string()
            .parse()
            .map_err(|e: http::uri::InvalidUri| failed(e.to_string()))?;
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = headers;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| failed(crate::app_channel::error_chain(&e)))?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            let why = body
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| status.to_string());
            return Err(InvokeError::Tunnel {
                app: target.into(),
                to: to.to_string(),
                reason: why,
            });
        }
        hyper::upgrade::on(resp)
            .await
            .map_err(|e| failed(e.to_string()))
    }

    /// Whether `target` (`id` or `id.namespace`) is an app the resolver
    /// can find.
    pub async fn knows(&self, target: &str) -> bool {
        let (app, ns) = self.split(target);
        self.resolver
            .load_full()
            .resolve(app, ns)
            .await
            .is_ok_and(|found| !found.is_empty())
    }

    fn split<'t>(&'t self, target: &'t str) -> (&'t str, &'t str) {
        match target.split_once('.') {
            Some((a, ns)) => (a, ns),
            None => (target, self.namespace.as_str()),
        }
    }

    /// The addresses of `target`'s (`id` or `id.namespace`) sidecars, and
    /// the internal headers that tell the peer who calls whom.
    async fn addresses(
        &self,
        target: &str,
        h: &mut HeaderMap,
    ) -> Result<Vec<std::net::SocketAddr>, InvokeError> {
        let (app, namespace) = self.split(target);
        let addrs = self
            .resolver
            .load_full()
            .resolve(app, namespace)
            .await
            .map_err(|reason| InvokeError::Resolve {
                app: target.to_string(),
                reason,
            })?;
        if addrs.is_empty() {
            return Err(InvokeError::NotFound(target.to_string()));
        }
        h.insert(CALLEE, header_value(app));
        h.insert(CALLER, header_value(&self.app_id));
        if !self.namespace.is_empty() {
            h.insert(CALLER_NAMESPACE, header_value(&self.namespace));
        }
        Ok(addrs)
    }

    /// Proxies a gRPC call (any service, streaming included) to app
    /// `target`'s gRPC server through its sidecar.
    pub async fn grpc_remote(
        &self,
        target: &str,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        let (peer, sender) = self.reach(target, req.headers_mut()).await?;
        req.headers_mut()
            .insert(GRPC_PROXY, HeaderValue::from_static("1"));
        strip_hop_by_hop(req.headers_mut());
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
        let in_flight = self.balancer.start(peer.address);
        let resp = self
            .peers
            .send(sender, &peer, req)
            .await
            .map_err(|f| match f {
                SendFailure::NotSent(_, reason) => InvokeError::PeerUnreachable {
                    app: target.into(),
                    address: peer.address.to_string(),
                    reason,
                },
                SendFailure::Failed(reason) => InvokeError::PeerFailed {
                    app: target.into(),
                    address: peer.address.to_string(),
                    reason,
                },
            })?;
        in_flight.done();
        Ok(resp.map(boxed))
    }

    /// Proxies a gRPC call to this sidecar's own app, which must speak gRPC.
    pub async fn grpc_local(
        &self,
        app: &AppChannel,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        if app.grpc_channel().is_none() {
            return Err(InvokeError::NotGrpc(self.app_id.clone()));
        }
        let h = req.headers_mut();
        h.remove("dapr-api-token");
        if let Some(token) = &app.config().api_token {
            h.insert("dapr-api-token", header_value(token));
        }
        let authority = format!("{}:{}", app.config().address, app.config().port);
        stream_to(&self.streams, &authority, req)
            .await
            .map_err(|reason| {
                InvokeError::App(AppChannelError::Unreachable {
                    address: authority.clone(),
                    reason,
                })
            })
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Sends `req` (path relative to the target app) to app `target`
    /// (`id` or `id.namespace`) through its sidecar, its body streamed.
    /// When the connection fails before the request went out (a peer that
    /// just died, say), the resolver is asked again and the request goes
    /// once more, as Dapr does for an unavailable peer; once it went out,
    /// the failure is the caller's to judge (`PeerFailed`).
    pub async fn remote(
        &self,
        target: &str,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, InvokeError> {
        strip_hop_by_hop(req.headers_mut());
        // An idempotent request without a body can be rebuilt and sent again
        // even after it went out on a connection that turned out dead (a
        // peer killed since the last call).
        let rebuild = (is_idempotent(req.method())
            && http_body::Body::size_hint(req.body()).exact() == Some(0))
        .then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
        let mut tried_again = false;
        loop {
            let (peer, sender) = self.reach(target, req.headers_mut()).await?;
            let in_flight = self.balancer.start(peer.address);
            let failed = |reason| InvokeError::PeerFailed {
                app: target.into(),
                address: peer.address.to_string(),
                reason,
            };
            match self.peers.send(sender, &peer, req).await {
                Ok(resp) => {
                    in_flight.done();
                    return Ok(resp.map(boxed));
                }
                Err(SendFailure::NotSent(back, reason)) if !tried_again => {
                    tracing::debug!(peer = %peer.address, error = %reason, "peer connection failed before sending; resolving again");
                    let (app, ns) = self.split(target);
                    self.resolver.load().forget(app, ns);
                    tried_again = true;
                    req = *back;
                }
                Err(SendFailure::NotSent(_, reason)) => {
                    return Err(InvokeError::PeerUnreachable {
                        app: target.into(),
                        address: peer.address.to_string(),
                        reason,
                    });
                }
                Err(SendFailure::Failed(reason)) => match &rebuild {
                    Some((method, uri, headers)) if !tried_again => {
                        tracing::debug!(peer = %peer.address, error = %reason, "peer connection failed; resolving again");
                        let (app, ns) = self.split(target);
                        self.resolver.load().forget(app, ns);
                        tried_again = true;
                        req = Request::new(full(Bytes::new()));
                        *req.method_mut() = method.clone();
                        *req.uri_mut() = uri.clone();
                        *req.headers_mut() = headers.clone();
                    }
                    _ => return Err(failed(reason)),
                },
            }
        }
    }
}

/// `body` cut off after `max` bytes, and a flag that says it was: a
/// request body is streamed, so its size is known only once it is read.
pub fn limited<B>(body: B, max: u64) -> (ProxyBody, Arc<std::sync::atomic::AtomicBool>)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = flag.clone();
    let body = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).map_err(move |e| {
        if e.is::<http_body_util::LengthLimitError>() {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    });
    (boxed(body), flag)
}

fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Serves the internal port: requests from peer sidecars for this app.
/// `tls`: the server side of this sidecar's mTLS identity. With it, every
/// peer must present a certificate from the trust bundle, and the caller's
/// app id is the one its certificate proves, not the one it claims.
pub struct Inbound {
    pub invoker: Arc<Invoker>,
    pub app: Option<Arc<AppChannel>>,
    /// `--max-body-size` for requests from peers.
    pub max_body: u64,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Access control as it is now (a reload swaps it).
    pub access: Arc<arc_swap::ArcSwapOption<crate::access::AccessPolicy>>,
    /// The tracer as it is now (a reload swaps it).
    pub tracer: Arc<arc_swap::ArcSwap<crate::trace::Tracer>>,
    pub metrics: Arc<crate::telemetry::Metrics>,
}

pub async fn serve_inbound(
    listener: TcpListener,
    config: Inbound,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Inbound {
        invoker,
        app,
        max_body,
        tls,
        access,
        tracer,
        metrics,
    } = config;
    let app_id = invoker.app_id.clone();
    let app_id: Arc<str> = app_id.into();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let per_peer = PerPeer::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                };
                // A sidecar needs one connection per peer (streams share
                // it); past the cap an address is refused, not served.
                let Some(held) = per_peer.admit(remote.ip().to_canonical()) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (app_id, app, invoker) = (app_id.clone(), app.clone(), invoker.clone());
                let (acceptor, watcher, access, tracer, metrics) = (
                    acceptor.clone(),
                    graceful.watcher(),
                    access.clone(),
                    tracer.clone(),
                    metrics.clone(),
                );
                let handshakes = metrics.clone();
                tokio::spawn(async move {
                    let _held = held;
                    let serve = |peer: Option<String>| {
                        let peer: Option<Arc<str>> = peer.map(Into::into);
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (app_id, app, invoker, peer, access, tracer, metrics) =
                                (app_id.clone(), app.clone(), invoker.clone(), peer.clone(), access.clone(), tracer.clone(), metrics.clone());
                            async move {
                                let (access, tracer) = (access.load_full(), tracer.load_full());
                                let door = Door { app_id: &app_id, app: app.as_deref(), invoker: &invoker, access: access.as_deref(), tracer: &tracer, metrics: &metrics };
                                Ok::<_, std::convert::Infallible>(
                                    inbound(&door, peer.as_deref(), max_body, req).await,
                                )
                            }
                        })
                    };
                    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(KEEPALIVE_INTERVAL)
                        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
                    match acceptor {
                        None => {
                            // A connection that says nothing is dropped.
                            if !first_bytes_within(&stream, HANDSHAKE_TIMEOUT).await {
                                return;
                            }
                            let conn = builder.serve_connection(TokioIo::new(stream), serve(None));
                            let _ = watcher.watch(conn).await;
                        }
                        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake within the handshake timeout")))
                        {
                            Ok(tls) => {
                                handshakes.tls_handshake("server", true);
                                let peer = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(crate::identity::peer_spiffe_id);
                                let conn = builder.serve_connection(TokioIo::new(tls), serve(peer));
                                let _ = watcher.watch(conn).await;
                            }
                            Err(e) => {
                                handshakes.tls_handshake("server", false);
                                tracing::warn!(peer = %remote, error = %e, "mTLS handshake refused");
                            }
                        },
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What the inbound door needs to serve one request.
struct Door<'a> {
    app_id: &'a str,
    app: Option<&'a AppChannel>,
    invoker: &'a Invoker,
    access: Option<&'a crate::access::AccessPolicy>,
    tracer: &'a crate::trace::Tracer,
    metrics: &'a crate::telemetry::Metrics,
}

/// A proxied gRPC call from a peer: streamed to the app's gRPC server.
async fn inbound_grpc(
    app_id: &str,
    app: Option<&AppChannel>,
    invoker: &Invoker,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let caller = parts.headers.remove(CALLER);
    for h in [CALLEE, CALLER_NAMESPACE, GRPC_PROXY] {
        parts.headers.remove(h);
    }
    if let Some(c) = caller {
        parts
            .headers
            .insert(HeaderName::from_static("dapr-caller-app-id"), c);
    }
    let req = Request::from_parts(parts, boxed(body));
    let result = match app {
        Some(app) => invoker.grpc_local(app, req).await,
        None => Err(InvokeError::NoApp),
    };
    result.unwrap_or_else(|e| {
        grpc_error(
            14,
            &format!("failed to proxy the call to app {app_id}: {e}"),
        )
    })
}

/// A trailers-only gRPC error answer.
pub fn grpc_error(code: i32, message: &str) -> Response<ProxyBody> {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", code.to_string());
    if let Ok(v) = HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        b = b.header("grpc-message", v);
    }
    b.body(full(Bytes::new())).expect("valid response parts")
}

/// A Dapr-style error body for answers the sidecar itself gives.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "errorCode": code, "message": message }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response parts")
}

/// One request from a peer, inside a SERVER span that continues the
/// caller's trace; the app sees this span as its parent.
async fn inbound(
    door: &Door<'_>,
    peer: Option<&str>,
    max_body: u64,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    use crate::trace::{Context, Kind};
    if req.method() == http::Method::CONNECT {
        return match caller_of(peer, &mut req) {
            Ok(caller) => tunnel_in(door, &caller, req).await,
            Err((_, id)) => error_response(
                StatusCode::FORBIDDEN,
                "ERR_DIRECT_INVOKE",
                &format!("the caller's certificate has no usable SPIFFE id ({id})"),
            ),
        };
    }
    let mut span = door.tracer.start(
        &format!("CallLocal/{}{}", door.app_id, req.uri().path()),
        Kind::Server,
        Context::from_headers(req.headers()),
    );
    span.attribute("rpc.service", "ServiceInvocation");
    span.attribute("http.method", req.method().as_str());
    span.inject(req.headers_mut());
    let grpc = req.headers().contains_key(GRPC_PROXY);
    let (caller, resp) = match caller_of(peer, &mut req) {
        Ok(caller) => {
            let resp = serve_one(door, &caller, grpc, max_body, req).await;
            (caller.app_id, resp)
        }
        Err((claimed, id)) => (
            claimed,
            error_response(
                StatusCode::FORBIDDEN,
                "ERR_DIRECT_INVOKE",
                &format!("the caller's certificate has no usable SPIFFE id ({id})"),
            ),
        ),
    };
    let status = match resp.headers().get("grpc-status") {
        Some(code) if grpc => crate::telemetry::grpc_status_name(
            code.to_str().ok().and_then(|c| c.parse().ok()).unwrap_or(2),
        )
        .to_string(),
        _ if grpc => "OK".to_string(),
        _ => resp.status().as_u16().to_string(),
    };
    door.metrics
        .served(&caller, if grpc { "grpc" } else { "http" }, &status);
    span.attribute("http.status_code", resp.status().as_u16().to_string());
    let ok = !resp.status().is_server_error()
        && resp.headers().get("grpc-status").is_none_or(|s| s == "0");
    door.tracer.end(span, ok);
    resp
}

/// Who calls: over mTLS the certificate says so (and the internal headers
/// are set from it); without, the caller's claim. `Err` carries the claimed
/// id and the certificate's id when that is no usable SPIFFE id.
fn caller_of(
    peer: Option<&str>,
    req: &mut Request<Incoming>,
) -> Result<crate::access::Caller, (String, String)> {
    let claimed = |req: &Request<Incoming>, name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let Some(id) = peer else {
        return Ok(crate::access::Caller {
            app_id: claimed(req, CALLER),
            namespace: claimed(req, CALLER_NAMESPACE),
            trust_domain: "public".into(),
        });
    };
    let Some(caller) = crate::access::Caller::from_spiffe(id) else {
        return Err((claimed(req, CALLER), id.to_string()));
    };
    let h = req.headers_mut();
    h.insert(CALLER, header_value(&caller.app_id));
    h.insert(CALLER_NAMESPACE, header_value(&caller.namespace));
    Ok(caller)
}

/// A tunnel a peer asks for (HTTP/2 CONNECT to `ip:port`): allowed when
/// access control lets the caller do operation `/tcp/<port>` with verb
/// `CONNECT`, and only to an address of this host; the bytes are then
/// copied both ways until either side closes.
async fn tunnel_in(
    door: &Door<'_>,
    caller: &crate::access::Caller,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let refuse = |status: StatusCode, why: String| {
        tracing::warn!(caller = %caller.app_id, to = %req.uri(), "tunnel refused: {why}");
        door.metrics.served(&caller.app_id, "tcp", status.as_str());
        error_response(status, "ERR_DIRECT_INVOKE", &why)
    };
    let Some(to) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<std::net::SocketAddr>().ok())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a tunnel needs an ip:port to go to".into(),
        );
    };
    let callee = req.headers().get(CALLEE).and_then(|v| v.to_str().ok());
    if callee != Some(door.app_id) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "this sidecar serves app {}, not {}",
                door.app_id,
                callee.unwrap_or("(none)")
            ),
        );
    }
    if let Some(acl) = door.access
        && let Err(why) = acl.check(caller, &format!("/tcp/{}", to.port()), Some("CONNECT"))
    {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    if !is_own_address(to.ip()) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{} is not an address of this host", to.ip()),
        );
    }
    let upstream = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(to),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(StatusCode::BAD_GATEWAY, format!("cannot connect: {e}")),
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "connect timed out after 5s".into(),
            );
        }
    };
    let _ = upstream.set_nodelay(true);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut upstream = upstream;
        match upgrade.await {
            Ok(up) => {
                let mut up = TokioIo::new(up);
                if let Err(e) = tokio::io::copy_bidirectional(&mut up, &mut upstream).await {
                    tracing::debug!(%to, error = %e, "tunnel ended");
                }
            }
            Err(e) => tracing::debug!(%to, error = %e, "tunnel not opened"),
        }
    });
    door.metrics.served(&caller.app_id, "tcp", "200");
    Response::new(full(Bytes::new()))
}

/// A request by address from a peer's transparent door (`FORWARD_TO`):
/// judged as a tunnel to that port would be, then sent to the address on
/// this host in the client's HTTP version over the pooled client.
async fn forward_in(
    door: &Door<'_>,
    caller: &crate::access::Caller,
    to: &HeaderValue,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let refuse = |status: StatusCode, why: String| {
        tracing::warn!(caller = %caller.app_id, to = ?to, "request by address refused: {why}");
        error_response(status, "ERR_DIRECT_INVOKE", &why)
    };
    let parsed = to
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .and_then(|(v, a)| Some((v == "h2", a.parse::<std::net::SocketAddr>().ok()?)));
    let Some((h2, to)) = parsed else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("{FORWARD_TO} must be `h1|h2 ip:port`"),
        );
    };
    let callee = req.headers().get(CALLEE).and_then(|v| v.to_str().ok());
    if callee != Some(door.app_id) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "this sidecar serves app {}, not {}",
                door.app_id,
                callee.unwrap_or("(none)")
            ),
        );
    }
    if let Some(acl) = door.access
        && let Err(why) = acl.check(caller, &format!("/tcp/{}", to.port()), Some("CONNECT"))
    {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    if !is_own_address(to.ip()) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("{} is not an address of this host", to.ip()),
        );
    }
    strip_internal(req.headers_mut());
    *req.version_mut() = if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    match door
        .invoker
        .external(&format!("http://{to}"), req.map(boxed), None)
        .await
    {
        Ok(resp) => resp,
        Err(e) => refuse(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Whether `ip` is loopback or one of this host's own addresses (binding
/// to it works only then).
fn is_own_address(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || (!ip.is_unspecified() && std::net::UdpSocket::bind((ip, 0)).is_ok())
}

async fn serve_one(
    door: &Door<'_>,
    caller: &crate::access::Caller,
    grpc: bool,
    max_body: u64,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (app_id, app, invoker) = (door.app_id, door.app, door.invoker);
    // The path access control checks is the one the app gets: canonical,
    // whoever sent it (a peer sidecar sends it so already).
    let mut req = req;
    match crate::path::canonical_uri(req.uri()) {
        Ok(Some(uri)) => *req.uri_mut() = uri,
        Ok(None) => {}
        Err(e) => {
            return if grpc {
                grpc_error(3, &e.0)
            } else {
                error_response(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", &e.0)
            };
        }
    }
    if let Some(to) = req.headers().get(FORWARD_TO).cloned() {
        return forward_in(door, caller, &to, req).await;
    }
    if let Some(acl) = door.access {
        let verb = req.method().to_string();
        let verb = (!grpc).then_some(verb.as_str());
        if let Err(why) = acl.check(caller, req.uri().path(), verb) {
            tracing::warn!(caller = %caller.app_id, namespace = %caller.namespace, path = %req.uri().path(), "{why}");
            return if grpc {
                grpc_error(7, &why)
            } else {
                error_response(StatusCode::FORBIDDEN, "ERR_DIRECT_INVOKE", &why)
            };
        }
    }
    let callee = req.headers().get(CALLEE).and_then(|v| v.to_str().ok());
    if callee != Some(app_id) {
        return error_response(
            StatusCode::NOT_FOUND,
            "ERR_DIRECT_INVOKE",
            &format!(
                "this sidecar serves app {app_id}, not {}",
                callee.unwrap_or("(none)")
            ),
        );
    }
    if grpc {
        return inbound_grpc(app_id, app, invoker, req).await;
    }
    let (mut parts, body) = req.into_parts();
    // Streamed to the app as it arrives, cut off past `max_body`.
    let (body, too_large) = limited(body, max_body);
    let h = &mut parts.headers;
    let caller = h.remove(CALLER);
    let caller_ns = h.remove(CALLER_NAMESPACE);
    h.remove(CALLEE);
    if let Some(c) = caller {
        h.insert(HeaderName::from_static("dapr-caller-app-id"), c);
    }
    if let Some(ns) = caller_ns {
        h.insert(HeaderName::from_static("dapr-caller-namespace"), ns);
    }
    h.insert(
        HeaderName::from_static("dapr-callee-app-id"),
        header_value(app_id),
    );
    parts.version = http::Version::HTTP_11;
    let req = Request::from_parts(parts, body);
    match app {
        None => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_DIRECT_INVOKE",
            &format!("app {app_id} has no app channel (its sidecar has no --app-port)"),
        ),
        Some(app) => match app.invoke(req).await {
            Ok(resp) => resp,
            Err(_) if too_large.load(std::sync::atomic::Ordering::Relaxed) => error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ERR_BODY_TOO_LARGE",
                &format!("the request body is larger than {max_body} bytes"),
            ),
            Err(e) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_DIRECT_INVOKE",
                &format!("failed to invoke, id: {app_id}, err: {e}"),
            ),
        },
    }
}

/// An accept that failed. Out of descriptors or memory (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM): logged at most once a second and a pause before the
/// next, so the loop does not spin. Anything else (a client that reset
/// before it was accepted): on to the next at once.
pub async fn accept_failed(e: &std::io::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    if !matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)) {
        return;
    }
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(error = %e, "accepting a connection failed; pausing before the next");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Whether the client sends something within `limit` (a peek: nothing is
/// consumed). Listeners drop connections that open and then say nothing.
pub async fn first_bytes_within(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    let mut one = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.peek(&mut one)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Most connections the internal port keeps from one address at a time.
/// Sidecars on one host share an address and each keeps one connection.
pub const MAX_CONNECTIONS_PER_PEER: usize = 256;

/// Open connections per remote address, for the cap.
#[derive(Clone, Default)]
struct PerPeer(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One admitted connection: its count is given back when dropped.
struct PeerHeld(PerPeer, std::net::IpAddr);

impl PerPeer {
    fn admit(&self, ip: std::net::IpAddr) -> Option<PeerHeld> {
        let mut map = self.0.lock().expect("per-peer lock");
        let n = map.entry(ip).or_default();
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerHeld(self.clone(), ip))
    }
}

impl Drop for PeerHeld {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock().expect("per-peer lock");
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn addresses_are_tried_alternating_families_after_the_pick() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let addrs = [
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
            a("[fd00::1]:1"),
            a("[fe80::1%2]:1"),
            a("10.0.0.3:1"),
        ];
        assert_eq!(
            super::happy_order(&addrs, 1),
            vec![
                a("10.0.0.2:1"),
                a("[fd00::1]:1"),
                a("10.0.0.1:1"),
                a("[fe80::1%2]:1"),
                a("10.0.0.3:1"),
            ]
        );
        assert_eq!(
            super::happy_order(&addrs, 3),
            vec![
                a("[fe80::1%2]:1"),
                a("10.0.0.1:1"),
                a("[fd00::1]:1"),
                a("10.0.0.2:1"),
                a("10.0.0.3:1"),
            ]
        );
        assert_eq!(super::happy_order(&addrs[..1], 0), vec![addrs[0]]);
    }

    #[test]
    fn idle_peer_connections_are_dropped_busy_ones_kept() {
        let now = 10 * PEER_IDLE.as_millis() as u64;
        let entry = |age: u64| {
            let e = Arc::new(PeerEntry::default());
            e.last_used.store(now - age, Ordering::Relaxed);
            e
        };
        let mut conns = std::collections::HashMap::new();
        conns.insert("fresh", entry(1_000));
        conns.insert("idle", entry(PEER_IDLE.as_millis() as u64 + 1));
        let busy = entry(PEER_IDLE.as_millis() as u64 * 2);
        let _held = busy.conn.try_lock().unwrap();
        conns.insert("busy", busy.clone());
        sweep_idle(&mut conns, now);
        let mut left: Vec<_> = conns.keys().copied().collect();
        left.sort();
        assert_eq!(left, ["busy", "fresh"]);
    }
}
