//! The app channel: every call from the sidecar to its own application goes
//! through here, over HTTP/1, h2c or gRPC, carrying `APP_API_TOKEN` and held
//! to `--app-max-concurrency`. It owns connection pooling to the app and
//! nothing else: no retries (policy belongs to the pipeline), no routing.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tandem_config::{AppProtocol, BulkSubscribe, RouteRule, SubscriptionRoutes, SubscriptionSpec};
use tandem_proto::runtime::v1 as rt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Debug)]
pub struct AppChannelConfig {
    pub app_id: String,
    pub address: String,
    pub port: u16,
    pub protocol: AppProtocol,
    pub api_token: Option<String>,
    /// `None` = unlimited.
    pub max_concurrency: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppChannelError {
    #[error("app channel: cannot reach the app at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The request was (perhaps partly) sent: the app may have acted on it.
    #[error("app channel: the call to the app at {address} failed: {reason}")]
    Interrupted { address: String, reason: String },
    #[error("app channel: the request body could not be read: {0}")]
    Body(String),
    #[error("app channel: the app answered {status} to {what}")]
    Status { what: String, status: u16 },
    #[error("app channel: the app's answer to {what} is not valid: {reason}")]
    BadAnswer { what: String, reason: String },
    #[error("app channel: app protocol `{0}` is not supported yet; use http, h2c or grpc")]
    Unsupported(&'static str),
}

enum Transport {
    Http {
        // Boxed: the hyper client is several times the size of a channel.
        client: Box<Client<HttpConnector, crate::invoke::ProxyBody>>,
        base: String,
    },
    Grpc {
        channel: Channel,
    },
}

pub struct AppChannel {
    config: AppChannelConfig,
    transport: Transport,
    limiter: Option<Arc<Semaphore>>,
}

impl AppChannel {
    pub fn new(config: AppChannelConfig) -> Result<Self, AppChannelError> {
        let base = format!("{}:{}", config.address, config.port);
        let transport = match config.protocol {
            AppProtocol::Http | AppProtocol::H2c => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let mut builder = Client::builder(TokioExecutor::new());
                builder.pool_idle_timeout(Duration::from_secs(90));
                if config.protocol == AppProtocol::H2c {
                    builder.http2_only(true);
                }
                Transport::Http {
                    client: Box::new(builder.build(connector)),
                    base: format!("http://{base}"),
                }
            }
            AppProtocol::Grpc => {
                let endpoint = Endpoint::from_shared(format!("http://{base}"))
                    .map_err(|e| AppChannelError::Unreachable {
                        address: base.clone(),
                        reason: e.to_string(),
                    })?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5));
                Transport::Grpc {
                    channel: endpoint.connect_lazy(),
                }
            }
            AppProtocol::Https => return Err(AppChannelError::Unsupported("https")),
            AppProtocol::Grpcs => return Err(AppChannelError::Unsupported("grpcs")),
        };
        let limiter = config
            .max_concurrency
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        Ok(Self {
            config,
            transport,
            limiter,
        })
    }

    pub fn config(&self) -> &AppChannelConfig {
        &self.config
    }

    fn address(&self) -> String {
        format!("{}:{}", self.config.address, self.config.port)
    }

    /// Waits for a slot under `--app-max-concurrency`.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        match &self.limiter {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Dials the app's port every 100 ms until it accepts (Dapr's "waiting
    /// on port"). Returns when the port accepts.
    pub async fn wait_until_listening(&self) {
        let addr = self.address();
        let mut logged = false;
        loop {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(_) => return,
                Err(_) if !logged => {
                    tracing::info!(app_address = %addr, "waiting for the app to listen");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends app work (an invocation, an event, a binding delivery) to the
    /// app over HTTP or h2c. The path in `req` is relative to the app's base
    /// address. Held to `--app-max-concurrency`: the slot is released when
    /// the response body is finished or dropped, not at the headers.
    pub async fn send_http<B>(
        &self,
        req: Request<B>,
    ) -> Result<Response<LimitedBody>, AppChannelError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::invoke::BoxError>,
    {
        let permit = self.permit().await;
        let resp = self
            .send_http_unlimited(req.map(crate::invoke::boxed))
            .await?;
        Ok(resp.map(|inner| LimitedBody {
            inner,
            _permit: permit,
        }))
    }

    /// The same without the concurrency limit: for the sidecar's own calls
    /// (init endpoints, health probes), which must not queue behind app work.
    async fn send_http_unlimited(
        &self,
        mut req: Request<crate::invoke::ProxyBody>,
    ) -> Result<Response<hyper::body::Incoming>, AppChannelError> {
        let Transport::Http { client, base } = &self.transport else {
            return Err(AppChannelError::Unsupported(
                "grpc (HTTP call on a gRPC channel)",
            ));
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri: Uri = format!("{base}{path}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| AppChannelError::Unreachable {
                address: self.address(),
                reason: e.to_string(),
            })?;
        *req.uri_mut() = uri;
        if let Some(token) = &self.config.api_token
            && let Ok(v) = HeaderValue::from_str(token)
        {
            req.headers_mut().insert("dapr-api-token", v);
        }
        client.request(req).await.map_err(|e| {
            let (address, reason) = (self.address(), error_chain(&e));
            if e.is_connect() {
                AppChannelError::Unreachable { address, reason }
            } else {
                AppChannelError::Interrupted { address, reason }
            }
        })
    }

    /// An invocation of the app: HTTP apps get the request as it is; gRPC
    /// apps get `AppCallback/OnInvoke`, and its answer comes back as HTTP
    /// (gRPC status → HTTP status as Dapr maps it). The response body is
    /// streamed from the app.
    pub async fn invoke<B>(
        &self,
        req: Request<B>,
    ) -> Result<Response<crate::invoke::ProxyBody>, AppChannelError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::invoke::BoxError>,
    {
        if let Transport::Grpc { channel } = &self.transport {
            return self.invoke_grpc(channel.clone(), req).await;
        }
        let mut req = req;
        if req
            .headers_mut()
            .remove(crate::invoke::DATA_TYPE_URL)
            .is_some()
        {
            req.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(crate::invoke::PROTOBUF_CONTENT_TYPE),
            );
        }
        let mut resp = self.send_http(req).await?;
        crate::invoke::strip_connection_headers(resp.headers_mut());
        resp.headers_mut().remove(crate::invoke::DATA_TYPE_URL);
        Ok(resp.map(crate::invoke::boxed))
    }

    async fn invoke_grpc<B>(
        &self,
        channel: Channel,
        req: Request<B>,
    ) -> Result<Response<crate::invoke::ProxyBody>, AppChannelError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::invoke::BoxError>,
    {
        use tandem_proto::common::v1 as common;
        let (parts, body) = req.into_parts();
        // A gRPC app takes the whole body in one message.
        let body = body
            .collect()
            .await
            .map_err(|e| AppChannelError::Body(error_chain(&*e.into())))?
            .to_bytes();
        let verb = match parts.method {
            Method::GET => common::http_extension::Verb::Get,
            Method::HEAD => common::http_extension::Verb::Head,
            Method::POST => common::http_extension::Verb::Post,
            Method::PUT => common::http_extension::Verb::Put,
            Method::DELETE => common::http_extension::Verb::Delete,
            Method::CONNECT => common::http_extension::Verb::Connect,
            Method::OPTIONS => common::http_extension::Verb::Options,
            Method::TRACE => common::http_extension::Verb::Trace,
            Method::PATCH => common::http_extension::Verb::Patch,
            _ => common::http_extension::Verb::None,
        };
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let type_url = parts
            .headers
            .get(crate::invoke::DATA_TYPE_URL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let message = common::InvokeRequest {
            method: parts.uri.path().trim_start_matches('/').to_string(),
            data: Some(prost_types::Any {
                type_url,
                value: body.to_vec(),
            }),
            content_type,
            http_extension: Some(common::HttpExtension {
                verb: verb as i32,
                querystring: parts.uri.query().unwrap_or_default().to_string(),
            }),
        };
        let _permit = self.permit().await;
        let mut grpc_req = tonic::Request::new(message);
        for (name, value) in &parts.headers {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_bytes()),
            ) && !matches!(
                name.as_str(),
                "content-type" | "content-length" | "te" | crate::invoke::DATA_TYPE_URL
            ) {
                grpc_req.metadata_mut().insert(k, v);
            }
        }
        self.add_grpc_token(&mut grpc_req);
        let mut client = rt::app_callback_client::AppCallbackClient::new(channel);
        let built = match client.on_invoke(grpc_req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let mut b = Response::builder().status(StatusCode::OK);
                if !resp.content_type.is_empty() {
                    b = b.header(http::header::CONTENT_TYPE, resp.content_type);
                }
                let data = resp.data.unwrap_or_default();
                if !data.type_url.is_empty() {
                    b = b.header(crate::invoke::DATA_TYPE_URL, data.type_url);
                }
                b.body(crate::invoke::full(data.value))
            }
            Err(status) => Response::builder()
                .status(http_status_of(status.code()))
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(crate::invoke::GRPC_STATUS, status.code() as i32)
                .body(crate::invoke::full(
                    serde_json::json!({
                        "code": status.code() as i32,
                        "message": status.message(),
                        "details": [],
                    })
                    .to_string(),
                )),
        };
        built.map_err(|e| AppChannelError::BadAnswer {
            what: "OnInvoke".into(),
            reason: e.to_string(),
        })
    }

    /// A GET with the `dapr-app-id` header, the way init endpoints are called.
    async fn get_init_endpoint(&self, path: &str) -> Result<(StatusCode, Bytes), AppChannelError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("dapr-app-id", &self.config.app_id)
            .body(crate::invoke::full(Bytes::new()))
            .expect("static request parts are valid");
        let resp = tokio::time::timeout(Duration::from_secs(10), self.send_http_unlimited(req))
            .await
            .map_err(|_| AppChannelError::Unreachable {
                address: self.address(),
                reason: format!("GET {path} timed out after 10s"),
            })??;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| AppChannelError::Unreachable {
                address: self.address(),
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// `GET /dapr/config` (HTTP apps only). `None` when the app has no actor
    /// configuration (any non-200 answer), as in Dapr.
    pub async fn app_config(&self) -> Result<Option<serde_json::Value>, AppChannelError> {
        if !matches!(self.transport, Transport::Http { .. }) {
            return Ok(None);
        }
        let (status, body) = self.get_init_endpoint("/dapr/config").await?;
        if status != StatusCode::OK {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| AppChannelError::BadAnswer {
                what: "GET /dapr/config".into(),
                reason: e.to_string(),
            })
    }

    /// The app's programmatic subscriptions: `GET /dapr/subscribe` for HTTP
    /// apps, `ListTopicSubscriptions` for gRPC apps. Entries without any route
    /// are dropped, as Dapr does.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionSpec>, AppChannelError> {
        match &self.transport {
            Transport::Http { .. } => {
                let (status, body) = self.get_init_endpoint("/dapr/subscribe").await?;
                if status == StatusCode::NOT_FOUND {
                    return Ok(Vec::new());
                }
                if !status.is_success() {
                    return Err(AppChannelError::Status {
                        what: "GET /dapr/subscribe".into(),
                        status: status.as_u16(),
                    });
                }
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Vec::new());
                }
                let raw: Vec<HttpSubscription> =
                    serde_json::from_slice(&body).map_err(|e| AppChannelError::BadAnswer {
                        what: "GET /dapr/subscribe".into(),
                        reason: format!("expected a JSON array of subscriptions: {e}"),
                    })?;
                Ok(raw
                    .into_iter()
                    .filter_map(HttpSubscription::into_spec)
                    .collect())
            }
            Transport::Grpc { channel } => {
                let mut client = rt::app_callback_client::AppCallbackClient::new(channel.clone());
                let mut req = tonic::Request::new(());
                self.add_grpc_token(&mut req);
                match client.list_topic_subscriptions(req).await {
                    Ok(resp) => Ok(resp
                        .into_inner()
                        .subscriptions
                        .into_iter()
                        .map(grpc_subscription_to_spec)
                        .collect()),
                    Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Vec::new()),
                    Err(s) => Err(AppChannelError::Unreachable {
                        address: self.address(),
                        reason: format!("ListTopicSubscriptions: {}", s.message()),
                    }),
                }
            }
        }
    }

    /// One health probe: HTTP `GET <path>` (2xx healthy) or gRPC
    /// `AppCallbackHealthCheck/HealthCheck`, bounded by `timeout`.
    pub async fn probe(&self, path: &str, timeout: Duration) -> bool {
        let fut = async {
            match &self.transport {
                Transport::Http { .. } => {
                    let Ok(req) = Request::builder()
                        .method(Method::GET)
                        .uri(path)
                        .body(crate::invoke::full(Bytes::new()))
                    else {
                        tracing::warn!(
                            path,
                            "the health check path is not a valid URL path; the app counts as unhealthy"
                        );
                        return false;
                    };
                    match self.send_http_unlimited(req).await {
                        Ok(resp) => resp.status().is_success(),
                        Err(_) => false,
                    }
                }
                Transport::Grpc { channel } => {
                    let mut client =
                        rt::app_callback_health_check_client::AppCallbackHealthCheckClient::new(
                            channel.clone(),
                        );
                    let mut req = tonic::Request::new(());
                    self.add_grpc_token(&mut req);
                    client.health_check(req).await.is_ok()
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.unwrap_or(false)
    }

    /// The gRPC channel to the app, for callers that speak AppCallback.
    pub fn grpc_channel(&self) -> Option<Channel> {
        match &self.transport {
            Transport::Grpc { channel } => Some(channel.clone()),
            Transport::Http { .. } => None,
        }
    }

    pub fn add_grpc_token<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(token) = &self.config.api_token
            && let Ok(v) = token.parse()
        {
            req.metadata_mut().insert("dapr-api-token", v);
        }
    }
}

/// Dapr's mapping of a gRPC app's status to the HTTP status of an
/// invocation.
pub fn http_status_of(code: tonic::Code) -> StatusCode {
    use tonic::Code as C;
    match code {
        C::Ok => StatusCode::OK,
        C::InvalidArgument => StatusCode::BAD_REQUEST,
        C::NotFound => StatusCode::NOT_FOUND,
        C::AlreadyExists => StatusCode::CONFLICT,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        C::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        C::Cancelled => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// One entry of `GET /dapr/subscribe`, as apps and SDKs write it.
#[derive(serde::Deserialize)]
struct HttpSubscription {
    pubsubname: String,
    topic: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    routes: Option<HttpRoutes>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(rename = "deadLetterTopic", default)]
    dead_letter_topic: Option<String>,
    #[serde(rename = "bulkSubscribe", default)]
    bulk_subscribe: Option<BulkSubscribe>,
}

#[derive(serde::Deserialize)]
struct HttpRoutes {
    #[serde(default)]
    rules: Vec<RouteRule>,
    #[serde(default)]
    default: Option<String>,
}

impl HttpSubscription {
    fn into_spec(self) -> Option<SubscriptionSpec> {
        let mut routes = SubscriptionRoutes::default();
        if let Some(r) = self.routes {
            routes.rules = r.rules;
            routes.default = r.default.filter(|d| !d.is_empty());
        }
        if routes.default.is_none() {
            routes.default = self.route.filter(|r| !r.is_empty());
        }
        if routes.default.is_none() && routes.rules.is_empty() {
            return None;
        }
        Some(SubscriptionSpec {
            pubsubname: self.pubsubname,
            topic: self.topic,
            metadata: self.metadata,
            route: None,
            routes: Some(routes),
            dead_letter_topic: self.dead_letter_topic.filter(|d| !d.is_empty()),
            bulk_subscribe: self.bulk_subscribe,
        })
    }
}

fn grpc_subscription_to_spec(s: rt::TopicSubscription) -> SubscriptionSpec {
    let routes = match s.routes {
        Some(r) => SubscriptionRoutes {
            rules: r
                .rules
                .into_iter()
                .map(|r| RouteRule {
                    match_: r.r#match,
                    path: r.path,
                })
                .collect(),
            // A gRPC app without routes gets the single default path "".
            default: Some(r.default),
        },
        None => SubscriptionRoutes {
            rules: Vec::new(),
            default: Some(String::new()),
        },
    };
    SubscriptionSpec {
        pubsubname: s.pubsub_name,
        topic: s.topic,
        metadata: s.metadata.into_iter().collect(),
        route: None,
        routes: Some(routes),
        dead_letter_topic: Some(s.dead_letter_topic).filter(|d| !d.is_empty()),
        bulk_subscribe: s.bulk_subscribe.map(|b| BulkSubscribe {
            enabled: b.enabled,
            max_messages_count: Some(b.max_messages_count).filter(|n| *n > 0),
            max_await_duration_ms: Some(b.max_await_duration_ms).filter(|n| *n > 0),
        }),
    }
}

/// An app response body that holds its `--app-max-concurrency` slot until
/// it is read to the end or dropped.
pub struct LimitedBody {
    inner: hyper::body::Incoming,
    _permit: Option<OwnedSemaphorePermit>,
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
