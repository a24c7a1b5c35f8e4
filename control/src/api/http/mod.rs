//! The Dapr HTTP API on hyper (HTTP/1.1 and h2c). Plain async handlers: the
//! router below reads top to bottom; each building block's handlers live in
//! their own module. Everything about the wire (paths, status codes, token,
//! body limits) is decided here; the logic lives in `crate::api::*`.

pub mod actors;
mod bindings;
mod configuration;
mod conversation;
mod crypto;
mod handlers;
pub(crate) mod invoke;
mod jobs;
mod lock;
mod pubsub;
mod state;
mod subtle;
mod tandem;
pub mod wire;
mod workflows;

use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Instant;
use tandem_proxy::ProxyBody;
use tokio::net::TcpListener;
use wire::{clean_path, percent_decode};

pub type ApiResponse = Response<Full<Bytes>>;

/// How long a client has to send a request head (daprd's 10 s).
pub const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most one read of an HTTP/1 request takes (hyper grows its reads to
/// this while they come back full).
const BODY_READ: usize = 256 << 10;

/// The bytes of an HTTP/1 request head as they came on the wire, near
/// enough: the request line and each `name: value` line.
fn head_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Accepts connections until shutdown is signalled, then lets in-flight
/// requests finish (bounded by the caller's grace period).
pub async fn serve(listener: TcpListener, rt: Arc<Runtime>) {
    let mut shutdown = rt.shutdown_signal();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 buffer bounds both a request's head and each read of
    // its body: sized for the head alone (4 KiB by default, 8 KiB at
    // least in hyper), a 1 GiB upload took 131,000 reads of 8 KiB. So the
    // buffer is large and `handle` bounds the head itself.
    let header_limit = usize::try_from(rt.options.read_buffer_size).unwrap_or(usize::MAX);
    builder
        .http1()
        .max_buf_size(header_limit.max(BODY_READ))
        // A request head must arrive within 10 s, as daprd's server asks.
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder
        .http2()
        .max_header_list_size(u32::try_from(header_limit).unwrap_or(u32::MAX))
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(tandem_proxy::invoke::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(tandem_proxy::invoke::KEEPALIVE_TIMEOUT);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tandem_proxy::invoke::accept_failed(&e).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let rt = rt.clone();
                let service = service_fn(move |req| {
                    let rt = rt.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(rt, req).await) }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // Silent connections (and HTTP/2 clients that never send
                    // their preface) go after the head timeout too.
                    if !tandem_proxy::invoke::first_bytes_within(&stream, HEAD_TIMEOUT).await {
                        return;
                    }
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

pub async fn handle(rt: Arc<Runtime>, req: Request<Incoming>) -> Response<ProxyBody> {
    // The head's bound (`--read-buffer-size`, at least hyper's 8 KiB as
    // before; HTTP/2 bounds its header list itself).
    let limit = usize::try_from(rt.options.read_buffer_size)
        .unwrap_or(usize::MAX)
        .max(8192);
    if req.version() < http::Version::HTTP_2 && head_len(&req) > limit {
        return Response::builder()
            .status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            .header(http::header::CONNECTION, "close")
            .body(tandem_proxy::invoke::full(Bytes::from(format!(
                "request header block larger than {limit} bytes (--read-buffer-size)"
            ))))
            .expect("valid response parts");
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = route(&rt, req).await;
    let status = resp.status().as_u16();
    rt.metrics
        .http_request(method.as_str(), status, start.elapsed());
    if rt.api_logging() && !(path.starts_with("/v1.0/healthz") && rt.omit_health_check_logs()) {
        tracing::info!(method = %method, path = %path, status, "HTTP API called");
    }
    resp
}

const VERSIONS: &[&str] = &["v1.0", "v1.0-alpha1", "v1.0-alpha2", "v1.0-beta1"];

fn boxed(resp: ApiResponse) -> Response<ProxyBody> {
    resp.map(tandem_proxy::invoke::boxed)
}

/// Building blocks whose routes exist in Dapr but not yet in tandem, with the
/// name used in the error message.
const NOT_YET: &[(&str, &str)] = &[("subscribe", "pub/sub")];

/// Building blocks whose HTTP API calls get a SERVER span of their own
/// (invocation has its CLIENT span; health, metadata and the control API
/// would only be noise).
const TRACED: &[&str] = &[
    "state",
    "publish",
    "bindings",
    "secrets",
    "configuration",
    "lock",
    "unlock",
    "conversation",
];

async fn route(rt: &Runtime, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let path = clean_path(req.uri().path());
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();

    let is_health = method == Method::GET
        && matches!(
            segs.as_slice(),
            ["v1.0", "healthz"] | ["v1.0", "healthz", "outbound"]
        );
    if !is_health {
        let given = req.headers().get("dapr-api-token").map(|v| v.as_bytes());
        if !rt.api_token_ok(given) {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(tandem_proxy::invoke::full(Bytes::from_static(
                    b"invalid api token",
                )))
                .expect("valid response parts");
        }
    }
    if !is_health
        && let [version, name, ..] = segs.as_slice()
        && VERSIONS.contains(version)
        && let Some(api) = &rt.snapshot().configuration.spec.api
        && !api.allows("http", name, version)
    {
        return boxed(ApiError::api_not_allowed("HTTP", name, version).to_http());
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > rt.options.max_body_size
    {
        return boxed(wire::body_too_large(len, rt.options.max_body_size).to_http());
    }

    // Service invocation: `/v1.0/invoke/<app>/method/<method>`, or the
    // `dapr-app-id` header on any path.
    if let ["v1.0", "invoke", target, "method", ..] = segs.as_slice() {
        let target = target.to_string();
        return invoke::http(rt, &target, 4, req).await;
    }
    if !is_health
        && let Some(target) = req
            .headers()
            .get("dapr-app-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    {
        return invoke::http(rt, &target, 0, req).await;
    }
    // Encryption streams its answer: not one of the buffered handlers.
    if method == Method::PUT
        && let ["v1.0-alpha1", "crypto", name, op @ ("encrypt" | "decrypt")] = segs.as_slice()
    {
        let (name, op) = (name.to_string(), op.to_string());
        return crypto::handle(rt, &name, &op, req).await;
    }
    // A SERVER span for a building block's call, named by its route and
    // component (`POST /v1.0/state/statestore`); its context goes on to
    // the handler in `traceparent` (a publish puts it in the CloudEvent,
    // so the subscriber's delivery continues this trace).
    let tracer = rt.tracer();
    let span = match segs.as_slice() {
        [version, block, name, ..]
            if tracer.is_on() && VERSIONS.contains(version) && TRACED.contains(block) =>
        {
            use tandem_proxy::trace::{Context, Kind};
            let route = if *block == "publish" && *name == "bulk" {
                format!("/{version}/publish/bulk/{}", segs.get(3).unwrap_or(&""))
            } else {
                format!("/{version}/{block}/{name}")
            };
            let mut span = tracer.start(
                || format!("{method} {route}"),
                Kind::Server,
                Context::from_headers(req.headers()),
            );
            if span.is_recording() {
                span.attribute("dapr.api", &format!("{method} {path}"));
            }
            span.attribute("http.method", method.as_str());
            span.inject(req.headers_mut());
            Some(span)
        }
        _ => None,
    };
    let resp = boxed(dispatch(rt, &method, &path, &segs, req).await);
    if let Some(mut span) = span {
        span.attribute("http.status_code", i64::from(resp.status().as_u16()));
        tracer.end(span, !resp.status().is_server_error());
    }
    resp
}

async fn dispatch(
    rt: &Runtime,
    method: &Method,
    path: &str,
    segs: &[&str],
    req: Request<Incoming>,
) -> ApiResponse {
    match (method, segs) {
        (&Method::GET, ["v1.0", "healthz"]) => handlers::healthz(rt, &req),
        (&Method::GET, ["v1.0", "healthz", "outbound"]) => handlers::healthz_outbound(rt),
        (&Method::GET, ["v1.0", "metadata"]) => handlers::get_metadata(rt),
        (&Method::PUT, ["v1.0", "metadata", key]) => {
            let key = key.to_string();
            handlers::put_metadata(rt, key, req).await
        }
        (&Method::POST, ["v1.0", "shutdown"]) => handlers::shutdown(rt, &req),
        (&Method::GET, ["v1.0", "secrets", store, "bulk"]) => {
            handlers::bulk_secrets(rt, store, &req).await
        }
        (&Method::GET, ["v1.0", "secrets", store, key]) => {
            handlers::get_secret(rt, store, key, &req).await
        }
        (&Method::POST | &Method::PUT, ["v1.0", "publish", pubsub, topic @ ..])
            if !topic.is_empty() && *pubsub != "bulk" =>
        {
            let (pubsub, topic) = (pubsub.to_string(), topic.join("/"));
            respond(pubsub::publish(rt, pubsub, topic, req).await)
        }
        (
            &Method::POST | &Method::PUT,
            [
                "v1.0" | "v1.0-alpha1",
                "publish",
                "bulk",
                pubsub,
                topic @ ..,
            ],
        ) if !topic.is_empty() => {
            let (pubsub, topic) = (pubsub.to_string(), topic.join("/"));
            respond(pubsub::bulk_publish(rt, pubsub, topic, req).await)
        }
        (&Method::GET, ["v1.0" | "v1.0-alpha1", "configuration", store]) => {
            respond(configuration::get(rt, store, &req).await)
        }
        (&Method::GET, ["v1.0" | "v1.0-alpha1", "configuration", store, "subscribe"]) => {
            respond(configuration::subscribe(rt, store, &req).await)
        }
        (
            &Method::GET,
            [
                "v1.0" | "v1.0-alpha1",
                "configuration",
                store,
                id,
                "unsubscribe",
            ],
        ) => configuration::unsubscribe(rt, store, id),
        (&Method::GET, ["v1.0-alpha1", "tandem", "status"]) => respond(tandem::status(rt)),
        (&Method::POST, ["v1.0-alpha1", "tandem", "reload"]) => respond(tandem::reload(rt).await),
        (&Method::PUT, ["v1.0-alpha1", "tandem", "resources", name]) => {
            let name = name.to_string();
            respond(tandem::put(rt, &name, req).await)
        }
        (&Method::DELETE, ["v1.0-alpha1", "tandem", "resources", name]) => {
            respond(tandem::delete(rt, name).await)
        }
        (method, ["v1.0-alpha1" | "v1.0", "jobs", name])
            if matches!(*method, Method::POST | Method::GET | Method::DELETE) =>
        {
            respond(jobs::handle(rt, method, name, req).await)
        }
        (&Method::POST, ["v1.0-alpha1", "subtlecrypto", name, op])
            if subtle::OPERATIONS.contains(op) =>
        {
            respond(subtle::handle(rt, name, op, req).await)
        }
        (&Method::POST, ["v1.0-alpha1", "conversation", name, "converse"]) => {
            let name = name.to_string();
            respond(conversation::alpha1(rt, name, req).await)
        }
        (&Method::POST, ["v1.0-alpha2", "conversation", name, "converse"]) => {
            let name = name.to_string();
            respond(conversation::alpha2(rt, name, req).await)
        }
        (&Method::POST, ["v1.0-alpha1", "lock", store]) => {
            let store = store.to_string();
            respond(lock::lock(rt, store, req).await)
        }
        (&Method::POST, ["v1.0-alpha1", "unlock", store]) => {
            let store = store.to_string();
            respond(lock::unlock(rt, store, req).await)
        }
        (&Method::POST | &Method::PUT, ["v1.0", "bindings", name]) => {
            let name = name.to_string();
            respond(bindings::invoke(rt, name, req).await)
        }
        (&Method::POST | &Method::PUT, ["v1.0", "state", store]) => {
            let store = store.to_string();
            respond(state::save(rt, &store, req).await)
        }
        (&Method::POST | &Method::PUT, ["v1.0", "state", store, "bulk"]) => {
            let store = store.to_string();
            respond(state::bulk(rt, &store, req).await)
        }
        (&Method::POST | &Method::PUT, ["v1.0", "state", store, "transaction"]) => {
            let store = store.to_string();
            respond(state::transaction(rt, &store, req).await)
        }
        (&Method::GET, ["v1.0", "state", store, key]) => {
            respond(state::get(rt, store, key, &req).await)
        }
        (&Method::DELETE, ["v1.0", "state", store, key]) => {
            respond(state::delete(rt, store, key, &req).await)
        }
        (&Method::POST | &Method::PUT, ["v1.0-alpha1", "state", store, "query"]) => {
            let store = store.to_string();
            respond(state::query(rt, &store, req).await)
        }
        (_, ["v1.0", "actors", ..]) => respond(actors::handle(rt, method, segs, path, req).await),
        (
            _,
            [
                "v1.0" | "v1.0-beta1" | "v1.0-alpha1",
                "workflows",
                rest @ ..,
            ],
        ) => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            respond(workflows::handle(rt, method, &rest, req).await)
        }
        (_, [version, block, ..]) if VERSIONS.contains(version) => {
            match NOT_YET.iter().find(|(b, _)| b == block) {
                Some((_, name)) => ApiError::unimplemented(name).to_http(),
                None => no_route(method, path),
            }
        }
        _ => no_route(method, path),
    }
}

fn respond(result: Result<ApiResponse, ApiError>) -> ApiResponse {
    result.unwrap_or_else(|e| e.to_http())
}

/// Dapr sends every unmatched request to service invocation; without a
/// target app id that is a 404 `ERR_DIRECT_INVOKE`.
fn no_route(method: &Method, path: &str) -> ApiResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        tonic::Code::NotFound,
        "ERR_DIRECT_INVOKE",
        format!(
            "no Dapr API route matches {method} {path}, and no target app id was given: call /v1.0/invoke/<app-id>/method/<method> or set the dapr-app-id header"
        ),
    )
    .to_http()
}

/// The small server on `--metrics-port`: `GET /metrics` in Prometheus text.
pub async fn serve_metrics(listener: TcpListener, rt: Arc<Runtime>) {
    let mut shutdown = rt.shutdown_signal();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tandem_proxy::invoke::accept_failed(&e).await;
                        continue;
                    }
                };
                let rt = rt.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let rt = rt.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(rt.metrics.render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"metrics are served at /metrics\n")))
                        };
                        Ok::<_, std::convert::Infallible>(resp.expect("valid response parts"))
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}
