//! `pubsub.jetstream`: NATS JetStream. A topic is a subject; it must be
//! covered by a stream, which is looked up by subject and, when none covers
//! it, created (`streamName`, file storage unless `memoryStorage`) so a
//! publish is never answered "no responders" and dropped. Each consumer
//! group is a durable pull consumer `<durableName|consumerID>-<topic>` with
//! explicit acks: the sidecars of a group pull from the same consumer and
//! compete, every group gets every message. A message is acked after the
//! handler acknowledged it and nak'ed with a delay otherwise; what a killed
//! sidecar held is redelivered by the server once `ackWait` passes.
//! Publishes wait for the stream's ack, so an acknowledged publish is
//! stored. The client reconnects on its own after a server restart.

use super::*;
use crate::components::metadata::duration;
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
    stream::{Config as StreamConfig, StorageType},
};
use futures_util::TryStreamExt;
use std::collections::HashSet;
use std::time::Duration;

pub struct JetStreamPubSub {
    js: jetstream::Context,
    settings: Settings,
    /// Subjects known to be covered by a stream.
    covered: tokio::sync::Mutex<HashSet<String>>,
}

#[derive(Clone)]
struct Settings {
    stream_name: Option<String>,
    durable_name: Option<String>,
    memory_storage: bool,
    replicas: usize,
    ack_wait: Duration,
    max_deliver: i64,
    max_ack_pending: i64,
    deliver_policy: DeliverPolicy,
    nak_delay: Duration,
    batch: usize,
}

/// Stream and consumer names may not hold `.`, `*`, `>`, whitespace or
/// path separators; topics may.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn number<T: std::str::FromStr>(m: &Metadata, key: &str, default: T) -> Result<T, String> {
    match m.get(key).filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("metadata `{key}` is `{v}`; expected a number")),
        None => Ok(default),
    }
}

fn deliver_policy(m: &Metadata) -> Result<DeliverPolicy, String> {
    if let Some(seq) = m.get("startSequence").filter(|v| !v.is_empty()) {
        let start_sequence = seq
            .parse()
            .map_err(|_| format!("metadata `startSequence` is `{seq}`; expected a number"))?;
        return Ok(DeliverPolicy::ByStartSequence { start_sequence });
    }
    let flag = |k: &str| m.get(k).is_some_and(|v| v == "true");
    if m.get("startTime").is_some_and(|v| !v.is_empty()) {
        return Err("metadata `startTime` is not supported yet by pubsub.jetstream; use `startSequence` or `deliverPolicy`".into());
    }
    match m.get("deliverPolicy").map(|s| s.as_str()).unwrap_or("") {
        "" if flag("deliverNew") => Ok(DeliverPolicy::New),
        "sequence" => Err("metadata `deliverPolicy: sequence` needs `startSequence`".into()),
        "" | "all" => Ok(DeliverPolicy::All),
        "new" => Ok(DeliverPolicy::New),
        "last" => Ok(DeliverPolicy::Last),
        "lastPerSubject" | "last_per_subject" => Ok(DeliverPolicy::LastPerSubject),
        other => Err(format!(
            "metadata `deliverPolicy` is `{other}`; expected all, new, last or lastPerSubject"
        )),
    }
}

impl JetStreamPubSub {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let url = m
            .get("natsURL")
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| "nats://localhost:4222".into());
        // Named without scheme or credentials.
        let shown = url
            .rsplit(['@', '/'])
            .find(|s| !s.is_empty())
            .unwrap_or(&url)
            .to_string();
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .name(m.get("name").cloned().unwrap_or_else(|| "tandem".into()));
        if let Some(t) = m.get("token").filter(|v| !v.is_empty()) {
            opts = opts.token(t.clone());
        }
        if let Some(seed) = m.get("seedKey").filter(|v| !v.is_empty()) {
            if m.get("jwt").is_some_and(|v| !v.is_empty()) {
                return Err("metadata `jwt` is not supported yet by pubsub.jetstream; use `seedKey` (nkey) or `token`".into());
            }
            opts = opts.nkey(seed.clone());
        }
        let client = opts
            .connect(url.as_str())
            .await
            .map_err(|e| format!("cannot connect to nats at {shown}: {e}"))?;
        let js = match m.get("domain").filter(|v| !v.is_empty()) {
            Some(d) => jetstream::with_domain(client, d),
            None => jetstream::new(client),
        };
        let settings = Settings {
            stream_name: m.get("streamName").filter(|v| !v.is_empty()).cloned(),
            durable_name: m.get("durableName").filter(|v| !v.is_empty()).cloned(),
            memory_storage: m.get("memoryStorage").is_some_and(|v| v == "true"),
            replicas: number(m, "replicas", 1)?,
            ack_wait: duration(m, "ackWait", Duration::from_secs(30))?,
            max_deliver: number(m, "maxDeliver", -1)?,
            max_ack_pending: number(m, "maxAckPending", 1000)?,
            deliver_policy: deliver_policy(m)?,
            nak_delay: duration(m, "nakDelay", Duration::from_millis(500))?,
            batch: number(m, "pullBatch", 16)?,
        };
        if settings.batch == 0 {
            return Err("metadata `pullBatch` must be at least 1".into());
        }
        Ok(Self {
            js,
            settings,
            covered: Default::default(),
        })
    }

    async fn ensure_stream(&self, topic: &str) -> Result<String, String> {
        ensure_stream(&self.js, &self.settings, topic).await
    }
}

