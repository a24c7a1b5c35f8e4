//! Distributed tracing: W3C trace context (`traceparent`) carried through
//! every hop, a span per hop (CLIENT on the caller's sidecar, SERVER on the
//! callee's, PRODUCER/CONSUMER around the broker), and export of finished
//! spans off the request path through the OpenTelemetry SDK: its sampler
//! (`tracing.samplingRate`, the parent's decision first), its batch
//! processor (a bounded queue drained by one thread) and its OTLP exporters
//! — gRPC (`TraceService/Export`) on our tonic and TLS stack, HTTP
//! (protobuf as daprd sends it, or JSON) on our hyper client — or our own
//! Zipkin v2 exporter. An unsampled call still carries its context, with
//! the sampled flag off.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Context {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` in lower-case hex (no formatting machinery: this runs
/// for every request's `traceparent`).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Random ids without a system call per span: a per-thread SplitMix64
/// stream seeded once from the OS. Trace and span ids must be unique, not
/// secret.
fn random<const N: usize>() -> [u8; N] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = uuid::Uuid::new_v4();
            u64::from_le_bytes(seed.as_bytes()[..8].try_into().expect("8 bytes"))
        });
    }
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let x = STATE.with(|s| {
            let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(next);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        });
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

impl Context {
    /// `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut p = traceparent.trim().split('-');
        let (version, trace, span, flags) = (p.next()?, p.next()?, p.next()?, p.next()?);
        if version.len() != 2 || version == "ff" {
            return None;
        }
        let trace_id = unhex::<16>(trace)?;
        let span_id = unhex::<8>(span)?;
        let flags = unhex::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn from_headers(h: &HeaderMap) -> Option<Self> {
        h.get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
    }

    /// This context as the SDK's, from another process.
    fn remote(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            if self.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::NONE,
        )
    }

    pub fn traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push_str(if self.sampled { "-01" } else { "-00" });
        out
    }
}

/// OTLP's span kinds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Server,
    Client,
    /// A message handed to a broker (publish).
    Producer,
    /// A message taken from a broker (delivery to the app).
    Consumer,
}

impl From<Kind> for SpanKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
        }
    }
}

/// A span in progress; `Tracer::end` records it (dropping it records it
/// too, with no status).
pub struct Span {
    pub context: Context,
    /// The SDK's span when this one is sampled and exported.
    recording: Option<opentelemetry_sdk::trace::Span>,
}

/// An attribute's value: text (copied only when the span is recorded) or
/// a number.
pub enum Attr<'a> {
    Text(&'a str),
    Int(i64),
}

impl<'a> From<&'a str> for Attr<'a> {
    fn from(s: &'a str) -> Self {
        Attr::Text(s)
    }
}

impl<'a> From<&'a String> for Attr<'a> {
    fn from(s: &'a String) -> Self {
        Attr::Text(s)
    }
}

impl From<i64> for Attr<'_> {
    fn from(n: i64) -> Self {
        Attr::Int(n)
    }
}

impl Span {
    /// Ours from the SDK's; None for the invalid context a provider being
    /// shut down hands out (the caller then makes a context of its own).
    fn from_sdk(span: opentelemetry_sdk::trace::Span) -> Option<Self> {
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let context = Context {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        };
        Some(Span {
            context,
            recording: span.is_recording().then_some(span),
        })
    }

    /// Keys are the OpenTelemetry semantic names, known in advance. Costs
    /// nothing unless the span is recorded.
    pub fn attribute<'a>(&mut self, key: &'static str, value: impl Into<Attr<'a>>) {
        if let Some(s) = &mut self.recording {
            let value: opentelemetry::Value = match value.into() {
                Attr::Text(t) => t.to_string().into(),
                Attr::Int(n) => n.into(),
            };
            s.set_attribute(opentelemetry::KeyValue::new(key, value));
        }
    }

    /// Whether this span is exported: worth computing what only it needs.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Puts this span's context in `headers` for the next hop.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::try_from(self.context.traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
    }
}

