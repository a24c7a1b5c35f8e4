//! The transactional outbox (state component metadata
//! `outboxPublishPubsub`, `outboxPublishTopic`, `outboxPubsub`,
//! `outboxDiscardWhenMissingState`): the upserts of a state transaction are
//! published to a topic if, and only if, the transaction commits.
//!
//! How: before the commit, the events are built and published to an
//! internal topic (`<appID>-<topic>-outbox` on `outboxPubsub`, default the
//! publish pubsub) together with the key of a marker that is written **in
//! the same transaction**. A relay subscribed to the internal topic
//! publishes the events to the user's topic once it finds the marker, then
//! removes it. A transaction that failed leaves no marker, and its events
//! are dropped once `OUTBOX_GRACE` has passed (or at once with
//! `outboxDiscardWhenMissingState: true`). Every step acknowledges only
//! after the next one holds the data, so events of a committed transaction
//! are delivered at least once, even across restarts of the sidecar.
//!
//! An operation with metadata `outbox.projection: "true"` is not saved: its
//! value is what is published for the upsert of the same key.

use crate::api::pubsub::{CLOUDEVENTS_JSON, Publish, envelope};
use crate::components::pubsub::{Message, SubscribeRequest};
use crate::components::state::{
    Concurrency, Consistency, DeleteRequest, GetRequest, SetRequest, TransactionOp,
};
use crate::components::{PubSubComponent, StateComponent};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// How long the relay waits for the marker of a transaction before it
/// decides the transaction did not commit.
const OUTBOX_GRACE: Duration = Duration::from_secs(30);

pub const PROJECTION: &str = "outbox.projection";

/// A state store's outbox settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxConfig {
    pub publish_pubsub: String,
    pub publish_topic: String,
    /// Carries the internal messages; defaults to `publish_pubsub`.
    pub internal_pubsub: String,
    pub discard_when_missing: bool,
}

impl OutboxConfig {
    /// `None` when the component has no outbox; an error names what is
    /// missing or malformed.
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        let get = |k: &str| m.get(k).filter(|v| !v.is_empty()).cloned();
        let (pubsub, topic) = match (get("outboxPublishPubsub"), get("outboxPublishTopic")) {
            (None, None) => return Ok(None),
            (Some(p), Some(t)) => (p, t),
            (Some(_), None) => {
                return Err("metadata `outboxPublishPubsub` is set but `outboxPublishTopic` is not; the outbox needs both".into());
            }
            (None, Some(_)) => {
                return Err("metadata `outboxPublishTopic` is set but `outboxPublishPubsub` is not; the outbox needs both".into());
            }
        };
        let discard = match get("outboxDiscardWhenMissingState").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(format!(
                    "metadata `outboxDiscardWhenMissingState` is `{v}`; expected true or false"
                ));
            }
        };
        Ok(Some(Self {
            internal_pubsub: get("outboxPubsub").unwrap_or_else(|| pubsub.clone()),
            publish_pubsub: pubsub,
            publish_topic: topic,
            discard_when_missing: discard,
        }))
    }

    fn internal_topic(&self, app_id: &str) -> String {
        format!("{app_id}-{}-outbox", self.publish_topic)
    }
}

fn outbox_error(store: &str, msg: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_STATE_TRANSACTION",
        format!("error while executing a transaction on state store {store}: outbox: {msg}"),
    )
}

fn pubsub<'a>(
    snap: &'a crate::Snapshot,
    store: &str,
    name: &str,
) -> Result<&'a PubSubComponent, ApiError> {
    snap.pubsubs.get(name).ok_or_else(|| {
        outbox_error(
            store,
            format!("pubsub {name} named by the store's outbox metadata is not loaded"),
        )
    })
}

/// What goes through the internal topic.
#[derive(serde::Serialize, serde::Deserialize)]
struct Internal {
    store: String,
    marker: String,
    created_ms: i64,
    events: Vec<Value>,
}

