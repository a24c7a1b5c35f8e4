//! Distributed tracing: W3C trace context (`traceparent`) carried through
//! every hop, a span per hop (CLIENT on the caller's sidecar, SERVER on the
//! callee's), and an exporter that sends finished spans to an OpenTelemetry
//! collector over OTLP/HTTP (JSON encoding, `POST <endpoint>/v1/traces`),
//! batched off the request path. Sampling follows Configuration
//! `tracing.samplingRate` (`"1"` all, `"0"` none); an unsampled call still
//! carries its context, with the sampled flag off.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Full;
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

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    out.copy_from_slice(&b[..N]);
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

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Server = 2,
    Client = 3,
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

    /// `endpoint`: `host:port` or a URL of an OTLP/HTTP receiver.
    pub fn otlp_http(
        service: &str,
        sampling_rate: &str,
        endpoint: &str,
        secure: bool,
    ) -> Result<Arc<Self>, String> {
        let rate: f64 = sampling_rate.trim().parse().map_err(|_| {
            format!("tracing.samplingRate `{sampling_rate}` is not a number from 0 to 1")
        })?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!(
                "tracing.samplingRate `{sampling_rate}` is not a number from 0 to 1"
            ));
        }
        let base = if endpoint.contains("://") {
            endpoint.trim_end_matches('/').to_string()
        } else {
            format!("{}://{endpoint}", if secure { "https" } else { "http" })
        };
        if base.starts_with("https://") {
            return Err("tracing.otel: a secure (https) collector is not supported yet; use isSecure: false".into());
        }
        let url = if base.ends_with("/v1/traces") {
            base
        } else {
            format!("{base}/v1/traces")
        };
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(exporter(service.to_string(), url, rx));
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

/// Sends spans in batches (up to 256, or whatever came in 200 ms).
async fn exporter(service: String, url: String, mut rx: mpsc::Receiver<(Span, SystemTime, bool)>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
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
        let body = json!({
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "tandem"}, "spans": batch.iter().map(otlp_span).collect::<Vec<_>>()}],
            }]
        });
        let Ok(req) = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
        else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => {
                tracing::warn!(status = %resp.status(), collector = %url, "the trace collector refused {} spans", batch.len())
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, collector = %url, "{} spans not exported", batch.len())
            }
            Err(_) => {
                tracing::warn!(collector = %url, "{} spans not exported: timed out", batch.len())
            }
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
        let child = t.start("x", Kind::Client, Some(c));
        assert_eq!(child.context.trace_id, c.trace_id);
        assert_ne!(child.context.span_id, c.span_id);
        assert_eq!(child.parent, Some(c.span_id));
        let root = t.start("y", Kind::Server, None);
        assert!(!root.context.sampled, "rate 0");
        assert!(Tracer::otlp_http("a", "2", "h:1", false).is_err());
    }
}
