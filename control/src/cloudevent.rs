//! CloudEvents as pub/sub carries them, in pure functions (no runtime, no
//! I/O) so the fuzz targets can take this file alone: the envelope a
//! publish is wrapped in (or a caller's own CloudEvent, completed), the
//! event read back at delivery, its data as a gRPC app gets it, and the
//! entries of a bulk publish.

use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// A publish, as far as its envelope is concerned.
pub struct Published<'a> {
    pub app_id: &'a str,
    pub pubsub: &'a str,
    pub topic: &'a str,
    pub content_type: &'a str,
    pub data: &'a [u8],
    pub metadata: &'a BTreeMap<String, String>,
    /// The caller's `traceparent`, if any.
    pub traceparent: Option<&'a str>,
    /// The caller's `tracestate`, if any (metadata
    /// `cloudevent.tracestate` wins).
    pub tracestate: Option<&'a str>,
}

/// Why a publish cannot be wrapped.
#[derive(Debug, PartialEq)]
pub enum EnvelopeError {
    /// `application/cloudevents+json` whose body is not a JSON object.
    NotAnObject,
    /// Metadata `ttlInSeconds` that is not a positive whole number.
    BadTtl(String),
}

/// A new W3C trace context, when the caller sent none.
pub fn new_traceparent() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    let s = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{u}-{}-01", &s[..16])
}

/// The CloudEvent for a publish at `now_ms`, or the caller's own
/// CloudEvent with the fields Dapr sets. `has_ttl`: the broker expires
/// messages itself (no `expiration` field then).
pub fn envelope(p: &Published, has_ttl: bool, now_ms: i64) -> Result<Vec<u8>, EnvelopeError> {
    let md = |k: &str| {
        p.metadata
            .get(&format!("cloudevent.{k}"))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let traceparent = md("traceparent")
        .or_else(|| md("traceid"))
        .or_else(|| p.traceparent.map(str::to_string))
        .unwrap_or_else(new_traceparent);
    let mut ce: Map<String, Value> = if p.content_type.starts_with(CLOUDEVENTS_JSON) {
        match serde_json::from_slice::<Value>(p.data) {
            Ok(Value::Object(o)) => o,
            _ => return Err(EnvelopeError::NotAnObject),
        }
    } else {
        let ct = if p.content_type.is_empty() {
            "text/plain"
        } else {
            p.content_type
        };
        let mut o = Map::new();
        o.insert("datacontenttype".into(), json!(ct));
        if ct.starts_with("application/octet-stream") {
            o.insert(
                "data_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(p.data)),
            );
        } else if ct.contains("json") {
            let data = serde_json::from_slice::<Value>(p.data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(p.data).into_owned()));
            o.insert("data".into(), data);
        } else {
            o.insert("data".into(), json!(String::from_utf8_lossy(p.data)));
        }
        o
    };
    let mut set_default = |k: &str, v: Value| {
        ce.entry(k.to_string()).or_insert(v);
    };
    set_default("specversion", json!("1.0"));
    set_default(
        "id",
        json!(md("id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
    );
    set_default(
        "source",
        json!(md("source").unwrap_or_else(|| p.app_id.to_string())),
    );
    set_default(
        "type",
        json!(md("type").unwrap_or_else(|| "com.dapr.event.sent".into())),
    );
    set_default("time", json!(crate::clock::rfc3339_utc(now_ms)));
    set_default("traceid", json!(traceparent));
    set_default("traceparent", json!(traceparent));
    if let Some(ts) =
        md("tracestate").or_else(|| p.tracestate.filter(|t| !t.is_empty()).map(str::to_string))
    {
        set_default("tracestate", json!(ts));
    }
    if let Some(subject) = md("subject") {
        ce.insert("subject".into(), json!(subject));
    }
    // Metadata overrides win over defaults for our own envelopes.
    for k in ["id", "source", "type"] {
        if let Some(v) = md(k) {
            ce.insert(k.into(), json!(v));
        }
    }
    ce.insert("topic".into(), json!(p.topic));
    ce.insert("pubsubname".into(), json!(p.pubsub));
    if let Some(ttl) = p.metadata.get("ttlInSeconds") {
        let secs: i64 = ttl
            .parse()
            .ok()
            .filter(|s| *s > 0 && *s <= MAX_TTL_SECONDS)
            .ok_or_else(|| EnvelopeError::BadTtl(ttl.clone()))?;
        if !has_ttl {
            ce.insert(
                "expiration".into(),
                json!(crate::clock::rfc3339_utc(
                    now_ms.saturating_add(secs * 1000)
                )),
            );
        }
    }
    Ok(serde_json::to_vec(&Value::Object(ce)).expect("JSON of JSON values"))
}

/// The longest `ttlInSeconds` taken: a hundred years (longer would
/// overflow the expiration's arithmetic, and means "never" anyway).
pub const MAX_TTL_SECONDS: i64 = 100 * 365 * 86_400;

/// The CloudEvent of a delivered message (what a publish stored).
pub fn parse_delivered(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err("the message is not a CloudEvent (a JSON object)".into()),
    }
}

/// The CloudEvent a raw payload (`rawPayload: true`) is delivered in.
pub fn wrap_raw(data: &[u8], topic: &str, pubsub: &str) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    o.insert("specversion".into(), json!("1.0"));
    o.insert("source".into(), json!("Dapr"));
    o.insert("type".into(), json!("com.dapr.event.sent"));
    o.insert("datacontenttype".into(), json!("application/octet-stream"));
    o.insert(
        "data_base64".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(data)),
    );
    o.insert("topic".into(), json!(topic));
    o.insert("pubsubname".into(), json!(pubsub));
    o
}

