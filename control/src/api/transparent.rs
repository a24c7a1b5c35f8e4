//! Transparent mode's outbound door: connections the app made to anyone,
//! redirected here by `tandem iptables`. Each one's original destination
//! is read, its protocol detected with one bounded peek, and then:
//! HTTP requests whose `Host` names a mesh app (`orders`, `orders.<ns>`,
//! `orders.<ns>.svc[.cluster.local]`) go through the same stages as an
//! explicit invocation (resolve, that app's resiliency policy, mTLS to the
//! peer sidecar, tracing, metrics); every other request goes to the
//! original destination untouched; opaque bytes are copied to the original
//! destination. A connection to this door itself (a redirect loop) is
//! closed, never followed.

use crate::runtime::Runtime;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_proxy::ProxyBody;
use tandem_proxy::transparent::{Protocol, detect, opaque, original_dst};
use tokio::net::TcpListener;

/// Host suffixes that mean "an app of the mesh", Kubernetes style.
const SUFFIXES: &[&str] = &[".svc.cluster.local", ".svc"];

/// The app id (`id` or `id.namespace`) a `Host` header names, if it can
/// name one: not an IP address, at most `id.namespace` once a known suffix
/// is taken off.
pub fn app_of(host: &str) -> Option<String> {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h,
        _ => host,
    };
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[') {
        return None;
    }
    let mut name = name.trim_end_matches('.').to_ascii_lowercase();
    for s in SUFFIXES {
        if let Some(stripped) = name.strip_suffix(s) {
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
                Protocol::Opaque => {
                    if let Err(e) = opaque(stream, dst).await {
                        tracing::debug!(%dst, error = %e, "outbound door: opaque connection ended");
                    }
                }
                Protocol::Http1 | Protocol::H2 => {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let rt = rt.clone();
                        async move { Ok::<_, std::convert::Infallible>(route(&rt, dst, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
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
                    tracing::warn!(error = %e, "{which} door: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let dst = match original_dst(&stream) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(%from, error = %e, "{which} door: a connection that was not redirected; closed");
                    return;
                }
            };
            if own.is_some_and(|o| o.port() == dst.port()) {
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
    let app = app_of(&host).map(|a| match a.split_once('.') {
        Some((id, ns)) if ns == own_ns => id.to_string(),
        _ => a,
    });
    match app {
        Some(app) if !crate::api::invoke::names_this_app(rt, &app) && invoker.knows(&app).await => {
            crate::api::http::invoke::forward(rt, &app, parts, body).await
        }
        // Not a mesh app: to where the app was going, as it was.
        _ => {
            let (body, _) = tandem_proxy::invoke::limited(body, rt.options.max_body_size);
            let req = Request::from_parts(parts, body);
            match invoker.external(&format!("http://{dst}"), req, None).await {
                Ok(resp) => resp,
                Err(e) => bad_gateway(&e.to_string()),
            }
        }
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
    doors(listener, rt, "inbound", move |stream, dst, from| async move {
        let to = if dst.port() == internal.port() {
            internal
        } else if allow_plaintext {
            dst
        } else {
            tracing::warn!(%from, %dst, "inbound door: plaintext from outside the mesh refused (--transparent-inbound-plaintext deny)");
            return;
        };
        if let Err(e) = opaque(stream, to).await {
            tracing::debug!(%from, %to, error = %e, "inbound door: connection ended");
        }
    })
    .await
}

fn bad_gateway(why: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(tandem_proxy::invoke::full(format!("tandem: {why}\n")));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_name_apps() {
        use super::app_of;
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
    }
}
