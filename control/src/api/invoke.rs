//! Service invocation from the app's point of view (dapr-wire.md §1.4), for
//! both protocols: which app, which method, and what the caller gets back.
//! The request is handed to this app's own channel when it names this app,
//! otherwise to the proxy's `Invoker`, which finds the peer sidecar.

use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tandem_proxy::ProxyBody;
use tandem_proxy::invoke::{InvokeError, strip_hop_by_hop};
use tandem_proxy::resilience::{FailureKind, ResilienceError};

/// Headers the caller sends to its own sidecar that must not reach the
/// target app.
const NOT_FORWARDED: &[&str] = &["dapr-app-id", "dapr-api-token", "dapr-callee-app-id"];

fn invoke_error(target: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "ERR_DIRECT_INVOKE",
        format!("failed to invoke, id: {target}, err: {e}"),
    )
}

/// Whether `target` (`id` or `id.namespace`) is this sidecar's own app:
/// such calls go to the app channel, with no network hop.
pub(crate) fn names_this_app(rt: &Runtime, target: &str) -> bool {
    let own_ns = rt.options.namespace.as_deref().unwrap_or("");
    target == rt.app_id()
        || target
            .split_once('.')
            .is_some_and(|(a, ns)| a == rt.app_id() && ns == own_ns)
}

/// `InvokeService` (deprecated in Dapr, still what several SDKs call): the
/// `InvokeRequest` becomes an HTTP request (`http_extension` verb, POST when
/// none, and query string), and a 2xx answer its `InvokeResponse`; any other
/// status is an error carrying the app's body.
pub async fn invoke_grpc(
    rt: &Runtime,
    r: tandem_proto::runtime::v1::InvokeServiceRequest,
) -> Result<tandem_proto::common::v1::InvokeResponse, ApiError> {
    use http_body_util::BodyExt;
    use tandem_proto::common::v1::http_extension::Verb;
    let message = r.message.unwrap_or_default();
    let ext = message.http_extension.unwrap_or_default();
    let method = match Verb::try_from(ext.verb).unwrap_or(Verb::None) {
        Verb::Get => http::Method::GET,
        Verb::Head => http::Method::HEAD,
        Verb::Put => http::Method::PUT,
        Verb::Delete => http::Method::DELETE,
        Verb::Connect => http::Method::CONNECT,
        Verb::Options => http::Method::OPTIONS,
        Verb::Trace => http::Method::TRACE,
        Verb::Patch => http::Method::PATCH,
        Verb::Post | Verb::None => http::Method::POST,
    };
    let mut uri = format!("/{}", message.method.trim_start_matches('/'));
    if !ext.querystring.is_empty() {
        uri = format!("{uri}?{}", ext.querystring);
    }
    let mut builder = Request::builder().method(method).uri(uri.as_str());
    if !message.content_type.is_empty() {
        builder = builder.header(http::header::CONTENT_TYPE, message.content_type.as_str());
    }
    let data = message.data.unwrap_or_default();
    if !data.type_url.is_empty() {
        builder = builder.header(tandem_proxy::invoke::DATA_TYPE_URL, data.type_url.as_str());
    }
    let data = data.value;
    let req = builder
        .body(tandem_proxy::invoke::full(Bytes::from(data)))
        .map_err(|e| ApiError::malformed(format!("invalid method {uri}: {e}")))?;
    let resp = invoke(rt, &r.id, req, "grpc").await?;
    let status = resp.status();
    let app_code = grpc_status(resp.headers());
    let header = |h: &http::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let content_type = header(resp.headers(), http::header::CONTENT_TYPE.as_str());
    let type_url = header(resp.headers(), tandem_proxy::invoke::DATA_TYPE_URL);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| invoke_error(&r.id, e))?
        .to_bytes();
    if !status.is_success() {
        return Err(ApiError::new(
            status,
            app_code.map_or_else(|| grpc_code_of(status), |c| tonic::Code::from(c as i32)),
            "ERR_DIRECT_INVOKE",
            format!(
                "app {} answered {status}: {}",
                r.id,
                String::from_utf8_lossy(&body)
            ),
        ));
    }
    // As daprd: no data at all for an empty answer without a type.
    let data = (!body.is_empty() || !type_url.is_empty()).then(|| prost_types::Any {
        type_url,
        value: body.to_vec(),
    });
    Ok(tandem_proto::common::v1::InvokeResponse { data, content_type })
}

