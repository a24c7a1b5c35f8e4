//! Transparent mode's doors: connections redirected here by `tandem
//! iptables`. Each one's original destination is read; on the outbound
//! door its protocol is detected with one bounded peek, and then:
//! HTTP requests whose `Host` names a mesh app (`orders`, `orders.<ns>`,
//! `orders.<ns>.svc[.cluster.local]`, suffixes configurable) go through the
//! same stages as an explicit invocation (resolve, that app's resiliency
//! policy, mTLS to the peer sidecar, tracing, metrics); connections to the
//! host of a mesh app (its address known to name resolution) go through a
//! tunnel over mTLS to that app's sidecar (HTTP/2 CONNECT), which connects
//! on its host; everything else goes to the original destination
//! untouched. A connection to a door itself (a redirect loop) is closed,
//! never followed.

use crate::runtime::Runtime;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_proxy::ProxyBody;
use tandem_proxy::transparent::{Protocol, detect, opaque, original_dst};
use tokio::net::{TcpListener, TcpStream};

/// The app id (`id` or `id.namespace`) a `Host` header names, if it can
/// name one: not an IP address, at most `id.namespace` once one of
/// `suffixes` is taken off.
pub fn app_of(host: &str, suffixes: &[String]) -> Option<String> {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h,
        _ => host,
    };
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[') {
        return None;
    }
    let mut name = name.trim_end_matches('.').to_ascii_lowercase();
    for s in suffixes {
        let s = s.to_ascii_lowercase();
        let s = if s.starts_with('.') {
            s
        } else {
            format!(".{s}")
        };
        if let Some(stripped) = name.strip_suffix(&s) {
            name = stripped.to_string();
            break;
        }
    }
    (name.split('.').count() <= 2).then_some(name)
}

pub async fn serve_outbound(listener: TcpListener, rt: Arc<Runtime>, detect_timeout: Duration) {
    doors(listener, rt.clone(), "outbound", move |stream, dst, _from| {
        let rt = rt.clone();
        async move {
            match detect(&stream, dst.port(), detect_timeout).await {
                Protocol::Opaque => match mesh_host(&rt, dst).await {
                    Some(app) => tunnel_out(&rt, &app, stream, dst).await,
                    None => {
                        rt.metrics.transparent_connection("outbound", "passthrough");
                        copy(&rt, "outbound", "passthrough", stream, dst).await;
                    }
                },
                Protocol::Http1 | Protocol::H2 => {
                    rt.metrics.transparent_connection("outbound", "http");
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let rt = rt.clone();
                        async move { Ok::<_, std::convert::Infallible>(route(&rt, dst, req).await) }
                    });
                    // The app's own connection: a request head must come
                    // within 30 s. (hyper counts a keep-alive connection's
                    // idle time too, so this is looser than the API's 10 s:
                    // apps that know nothing of tandem keep their pools.)
                    let mut builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(30));
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        }
    })
    .await
}

/// What both doors do before their own work: accept until shutdown, read
/// each connection's original destination (closing those that were not
/// redirected, and those sent to the door itself — a redirect loop), and
/// hand it to `handle` on a task of its own.
async fn doors<F, Fut>(listener: TcpListener, rt: Arc<Runtime>, which: &'static str, handle: F)
where
    F: Fn(tokio::net::TcpStream, SocketAddr, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let own = listener.local_addr().ok();
    let mut shutdown = rt.shutdown_signal();
    let handle = Arc::new(handle);
    loop {
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tandem_proxy::invoke::accept_failed(&e).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let (handle, rt) = (handle.clone(), rt.clone());
        tokio::spawn(async move {
            let dst = match original_dst(&stream) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(%from, error = %e, "{which} door: a connection that was not redirected; closed");
                    return;
                }
            };
            if own.is_some_and(|o| o.port() == dst.port()) {
                rt.metrics.transparent_connection(which, "loop");
                tracing::warn!(%from, %dst, "{which} door: a connection to the door itself (redirect loop); closed");
                return;
            }
            handle(stream, dst, from).await;
        });
    }
}

async fn route(rt: &Runtime, dst: SocketAddr, req: Request<Incoming>) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let Some(invoker) = rt.invoker() else {
        return bad_gateway("the sidecar is not ready");
    };
    let (mut parts, body) = req.into_parts();
    // Only the path and query travel on; the host chose the target.
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = pq.as_str().parse().unwrap_or_default();
    }
    // `orders.<own namespace>` is `orders` (a sidecar without a namespace
    // is in `default`, as in Dapr).
    let own_ns = rt
        .options
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let app =
        app_of(&host, &rt.options.transparent_host_suffixes).map(|a| match a.split_once('.') {
            Some((id, ns)) if ns == own_ns => id.to_string(),
            _ => a,
        });
    if let Some(app) = app
        && !crate::api::invoke::names_this_app(rt, &app)
        && invoker.knows(&app).await
    {
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let req = Request::from_parts(parts, tandem_proxy::invoke::boxed(body));
            return crate::api::grpc::proxy::to_app(rt, &app, req).await;
        }
        return crate::api::http::invoke::forward(rt, &app, parts, body, None).await;
    }
    // Not named, but bound for a mesh app's host: through its sidecar, on
    // the pooled connection, under the same pipeline as a call by name
    // (canonical path, policy, span, metrics); the peer delivers it to
    // the address.
    if let Some(owner) = mesh_host(rt, dst).await {
        return crate::api::http::invoke::forward(rt, &owner, parts, body, Some(dst)).await;
    }
    let (body, _) = tandem_proxy::invoke::limited(body, rt.options.max_body_size);
    let req = Request::from_parts(parts, body);
    // Not a mesh app: to where the app was going, as it was.
    match invoker.external(&format!("http://{dst}"), req, None).await {
        Ok(resp) => resp,
        Err(e) => bad_gateway(&e.to_string()),
    }
}

