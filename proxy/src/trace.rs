//! Distributed tracing: W3C trace context (`traceparent`) carried through
//! every hop, a span per hop (CLIENT on the caller's sidecar, SERVER on the
//! callee's), and an exporter that sends finished spans, batched off the
//! request path, to an OpenTelemetry collector over OTLP/HTTP (JSON,
//! `POST <endpoint>/v1/traces`) or OTLP/gRPC (`TraceService/Export`), or to
//! Zipkin (v2 JSON, `POST <endpoint>` such as `…/api/v2/spans`). Sampling follows Configuration
//! `tracing.samplingRate` (`"1"` all, `"0"` none); an unsampled call still
//! carries its context, with the sampled flag off.

use bytes::Bytes;
use http::HeaderMap;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Context {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// OTLP's span kinds (the numbers are the wire values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Server = 2,
    Client = 3,
    /// A message handed to a broker (publish).
    Producer = 4,
    /// A message taken from a broker (delivery to the app).
    Consumer = 5,
}

impl Kind {
    fn zipkin(self) -> &'static str {
        match self {
            Kind::Server => "SERVER",
            Kind::Client => "CLIENT",
            Kind::Producer => "PRODUCER",
            Kind::Consumer => "CONSUMER",
        }
    }
}

/// A span in progress; `Tracer::end` records it.
pub struct Span {
    pub context: Context,
    parent: Option<[u8; 8]>,
    name: String,
    kind: Kind,
    start: SystemTime,
    attributes: Vec<(String, String)>,
}

impl Span {
    pub fn attribute(&mut self, key: &str, value: impl Into<String>) {
        self.attributes.push((key.to_string(), value.into()));
    }

    /// Puts this span's context in `headers` for the next hop.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(v) = self.context.traceparent().parse() {
            headers.insert("traceparent", v);
        }
    }
}

/// Where finished spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    /// OTLP over HTTP with JSON: the full `…/v1/traces` URL.
    OtlpHttp(String),
    /// OTLP over gRPC: `http://host:port` of the collector.
    OtlpGrpc(String),
    /// Zipkin's v2 JSON API: the full URL (`…/api/v2/spans`).
    Zipkin(String),
}

impl Sink {
    /// An OTLP collector at `endpoint` (`host:port` or a URL), as
    /// Configuration `tracing.otel` gives it.
    pub fn otlp(endpoint: &str, secure: bool, protocol: &str) -> Result<Self, String> {
        let base = if endpoint.contains("://") {
            endpoint.trim_end_matches('/').to_string()
        } else {
            format!("{}://{endpoint}", if secure { "https" } else { "http" })
        };
        match protocol {
            "http" => Ok(Sink::OtlpHttp(if base.ends_with("/v1/traces") {
                base
            } else {
                format!("{base}/v1/traces")
            })),
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

/// Where finished spans go, and how many are kept.
pub struct Tracer {
    service: String,
    /// 0.0 ..= 1.0
    rate: f64,
    export: Option<mpsc::Sender<(Span, SystemTime, bool)>>,
}

impl Tracer {
    /// A tracer that propagates context and records nothing.
    pub fn off(service: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.into(),
            rate: 0.0,
            export: None,
        })
    }

    /// A tracer that samples at `sampling_rate` (`"0"` to `"1"`) and
    /// exports to `sink`.
    pub fn new(service: &str, sampling_rate: &str, sink: Sink) -> Result<Arc<Self>, String> {
        let rate: f64 = sampling_rate.trim().parse().map_err(|_| {
            format!("tracing.samplingRate `{sampling_rate}` is not a number from 0 to 1")
        })?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!(
                "tracing.samplingRate `{sampling_rate}` is not a number from 0 to 1"
            ));
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(exporter(service.to_string(), sink, rx));
        Ok(Arc::new(Self {
            service: service.into(),
            rate,
            export: Some(tx),
        }))
    }

    fn sample(&self) -> bool {
        self.rate >= 1.0 || (self.rate > 0.0 && f64::from(random::<1>()[0]) / 256.0 < self.rate)
    }

    /// A span under `parent` (continuing its trace and sampling decision),
    /// or the root of a new trace.
    pub fn start(&self, name: &str, kind: Kind, parent: Option<Context>) -> Span {
        let context = Context {
            trace_id: parent.map_or_else(random::<16>, |p| p.trace_id),
            span_id: random::<8>(),
            sampled: parent.map_or_else(|| self.sample(), |p| p.sampled),
        };
        Span {
            context,
            parent: parent.map(|p| p.span_id),
            name: name.to_string(),
            kind,
            start: SystemTime::now(),
            attributes: Vec::new(),
        }
    }

