//! The callee's side: the internal listener (`serve_inbound`) takes peer
//! sidecars' connections (mTLS identity, per-address cap, handshake and
//! first-byte deadlines) and serves each request: SERVER span and metrics,
//! the path made canonical again, access control, then the app channel,
//! the app's gRPC port, or (by address) the address on this host.

use super::tunnel::{may_reach, tunnel_in};
use super::*;

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
    /// The actor runtime, once it runs.
    pub actors: ActorDoorCell,
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
        actors,
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
                let (acceptor, watcher, access, tracer, metrics, actors) = (
                    acceptor.clone(),
                    graceful.watcher(),
                    access.clone(),
                    tracer.clone(),
                    metrics.clone(),
                    actors.clone(),
                );
                let handshakes = metrics.clone();
                tokio::spawn(async move {
                    let _held = held;
                    let serve = |peer: Option<String>| {
                        let peer: Option<Arc<str>> = peer.map(Into::into);
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (app_id, app, invoker, peer, access, tracer, metrics, actors) =
                                (app_id.clone(), app.clone(), invoker.clone(), peer.clone(), access.clone(), tracer.clone(), metrics.clone(), actors.clone());
                            async move {
                                let (access, tracer) = (access.load_full(), tracer.load_full());
                                let door = Door { app_id: &app_id, app: app.as_deref(), invoker: &invoker, access: access.as_deref(), tracer: &tracer, metrics: &metrics, actors: actors.get() };
                                Ok::<_, std::convert::Infallible>(
                                    inbound(&door, peer.as_deref(), max_body, req).await,
                                )
                            }
                        })
                    };
                    // HTTP/1.1 (pooled plain invocations) or HTTP/2 (the
                    // rest), told apart by the HTTP/2 preface.
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http2()
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
pub(super) struct Door<'a> {
    pub(super) app_id: &'a str,
    pub(super) app: Option<&'a AppChannel>,
    pub(super) invoker: &'a Invoker,
    pub(super) access: Option<&'a crate::access::AccessPolicy>,
    pub(super) tracer: &'a crate::trace::Tracer,
    pub(super) metrics: &'a crate::telemetry::Metrics,
    pub(super) actors: Option<&'a Arc<dyn ActorDoor>>,
}

/// A proxied gRPC call from a peer: streamed to the app's gRPC server.
pub(super) async fn inbound_grpc(
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
    result.unwrap_or_else(|e| e.to_grpc(app_id))
}

/// A trailers-only gRPC error answer.
pub fn grpc_error(code: tonic::Code, message: &str) -> Response<ProxyBody> {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", (code as i32).to_string());
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
pub(super) async fn inbound(
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
        || format!("CallLocal/{}{}", door.app_id, req.uri().path()),
        Kind::Server,
        Context::from_headers(req.headers()),
    );
    span.attribute("rpc.service", "ServiceInvocation");
    span.attribute("http.method", req.method().as_str());
    span.inject(req.headers_mut());
    let grpc = req.headers().contains_key(GRPC_PROXY);
    let version = req.version();
    let (caller, mut resp) = match caller_of(peer, &mut req) {
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
        Some(_) if grpc => crate::telemetry::grpc_status_name(
            crate::telemetry::grpc_status_of(resp.headers()).unwrap_or(2),
        )
        .to_string(),
        _ if grpc => "OK".to_string(),
        _ => resp.status().as_u16().to_string(),
    };
    door.metrics
        .served(&caller, if grpc { "grpc" } else { "http" }, &status);
    span.attribute("http.status_code", i64::from(resp.status().as_u16()));
    // The app's connection (its headers, its HTTP version: an HTTP/1.0
    // app's answer would close the connection) stays with the app: the
    // one to the caller's sidecar is pooled.
    strip_connection_headers(resp.headers_mut());
    *resp.version_mut() = version;
    let ok = !resp.status().is_server_error()
        && resp.headers().get("grpc-status").is_none_or(|s| s == "0");
    door.tracer.end(span, ok);
    resp
}