/// The stream that holds `topic`: the one whose subjects cover it, or a new
/// one made for it.
async fn ensure_stream(
    js: &jetstream::Context,
    s: &Settings,
    topic: &str,
) -> Result<String, String> {
    if let Ok(name) = js.stream_by_subject(topic).await {
        return Ok(name);
    }
    let name = s
        .stream_name
        .clone()
        .unwrap_or_else(|| format!("tandem-{}", name_part(topic)));
    // A named stream that exists but does not cover the topic is left as
    // it is: widening someone's stream is not ours to do.
    if let Ok(mut existing) = js.get_stream(&name).await {
        let info = existing.info().await.map_err(|e| format!("nats: {e}"))?;
        return Err(format!(
            "stream `{name}` does not cover subject `{topic}` (its subjects: {})",
            info.config.subjects.join(", ")
        ));
    }
    js.create_stream(StreamConfig {
        name: name.clone(),
        subjects: vec![topic.to_string()],
        storage: if s.memory_storage {
            StorageType::Memory
        } else {
            StorageType::File
        },
        num_replicas: s.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create stream `{name}` for `{topic}`: {e}"))?;
    Ok(name)
}

async fn consume(
    js: jetstream::Context,
    s: Settings,
    topic: String,
    group: String,
    h: Handler,
    in_flight: usize,
) {
    loop {
        if let Err(e) = consume_once(&js, &s, &topic, &group, &h, in_flight).await {
            tracing::warn!(topic = %topic, error = %e, "jetstream subscription interrupted; resuming");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume_once(
    js: &jetstream::Context,
    s: &Settings,
    topic: &str,
    group: &str,
    handler: &Handler,
    in_flight: usize,
) -> Result<(), String> {
    let stream_name = ensure_stream(js, s, topic).await?;
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| format!("stream `{stream_name}`: {e}"))?;
    let durable = format!(
        "{}-{}",
        name_part(s.durable_name.as_deref().unwrap_or(group)),
        name_part(topic)
    );
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: topic.to_string(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: s.ack_wait,
                max_deliver: s.max_deliver,
                max_ack_pending: s.max_ack_pending,
                deliver_policy: s.deliver_policy,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer `{durable}`: {e}"))?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(s.batch.max(in_flight))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| format!("consumer `{durable}`: {e}"))?;
    let each = |m: jetstream::Message| async move {
        let content_type = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let msg = Message {
            topic: topic.to_string(),
            data: m.payload.clone(),
            content_type,
            metadata: Metadata::new(),
        };
        let answer = if handler(msg).await.is_ok() {
            // The double ack waits for the server to record it, so an
            // acknowledged message is not delivered again after a restart.
            m.double_ack().await
        } else {
            m.ack_with(AckKind::Nak(Some(s.nak_delay))).await
        };
        if let Err(e) = answer {
            tracing::warn!(topic = %topic, error = %e, "jetstream ack not confirmed; the server will redeliver");
        }
        Ok(())
    };
    messages
        .map_err(|e| format!("consumer `{durable}`: {e}"))
        .try_for_each_concurrent(in_flight, each)
        .await
}

impl PubSub for JetStreamPubSub {
    fn features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if !self.covered.lock().await.contains(&msg.topic) {
                self.ensure_stream(&msg.topic).await?;
                self.covered.lock().await.insert(msg.topic.clone());
            }
            let mut headers = async_nats::HeaderMap::new();
            if !msg.content_type.is_empty() {
                headers.insert("Content-Type", msg.content_type.as_str());
            }
            let ack = self
                .js
                .publish_with_headers(msg.topic.clone(), headers, msg.data)
                .await
                .map_err(|e| format!("nats: {e}"))?;
            ack.await.map_err(|e| {
                // The stream may have been deleted since: look again next time.
                if let Ok(mut c) = self.covered.try_lock() {
                    c.remove(&msg.topic);
                }
                format!("nats did not store the message: {e}")
            })?;
            Ok(())
        })
    }

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String> {
        let in_flight = req.in_flight();
        Ok(SubscriptionHandle::new(tokio::spawn(consume(
            self.js.clone(),
            self.settings.clone(),
            req.topic,
            req.consumer_group,
            req.handler,
            in_flight,
        ))))
    }
}
