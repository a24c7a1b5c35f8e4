//! The HTTP door of service invocation: `/v1.0/invoke/<app>/method/<m>` and
//! the `dapr-app-id` header. Turns the caller's request into one for the
//! target app (method path cleaned, query kept verbatim, body streamed
//! within `--max-body-size`) and relays the answer: status, headers and a
//! body streamed through.

use super::boxed;
use super::wire::clean_path;
use crate::runtime::Runtime;
use http::{Request, Response};
use hyper::body::Incoming;
use tandem_proxy::ProxyBody;

/// `skip`: how many leading path segments address the sidecar
/// (`v1.0/invoke/<app>/method` = 4; 0 for the `dapr-app-id` form).
pub async fn http(
    rt: &Runtime,
    target: &str,
    skip: usize,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let cleaned = clean_path(parts.uri.path());
    let rest: Vec<&str> = cleaned
        .trim_start_matches('/')
        .split('/')
        .skip(skip)
        .collect();
    // Made canonical (and checked) by `forward`.
    let path = format!("/{}", rest.join("/"));
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(e) => {
            return boxed(
                crate::error::ApiError::malformed(format!("invalid method path {uri}: {e}"))
                    .to_http(),
            );
        }
    };
    forward(rt, target, parts, body, None).await
}

/// Sends a request (its URI the path relative to the target app) to
/// `target` and relays the answer. The body is streamed to the target as
/// it arrives, cut off past `--max-body-size` with a 413 (a declared length
/// over it was refused before this point). Shared by this door and
/// transparent mode's outbound door.
pub async fn forward(
    rt: &Runtime,
    target: &str,
    parts: http::request::Parts,
    body: Incoming,
    to: Option<std::net::SocketAddr>,
) -> Response<ProxyBody> {
    let max = rt.options.max_body_size;
    let mut parts = parts;
    // One canonical path, here at the door: what access control checks at
    // the callee and what its app receives. Ambiguous ones stop here.
    match tandem_proxy::path::canonical_uri(&parts.uri) {
        Ok(Some(uri)) => parts.uri = uri,
        Ok(None) => {}
        Err(e) => {
            return boxed(
                crate::error::ApiError::malformed(format!(
                    "{e}; it is refused before any policy or app sees it"
                ))
                .to_http(),
            );
        }
    }
    // Internal headers come from sidecars, never from an app.
    tandem_proxy::invoke::strip_internal(&mut parts.headers);
    // By address to a mesh app's host (transparent mode): the peer
    // delivers it there.
    if let Some(to) = to {
        parts.headers.insert(
            tandem_proxy::invoke::FORWARD_TO,
            tandem_proxy::invoke::forward_to_value(to, parts.version),
        );
    }
    let (body, too_large) = tandem_proxy::invoke::limited(body, max);
    let version = parts.version;
    let req = Request::from_parts(parts, body);
    match crate::api::invoke::invoke(rt, target, req, "http").await {
        Ok(mut resp) => {
            // The client's HTTP version, not the app's (an HTTP/1.0 app's
            // would close the client's connection).
            *resp.version_mut() = version;
            let h = resp.headers_mut();
            tandem_proxy::invoke::strip_connection_headers(h);
            h.remove(tandem_proxy::invoke::GRPC_STATUS);
            if h.remove(tandem_proxy::invoke::DATA_TYPE_URL).is_some() {
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(tandem_proxy::invoke::PROTOBUF_CONTENT_TYPE),
                );
            }
            resp
        }
        Err(_) if too_large.load(std::sync::atomic::Ordering::Relaxed) => {
            boxed(super::wire::body_too_large(max + 1, max).to_http())
        }
        Err(e) => boxed(e.to_http()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn method_paths_stay_inside_the_app() {
        let c = |p: &str| tandem_proxy::path::canonical(p).unwrap();
        assert_eq!(c("/a/b"), "/a/b");
        assert_eq!(c("/a/../../etc/passwd"), "/etc/passwd");
        assert_eq!(c("/"), "/");
        assert_eq!(c("/./x/./y"), "/x/y");
    }
}
