//! gRPC proxying (dapr-wire.md §2.0): a call on the sidecar's gRPC port to
//! any service but Dapr's own, carrying `dapr-app-id` metadata, is passed to
//! that app's gRPC server — this app's directly, another's through its
//! sidecar — with both bodies streamed, so every RPC shape works. The
//! caller's `dapr-api-token` is checked and not forwarded.

use crate::runtime::Runtime;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tandem_proxy::invoke::{boxed, grpc_error};
use tonic::body::Body;

const DAPR_SERVICE: &str = "/dapr.proto.runtime.v1.Dapr/";
/// The workflow protocol's service (no package on the wire).
const TASK_HUB: &str = "/TaskHubSidecarService/";

/// Wraps the gRPC API's routes.
#[derive(Clone)]
pub struct Layer(pub Arc<Runtime>);

impl<S> tower::Layer<S> for Layer {
    type Service = Proxy<S>;
    fn layer(&self, inner: S) -> Proxy<S> {
        Proxy {
            inner,
            rt: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Proxy<S> {
    inner: S,
    rt: Arc<Runtime>,
}

fn target(req: &Request<Body>) -> Option<String> {
    if req.uri().path().starts_with(DAPR_SERVICE) || req.uri().path().starts_with(TASK_HUB) {
        return None;
    }
    let h = req.headers();
    h.get("dapr-app-id")
        .or_else(|| h.get("dapr-callee-app-id"))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(String::from)
}

impl<S> tower::Service<Request<Body>> for Proxy<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(target) = target(&req) else {
            return Box::pin(self.inner.call(req));
        };
        let rt = self.rt.clone();
        Box::pin(async move { Ok(proxy(&rt, &target, req).await.map(Body::new)) })
    }
}

async fn proxy(
    rt: &Runtime,
    target: &str,
    req: Request<Body>,
) -> Response<tandem_proxy::ProxyBody> {
    let given = req.headers().get("dapr-api-token").map(|v| v.as_bytes());
    if !rt.api_token_ok(given) {
        return grpc_error(tonic::Code::Unauthenticated, "invalid api token");
    }
    let (mut parts, body) = req.into_parts();
    parts.headers.remove("dapr-api-token");
    to_app(rt, target, Request::from_parts(parts, boxed(body))).await
}

/// A gRPC call to app `target`'s gRPC server: this app's directly,
/// another's through its sidecar under that app's policy. Shared with
/// transparent mode's outbound door. Inside a CLIENT span (the callee's
/// sidecar continues it with its SERVER span) and counted in
/// `dapr_service_invocation_*` (type `grpc`), both recorded when the
/// call is over: at a trailers-only answer, else when the answer's stream
/// ends (its trailers' status), fails or is dropped (`CANCELLED`).
pub async fn to_app(
    rt: &Runtime,
    target: &str,
    mut req: Request<tandem_proxy::ProxyBody>,
) -> Response<tandem_proxy::ProxyBody> {
    use tandem_proxy::telemetry::{End, Finished, grpc_status_of};
    use tandem_proxy::trace::{Context, Kind};
    let start = std::time::Instant::now();
    let tracer = rt.tracer();
    let path = req.uri().path();
    let mut span = tracer.start(
        || path.to_string(),
        Kind::Client,
        Context::from_headers(req.headers()),
    );
    span.attribute("dapr.protocol", "grpc");
    span.attribute("rpc.system", "grpc");
    if let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
        span.attribute("rpc.service", service);
        span.attribute("rpc.method", method);
    }
    span.attribute("net.peer.name", target);
    // Internal headers come from sidecars, never from an app.
    tandem_proxy::invoke::strip_internal(req.headers_mut());
    span.inject(req.headers_mut());
    let resp = call_app(rt, target, req).await;
    let metrics = rt.metrics.clone();
    let target = target.to_string();
    let finish = move |mut span: tandem_proxy::trace::Span, end: End| {
        let status = end.grpc_status();
        span.attribute("rpc.grpc.status_code", status);
        tracer.end(span, matches!(end, End::Complete(Some(0))));
        metrics.invocation(&target, "grpc", status, start.elapsed());
    };
    // A trailers-only answer (an error, mostly) is over already.
    if let Some(code) = grpc_status_of(resp.headers()) {
        finish(span, End::Complete(Some(code)));
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = Finished::new(body, move |end| finish(span, end));
    Response::from_parts(parts, tandem_proxy::invoke::boxed(body))
}

async fn call_app(
    rt: &Runtime,
    target: &str,
    req: Request<tandem_proxy::ProxyBody>,
) -> Response<tandem_proxy::ProxyBody> {
    let Some(invoker) = rt.invoker() else {
        return grpc_error(tonic::Code::Unavailable, "service invocation is not ready");
    };
    let is_self = crate::api::invoke::names_this_app(rt, target);
    let result = if is_self {
        match rt.app.as_ref() {
            Some(app) => invoker.grpc_local(app, req).await,
            None => Err(tandem_proxy::invoke::InvokeError::NoApp),
        }
    } else {
        let app_id = target.split_once('.').map_or(target, |(a, _)| a);
        let policy = rt.snapshot().app_policy(app_id);
        if policy.is_empty() {
            invoker.grpc_remote(target, req).await
        } else {
            return under_policy(&policy, invoker.clone(), target, req).await;
        }
    };
    result.unwrap_or_else(|e| e.to_grpc(target))
}

/// One try of a proxied call under the app's policy that did not succeed.
enum Tried {
    /// The app answered at once with a failing gRPC status.
    Answered(Response<tandem_proxy::ProxyBody>),
    Failed(tandem_proxy::invoke::InvokeError),
}

impl std::fmt::Display for Tried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tried::Answered(_) => write!(f, "the app answered with a failing status"),
            Tried::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A proxied call under the target app's resiliency policy: the timeout
/// bounds the wait for the answer's headers (a stream then flows freely),
/// the breaker counts failed connections, timeouts and immediate failing
/// statuses (`matching.gRPCStatusCodes`, else the server-failure codes).
/// Never retried: the request is a stream that went out as it came.
async fn under_policy(
    policy: &tandem_proxy::resilience::Policy,
    invoker: std::sync::Arc<tandem_proxy::Invoker>,
    target: &str,
    req: Request<tandem_proxy::ProxyBody>,
) -> Response<tandem_proxy::ProxyBody> {
    use tandem_proxy::resilience::{FailureKind, ResilienceError, Retries};
    let once = std::sync::Mutex::new(Some(req));
    let retry = policy.retry.as_ref();
    let attempt = || {
        let req = once.lock().expect("request").take();
        let invoker = invoker.clone();
        async move {
            let Some(req) = req else {
                return Err(Tried::Failed(tandem_proxy::invoke::InvokeError::NotReady));
            };
            let resp = invoker
                .grpc_remote(target, req)
                .await
                .map_err(Tried::Failed)?;
            let code = tandem_proxy::telemetry::grpc_status_of(resp.headers())
                .and_then(|c| u32::try_from(c).ok());
            match code {
                Some(c)
                    if retry.map_or(tandem_proxy::resilience::grpc_server_failure(c), |r| {
                        r.retries_grpc_status(c)
                    }) =>
                {
                    Err(Tried::Answered(resp))
                }
                _ => Ok(resp),
            }
        }
    };
    let no_retries = Retries {
        allowed: false,
        after_timeout: false,
    };
    match policy
        .run_with(attempt, |_| FailureKind::Transient, no_retries)
        .await
    {
        Ok(resp) | Err(ResilienceError::Inner(Tried::Answered(resp))) => resp,
        Err(ResilienceError::Inner(Tried::Failed(e))) => e.to_grpc(target),
        Err(e @ ResilienceError::Timeout(_)) => grpc_error(
            tonic::Code::DeadlineExceeded,
            &format!("failed to proxy the call to app {target}: {e}"),
        ),
        Err(e) => grpc_error(
            tonic::Code::Unavailable,
            &format!("failed to proxy the call to app {target}: {e}"),
        ),
    }
}