/// Who calls: over mTLS the certificate says so (and the internal headers
/// are set from it); without, the caller's claim. `Err` carries the claimed
/// id and the certificate's id when that is no usable SPIFFE id.
pub(super) fn caller_of(
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

/// A request by address from a peer's transparent door (`FORWARD_TO`):
/// judged as a tunnel to that port would be, then sent to the address on
/// this host in the client's HTTP version over the pooled client.
/// `h1 ip:port` or `h2 ip:port` (an IP address, never a name: the peer
/// resolved nothing) → (HTTP/2?, address).
fn parse_forward_to(v: &HeaderValue) -> Option<(bool, std::net::SocketAddr)> {
    let (version, addr) = v.to_str().ok()?.split_once(' ')?;
    let h2 = match version {
        "h1" => false,
        "h2" => true,
        _ => return None,
    };
    Some((h2, addr.parse().ok()?))
}

pub(super) async fn forward_in(
    door: &Door<'_>,
    caller: &crate::access::Caller,
    to: &HeaderValue,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let refuse = |status: StatusCode, why: String| {
        tracing::warn!(caller = %caller.app_id, to = ?to, "request by address refused: {why}");
        error_response(status, "ERR_DIRECT_INVOKE", &why)
    };
    let Some((h2, to)) = parse_forward_to(to) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("{FORWARD_TO} must be `h1|h2 ip:port`"),
        );
    };
    if let Err((status, why)) = may_reach(door, caller, req.headers(), to) {
        return refuse(status, why);
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

pub(super) async fn serve_one(
    door: &Door<'_>,
    caller: &crate::access::Caller,
    grpc: bool,
    max_body: u64,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (app_id, app, invoker) = (door.app_id, door.app, door.invoker);
    // The path access control checks is the one the app gets: canonical,
    // whoever sent it (a peer sidecar sends it so already).
    // An actor call: the actor runtime takes it, its path as the peer
    // escaped it (an actor id may hold an escaped `/`; the runtime checks
    // the type, the id and that this app hosts the type). Access control
    // is for app routes; daprd does not apply it to actor calls either.
    if req.headers().contains_key(ACTOR) {
        return match door.actors {
            Some(actors) => actors.call(req.map(boxed)).await,
            None => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_ACTOR_RUNTIME_NOT_FOUND",
                "the actor runtime is not running on this sidecar",
            ),
        };
    }
    let mut req = req;
    match crate::path::canonical_uri(req.uri()) {
        Ok(Some(uri)) => *req.uri_mut() = uri,
        Ok(None) => {}
        Err(e) => {
            return if grpc {
                grpc_error(tonic::Code::InvalidArgument, &e.0)
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
                grpc_error(tonic::Code::PermissionDenied, &why)
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
pub(super) struct PerPeer(
    pub(super) Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
);

/// One admitted connection: its count is given back when dropped.
pub(super) struct PeerHeld(PerPeer, std::net::IpAddr);

impl PerPeer {
    pub(super) fn admit(&self, ip: std::net::IpAddr) -> Option<PeerHeld> {
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
mod tests {
    use super::*;

    #[test]
    fn forward_to_is_a_version_and_an_ip_address() {
        let parse = |v: &[u8]| parse_forward_to(&HeaderValue::from_bytes(v).unwrap());
        assert_eq!(
            parse(b"h1 10.0.0.2:8090"),
            Some((false, "10.0.0.2:8090".parse().unwrap()))
        );
        assert_eq!(
            parse(b"h2 [fe80::1]:80"),
            Some((true, "[fe80::1]:80".parse().unwrap()))
        );
        for bad in [
            &b""[..],
            b"h2",
            b"h2 ",
            b"h3 10.0.0.2:80",
            b"H2 10.0.0.2:80",
            b"h2 10.0.0.2",
            b"h2  10.0.0.2:80",
            b"h2 10.0.0.2:80 ",
            b"h2 10.0.0.2:80 extra",
            b"h2 orders:80",
            b"h2 localhost:80",
            b"h2 10.0.0.2:99999",
            b"h2 \xff10.0.0.2:80",
            b"h2 10.0.0.2:80%0a",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
