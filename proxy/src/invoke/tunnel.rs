//! Byte streams to a mesh app's host (transparent mode's opaque TCP): an
//! HTTP/2 CONNECT on the pooled connection to that app's sidecar, which
//! checks the caller against access control as `/tcp/<port>`, connects on
//! its own host only, and copies bytes both ways.

use super::*;

impl Invoker {
    /// A byte stream to `to` (an address on app `target`'s host) through
    /// `target`'s sidecar: an HTTP/2 CONNECT on the (mTLS) connection to
    /// that sidecar, which checks who asks and connects on its host.
    pub async fn tunnel(
        &self,
        target: &str,
        to: std::net::SocketAddr,
    ) -> Result<hyper::upgrade::Upgraded, InvokeError> {
        let mut headers = HeaderMap::new();
        let (peer, sender) = self.reach(target, &mut headers, false).await?;
        let mut sender = sender.into_h2();
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
}

/// A tunnel a peer asks for (HTTP/2 CONNECT to `ip:port`): allowed when
/// access control lets the caller do operation `/tcp/<port>` with verb
/// `CONNECT`, and only to an address of this host; the bytes are then
/// copied both ways until either side closes.
pub(super) async fn tunnel_in(
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
    if let Err((status, why)) = may_reach(door, caller, req.headers(), to) {
        return refuse(status, why);
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

/// Whether `caller` may reach `to` on this host through this sidecar (a
/// tunnel, or a request by address): the request must be for this
/// sidecar's app, access control must allow `/tcp/<port>` with verb
/// `CONNECT`, and `to` must be an address of this host (no open relay).
pub(super) fn may_reach(
    door: &Door<'_>,
    caller: &crate::access::Caller,
    headers: &HeaderMap,
    to: std::net::SocketAddr,
) -> Result<(), (StatusCode, String)> {
    let callee = headers.get(CALLEE).and_then(|v| v.to_str().ok());
    if callee != Some(door.app_id) {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "this sidecar serves app {}, not {}",
                door.app_id,
                callee.unwrap_or("(none)")
            ),
        ));
    }
    if let Some(acl) = door.access {
        acl.check(caller, &format!("/tcp/{}", to.port()), Some("CONNECT"))
            .map_err(|why| (StatusCode::FORBIDDEN, why))?;
    }
    if !is_own_address(to.ip()) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("{} is not an address of this host", to.ip()),
        ));
    }
    Ok(())
}

/// Whether `ip` is loopback or one of this host's own addresses (binding
/// to it works only then). The answer is kept for a few seconds — binding
/// a socket per request cost a request by address ~3 system calls — in a
/// small table (cleared when full: peers choose the addresses).
fn is_own_address(ip: std::net::IpAddr) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};
    const KEEP: Duration = Duration::from_secs(5);
    const MOST: usize = 64;
    static SEEN: OnceLock<Mutex<HashMap<std::net::IpAddr, (bool, Instant)>>> = OnceLock::new();
    if ip.is_loopback() {
        return true;
    }
    if ip.is_unspecified() {
        return false;
    }
    let seen = SEEN.get_or_init(Default::default);
    if let Some((own, at)) = seen.lock().expect("own addresses").get(&ip)
        && at.elapsed() < KEEP
    {
        return *own;
    }
    let own = std::net::UdpSocket::bind((ip, 0)).is_ok();
    let mut seen = seen.lock().expect("own addresses");
    if seen.len() >= MOST {
        seen.clear();
    }
    seen.insert(ip, (own, Instant::now()));
    own
}