/// Where finished spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    /// OTLP over HTTP: the full `…/v1/traces` URL; protobuf bodies (as
    /// daprd's exporter sends) or, with `json`, OTLP's JSON encoding.
    OtlpHttp { url: String, json: bool },
    /// OTLP over gRPC: `http://host:port` or `https://host:port`.
    OtlpGrpc(String),
    /// Zipkin's v2 JSON API: the full URL (`…/api/v2/spans`).
    Zipkin(String),
}

impl Sink {
    /// An OTLP collector at `endpoint` (`host:port`, whose scheme
    /// `secure` decides, or a URL), as Configuration `tracing.otel` gives
    /// it; `protocol` is Dapr's `grpc`/`http` or OpenTelemetry's
    /// `http/protobuf`/`http/json`.
    pub fn otlp(endpoint: &str, secure: bool, protocol: &str) -> Result<Self, String> {
        let base = if endpoint.contains("://") {
            endpoint.trim_end_matches('/').to_string()
        } else {
            format!("{}://{endpoint}", if secure { "https" } else { "http" })
        };
        let http = |json| {
            let url = if base.ends_with("/v1/traces") {
                base.clone()
            } else {
                format!("{base}/v1/traces")
            };
            url.parse::<http::Uri>()
                .map_err(|e| format!("tracing.otel endpoint `{endpoint}`: {e}"))?;
            Ok(Sink::OtlpHttp { url, json })
        };
        match protocol {
            "http" | "http/protobuf" => http(false),
            "http/json" => http(true),
            "grpc" => {
                tonic::transport::Endpoint::from_shared(base.clone())
                    .map_err(|e| format!("tracing.otel endpoint `{endpoint}`: {e}"))?;
                Ok(Sink::OtlpGrpc(base))
            }
            other => Err(format!(
                "tracing.otel protocol `{other}` is not known; use grpc or http"
            )),
        }
    }

    /// A Zipkin collector at `address` (Configuration `tracing.zipkin
    /// .endpointAddress`, a full URL).
    pub fn zipkin(address: &str) -> Result<Self, String> {
        if !address.starts_with("http://") && !address.starts_with("https://") {
            return Err(format!(
                "tracing.zipkin endpointAddress `{address}` must be an http:// or https:// URL such as http://localhost:9411/api/v2/spans"
            ));
        }
        address
            .parse::<http::Uri>()
            .map_err(|e| format!("tracing.zipkin endpointAddress `{address}`: {e}"))?;
        Ok(Sink::Zipkin(address.to_string()))
    }
}

/// How spans are sent besides where: extra headers on each export
/// (Configuration `tracing.otel.headers`, `OTEL_EXPORTER_OTLP_HEADERS`) and
/// the time one export may take (`tracing.otel.timeout`, 10 s by default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Export {
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// Where finished spans go, and how many are kept.
pub struct Tracer {
    service: String,
    /// None: context propagates, nothing is recorded.
    sdk: Option<(SdkTracerProvider, SdkTracer)>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // A replaced tracer (reload) flushes what it holds; that waits on
        // the exporter, so never on a runtime thread.
        if let Some((provider, _)) = self.sdk.take() {
            let _ = std::thread::Builder::new()
                .name("tandem-trace-flush".into())
                .spawn(move || {
                    let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
                });
        }
    }
}

/// Spans waiting for export; past this they are dropped, never held, so a
/// collector that is away costs bounded memory.
const QUEUE: usize = 4096;
/// How often the queue is drained (or sooner, when a batch is full).
const EXPORT_EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 512;
/// A failed export is tried again after 0.5, 1, 2 and 4 s (plus jitter);
/// meanwhile new spans wait in the queue.
fn retry_policy() -> opentelemetry_otlp::RetryPolicy {
    opentelemetry_otlp::RetryPolicy::recommended()
        .with_max_retries(4)
        .with_initial_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(4))
        .with_max_jitter(Duration::from_millis(100))
}
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn batch<E: SpanExporter + 'static>(exporter: E) -> opentelemetry_sdk::trace::BatchSpanProcessor {
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_max_export_batch_size(BATCH)
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build()
}