    /// Records a finished span (if it is sampled and there is an exporter).
    pub fn end(&self, span: Span, ok: bool) {
        if let Some(tx) = &self.export
            && span.context.sampled
        {
            // A full queue drops the span rather than slowing the call.
            let _ = tx.try_send((span, SystemTime::now(), ok));
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether spans go anywhere (a collector is configured).
    pub fn is_on(&self) -> bool {
        self.export.is_some()
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

fn otlp_span((s, end, ok): &(Span, SystemTime, bool)) -> Value {
    let mut span = json!({
        "traceId": hex(&s.context.trace_id),
        "spanId": hex(&s.context.span_id),
        "name": s.name,
        "kind": s.kind as i32,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(*end),
        "attributes": s.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
        "status": {"code": if *ok { 1 } else { 2 }},
    });
    if let Some(p) = s.parent {
        span["parentSpanId"] = json!(hex(&p));
    }
    span
}

type Finished = (Span, SystemTime, bool);

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn otlp_http_body(service: &str, batch: &[Finished]) -> Bytes {
    Bytes::from(
        json!({
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "tandem"}, "spans": batch.iter().map(otlp_span).collect::<Vec<_>>()}],
            }]
        })
        .to_string(),
    )
}

fn zipkin_body(service: &str, batch: &[Finished]) -> Bytes {
    let spans: Vec<Value> = batch
        .iter()
        .map(|(s, end, ok)| {
            let mut tags: serde_json::Map<String, Value> = s
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            if !ok {
                tags.insert("error".into(), json!("true"));
            }
            let start = micros(s.start);
            let mut span = json!({
                "traceId": hex(&s.context.trace_id),
                "id": hex(&s.context.span_id),
                "name": s.name,
                "kind": s.kind.zipkin(),
                "timestamp": start,
                "duration": micros(*end).saturating_sub(start).max(1),
                "localEndpoint": {"serviceName": service},
                "tags": tags,
            });
            if let Some(p) = s.parent {
                span["parentId"] = json!(hex(&p));
            }
            span
        })
        .collect();
    Bytes::from(Value::Array(spans).to_string())
}

