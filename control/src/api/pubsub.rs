//! The publish API (dapr-wire.md §1.6, §6.2), shared by HTTP and gRPC:
//! broker lookup, topic scoping, and the CloudEvents 1.0 envelope.

use crate::clock::{now_ms, rfc3339_utc};
use crate::components::PubSubComponent;
use crate::components::pubsub::{Message, Metadata, feature};
use crate::error::ApiError;
use crate::runtime::Runtime;
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};
use tonic::Code;

pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// One publish request, as both protocols describe it.
pub struct Publish {
    pub pubsub: String,
    pub topic: String,
    pub data: Bytes,
    pub content_type: String,
    pub metadata: Metadata,
    /// The caller's `traceparent`, if any.
    pub traceparent: Option<String>,
}

fn lookup(rt: &Runtime, name: &str, topic: &str) -> Result<PubSubComponent, ApiError> {
    if name.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::InvalidArgument,
            "ERR_PUBSUB_EMPTY",
            "pubsub name is empty",
        )
        .on("pubsub", ""));
    }
    let snap = rt.snapshot();
    if snap.pubsubs.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::FailedPrecondition,
            "ERR_PUBSUB_NOT_CONFIGURED",
            "no pubsub is configured: add a component of type pubsub.* to a resources dir",
        ));
    }
    let comp = snap.pubsubs.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Code::InvalidArgument,
            "ERR_PUBSUB_NOT_FOUND",
            format!(
                "pubsub {name} not found; configured pubsubs: [{}]",
                snap.pubsubs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    if topic.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::InvalidArgument,
            "ERR_TOPIC_NAME_EMPTY",
            format!("topic is empty in pubsub {name}"),
        )
        .on("pubsub", name));
    }
    if !comp.scopes.may_publish(rt.app_id(), topic) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "ERR_PUBSUB_FORBIDDEN",
            format!(
                "topic {topic} is not allowed for app id {} (pubsub {name} scoping)",
                rt.app_id()
            ),
        )
        .on("pubsub", name)
        .meta("topic", topic));
    }
    Ok(comp)
}

/// A new W3C trace context, when the caller sent none.
pub fn new_traceparent() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    let s = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{u}-{}-01", &s[..16])
}

fn bad_request(code: &'static str, msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, code, msg)
}

/// Builds the CloudEvent for a publish, or passes a user's CloudEvent
/// through with the fields Dapr sets.
pub fn envelope(rt: &Runtime, p: &Publish, has_ttl: bool) -> Result<Vec<u8>, ApiError> {
    let md = |k: &str| {
        p.metadata
            .get(&format!("cloudevent.{k}"))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let traceparent = md("traceparent")
        .or_else(|| md("traceid"))
        .or_else(|| p.traceparent.clone())
        .unwrap_or_else(new_traceparent);
    let mut ce: Map<String, Value> = if p.content_type.starts_with(CLOUDEVENTS_JSON) {
        match serde_json::from_slice::<Value>(&p.data) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    "ERR_PUBSUB_CLOUD_EVENTS_SER",
                    "the body has Content-Type application/cloudevents+json but is not a JSON object",
                )
                .on("pubsub", &p.pubsub)
                .meta("appID", rt.app_id()));
            }
        }
    } else {
        let ct = if p.content_type.is_empty() {
            "text/plain".to_string()
        } else {
            p.content_type.clone()
        };
        let mut o = Map::new();
        o.insert("datacontenttype".into(), json!(ct));
        if ct.starts_with("application/octet-stream") {
            o.insert(
                "data_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(&p.data)),
            );
        } else if ct.contains("json") {
            let data = serde_json::from_slice::<Value>(&p.data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.data).into_owned()));
            o.insert("data".into(), data);
        } else {
            o.insert("data".into(), json!(String::from_utf8_lossy(&p.data)));
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
        json!(md("source").unwrap_or_else(|| rt.app_id().to_string())),
    );
    set_default(
        "type",
        json!(md("type").unwrap_or_else(|| "com.dapr.event.sent".into())),
    );
    set_default("time", json!(rfc3339_utc(now_ms())));
    set_default("traceid", json!(traceparent));
    set_default("traceparent", json!(traceparent));
    if let Some(ts) = md("tracestate") {
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
        let secs: i64 = ttl.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
            bad_request(
                "ERR_PUBSUB_REQUEST_METADATA",
                format!("metadata ttlInSeconds is `{ttl}`; expected a positive whole number"),
            )
            .on("pubsub", &p.pubsub)
        })?;
        // A broker with native TTL expires the message itself.
        if !has_ttl {
            ce.insert(
                "expiration".into(),
                json!(rfc3339_utc(now_ms() + secs * 1000)),
            );
        }
    }
    Ok(serde_json::to_vec(&Value::Object(ce)).expect("JSON of JSON values"))
}