/// The gRPC code a gRPC app answered with, when the answer is one.
pub(crate) fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get(tandem_proxy::invoke::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The reverse of Dapr's gRPC → HTTP status mapping.
fn grpc_code_of(status: StatusCode) -> tonic::Code {
    use tonic::Code as C;
    match status.as_u16() {
        400 => C::InvalidArgument,
        401 => C::Unauthenticated,
        403 => C::PermissionDenied,
        404 => C::NotFound,
        408 => C::Cancelled,
        409 => C::AlreadyExists,
        429 => C::ResourceExhausted,
        501 => C::Unimplemented,
        503 => C::Unavailable,
        504 => C::DeadlineExceeded,
        _ => C::Unknown,
    }
}

/// Sends `req` (its path relative to the target app) to app `target` and
/// returns the app's answer as it is. `req`'s headers are cleaned here.
/// `kind` is the caller's protocol (`http` or `grpc`), for metrics.
pub async fn invoke(
    rt: &Runtime,
    target: &str,
    mut req: Request<ProxyBody>,
    kind: &str,
) -> Result<Response<ProxyBody>, ApiError> {
    use tandem_proxy::trace::{Context, Kind};
    let start = std::time::Instant::now();
    let tracer = rt.tracer();
    let mut span = tracer.start(
        || format!("/v1.0/invoke/{target}/method{}", req.uri().path()),
        Kind::Client,
        Context::from_headers(req.headers()),
    );
    span.attribute("dapr.protocol", kind);
    span.attribute("rpc.service", "ServiceInvocation");
    span.attribute("net.peer.name", target);
    span.attribute("http.method", req.method().as_str());
    span.inject(req.headers_mut());
    let mut result = invoke_inner(rt, target, req).await;
    let status = match &result {
        Ok(resp) => resp.status().as_u16().to_string(),
        Err(_) => "error".to_string(),
    };
    span.attribute("http.status_code", &status);
    if let Ok(resp) = &mut result {
        // Like Dapr, the caller learns the trace it is part of.
        span.inject(resp.headers_mut());
    }
    let ok = result.as_ref().is_ok_and(|r| !r.status().is_server_error());
    tracer.end(span, ok);
    rt.metrics
        .invocation(target, kind, &status, start.elapsed());
    result
}

async fn invoke_inner(
    rt: &Runtime,
    target: &str,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ApiError> {
    if target.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument,
            "ERR_DIRECT_INVOKE",
            "the target app id is empty",
        ));
    }
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    for name in NOT_FORWARDED {
        h.remove(*name);
    }
    // A full URL, or an HTTPEndpoint resource's name: outside the mesh.
    let external = external_target(rt, target, req.headers_mut()).await?;
    let is_self = names_this_app(rt, target);
    if is_self {
        let me = HeaderValue::from_str(rt.app_id()).map_err(|e| invoke_error(target, e))?;
        req.headers_mut()
            .insert(HeaderName::from_static("dapr-caller-app-id"), me.clone());
        req.headers_mut()
            .insert(HeaderName::from_static("dapr-callee-app-id"), me);
    }
    let app_id = target.split_once('.').map_or(target, |(a, _)| a);
    let policy = rt.snapshot().app_policy(app_id);
    let external = external.as_ref();
    let send = |req: Request<ProxyBody>| async move {
        if let Some(out) = external {
            return match rt.invoker() {
                Some(invoker) => invoker.external(&out.base, req, out.tls.as_ref()).await,
                None => Err(InvokeError::NotReady),
            };
        }
        if is_self {
            let app = rt.app.as_ref().ok_or(InvokeError::NoApp)?;
            return app.invoke(req).await.map_err(InvokeError::from);
        }
        match rt.invoker() {
            Some(invoker) => invoker.remote(target, req).await,
            None => Err(InvokeError::NotReady),
        }
    };
    if policy.is_empty() {
        return send(req).await.map_err(|e| invoke_error(target, e));
    }
    // Beyond Dapr: a request the target may already have acted on (the
    // connection failed after it went out, or the timeout cut it off) is
    // sent again only when repeating it is harmless — an idempotent method
    // (RFC 9110), or an `Idempotency-Key` from the caller.
    let idempotent = tandem_proxy::invoke::is_idempotent(req.method())
        || req.headers().contains_key("idempotency-key");
    let retry = policy.retry.as_ref();
    let judge = |resp: Response<ProxyBody>| {
        // A gRPC app's answer is judged by its gRPC code.
        let failed = match grpc_status(resp.headers()) {
            Some(code) => retry.map_or(code != 0, |r| r.retries_grpc_status(code)),
            None => retry.map_or(resp.status().is_server_error(), |r| {
                r.retries_http_status(resp.status().as_u16())
            }),
        };
        if failed {
            Err(Attempt::Answered(Box::new(resp)))
        } else {
            Ok(resp)
        }
    };
    let classify = |a: &Attempt| match a {
        Attempt::Failed(e) if e.may_have_reached_target() && !idempotent => {
            FailureKind::Unrepeatable
        }
        _ => FailureKind::Transient,
    };
    // A body of known length is kept so every attempt can replay it (it is
    // within --max-body-size); a streamed one (no length) goes once, under
    // the policy's timeout and breaker, as in Dapr.
    let replayable = retry.is_some() && http_body::Body::size_hint(req.body()).exact().is_some();
    let result = if replayable {
        let (parts, body) = req.into_parts();
        let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
        let body = body
            .collect()
            .await
            .map_err(|e| invoke_error(target, format!("the request body could not be read: {e}")))?
            .to_bytes();
        let attempt = || {
            let mut req = Request::new(tandem_proxy::invoke::full(body.clone()));
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            let send = &send;
            async move { send(req).await.map_err(Attempt::Failed).and_then(judge) }
        };
        let retries = tandem_proxy::resilience::Retries {
            allowed: true,
            after_timeout: idempotent,
        };
        policy.run_with(attempt, classify, retries).await
    } else {
        let once = std::sync::Mutex::new(Some(req));
        let attempt = || {
            let req = once.lock().expect("request").take();
            let send = &send;
            async move {
                match req {
                    Some(req) => send(req).await.map_err(Attempt::Failed).and_then(judge),
                    None => Err(Attempt::Failed(InvokeError::NotReady)),
                }
            }
        };
        let retries = tandem_proxy::resilience::Retries {
            allowed: false,
            after_timeout: false,
        };
        policy.run_with(attempt, classify, retries).await
    };
    match result {
        Ok(resp) => Ok(resp),
        // The last answer of an app that kept failing is relayed as it is.
        Err(ResilienceError::Inner(Attempt::Answered(resp))) => Ok(*resp),
        Err(ResilienceError::Inner(Attempt::Failed(e))) => Err(invoke_error(target, e)),
        Err(e) => Err(invoke_error(target, e)),
    }
}