fn otlp_grpc_request(
    service: &str,
    batch: &[Finished],
) -> tandem_proto::otlp::ExportTraceServiceRequest {
    use tandem_proto::otlp as o;
    let text = |k: &str, v: &str| o::KeyValue {
        key: k.to_string(),
        value: Some(o::AnyValue {
            value: Some(o::any_value::Value::StringValue(v.to_string())),
        }),
    };
    o::ExportTraceServiceRequest {
        resource_spans: vec![o::ResourceSpans {
            resource: Some(o::Resource {
                attributes: vec![text("service.name", service)],
            }),
            scope_spans: vec![o::ScopeSpans {
                scope: Some(o::InstrumentationScope {
                    name: "tandem".into(),
                    version: String::new(),
                }),
                spans: batch
                    .iter()
                    .map(|(s, end, ok)| o::Span {
                        trace_id: s.context.trace_id.to_vec(),
                        span_id: s.context.span_id.to_vec(),
                        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
                        name: s.name.clone(),
                        kind: s.kind as i32,
                        start_time_unix_nano: unix_nanos(s.start),
                        end_time_unix_nano: unix_nanos(*end),
                        attributes: s.attributes.iter().map(|(k, v)| text(k, v)).collect(),
                        status: Some(o::Status {
                            message: String::new(),
                            code: if *ok { 1 } else { 2 },
                        }),
                        flags: u32::from(s.context.sampled),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The CA bundle a collector's certificate is checked against besides the
/// system's roots: OpenTelemetry's `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`
/// or `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file), if set.
fn collector_roots() -> Result<Option<String>, String> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ] {
        if let Ok(path) = std::env::var(var)
            && !path.is_empty()
        {
            return std::fs::read_to_string(&path)
                .map(Some)
                .map_err(|e| format!("{var} `{path}`: {e}"));
        }
    }
    Ok(None)
}

type GrpcClient = tandem_proto::otlp::trace_service_client::TraceServiceClient<
    Client<hyper_rustls::HttpsConnector<HttpConnector>, tonic::body::Body>,
>;

/// OTLP/gRPC to `url` (`http://` plaintext HTTP/2, `https://` TLS), on
/// one pooled connection.
fn grpc_client(url: &str, tls: rustls::ClientConfig) -> Result<GrpcClient, String> {
    let origin: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http2()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    Ok(GrpcClient::with_origin(client, origin))
}

/// How long a failed batch waits before its next try: 0.5 s, doubling,
/// five tries in all. Meanwhile new spans wait in the bounded queue (4096;
/// past that they are dropped, not held): a collector that is away costs
/// bounded memory, one that comes back within ~15 s loses nothing.
const EXPORT_TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Sends spans in batches (up to 256, or whatever came in 200 ms), over
/// TLS when the collector's URL is `https://` (the system's roots plus
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`), retrying a failed batch with backoff.
async fn exporter(service: String, sink: Sink, mut rx: mpsc::Receiver<Finished>) {
    let tls = collector_roots().and_then(|root_ca| {
        let outside = crate::invoke::OutsideTls {
            root_ca,
            ..Default::default()
        };
        Ok((outside.client(false)?, outside.tls_config()?))
    });
    let (http_client, tls_config) = match tls {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "tracing: cannot set up TLS to the collector; spans are not exported");
            return;
        }
    };
    let grpc = match &sink {
        Sink::OtlpGrpc(url) => match grpc_client(url, tls_config) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "tracing: bad collector endpoint; spans are not exported");
                return;
            }
        },
        _ => None,
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(deadline);
        while batch.len() < 256 {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(s) => batch.push(s),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=EXPORT_TRIES {
            match send_batch(&service, &sink, &http_client, grpc.as_ref(), &batch).await {
                Ok(()) => break,
                Err(e) if attempt < EXPORT_TRIES => {
                    tracing::debug!(error = %e, attempt, "tracing: export failed; trying again in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, sink = ?sink, "{} spans not exported after {EXPORT_TRIES} tries", batch.len());
                }
            }
        }
    }
}

async fn send_batch(
    service: &str,
    sink: &Sink,
    http_client: &crate::invoke::HttpsClient,
    grpc: Option<&GrpcClient>,
    batch: &[Finished],
) -> Result<(), String> {
    match (sink, grpc) {
        (Sink::OtlpGrpc(_), Some(grpc)) => {
            let mut grpc = grpc.clone();
            let call = grpc.export(otlp_grpc_request(service, batch));
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err("timed out".into()),
            }
        }
        (Sink::OtlpHttp(url) | Sink::Zipkin(url), _) => {
            let body = match sink {
                Sink::Zipkin(_) => zipkin_body(service, batch),
                _ => otlp_http_body(service, batch),
            };
            let req = http::Request::post(url.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(crate::invoke::full(body))
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(10), http_client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                Ok(Ok(resp)) => Err(format!("the collector answered {}", resp.status())),
                Ok(Err(e)) => Err(crate::app_channel::error_chain(&e)),
                Err(_) => Err("timed out".into()),
            }
        }
        (Sink::OtlpGrpc(url), None) => Err(format!("{url} is not a valid endpoint")),
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
        let child = t.start("x", Kind::Client, Some(c));
        assert_eq!(child.context.trace_id, c.trace_id);
        assert_ne!(child.context.span_id, c.span_id);
        assert_eq!(child.parent, Some(c.span_id));
        let root = t.start("y", Kind::Server, None);
        assert!(!root.context.sampled, "rate 0");
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
        let sink = Sink::OtlpHttp("http://h:1/v1/traces".into());
        assert!(Tracer::new("a", "2", sink.clone()).is_err(), "rate above 1");
        assert!(Tracer::new("a", "half", sink).is_err());
        assert_eq!(
            Sink::otlp("h:4318", false, "http").unwrap(),
            Sink::OtlpHttp("http://h:4318/v1/traces".into())
        );
        assert_eq!(
            Sink::otlp("http://h:4318/v1/traces", false, "http").unwrap(),
            Sink::OtlpHttp("http://h:4318/v1/traces".into())
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
            Sink::OtlpHttp("https://h:4318/v1/traces".into())
        );
        assert!(Sink::otlp("h:4317", false, "udp").is_err());
        assert!(Sink::zipkin("http://z:9411/api/v2/spans").is_ok());
        assert!(Sink::zipkin("https://z:9411/api/v2/spans").is_ok());
        assert!(Sink::zipkin("z:9411").is_err());
    }
}