/// Adds the marker to `ops` and publishes the transaction's events to the
/// internal topic. `projections` are the values to publish instead of the
/// saved ones, by stored key. Nothing is published when the transaction
/// upserts nothing.
pub async fn stage(
    rt: &Runtime,
    store: &str,
    comp: &StateComponent,
    cfg: &OutboxConfig,
    ops: &mut Vec<TransactionOp>,
    projections: &BTreeMap<String, (Bytes, BTreeMap<String, String>)>,
) -> Result<(), ApiError> {
    let mut events = Vec::new();
    for op in ops.iter() {
        let TransactionOp::Upsert(set) = op else {
            continue;
        };
        let (data, metadata) = projections
            .get(&set.key)
            .cloned()
            .unwrap_or_else(|| (set.value.clone(), set.metadata.clone()));
        let content_type = metadata
            .get("contentType")
            .cloned()
            .unwrap_or_else(|| "application/json".into());
        let p = Publish {
            pubsub: cfg.publish_pubsub.clone(),
            topic: cfg.publish_topic.clone(),
            data,
            content_type,
            metadata,
            traceparent: None,
            tracestate: None,
        };
        let ce: Value = serde_json::from_slice(&envelope(rt, &p, false)?).expect("our own JSON");
        events.push(ce);
    }
    if events.is_empty() {
        return Ok(());
    }
    let snap = rt.snapshot();
    // Both pubsubs must be there before anything is written.
    pubsub(&snap, store, &cfg.publish_pubsub)?;
    let internal = pubsub(&snap, store, &cfg.internal_pubsub)?;
    let marker = crate::api::state::stored_key_for(
        comp,
        &format!("tandem-outbox-{}", uuid::Uuid::new_v4().simple()),
    );
    ops.push(TransactionOp::Upsert(SetRequest {
        key: marker.clone(),
        value: Bytes::from_static(b"\"pending\""),
        etag: None,
        metadata: Default::default(),
        concurrency: Concurrency::LastWrite,
        consistency: Consistency::Strong,
    }));
    let body = serde_json::to_vec(&Internal {
        store: store.to_string(),
        marker,
        created_ms: crate::clock::now_ms(),
        events,
    })
    .expect("JSON");
    internal
        .broker
        .publish(Message {
            topic: cfg.internal_topic(rt.app_id()),
            data: Bytes::from(body),
            content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .await
        .map_err(|e| {
            outbox_error(
                store,
                format!(
                    "pubsub {} refused the outbox message: {e}",
                    cfg.internal_pubsub
                ),
            )
        })
}

/// Starts a relay for every state store with an outbox. They run for the
/// life of the sidecar, whether or not the app is healthy.
pub fn start(rt: &Arc<Runtime>) {
    let snap = rt.snapshot();
    for (name, comp) in &snap.state_stores {
        let Some(cfg) = comp.outbox.clone() else {
            continue;
        };
        let Some(internal) = snap.pubsubs.get(&cfg.internal_pubsub) else {
            tracing::error!(store = %name, pubsub = %cfg.internal_pubsub, "outbox relay not started: no such pubsub");
            continue;
        };
        let (rt2, store) = (rt.clone(), name.clone());
        let relay_cfg = cfg.clone();
        let handler = Arc::new(move |msg: Message| {
            let (rt, store, cfg) = (rt2.clone(), store.clone(), relay_cfg.clone());
            Box::pin(async move { relay(&rt, &store, &cfg, msg).await })
                as futures_util::future::BoxFuture<'static, _>
        });
        match internal.broker.subscribe(SubscribeRequest {
            topic: cfg.internal_topic(rt.app_id()),
            consumer_group: internal.consumer_id.clone(),
            handler,
            concurrency: 1,
        }) {
            Ok(h) => {
                rt.keep_relay(h);
                tracing::info!(store = %name, topic = %cfg.publish_topic, "outbox relay started");
            }
            Err(e) => {
                tracing::error!(store = %name, error = %e, "outbox relay not started")
            }
        }
    }
}

async fn relay(rt: &Runtime, store: &str, cfg: &OutboxConfig, msg: Message) -> Result<(), String> {
    let Ok(internal) = serde_json::from_slice::<Internal>(&msg.data) else {
        tracing::error!(store = %store, "outbox message is not ours; dropped");
        return Ok(());
    };
    let snap = rt.snapshot();
    let comp = snap
        .state_stores
        .get(&internal.store)
        .ok_or_else(|| format!("state store {} is not loaded", internal.store))?;
    let found = comp
        .store
        .get(GetRequest {
            key: internal.marker.clone(),
            metadata: Default::default(),
            consistency: Consistency::Strong,
        })
        .await
        .map_err(|e| format!("outbox: reading the marker: {e}"))?;
    if found.is_none() {
        let age = crate::clock::now_ms() - internal.created_ms;
        if cfg.discard_when_missing || age > OUTBOX_GRACE.as_millis() as i64 {
            tracing::warn!(store = %store, topic = %cfg.publish_topic, "outbox: the transaction did not commit (no marker); its events are dropped");
            return Ok(());
        }
        return Err("outbox: the transaction has not committed yet".into());
    }
    let target = snap
        .pubsubs
        .get(&cfg.publish_pubsub)
        .ok_or_else(|| format!("outbox: pubsub {} is not loaded", cfg.publish_pubsub))?;
    for event in &internal.events {
        let msg = Message {
            topic: cfg.publish_topic.clone(),
            data: Bytes::from(serde_json::to_vec(event).expect("JSON")),
            content_type: CLOUDEVENTS_JSON.into(),
            metadata: Default::default(),
        };
        let published = target
            .outbound
            .run_transient(|| target.broker.publish(msg.clone()))
            .await;
        published.map_err(|e| format!("outbox: publishing to {}: {e}", cfg.publish_topic))?;
    }
    if let Err(e) = comp
        .store
        .delete(DeleteRequest {
            key: internal.marker.clone(),
            etag: None,
            metadata: Default::default(),
            concurrency: Concurrency::LastWrite,
            consistency: Consistency::Strong,
        })
        .await
    {
        tracing::warn!(store = %store, error = %e, "outbox: the marker could not be removed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings() {
        assert_eq!(OutboxConfig::from_metadata(&md(&[])).unwrap(), None);
        let c = OutboxConfig::from_metadata(&md(&[
            ("outboxPublishPubsub", "bus"),
            ("outboxPublishTopic", "orders"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.internal_pubsub, "bus");
        assert!(!c.discard_when_missing);
        assert_eq!(c.internal_topic("shop"), "shop-orders-outbox");
        let e = OutboxConfig::from_metadata(&md(&[("outboxPublishPubsub", "bus")])).unwrap_err();
        assert!(e.contains("outboxPublishTopic"), "{e}");
        let e = OutboxConfig::from_metadata(&md(&[
            ("outboxPublishPubsub", "bus"),
            ("outboxPublishTopic", "t"),
            ("outboxDiscardWhenMissingState", "maybe"),
        ]))
        .unwrap_err();
        assert!(e.contains("maybe"), "{e}");
    }
}