/// Where a target outside the mesh is: its base URL and, for an
/// HTTPEndpoint with `clientTLS`, how to speak TLS to it.
struct Outside {
    base: String,
    tls: Option<tandem_proxy::invoke::OutsideTls>,
}

/// `Some` when `target` is outside the mesh: a full `http(s)://` URL, or
/// the name of an `HTTPEndpoint` (whose headers — values, `envRef`s and
/// `secretKeyRef`s through its `auth.secretStore` — are added to
/// `headers`).
async fn external_target(
    rt: &Runtime,
    target: &str,
    headers: &mut http::HeaderMap,
) -> Result<Option<Outside>, ApiError> {
    if target.starts_with("http://") || target.starts_with("https://") {
        return Ok(Some(Outside {
            base: target.to_string(),
            tls: None,
        }));
    }
    let snap = rt.snapshot();
    let Some(endpoint) = snap
        .resources
        .http_endpoints
        .iter()
        .find(|h| h.resource.metadata.name == target)
    else {
        return Ok(None);
    };
    let endpoint = &endpoint.resource;
    let store = endpoint.auth.secret_store.as_str();
    let secret = |r, what: String| {
        let stores = &snap.secret_stores;
        async move {
            crate::components::read_secret_ref(stores, store, r, &what)
                .await
                .map_err(|e| invoke_error(target, format!("HTTPEndpoint {target}: {e}")))
        }
    };
    for item in &endpoint.spec.headers {
        let value = if let Some(var) = &item.env_ref {
            std::env::var(var).map_err(|_| {
                invoke_error(
                    target,
                    format!("header {} takes envRef {var}, which is not set", item.name),
                )
            })?
        } else if let Some(r) = &item.secret_key_ref {
            secret(r, format!("header `{}`", item.name)).await?
        } else {
            item.value_string().unwrap_or_default()
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(item.name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return Err(invoke_error(
                target,
                format!("header {} is not a valid HTTP header", item.name),
            ));
        };
        headers.insert(name, value);
    }
    let tls = match &endpoint.spec.client_tls {
        None => None,
        Some(t) => {
            let mut pems: [Option<String>; 3] = Default::default();
            for (slot, (field, v)) in pems.iter_mut().zip([
                ("rootCA", &t.root_ca),
                ("certificate", &t.certificate),
                ("privateKey", &t.private_key),
            ]) {
                *slot = match v {
                    None => None,
                    Some(v) => match (&v.value, &v.secret_key_ref) {
                        (_, Some(r)) => Some(secret(r, format!("clientTLS {field}")).await?),
                        (Some(text), None) => Some(text.clone()),
                        (None, None) => None,
                    },
                };
            }
            let [root_ca, certificate, private_key] = pems;
            Some(tandem_proxy::invoke::OutsideTls {
                root_ca,
                certificate,
                private_key,
            })
        }
    };
    Ok(Some(Outside {
        base: endpoint.spec.base_url.clone(),
        tls,
    }))
}

/// One try under a resiliency policy that did not succeed.
enum Attempt {
    /// The app answered, with a status the policy counts as a failure.
    Answered(Box<Response<ProxyBody>>),
    Failed(InvokeError),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Answered(r) => write!(f, "the app answered {}", r.status()),
            Attempt::Failed(e) => write!(f, "{e}"),
        }
    }
}
