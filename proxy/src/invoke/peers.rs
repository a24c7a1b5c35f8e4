//! Connections to peer sidecars (mTLS when this sidecar has an identity):
//! for plain HTTP invocations a small pool of HTTP/1.1 keep-alive
//! connections per peer address, one request at a time on each; for what
//! needs HTTP/2 (gRPC proxying, tunnels) and for the requests past the
//! pool's size, one multiplexed HTTP/2 connection per peer address, opened
//! once however many callers wait, with keepalive pings. Bounded
//! handshakes, idle connections swept; and the order a peer's addresses
//! are tried in (happy eyeballs), with the addresses that failed lately
//! tried last.

use super::*;

/// Connections to peer sidecars: one multiplexed HTTP/2 connection per
/// peer, over mTLS when this sidecar has an identity (the peer's
/// certificate must name the app being called), plaintext otherwise.
pub(super) struct PeerPool {
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
    /// The same identity offering only `http/1.1` (ALPN), for the pool of
    /// HTTP/1.1 connections.
    pub(super) tls_h1: Option<tokio_rustls::TlsConnector>,
    pub(super) metrics: Option<Arc<crate::telemetry::Metrics>>,
    /// One slot per peer: callers of a peer with no connection wait on its
    /// slot while one of them connects, instead of racing to open several.
    pub(super) conns:
        std::sync::Mutex<std::collections::HashMap<(String, std::net::SocketAddr), PeerSlot>>,
    /// When idle connections were last looked for (ms since the epoch).
    pub(super) last_sweep: std::sync::atomic::AtomicU64,
}

/// A peer's connections and when they were last used (ms since the
/// epoch).
#[derive(Default)]
pub(super) struct PeerEntry {
    pub(super) conn: tokio::sync::Mutex<Option<SendRequest>>,
    pub(super) last_used: std::sync::atomic::AtomicU64,
    /// HTTP/1.1 connections to the peer: each goes back here once its
    /// answer's head arrived, and is taken again once that answer was read
    /// to its end (`is_ready`).
    pub(super) h1: std::sync::Mutex<Vec<H1Sender>>,
    /// HTTP/1.1 connections open to the peer (idle or busy).
    pub(super) h1_open: Arc<std::sync::atomic::AtomicUsize>,
    /// Until when (ms since the epoch) the peer is not asked for HTTP/1.1:
    /// its last HTTP/1.1 handshake failed after the TCP connection was made
    /// (a sidecar that speaks only HTTP/2, say).
    pub(super) h1_refused_until: std::sync::atomic::AtomicU64,
}

impl PeerEntry {
    /// Marks the peer used at `now`; whether a request that would take
    /// HTTP/1.1 (`h1`) gets it (the peer did not refuse it lately).
    fn used_now(&self, now: u64, h1: bool) -> bool {
        self.last_used
            .store(now, std::sync::atomic::Ordering::Relaxed);
        h1 && self
            .h1_refused_until
            .load(std::sync::atomic::Ordering::Relaxed)
            <= now
    }
}

/// HTTP/1.1 connections kept per peer address: requests beyond this many
/// at a time share the peer's HTTP/2 connection. Several sidecars on one
/// host share its address, and the peer admits `MAX_CONNECTIONS_PER_PEER`
/// from one address.
pub const MAX_H1_PER_PEER: usize = 16;

/// How long a peer that refused HTTP/1.1 is asked only for HTTP/2.
pub const H1_REFUSED_FOR: Duration = Duration::from_secs(60);

pub(super) type H1Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// A connection to a peer, ready for one request.
pub(super) enum PeerSender {
    /// A stream on the peer's multiplexed connection.
    H2(SendRequest),
    /// A pooled HTTP/1.1 connection, given back to `PeerEntry::h1` when
    /// the answer's head arrived.
    H1(H1Sender, PeerSlot),
}

impl PeerSender {
    /// The HTTP/2 sender (for gRPC proxying and tunnels, which ask for
    /// HTTP/2 and never get anything else).
    pub(super) fn into_h2(self) -> SendRequest {
        match self {
            PeerSender::H2(s) => s,
            PeerSender::H1(..) => unreachable!("HTTP/1.1 was not asked for"),
        }
    }
}

pub(super) type PeerSlot = Arc<PeerEntry>;

