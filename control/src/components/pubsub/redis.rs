//! `pubsub.redis`: Redis Streams. A topic is a stream; `consumerID` is the
//! consumer group (created at `0`, so a new group starts from the oldest
//! retained entry); each sidecar is one consumer in it. A message is XACKed
//! only after the handler acknowledged it; what a consumer read but never
//! acknowledged (handler failure, sidecar killed) stays pending and is
//! reclaimed with XAUTOCLAIM once it has been idle for `processingTimeout`.

use super::*;
use crate::components::metadata::duration;
use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{StreamReadOptions, StreamReadReply};
use ::redis::{AsyncCommands, Client, RedisResult};
use std::time::Duration;

pub struct RedisPubSub {
    client: Client,
    publisher: ::redis::aio::ConnectionManager,
    consumer: String,
    processing_timeout: Duration,
    redeliver_interval: Duration,
    max_len: Option<usize>,
}

impl RedisPubSub {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let (client, host) = crate::components::metadata::redis_client(m, "pubsub.redis")?;
        let publisher = client
            .get_connection_manager()
            .await
            .map_err(|e| format!("cannot connect to redis at {host}: {e}"))?;
        let max_len = match m.get("maxLenApprox").filter(|v| !v.is_empty()) {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("metadata `maxLenApprox` is `{v}`; expected a number"))?,
            ),
            None => None,
        };
        Ok(Self {
            client,
            publisher,
            consumer: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            processing_timeout: duration(m, "processingTimeout", Duration::from_secs(15))?,
            redeliver_interval: duration(m, "redeliverInterval", Duration::from_secs(5))?,
            max_len,
        })
    }
}

/// One subscription: what its read loop needs.
struct Consumer {
    client: Client,
    topic: String,
    group: String,
    /// This sidecar's name in the group.
    name: String,
    handler: Handler,
    processing_timeout: Duration,
    redeliver_interval: Duration,
    in_flight: usize,
}

/// Reads, hands over and acknowledges messages of one subscription until
/// the task is aborted. Connection failures are retried with a pause.
async fn consume(c: Consumer) {
    loop {
        if let Err(e) = consume_once(&c).await {
            tracing::warn!(topic = %c.topic, error = %e, "redis stream subscription interrupted; reconnecting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn handle(
    conn: &mut MultiplexedConnection,
    topic: &str,
    group: &str,
    id: &str,
    fields: &std::collections::HashMap<String, ::redis::Value>,
    handler: &Handler,
) -> RedisResult<()> {
    let data: Vec<u8> = match fields.get("data") {
        Some(v) => ::redis::from_redis_value(v.clone()).unwrap_or_default(),
        None => Vec::new(),
    };
    let content_type: String = fields
        .get("contentType")
        .and_then(|v| ::redis::from_redis_value(v.clone()).ok())
        .unwrap_or_default();
    let msg = Message {
        topic: topic.to_string(),
        data: Bytes::from(data),
        content_type,
        metadata: Metadata::new(),
    };
    if handler(msg).await.is_ok() {
        let _: i64 = conn.xack(topic, group, &[id]).await?;
    }
    Ok(())
}

/// Hands entries to the handler, up to `in_flight` at once, each acked as
/// soon as it is handled.
async fn handle_all(
    conn: &MultiplexedConnection,
    topic: &str,
    group: &str,
    entries: impl Iterator<Item = (String, std::collections::HashMap<String, ::redis::Value>)>,
    handler: &Handler,
    in_flight: usize,
) -> RedisResult<()> {
    use futures_util::StreamExt;
    let results: Vec<RedisResult<()>> = futures_util::stream::iter(entries)
        .map(|(id, fields)| {
            let mut conn = conn.clone();
            async move { handle(&mut conn, topic, group, &id, &fields, handler).await }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The entries of an XAUTOCLAIM reply: `[next-id, [[id, [field, value,
/// …]], …], [deleted-ids]]`. Entries whose data was trimmed away are nil.
fn claimed_entries(
    reply: ::redis::Value,
) -> Vec<(String, std::collections::HashMap<String, ::redis::Value>)> {
    use ::redis::Value as V;
    let V::Array(parts) = reply else {
        return Vec::new();
    };
    let Some(V::Array(entries)) = parts.into_iter().nth(1) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let V::Array(mut pair) = e else { return None };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id: String = ::redis::from_redis_value(pair.pop()?).ok()?;
            let V::Array(kv) = fields else { return None };
            let mut map = std::collections::HashMap::new();
            let mut it = kv.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Ok(k) = ::redis::from_redis_value::<String>(k) {
                    map.insert(k, v);
                }
            }
            Some((id, map))
        })
        .collect()
}

async fn consume_once(c: &Consumer) -> RedisResult<()> {
    let (topic, group, handler, in_flight) = (&c.topic, &c.group, &c.handler, c.in_flight);
    // A blocking read must not outlive the client-side response timeout
    // (500 ms by default), or replies get out of step.
    let config = ::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = c
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let created: RedisResult<()> = conn.xgroup_create_mkstream(topic, group, "0").await;
    if let Err(e) = created
        && !e.to_string().contains("BUSYGROUP")
    {
        return Err(e);
    }
    let mut last_claim = tokio::time::Instant::now();
    loop {
        let opts = StreamReadOptions::default()
            .group(group, &c.name)
            .count(16.max(in_flight))
            .block(500);
        let reply: StreamReadReply = conn.xread_options(&[topic.as_str()], &[">"], &opts).await?;
        let entries = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids)
            .map(|e| (e.id, e.map));
        handle_all(&conn, topic, group, entries, handler, in_flight).await?;
        // `0` for either turns redelivery off, as in Dapr.
        let redeliver = !c.redeliver_interval.is_zero() && !c.processing_timeout.is_zero();
        if redeliver && last_claim.elapsed() >= c.redeliver_interval {
            last_claim = tokio::time::Instant::now();
            let claimed: ::redis::Value = ::redis::cmd("XAUTOCLAIM")
                .arg(topic)
                .arg(group)
                .arg(&c.name)
                .arg(c.processing_timeout.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(64)
                .query_async(&mut conn)
                .await?;
            let entries = claimed_entries(claimed).into_iter();
            handle_all(&conn, topic, group, entries, handler, in_flight).await?;
        }
    }
}

impl PubSub for RedisPubSub {
    fn features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.publisher.clone();
            let mut cmd = ::redis::cmd("XADD");
            cmd.arg(&msg.topic);
            if let Some(n) = self.max_len {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*")
                .arg("data")
                .arg(msg.data.as_ref())
                .arg("contentType")
                .arg(&msg.content_type);
            let _: String = cmd
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(())
        })
    }

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String> {
        let in_flight = req.in_flight();
        let task = tokio::spawn(consume(Consumer {
            client: self.client.clone(),
            topic: req.topic,
            group: req.consumer_group,
            name: self.consumer.clone(),
            handler: req.handler,
            processing_timeout: self.processing_timeout,
            redeliver_interval: self.redeliver_interval,
            in_flight,
        }));
        Ok(SubscriptionHandle::new(task))
    }
}
