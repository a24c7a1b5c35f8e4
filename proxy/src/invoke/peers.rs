//! Connections to peer sidecars: one multiplexed HTTP/2 connection per
//! peer address (mTLS when this sidecar has an identity), opened once
//! however many callers wait, bounded handshakes, keepalive pings, idle
//! ones swept; and the order a peer's addresses are tried in (happy
//! eyeballs), with the addresses that failed lately tried last.

use super::*;

/// Connections to peer sidecars: one multiplexed HTTP/2 connection per
/// peer, over mTLS when this sidecar has an identity (the peer's
/// certificate must name the app being called), plaintext otherwise.
pub(super) struct PeerPool {
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
    pub(super) metrics: Option<Arc<crate::telemetry::Metrics>>,
    /// One slot per peer: callers of a peer with no connection wait on its
    /// slot while one of them connects, instead of racing to open several.
    pub(super) conns:
        std::sync::Mutex<std::collections::HashMap<(String, std::net::SocketAddr), PeerSlot>>,
    /// When idle connections were last looked for (ms since the epoch).
    pub(super) last_sweep: std::sync::atomic::AtomicU64,
}

/// A peer's connection and when it was last used (ms since the epoch).
#[derive(Default)]
pub(super) struct PeerEntry {
    pub(super) conn: tokio::sync::Mutex<Option<SendRequest>>,
    pub(super) last_used: std::sync::atomic::AtomicU64,
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
    /// A ready connection to `peer` (the pooled one, or a new one). Nothing
    /// has been sent when this fails, so the caller may try elsewhere.
    pub(super) async fn sender(&self, peer: &Peer) -> Result<SendRequest, String> {
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
    pub(super) async fn send(
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

    pub(super) async fn connect(&self, peer: &Peer) -> Result<SendRequest, String> {
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
}
