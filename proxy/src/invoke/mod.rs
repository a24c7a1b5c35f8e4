//! Service invocation's data plane, by concern:
//! - `invoker`: the caller's side (resolve, reach, send, resend once);
//! - `peers`: the pooled connections to peer sidecars and happy eyeballs;
//! - `inbound`: the callee's side (the internal listener and each request);
//! - `tunnel`: byte streams to a mesh app's host (transparent mode);
//! - `outside`: calls that leave the mesh (HTTP, HTTPS, streams);
//! - here: the bodies, the internal headers, the error type.
//!
//! A request for app `X` is resolved to a peer sidecar (`crate::resolve`)
//! and sent over pooled, multiplexed HTTP/2 (mTLS with `--enable-mtls`) to
//! the peer's internal port; the peer checks that it hosts `X` and who
//! calls, and hands the request to its app over the app channel. A call to
//! this sidecar's own app id goes straight to the app channel. Bodies are
//! streamed through, never buffered.

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

mod inbound;
mod invoker;
mod outside;
mod peers;
mod tunnel;

pub use inbound::*;
pub use invoker::*;
pub use outside::*;
pub use peers::*;

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

/// On a call between sidecars for an actor (`type/id`): the callee's
/// actor runtime serves it (turns, activation), not the app channel.
pub const ACTOR: &str = "tandem-actor";

/// Serves actor calls that peer sidecars send here (`ACTOR`): the
/// sidecar's actor runtime, set once it runs.
pub trait ActorDoor: Send + Sync {
    fn call(
        &self,
        req: Request<ProxyBody>,
    ) -> futures_util::future::BoxFuture<'static, Response<ProxyBody>>;
}

pub type ActorDoorCell = Arc<std::sync::OnceLock<Arc<dyn ActorDoor>>>;

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
    /// The gRPC status a proxied call gets for this failure: an app nobody
    /// resolves is `NOT_FOUND`, one that cannot speak gRPC
    /// `FAILED_PRECONDITION`, every other failure `UNAVAILABLE` (worth
    /// trying again later).
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            InvokeError::NotFound(_) => tonic::Code::NotFound,
            InvokeError::NotGrpc(_) => tonic::Code::FailedPrecondition,
            _ => tonic::Code::Unavailable,
        }
    }

    /// The trailers-only answer to a proxied gRPC call to `target` that
    /// failed so — the one rendering of invocation failures for gRPC
    /// proxying, on both sides.
    pub fn to_grpc(&self, target: &str) -> Response<ProxyBody> {
        grpc_error(
            self.grpc_code(),
            &format!("failed to proxy the call to app {target}: {self}"),
        )
    }

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

/// Whether `name` describes the connection a message came on (RFC 9110
/// §7.6.1), which no proxy forwards; a request also loses `TE`, `Trailer`
/// and `Host` (the next hop gets its own), an answer keeps `Trailer`: it
/// announces trailers that travel through.
fn is_connection_level(name: &HeaderName, request: bool) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
        || (request && (name == header::TE || name == header::TRAILER || name == header::HOST))
}

/// Removes the connection-level headers and the ones `Connection` names.
/// One look over the map's keys finds that there is nothing to do, the
/// usual case (no header is removed by a name given as text, which would
/// hash it each time).
fn strip_connection_level(h: &mut HeaderMap, request: bool) {
    if !h.keys().any(|name| is_connection_level(name, request)) {
        return;
    }
    // `TE: trailers` says the client takes trailers, which travel
    // through us, and gRPC servers insist on it (the one TE an HTTP/2
    // request may carry).
    let trailers = request
        && h.get_all(header::TE).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    let mut gone: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        // `Connection: TE` goes with a TE header; neither it nor an
        // answer's `Trailer` is a private header to drop.
        .filter(|name| name != header::TRAILER && name != header::TE)
        .collect();
    gone.extend(
        h.keys()
            .filter(|name| is_connection_level(name, request))
            .cloned(),
    );
    for name in gone {
        h.remove(name);
    }
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Makes a request ready for the next hop: the connection-level headers
/// and those `Connection` names go, `TE` too unless it is `trailers`, and
/// `Trailer` and `Host`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip_connection_level(h, true);
}

/// Removes from an answer the headers that describe the connection it
/// came on (`Connection`, the headers it names, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`): an app's
/// `Connection: close` must not close the connection between sidecars, or
/// the caller's. `Trailer` stays.
pub fn strip_connection_headers(h: &mut HeaderMap) {
    strip_connection_level(h, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_leave_an_answer_and_the_rest_stays() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-private"),
            ("connection", "keep-alive"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("trailer", "grpc-status"),
            ("content-type", "text/plain"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_connection_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "trailer", "x-kept"]);
        // Nothing to strip, nothing changed; a bad name in `Connection`
        // is ignored.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("bad name, ,"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_request_loses_connection_headers_and_the_ones_named_keeps_te_trailers() {
        let strip = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            strip_hop_by_hop(&mut h);
            let mut left: Vec<String> = h
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                .collect();
            left.sort();
            left
        };
        assert_eq!(
            strip(&[
                ("connection", "close, X-Private, te"),
                ("x-private", "1"),
                ("te", "gzip, trailers"),
                ("trailer", "x-sum"),
                ("host", "example"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("x-kept", "yes"),
            ]),
            ["te: trailers", "x-kept: yes"]
        );
        assert_eq!(strip(&[("te", "gzip")]), Vec::<String>::new());
        // Nothing connection-level: the map is left as it was.
        assert_eq!(
            strip(&[("content-type", "text/plain"), ("x-a", "1")]),
            ["content-type: text/plain", "x-a: 1"]
        );
    }
}