/// The event's data as a gRPC app gets it: `data_base64` decoded; JSON
/// re-encoded; text as it is.
pub fn grpc_data(ce: &Map<String, Value>) -> Vec<u8> {
    if let Some(b64) = ce.get("data_base64").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
    }
    match ce.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => serde_json::to_vec(other).expect("JSON"),
    }
}

/// One entry of a bulk publish, read.
#[derive(Debug, PartialEq)]
pub struct BulkEntry {
    pub entry_id: String,
    pub data: Vec<u8>,
    pub content_type: String,
    pub metadata: BTreeMap<String, String>,
}

/// The body of `POST /v1.0/publish/bulk/…`: a JSON array of
/// `{entryId, event, contentType, metadata?}`, each event's bytes by its
/// content type. The error says which entry and why.
pub fn bulk_entries(body: &[u8]) -> Result<Vec<BulkEntry>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "entryId", default)]
        entry_id: String,
        event: Value,
        #[serde(rename = "contentType", default)]
        content_type: String,
        #[serde(default)]
        metadata: BTreeMap<String, String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "bulk publish: expected a JSON array of {{entryId, event, contentType, metadata?}}: {e}"
        )
    })?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let bad = |why: &str| format!("bulk publish entry `{}`: {why}", e.entry_id);
        let ct = e.content_type.as_str();
        let data = if ct.starts_with("application/octet-stream") {
            let s = e
                .event
                .as_str()
                .ok_or_else(|| bad("an application/octet-stream event must be a base64 string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad("the event is not valid base64"))?
        } else if ct.starts_with("text/") || ct.contains("xml") {
            e.event
                .as_str()
                .ok_or_else(|| bad("a text event must be a JSON string"))?
                .as_bytes()
                .to_vec()
        } else if ct.contains("json") {
            serde_json::to_vec(&e.event).expect("JSON")
        } else {
            return Err(bad(
                "contentType is required: application/json, application/cloudevents+json, text/*, application/xml or application/octet-stream",
            ));
        };
        out.push(BulkEntry {
            entry_id: e.entry_id,
            data,
            content_type: e.content_type,
            metadata: e.metadata,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_ttl_is_refused_not_overflowed() {
        let md = BTreeMap::from([("ttlInSeconds".to_string(), i64::MAX.to_string())]);
        let p = Published {
            app_id: "a",
            pubsub: "p",
            topic: "t",
            content_type: "text/plain",
            data: b"x",
            metadata: &md,
            traceparent: None,
            tracestate: None,
        };
        assert_eq!(
            envelope(&p, false, 1_700_000_000_000),
            Err(EnvelopeError::BadTtl(i64::MAX.to_string()))
        );
    }
}