/// The mesh app (not this one) whose sidecar lives at `dst`'s address.
async fn mesh_host(rt: &Runtime, dst: SocketAddr) -> Option<String> {
    let owner = rt.invoker()?.owner(dst.ip()).await?;
    (!crate::api::invoke::names_this_app(rt, &owner)).then_some(owner)
}

/// Opaque TCP to a mesh app's host: the bytes travel in a tunnel over
/// mTLS to that app's sidecar. A tunnel refused (access control, nothing
/// listening) closes the client's connection.
async fn tunnel_out(rt: &Runtime, app: &str, mut client: TcpStream, dst: SocketAddr) {
    let Some(invoker) = rt.invoker() else { return };
    match invoker.tunnel(app, dst).await {
        Ok(up) => {
            rt.metrics.transparent_connection("outbound", "tunnel");
            let mut up = hyper_util::rt::TokioIo::new(up);
            match tokio::io::copy_bidirectional(&mut client, &mut up).await {
                Ok((sent, received)) => rt
                    .metrics
                    .transparent_bytes("outbound", "tunnel", sent, received),
                Err(e) => tracing::debug!(%dst, app, error = %e, "outbound door: tunnel ended"),
            }
        }
        Err(e) => {
            rt.metrics.transparent_connection("outbound", "refused");
            tracing::warn!(%dst, app, error = %e, "outbound door: no tunnel; connection closed");
        }
    }
}

/// Bytes both ways between `client` and `to`, counted.
async fn copy(rt: &Runtime, direction: &str, route: &str, client: TcpStream, to: SocketAddr) {
    match opaque(client, to).await {
        Ok((sent, received)) => rt
            .metrics
            .transparent_bytes(direction, route, sent, received),
        Err(e) => tracing::debug!(%to, error = %e, "{direction} door: connection ended"),
    }
}

/// Transparent mode's inbound door: connections from other hosts,
/// redirected here. Those for the internal port are peer sidecars: they
/// go on to the internal listener, which terminates their mTLS, proves
/// their identity and applies access control. Anything else is plaintext
/// from outside the mesh, let through to where it was going only when
/// `allow_plaintext`.
pub async fn serve_inbound(
    listener: TcpListener,
    rt: Arc<Runtime>,
    internal: SocketAddr,
    allow_plaintext: bool,
) {
    doors(listener, rt.clone(), "inbound", move |stream, dst, from| {
        let rt = rt.clone();
        async move {
            let (to, route) = if dst.port() == internal.port() {
                (internal, "mesh")
            } else if allow_plaintext {
                (dst, "passthrough")
            } else {
                rt.metrics.transparent_connection("inbound", "refused");
                tracing::warn!(%from, %dst, "inbound door: plaintext from outside the mesh refused (--transparent-inbound-plaintext deny)");
                return;
            };
            rt.metrics.transparent_connection("inbound", route);
            copy(&rt, "inbound", route, stream, to).await;
        }
    })
    .await
}

fn bad_gateway(why: &str) -> Response<ProxyBody> {
    tracing::warn!("outbound door: {why}");
    let mut resp = Response::new(tandem_proxy::invoke::full(format!("tandem: {why}\n")));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_name_apps() {
        let k8s = [".svc.cluster.local".to_string(), ".svc".to_string()];
        let app_of = |h: &str| super::app_of(h, &k8s);
        assert_eq!(app_of("orders").as_deref(), Some("orders"));
        assert_eq!(app_of("orders:8080").as_deref(), Some("orders"));
        assert_eq!(app_of("orders.prod").as_deref(), Some("orders.prod"));
        assert_eq!(
            app_of("Orders.prod.svc.cluster.local:80").as_deref(),
            Some("orders.prod")
        );
        assert_eq!(app_of("orders.prod.svc").as_deref(), Some("orders.prod"));
        assert_eq!(app_of("api.example.com"), None);
        assert_eq!(app_of("10.0.0.1:80"), None);
        assert_eq!(app_of("[::1]:80"), None);
        assert_eq!(app_of(""), None);
        let corp = ["svc.corp.internal".to_string()];
        assert_eq!(
            super::app_of("orders.prod.svc.corp.internal", &corp).as_deref(),
            Some("orders.prod")
        );
        assert_eq!(super::app_of("orders.prod.svc.cluster.local", &corp), None);
    }
}