/// A peer connection unused this long is closed (its peer may have gone
/// for good: a scaled-down instance, a reshuffled address).
pub const PEER_IDLE: Duration = Duration::from_secs(300);

/// Drops the peer connections unused for `PEER_IDLE` (one in use — its slot
/// locked — stays).
pub(super) fn sweep_idle<K: std::hash::Hash + Eq>(
    conns: &mut std::collections::HashMap<K, PeerSlot>,
    now: u64,
) {
    let idle = PEER_IDLE.as_millis() as u64;
    conns.retain(|_, e| {
        now.saturating_sub(e.last_used.load(std::sync::atomic::Ordering::Relaxed)) < idle
            || e.conn.try_lock().is_err()
    });
}

pub(super) fn epoch_ms() -> u64 {
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
pub(super) struct Unreachable {
    pub(super) since:
        std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, std::time::Instant>>,
    /// Whether `since` may hold anything (the common case, nothing, costs
    /// no lock).
    pub(super) any: std::sync::atomic::AtomicBool,
}

impl Unreachable {
    pub(super) fn note(&self, a: std::net::SocketAddr) {
        let mut since = self.since.lock().expect("unreachable");
        since.insert(a, std::time::Instant::now());
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn forget(&self, a: std::net::SocketAddr) {
        if self.any.load(std::sync::atomic::Ordering::Relaxed) {
            let mut since = self.since.lock().expect("unreachable");
            since.remove(&a);
            self.any
                .store(!since.is_empty(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Moves the addresses that failed within `UNREACHABLE_FOR` to the end
    /// of `order` (kept in their order), so they are tried last.
    pub(super) fn demote(&self, order: &mut [std::net::SocketAddr]) {
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
pub(super) fn happy_order(
    addrs: &[std::net::SocketAddr],
    first: usize,
) -> Vec<std::net::SocketAddr> {
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

pub(super) type SendRequest = hyper::client::conn::http2::SendRequest<ProxyBody>;

pub(super) enum SendFailure {
    /// Nothing went out; the request is handed back.
    NotSent(Box<Request<ProxyBody>>, String),
    /// It went out, at least in part.
    Failed(String),
}

impl PeerPool {
    /// A ready connection to `peer` (a pooled one, or a new one): with
    /// `h1`, an idle HTTP/1.1 connection when there is one, a new one while
    /// the pool has room, else (or when the peer refused HTTP/1.1) a stream
    /// on its HTTP/2 connection. Nothing has been sent when this fails, so
    /// the caller may try elsewhere.
    pub(super) async fn sender(&self, peer: &Peer, h1: bool) -> Result<PeerSender, String> {
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
        if slot.used_now(now, h1) {
            if let Some(sender) = take_idle_h1(&slot) {
                return Ok(PeerSender::H1(sender, slot));
            }
            if let Some(opened) = H1Opened::reserve(&slot.h1_open) {
                match self.connect_h1(peer, opened).await {
                    Ok(sender) => return Ok(PeerSender::H1(sender, slot)),
                    Err(H1Failure::Connect(e)) => return Err(e),
                    Err(H1Failure::Handshake(e)) => {
                        tracing::debug!(peer = %peer.address, error = %e, "HTTP/1.1 to the peer failed; HTTP/2 for a while");
                        slot.h1_refused_until.store(
                            now + H1_REFUSED_FOR.as_millis() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                }
            }
        }
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
        Ok(PeerSender::H2(sender))
    }

    /// A connection to `peer` that is open and idle now, if there is one
    /// (no connecting, no waiting): the common case of `sender`, which
    /// `Invoker::reach` tries before its happy-eyeballs machinery.
    pub(super) fn pooled(&self, peer: &Peer, h1: bool) -> Option<PeerSender> {
        let slot = {
            let conns = self.conns.lock().expect("peer pool lock");
            conns
                .get(&(
                    crate::identity::dns_name(&peer.app_id, &peer.namespace),
                    peer.address,
                ))?
                .clone()
        };
        let now = epoch_ms();
        if slot.used_now(now, h1) {
            // None idle: `sender` opens one while the pool has room.
            return take_idle_h1(&slot).map(|s| PeerSender::H1(s, slot));
        }
        let sender = slot
            .conn
            .try_lock()
            .ok()?
            .as_ref()
            .filter(|s| !s.is_closed() && s.is_ready())?
            .clone();
        Some(PeerSender::H2(sender))
    }

    /// Sends `req` on `sender`. When it fails before anything was sent,
    /// the request comes back so it can go elsewhere.
    pub(super) async fn send(
        &self,
        sender: PeerSender,
        peer: &Peer,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendFailure> {
        let give_back = |mut e: hyper::client::conn::TrySendError<Request<ProxyBody>>| {
            let reason = crate::app_channel::error_chain(e.error());
            match e.take_message() {
                Some(req) => SendFailure::NotSent(Box::new(req), reason),
                None => SendFailure::Failed(reason),
            }
        };
        match sender {
            PeerSender::H2(mut sender) => {
                let path = path_of(req.uri());
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                match format!("{scheme}://{}{path}", peer.address).parse() {
                    Ok(uri) => *req.uri_mut() = uri,
                    Err(e) => return Err(SendFailure::Failed(format!("{e}"))),
                }
                *req.version_mut() = http::Version::HTTP_2;
                sender.try_send_request(req).await.map_err(give_back)
            }
            PeerSender::H1(mut sender, slot) => {
                // Origin form (`/path?query`) on the wire, and the peer's
                // address as the host.
                if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                    match path_of(req.uri()).parse() {
                        Ok(uri) => *req.uri_mut() = uri,
                        Err(e) => return Err(SendFailure::Failed(format!("{e}"))),
                    }
                }
                req.headers_mut()
                    .insert(header::HOST, host_value(peer.address));
                *req.version_mut() = http::Version::HTTP_11;
                let resp = sender.try_send_request(req).await.map_err(give_back)?;
                // The head is here: the connection serves the next request
                // once this answer's body has been read (`is_ready`).
                if !sender.is_closed() {
                    let mut idle = slot.h1.lock().expect("peer pool lock");
                    if idle.len() < MAX_H1_PER_PEER {
                        idle.push(sender);
                    }
                }
                Ok(resp)
            }
        }
    }

    /// A new HTTP/1.1 connection to `peer`, ready for a request; `opened`
    /// counts it among the peer's until the connection ends.
    async fn connect_h1(&self, peer: &Peer, opened: H1Opened) -> Result<H1Sender, H1Failure> {
        let tcp = connect_tcp(peer.address)
            .await
            .map_err(H1Failure::Connect)?;
        let timed_out = || {
            H1Failure::Handshake(format!(
                "the peer did not finish the handshake within {HANDSHAKE_TIMEOUT:?}"
            ))
        };
        let mut sender = match &self.tls_h1 {
            Some(tls) => {
                let name = crate::identity::server_name(&peer.app_id, &peer.namespace)
                    .map_err(H1Failure::Connect)?;
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())?;
                if let Some(m) = &self.metrics {
                    m.tls_handshake("client", stream.is_ok());
                }
                let stream =
                    stream.map_err(|e| H1Failure::Handshake(format!("mTLS handshake: {e}")))?;
                h1_handshake(stream, opened).await?
            }
            None => h1_handshake(tcp, opened).await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| H1Failure::Handshake(e.to_string()))?;
        Ok(sender)
    }

    pub(super) async fn connect(&self, peer: &Peer) -> Result<SendRequest, String> {
        let tcp = connect_tcp(peer.address).await?;
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

/// A TCP connection to a peer within 5 s, Nagle off.
async fn connect_tcp(address: std::net::SocketAddr) -> Result<tokio::net::TcpStream, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| "connect timed out after 5s".to_string())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// HTTP/1.1 over `io`; the connection's task holds `opened` while it runs.
async fn h1_handshake<S>(io: S, opened: H1Opened) -> Result<H1Sender, H1Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| H1Failure::Handshake(e.to_string()))?;
    tokio::spawn(async move {
        let _opened = opened;
        let _ = conn.await;
    });
    Ok(sender)
}

/// Why no HTTP/1.1 connection could be made: no TCP connection (the
/// address is unreachable, whatever the protocol), or the peer did not
/// take HTTP/1.1 over it (HTTP/2 then).
pub(super) enum H1Failure {
    Connect(String),
    Handshake(String),
}

/// One of a peer's `MAX_H1_PER_PEER` HTTP/1.1 connections, counted while
/// it is being opened and while it lives.
pub(super) struct H1Opened(Arc<std::sync::atomic::AtomicUsize>);

impl H1Opened {
    pub(super) fn reserve(open: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        open.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |n| (n < MAX_H1_PER_PEER).then_some(n + 1),
        )
        .ok()
        .map(|_| H1Opened(open.clone()))
    }
}

impl Drop for H1Opened {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// An idle HTTP/1.1 connection of the peer, if one is: closed ones are
/// dropped, busy ones (an answer still being read) stay.
pub(super) fn take_idle_h1(slot: &PeerEntry) -> Option<H1Sender> {
    let mut idle = slot.h1.lock().expect("peer pool lock");
    idle.retain(|s| !s.is_closed());
    let i = idle.iter().rposition(|s| s.is_ready())?;
    Some(idle.swap_remove(i))
}

/// The path and query of `uri` (`/` when it has none), as sent to a peer.
fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

fn host_value(address: std::net::SocketAddr) -> HeaderValue {
    HeaderValue::try_from(address.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// A peer sidecar: the app it serves (the name its certificate must
/// prove) and where it listens.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    pub(super) app_id: String,
    pub(super) namespace: String,
    pub(super) address: std::net::SocketAddr,
}

#[cfg(test)]
mod tests {
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

    /// A peer (plain HTTP/1.1 and HTTP/2, as the internal port serves)
    /// that counts the connections it accepted.
    async fn counting_peer() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let version = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(Response::new(full(version)))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (address, accepted)
    }

    fn pool() -> PeerPool {
        PeerPool {
            tls: None,
            tls_h1: None,
            metrics: None,
            conns: Default::default(),
            last_sweep: Default::default(),
        }
    }

    async fn call(pool: &PeerPool, peer: &Peer, sender: PeerSender) -> String {
        let req = Request::builder()
            .uri("/hello")
            .body(full(Bytes::new()))
            .unwrap();
        let resp = match pool.send(sender, peer, req).await {
            Ok(r) => r,
            Err(_) => panic!("the call failed"),
        };
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn http1_connections_are_reused_and_past_the_pool_requests_share_http2() {
        let (address, accepted) = counting_peer().await;
        let pool = pool();
        let peer = Peer {
            app_id: "orders".into(),
            namespace: "default".into(),
            address,
        };
        // One after another: one connection, HTTP/1.1.
        for _ in 0..5 {
            let sender = pool.sender(&peer, true).await.unwrap();
            assert!(matches!(sender, PeerSender::H1(..)));
            assert_eq!(call(&pool, &peer, sender).await, "HTTP/1.1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Held at once: the idle one, then new ones up to the pool's size,
        // then streams on the HTTP/2 connection.
        let mut held = Vec::new();
        for _ in 0..MAX_H1_PER_PEER {
            let sender = pool.sender(&peer, true).await.unwrap();
            assert!(matches!(sender, PeerSender::H1(..)));
            held.push(sender);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), MAX_H1_PER_PEER);
        let over = pool.sender(&peer, true).await.unwrap();
        assert!(matches!(over, PeerSender::H2(..)));
        assert_eq!(call(&pool, &peer, over).await, "HTTP/2.0");
        assert_eq!(accepted.load(Ordering::SeqCst), MAX_H1_PER_PEER + 1);
        // Given back after their answers, they serve again: no new
        // connection.
        for sender in held {
            assert_eq!(call(&pool, &peer, sender).await, "HTTP/1.1");
        }
        for _ in 0..3 {
            let sender = pool.sender(&peer, true).await.unwrap();
            assert!(matches!(sender, PeerSender::H1(..)));
            assert_eq!(call(&pool, &peer, sender).await, "HTTP/1.1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), MAX_H1_PER_PEER + 1);
        // Asked for HTTP/2 (gRPC proxying, tunnels): HTTP/2.
        let h2 = pool.sender(&peer, false).await.unwrap();
        assert_eq!(call(&pool, &peer, h2).await, "HTTP/2.0");
        // The fast path finds both idle, and nothing for a peer never met.
        assert!(matches!(pool.pooled(&peer, true), Some(PeerSender::H1(..))));
        assert!(matches!(
            pool.pooled(&peer, false),
            Some(PeerSender::H2(..))
        ));
        let stranger = Peer {
            app_id: "cart".into(),
            ..peer.clone()
        };
        assert!(pool.pooled(&stranger, true).is_none());
        assert_eq!(accepted.load(Ordering::SeqCst), MAX_H1_PER_PEER + 1);
    }
}