impl Tracer {
    /// A tracer that propagates context and records nothing.
    pub fn off(service: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.into(),
            sdk: None,
        })
    }

    /// A tracer that samples at `sampling_rate` (`"0"` to `"1"`) and
    /// exports to `sink`. Must be called inside the runtime (the exporters'
    /// connections live on it).
    pub fn new(
        service: &str,
        sampling_rate: &str,
        sink: Sink,
        export: Export,
    ) -> Result<Arc<Self>, String> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
        use opentelemetry_sdk::trace::Sampler;
        let rate: f64 = sampling_rate.trim().parse().map_err(|_| {
            format!("tracing.samplingRate `{sampling_rate}` is not a number from 0 to 1")
        })?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!(
                "tracing.samplingRate `{sampling_rate}` is not a number from 0 to 1"
            ));
        }
        let timeout = export.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let tls = collector_tls()?;
        let http_client = |retry| CollectorClient::new(&tls, timeout, retry);
        let processor = match &sink {
            Sink::OtlpGrpc(url) => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &export.headers {
                    let key =
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                            .map_err(|_| format!("tracing.otel header name `{k}` is not valid"))?;
                    let value = v.parse().map_err(|_| {
                        format!("tracing.otel header `{k}`: the value is not valid")
                    })?;
                    metadata.insert(key, value);
                }
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_channel(grpc_channel(url, &tls, timeout)?)
                    .with_metadata(metadata)
                    .with_timeout(timeout)
                    .with_retry_policy(retry_policy())
                    .build()
                    .map_err(|e| format!("tracing: {e}"))?;
                batch(exporter)
            }
            Sink::OtlpHttp { url, json } => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(http_client(false)?)
                    .with_endpoint(url.clone())
                    .with_protocol(if *json {
                        opentelemetry_otlp::Protocol::HttpJson
                    } else {
                        opentelemetry_otlp::Protocol::HttpBinary
                    })
                    .with_headers(export.headers.iter().cloned().collect())
                    .with_timeout(timeout)
                    .with_retry_policy(retry_policy())
                    .build()
                    .map_err(|e| format!("tracing: {e}"))?;
                batch(exporter)
            }
            Sink::Zipkin(url) => batch(Zipkin {
                url: url.clone(),
                service: service.to_string(),
                client: http_client(true)?,
            }),
        };
        let sampler = Sampler::ParentBased(Box::new(if rate >= 1.0 {
            Sampler::AlwaysOn
        } else if rate <= 0.0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(rate)
        }));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tandem");
        Ok(Arc::new(Self {
            service: service.into(),
            sdk: Some((provider, tracer)),
        }))
    }

    /// A span under `parent` (continuing its trace and sampling decision),
    /// or the root of a new trace. `name` is called only when the span is
    /// made by the SDK (a collector is configured): without one a span is
    /// a context and nothing else — no formatting, no allocation.
    pub fn start(
        &self,
        name: impl FnOnce() -> String,
        kind: Kind,
        parent: Option<Context>,
    ) -> Span {
        self.begin(name, kind, parent, None)
    }

    /// A span that began at `start` (work that ran while nothing was held
    /// open for it: a workflow, an activity), under `parent`.
    pub fn start_at(
        &self,
        name: impl FnOnce() -> String,
        kind: Kind,
        parent: Option<Context>,
        start: SystemTime,
    ) -> Span {
        self.begin(name, kind, parent, Some(start))
    }

    fn begin(
        &self,
        name: impl FnOnce() -> String,
        kind: Kind,
        parent: Option<Context>,
        start: Option<SystemTime>,
    ) -> Span {
        if let Some((_, tracer)) = &self.sdk {
            let cx = match parent {
                Some(p) => opentelemetry::Context::new().with_remote_span_context(p.remote()),
                None => opentelemetry::Context::new(),
            };
            let mut builder = tracer.span_builder(name()).with_kind(kind.into());
            if let Some(at) = start {
                builder = builder.with_start_time(at);
            }
            if let Some(span) = Span::from_sdk(builder.start_with_context(tracer, &cx)) {
                return span;
            }
        }
        Span {
            context: Context {
                trace_id: parent.map_or_else(random::<16>, |p| p.trace_id),
                span_id: random::<8>(),
                sampled: parent.is_some_and(|p| p.sampled),
            },
            recording: None,
        }
    }

    /// The root of a new trace linked to the traces of `links` — one span
    /// for work done for several callers at once (a bulk delivery: each
    /// message's publisher is a link, as OpenTelemetry's messaging
    /// conventions have it). Sampled as a root is, by the rate.
    pub fn start_linked(&self, name: String, kind: Kind, links: &[Context]) -> Span {
        let Some((_, tracer)) = &self.sdk else {
            return self.start(|| name, kind, None);
        };
        let links: Vec<opentelemetry::trace::Link> = links
            .iter()
            .map(|c| opentelemetry::trace::Link::with_context(c.remote()))
            .collect();
        let span = tracer
            .span_builder(name.clone())
            .with_kind(kind.into())
            .with_links(links)
            .start_with_context(tracer, &opentelemetry::Context::new());
        Span::from_sdk(span).unwrap_or_else(|| self.start(|| name, kind, None))
    }

    /// Records a finished span (if it is sampled and there is an exporter).
    /// A full queue drops the span rather than slowing the call.
    pub fn end(&self, span: Span, ok: bool) {
        if let Some(mut s) = span.recording {
            s.set_status(if ok { Status::Ok } else { Status::error("") });
            s.end();
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether spans go anywhere (a collector is configured).
    pub fn is_on(&self) -> bool {
        self.sdk.is_some()
    }
}

/// TLS to the collector: the system's roots plus the PEM file in
/// OpenTelemetry's `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`, if set.
fn collector_tls() -> Result<crate::invoke::OutsideTls, String> {
    let mut root_ca = None;
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ] {
        if let Ok(path) = std::env::var(var)
            && !path.is_empty()
        {
            root_ca =
                Some(std::fs::read_to_string(&path).map_err(|e| format!("{var} `{path}`: {e}"))?);
            break;
        }
    }
    Ok(crate::invoke::OutsideTls {
        root_ca,
        ..Default::default()
    })
}

