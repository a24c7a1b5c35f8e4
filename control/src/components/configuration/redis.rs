//! `configuration.redis`: each item is a Redis string `value||version`
//! (the `||version` part optional), as Dapr stores them. Subscriptions
//! listen to keyspace notifications (`notify-keyspace-events` must include
//! `K` and `A`, or at least `$` and `g`; the store turns them on when the
//! server lets it) and read the changed key again; a deleted or expired
//! key is reported with an empty value.

use super::*;
use ::redis::AsyncCommands;
use ::redis::aio::ConnectionManager;
use futures_util::StreamExt;

pub struct RedisConfig {
    client: ::redis::Client,
    conn: ConnectionManager,
    db: i64,
}

/// `value||version` → item.
fn item(raw: &str) -> Item {
    let (value, version) = match raw.rsplit_once("||") {
        Some((v, ver)) => (v.to_string(), ver.to_string()),
        None => (raw.to_string(), String::new()),
    };
    Item {
        value,
        version,
        metadata: Metadata::new(),
    }
}

impl RedisConfig {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let (client, _) = crate::components::metadata::redis_client(m, "configuration.redis")?;
        let conn = crate::components::metadata::redis_connection(m, "configuration.redis").await?;
        let db = m
            .get("redisDB")
            .filter(|v| !v.is_empty())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Self { client, conn, db })
    }

    async fn read(conn: &mut ConnectionManager, keys: &[String]) -> Result<Items, String> {
        let mut items = Items::new();
        if keys.is_empty() {
            return Ok(items);
        }
        let values: Vec<Option<String>> = if keys.len() == 1 {
            vec![
                conn.get(&keys[0])
                    .await
                    .map_err(|e| format!("redis: {e}"))?,
            ]
        } else {
            conn.mget(keys).await.map_err(|e| format!("redis: {e}"))?
        };
        for (k, v) in keys.iter().zip(values) {
            if let Some(v) = v {
                items.insert(k.clone(), item(&v));
            }
        }
        Ok(items)
    }
}

impl ConfigurationStore for RedisConfig {
    fn get<'a>(
        &'a self,
        keys: &'a [String],
        _metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<Items, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            if keys.is_empty() {
                let mut all: Vec<String> = Vec::new();
                let mut iter: ::redis::AsyncIter<String> =
                    conn.scan().await.map_err(|e| format!("redis: {e}"))?;
                while let Some(k) = iter.next_item().await {
                    all.push(k.map_err(|e| format!("redis: {e}"))?);
                }
                drop(iter);
                // Only string keys are items.
                let mut out = Items::new();
                for chunk in all.chunks(100) {
                    if let Ok(items) = Self::read(&mut conn, chunk).await {
                        out.extend(items);
                    }
                }
                return Ok(out);
            }
            Self::read(&mut conn, keys).await
        })
    }

    fn subscribe(
        &self,
        keys: Vec<String>,
        _metadata: Metadata,
        handler: ChangeHandler,
    ) -> BoxFuture<'_, Result<SubscriptionHandle, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // Turn keyspace notifications on if the server lets us; a
            // managed Redis may refuse, and then must have them on already.
            let on: Result<(), _> = ::redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg("KA")
                .query_async(&mut conn)
                .await;
            if let Err(e) = on {
                tracing::warn!(error = %e, "configuration.redis: cannot turn on keyspace notifications; they must be on (notify-keyspace-events KA)");
            }
            let mut pubsub = self
                .client
                .get_async_pubsub()
                .await
                .map_err(|e| format!("redis: {e}"))?;
            let prefix = format!("__keyspace@{}__:", self.db);
            if keys.is_empty() {
                pubsub
                    .psubscribe(format!("{prefix}*"))
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
            } else {
                for k in &keys {
                    pubsub
                        .subscribe(format!("{prefix}{k}"))
                        .await
                        .map_err(|e| format!("redis: {e}"))?;
                }
            }
            let task = tokio::spawn(async move {
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Some(key) = msg
                        .get_channel_name()
                        .strip_prefix(&prefix)
                        .map(String::from)
                    else {
                        continue;
                    };
                    let event: String = msg.get_payload().unwrap_or_default();
                    let changed = match event.as_str() {
                        "del" | "expired" | "evicted" => Item::default(),
                        _ => match Self::read(&mut conn, std::slice::from_ref(&key)).await {
                            Ok(mut items) => items.remove(&key).unwrap_or_default(),
                            Err(e) => {
                                tracing::warn!(key = %key, error = %e, "configuration.redis: cannot read a changed key");
                                continue;
                            }
                        },
                    };
                    handler(Items::from([(key, changed)]));
                }
                tracing::warn!("configuration.redis: the notification connection closed");
            });
            Ok(SubscriptionHandle::new(task))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_carry_versions() {
        let i = super::item("blue||3");
        assert_eq!((i.value.as_str(), i.version.as_str()), ("blue", "3"));
        let i = super::item("plain");
        assert_eq!((i.value.as_str(), i.version.as_str()), ("plain", ""));
    }
}