pub async fn publish(rt: &Runtime, p: Publish) -> Result<(), ApiError> {
    let comp = lookup(rt, &p.pubsub, &p.topic)?;
    let raw = p.metadata.get("rawPayload").is_some_and(|v| v == "true");
    let (data, content_type) = if raw {
        (p.data.clone(), p.content_type.clone())
    } else {
        (
            Bytes::from(envelope(
                rt,
                &p,
                comp.broker.features().contains(&feature::MESSAGE_TTL),
            )?),
            CLOUDEVENTS_JSON.to_string(),
        )
    };
    let msg = Message {
        topic: p.topic.clone(),
        data,
        content_type,
        metadata: p.metadata,
    };
    let result = comp
        .outbound
        .run_transient(|| comp.broker.publish(msg.clone()))
        .await;
    result.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            format!(
                "error when publishing to topic {} in pubsub {}: {e}",
                p.topic, p.pubsub
            ),
        )
        .on("pubsub", &p.pubsub)
        .meta("topic", &p.topic)
        .meta("error", e.to_string())
    })
}

/// One entry of a bulk publish.
pub struct BulkEntry {
    pub entry_id: String,
    pub data: Bytes,
    pub content_type: String,
    pub metadata: Metadata,
}

/// Publishes every entry (each its own CloudEvent unless raw); returns the
/// entries that failed with why. Request-level problems are errors.
pub async fn bulk_publish(
    rt: &Runtime,
    pubsub: &str,
    topic: &str,
    entries: Vec<BulkEntry>,
    metadata: Metadata,
    traceparent: Option<String>,
) -> Result<Vec<(String, String)>, ApiError> {
    let comp = lookup(rt, pubsub, topic)?;
    let mut ids = std::collections::BTreeSet::new();
    for e in &entries {
        if e.entry_id.is_empty() || !ids.insert(e.entry_id.clone()) {
            return Err(bad_request(
                "ERR_PUBSUB_EVENTS_SER",
                format!(
                    "every entry needs a unique, non-empty entryId (`{}` is empty or repeated)",
                    e.entry_id
                ),
            )
            .with_reason("DAPR_PUBSUB_MARSHAL_EVENTS")
            .on("pubsub", pubsub)
            .meta("appID", rt.app_id())
            .meta("error", "entryId is duplicated or not present for entry"));
        }
    }
    let has_ttl = comp.broker.features().contains(&feature::MESSAGE_TTL);
    let mut failed = Vec::new();
    for e in entries {
        let mut md = metadata.clone();
        md.extend(e.metadata);
        let p = Publish {
            pubsub: pubsub.to_string(),
            topic: topic.to_string(),
            data: e.data,
            content_type: e.content_type,
            metadata: md,
            traceparent: traceparent.clone(),
        };
        let raw = p.metadata.get("rawPayload").is_some_and(|v| v == "true");
        let built = if raw {
            Ok((p.data.clone(), p.content_type.clone()))
        } else {
            envelope(rt, &p, has_ttl).map(|ce| (Bytes::from(ce), CLOUDEVENTS_JSON.to_string()))
        };
        let (data, content_type) = match built {
            Ok(v) => v,
            Err(err) => {
                failed.push((e.entry_id, err.message));
                continue;
            }
        };
        let msg = Message {
            topic: topic.to_string(),
            data,
            content_type,
            metadata: p.metadata,
        };
        if let Err(err) = comp.broker.publish(msg).await {
            failed.push((e.entry_id, err));
        }
    }
    Ok(failed)
}