/// OTLP/gRPC to `url` (`http://` plaintext HTTP/2, `https://` TLS with
/// ALPN h2 only) on one lazily opened channel.
fn grpc_channel(
    url: &str,
    tls: &crate::invoke::OutsideTls,
    timeout: Duration,
) -> Result<tonic::transport::Channel, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(
            tls.tls_config()
                .map_err(|e| format!("tracing: TLS to the collector: {e}"))?,
        )
        .https_or_http()
        .enable_http2()
        .wrap_connector(http);
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("tracing.otel endpoint `{url}`: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .connect_with_connector_lazy(connector))
}

/// The largest answer read from a collector.
const MAX_ANSWER: usize = 4 << 20;

/// The OpenTelemetry exporters' HTTP client on our hyper stack. The SDK's
/// batch thread is no runtime thread, so each request runs as a task on
/// the runtime the tracer was made in. `retry`: 429, 5xx and failures to
/// connect are tried again after 0.5, 1, 2 and 4 s (the OTLP exporter
/// retries by itself; Zipkin's does not).
#[derive(Clone)]
struct CollectorClient {
    client: crate::invoke::HttpsClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    retry: bool,
}

impl std::fmt::Debug for CollectorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CollectorClient {
    fn new(
        tls: &crate::invoke::OutsideTls,
        timeout: Duration,
        retry: bool,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing: the exporter needs the runtime".to_string())?;
        Ok(Self {
            client: tls
                .client(false)
                .map_err(|e| format!("tracing: TLS to the collector: {e}"))?,
            runtime,
            timeout,
            retry,
        })
    }

