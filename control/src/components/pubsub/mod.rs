//! The `PubSub` building block: the broker trait and its components. A
//! broker moves opaque messages; CloudEvents, routing, retries and dead
//! letters belong to `crate::api::pubsub` and `crate::delivery`, so every
//! broker behaves the same.

pub mod embedded;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod memory;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

pub type Metadata = BTreeMap<String, String>;

#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub data: Bytes,
    pub content_type: String,
    pub metadata: Metadata,
}

/// What a subscriber's handler answers: `Ok` acknowledges; `Err` leaves the
/// message with the broker for redelivery.
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

pub struct SubscribeRequest {
    pub topic: String,
    /// Subscribers of one group compete; each group gets every message.
    pub consumer_group: String,
    pub handler: Handler,
    /// How many messages the handler may be given at once (at least 1).
    /// Brokers that acknowledge in order (MQTT) still do.
    pub concurrency: usize,
}

impl SubscribeRequest {
    pub fn in_flight(&self) -> usize {
        self.concurrency.max(1)
    }
}

/// Delivery stops when the handle is dropped.
pub struct SubscriptionHandle {
    task: tokio::task::JoinHandle<()>,
}

impl SubscriptionHandle {
    pub fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self { task }
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub mod feature {
    pub const MESSAGE_TTL: &str = "MESSAGE_TTL";
    pub const BULK_PUBSUB: &str = "BULK_PUBSUB";
    pub const SUBSCRIBE_WILDCARDS: &str = "SUBSCRIBE_WILDCARDS";
}

pub trait PubSub: Send + Sync {
    fn features(&self) -> Vec<&'static str>;

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>>;

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String>;
}

/// Topic scoping from component metadata: `allowedTopics`,
/// `publishingScopes`, `subscriptionScopes` (`app1=t1,t2;app2=t3`) and
/// `protectedTopics` (topics no app may use without an explicit grant).
#[derive(Clone, Debug, Default)]
pub struct TopicScopes {
    allowed: Option<Vec<String>>,
    publishing: BTreeMap<String, Vec<String>>,
    subscription: BTreeMap<String, Vec<String>>,
    protected: Vec<String>,
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn app_topics(v: &str) -> BTreeMap<String, Vec<String>> {
    v.split(';')
        .filter_map(|part| {
            let (app, topics) = part.split_once('=')?;
            Some((app.trim().to_string(), list(topics)))
        })
        .filter(|(app, _)| !app.is_empty())
        .collect()
}

impl TopicScopes {
    pub fn from_metadata(m: &Metadata) -> Self {
        Self {
            allowed: m
                .get("allowedTopics")
                .map(|v| list(v))
                .filter(|l| !l.is_empty()),
            publishing: m
                .get("publishingScopes")
                .map(|v| app_topics(v))
                .unwrap_or_default(),
            subscription: m
                .get("subscriptionScopes")
                .map(|v| app_topics(v))
                .unwrap_or_default(),
            protected: m
                .get("protectedTopics")
                .map(|v| list(v))
                .unwrap_or_default(),
        }
    }

    fn allows(&self, grants: &BTreeMap<String, Vec<String>>, app: &str, topic: &str) -> bool {
        if self
            .allowed
            .as_ref()
            .is_some_and(|a| !a.iter().any(|t| t == topic))
        {
            return false;
        }
        match grants.get(app) {
            Some(topics) => topics.iter().any(|t| t == topic),
            None => !self.protected.iter().any(|t| t == topic),
        }
    }

    pub fn may_publish(&self, app: &str, topic: &str) -> bool {
        self.allows(&self.publishing, app, topic)
    }

    pub fn may_subscribe(&self, app: &str, topic: &str) -> bool {
        self.allows(&self.subscription, app, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoping_rules() {
        let m = Metadata::from([
            (
                "allowedTopics".to_string(),
                "orders, audit, secret".to_string(),
            ),
            (
                "publishingScopes".to_string(),
                "billing=orders;mute=".to_string(),
            ),
            (
                "subscriptionScopes".to_string(),
                "billing=audit".to_string(),
            ),
            ("protectedTopics".to_string(), "secret".to_string()),
        ]);
        let s = TopicScopes::from_metadata(&m);
        assert!(
            s.may_publish("shop", "orders"),
            "unlisted apps may use allowed topics"
        );
        assert!(!s.may_publish("shop", "other"), "not in allowedTopics");
        assert!(s.may_publish("billing", "orders"));
        assert!(
            !s.may_publish("billing", "audit"),
            "billing may publish only orders"
        );
        assert!(
            !s.may_publish("mute", "orders"),
            "an empty grant allows nothing"
        );
        assert!(
            !s.may_publish("shop", "secret"),
            "protected without a grant"
        );
        assert!(s.may_subscribe("billing", "audit"));
        assert!(!s.may_subscribe("billing", "orders"));
        assert!(TopicScopes::default().may_publish("any", "thing"));
    }
}
