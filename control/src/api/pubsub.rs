//! The publish API (dapr-wire.md §1.6, §6.2), shared by HTTP and gRPC:
//! broker lookup, topic scoping, and the CloudEvents 1.0 envelope.

use crate::clock::now_ms;
use crate::components::PubSubComponent;
use crate::components::pubsub::{Message, Metadata, feature};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::StatusCode;
use tonic::Code;

pub use crate::cloudevent::CLOUDEVENTS_JSON;

/// One publish request, as both protocols describe it.
pub struct Publish {
    pub pubsub: String,
    pub topic: String,
    pub data: Bytes,
    pub content_type: String,
    pub metadata: Metadata,
    /// The caller's `traceparent` (the API span's, when tracing), if any.
    pub traceparent: Option<String>,
    /// The caller's `tracestate`, carried in the CloudEvent with the trace.
    pub tracestate: Option<String>,
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

pub use crate::cloudevent::new_traceparent;

fn bad_request(code: &'static str, msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, code, msg)
}

/// Builds the CloudEvent for a publish, or passes a user's CloudEvent
/// through with the fields Dapr sets (`crate::cloudevent::envelope`).
pub fn envelope(rt: &Runtime, p: &Publish, has_ttl: bool) -> Result<Vec<u8>, ApiError> {
    use crate::cloudevent::{EnvelopeError, Published};
    let published = Published {
        app_id: rt.app_id(),
        pubsub: &p.pubsub,
        topic: &p.topic,
        content_type: &p.content_type,
        data: &p.data,
        metadata: &p.metadata,
        traceparent: p.traceparent.as_deref(),
        tracestate: p.tracestate.as_deref(),
    };
    crate::cloudevent::envelope(&published, has_ttl, now_ms()).map_err(|e| match e {
        EnvelopeError::NotAnObject => ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "ERR_PUBSUB_CLOUD_EVENTS_SER",
            "the body has Content-Type application/cloudevents+json but is not a JSON object",
        )
        .on("pubsub", &p.pubsub)
        .meta("appID", rt.app_id()),
        EnvelopeError::BadTtl(ttl) => bad_request(
            "ERR_PUBSUB_REQUEST_METADATA",
            format!(
                "metadata ttlInSeconds is `{ttl}`; expected a positive whole number of at most {}",
                crate::cloudevent::MAX_TTL_SECONDS
            ),
        )
        .on("pubsub", &p.pubsub),
    })
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
    (traceparent, tracestate): (Option<String>, Option<String>),
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
            tracestate: tracestate.clone(),
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