    async fn send(
        self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt;
        let (parts, body) = request.into_parts();
        let tries = if self.retry { 5 } else { 1 };
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=tries {
            let mut req = http::Request::new(crate::invoke::full(body.clone()));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.headers_mut() = parts.headers.clone();
            let outcome = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
                Ok(Ok(resp)) => {
                    let (head, body) = resp.into_parts();
                    match http_body_util::Limited::new(body, MAX_ANSWER)
                        .collect()
                        .await
                    {
                        Ok(b) => Ok(http::Response::from_parts(head, b.to_bytes())),
                        Err(e) => Err(format!("reading the collector's answer: {e}")),
                    }
                }
                Ok(Err(e)) => Err(crate::app_channel::error_chain(&e)),
                Err(_) => Err(format!("no answer in {:?}", self.timeout)),
            };
            let again = match &outcome {
                Ok(r) => r.status() == 429 || r.status().is_server_error(),
                Err(_) => true,
            };
            if !again || attempt == tries {
                return outcome.map_err(Into::into);
            }
            tracing::debug!(
                attempt,
                "tracing: export failed; trying again in {backoff:?}"
            );
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        unreachable!("the last try returns")
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for CollectorClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        self.runtime
            .spawn(self.clone().send(request))
            .await
            .map_err(|e| format!("tracing: the export task failed: {e}"))?
    }
}

/// Zipkin's v2 JSON (`POST …/api/v2/spans`), with the service name in each
/// span's `localEndpoint` — what Zipkin groups traces by.
#[derive(Debug)]
struct Zipkin {
    url: String,
    service: String,
    client: CollectorClient,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

fn zipkin_body(service: &str, batch: &[SpanData]) -> Bytes {
    let spans: Vec<Value> = batch
        .iter()
        .map(|s| {
            let mut tags: serde_json::Map<String, Value> = s
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), json!(kv.value.as_str())))
                .collect();
            if let Status::Error { .. } = s.status {
                tags.insert("error".into(), json!("true"));
            }
            let start = micros(s.start_time);
            let mut span = json!({
                "traceId": hex(&s.span_context.trace_id().to_bytes()),
                "id": hex(&s.span_context.span_id().to_bytes()),
                "name": s.name,
                "timestamp": start,
                "duration": micros(s.end_time).saturating_sub(start).max(1),
                "localEndpoint": {"serviceName": service},
                "tags": tags,
            });
            let kind = match s.span_kind {
                SpanKind::Server => Some("SERVER"),
                SpanKind::Client => Some("CLIENT"),
                SpanKind::Producer => Some("PRODUCER"),
                SpanKind::Consumer => Some("CONSUMER"),
                SpanKind::Internal => None,
            };
            if let Some(k) = kind {
                span["kind"] = json!(k);
            }
            if s.parent_span_id != SpanId::INVALID {
                span["parentId"] = json!(hex(&s.parent_span_id.to_bytes()));
            }
            span
        })
        .collect();
    Bytes::from(Value::Array(spans).to_string())
}

impl SpanExporter for Zipkin {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        use opentelemetry_http::HttpClient as _;
        let req = http::Request::post(self.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(zipkin_body(&self.service, &batch))
            .map_err(|e| opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string()))?;
        match self.client.send_bytes(req).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                format!("the Zipkin collector answered {}", r.status()),
            )),
            Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                e.to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_validation() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let c = Context::parse(tp).unwrap();
        assert!(c.sampled);
        assert_eq!(c.traceparent(), tp);
        assert!(
            Context::parse("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none()
        );
        assert!(
            Context::parse("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none()
        );
        assert!(Context::parse("00-xyz-b7ad6b7169203331-01").is_none());
        let t = Tracer::off("a");
        let child = t.start(|| "x".into(), Kind::Client, Some(c));
        assert_eq!(child.context.trace_id, c.trace_id);
        assert_ne!(child.context.span_id, c.span_id);
        assert!(child.recording.is_none(), "no exporter");
        let root = t.start(|| "y".into(), Kind::Server, None);
        assert!(!root.context.sampled, "no exporter: not sampled");
    }

    /// With an exporter the SDK makes the spans: a child continues its
    /// parent's trace and sampling decision; roots follow the rate.
    #[tokio::test]
    async fn spans_follow_the_parent_and_the_rate() {
        let sink = Sink::otlp("127.0.0.1:9", false, "http").unwrap();
        let all = Tracer::new("a", "1", sink.clone(), Export::default()).unwrap();
        let none = Tracer::new("a", "0", sink, Export::default()).unwrap();
        let sampled =
            Context::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let unsampled = Context {
            sampled: false,
            ..sampled
        };
        for t in [&all, &none] {
            let child = t.start(|| "x".into(), Kind::Client, Some(sampled));
            assert_eq!(child.context.trace_id, sampled.trace_id);
            assert_ne!(child.context.span_id, sampled.span_id);
            assert!(
                child.context.sampled && child.recording.is_some(),
                "the parent's decision"
            );
            let child = t.start(|| "x".into(), Kind::Client, Some(unsampled));
            assert_eq!(child.context.trace_id, sampled.trace_id);
            assert!(!child.context.sampled && child.recording.is_none());
        }
        let root = all.start(|| "y".into(), Kind::Server, None);
        assert!(root.context.sampled && root.recording.is_some());
        assert_ne!(root.context.trace_id, sampled.trace_id);
        let root = none.start(|| "y".into(), Kind::Server, None);
        assert!(!root.context.sampled && root.recording.is_none());
        assert_ne!(root.context.span_id, [0; 8]);
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<[u8; 16]> =
            (0..10_000).map(|_| random::<16>()).collect();
        assert_eq!(ids.len(), 10_000);
        assert_ne!(random::<8>(), [0; 8]);
    }

    #[tokio::test]
    async fn sinks_from_configuration() {
        let http = |url: &str, json| Sink::OtlpHttp {
            url: url.into(),
            json,
        };
        let sink = http("http://h:1/v1/traces", false);
        assert!(
            Tracer::new("a", "2", sink.clone(), Export::default()).is_err(),
            "rate above 1"
        );
        assert!(Tracer::new("a", "half", sink.clone(), Export::default()).is_err());
        assert!(
            Tracer::new("a", "0.5", sink, Export::default())
                .unwrap()
                .is_on()
        );
        assert_eq!(
            Sink::otlp("h:4318", false, "http").unwrap(),
            http("http://h:4318/v1/traces", false)
        );
        assert_eq!(
            Sink::otlp("h:4318", false, "http/json").unwrap(),
            http("http://h:4318/v1/traces", true)
        );
        assert_eq!(
            Sink::otlp("http://h:4318/v1/traces", false, "http/protobuf").unwrap(),
            http("http://h:4318/v1/traces", false)
        );
        assert_eq!(
            Sink::otlp("h:4317", false, "grpc").unwrap(),
            Sink::OtlpGrpc("http://h:4317".into())
        );
        assert_eq!(
            Sink::otlp("h:4317", true, "grpc").unwrap(),
            Sink::OtlpGrpc("https://h:4317".into()),
            "isSecure: TLS"
        );
        assert_eq!(
            Sink::otlp("h:4318", true, "http").unwrap(),
            http("https://h:4318/v1/traces", false)
        );
        assert!(Sink::otlp("h 1:4318", false, "http").is_err());
        assert!(Sink::otlp("h:4317", false, "udp").is_err());
        assert!(Sink::zipkin("http://z:9411/api/v2/spans").is_ok());
        assert!(Sink::zipkin("https://z:9411/api/v2/spans").is_ok());
        assert!(Sink::zipkin("z:9411").is_err());
    }
}
