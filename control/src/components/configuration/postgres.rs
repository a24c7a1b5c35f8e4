//! `configuration.postgresql`: items are rows of `table` (metadata, a
//! plain identifier) with columns `key`, `value`, `version` and `metadata`
//! (JSON), as in Dapr. Subscriptions `LISTEN` on the channel named by the
//! subscription's metadata `pgNotifyChannel`; the table's trigger sends
//! `{"action": "INSERT"|"UPDATE"|"DELETE", "data": {key, value, version,
//! metadata}}` as the payload (Dapr's documented trigger does). A deleted
//! row is reported with an empty value.

use super::*;
use deadpool_postgres::Pool;
use futures_util::StreamExt;

pub struct PostgresConfig {
    pool: Pool,
    config: tokio_postgres::Config,
    table: String,
    /// `notifyChannel`, when the component names one.
    channel: Option<String>,
}

fn identifier(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!(
            "{what} is `{v}`; expected letters, digits, _ and . only"
        ));
    }
    Ok(())
}

fn row_item(row: &tokio_postgres::Row) -> Result<(String, Item), tokio_postgres::Error> {
    let metadata: Option<serde_json::Value> = row.try_get("metadata")?;
    Ok((
        row.try_get("key")?,
        Item {
            value: row
                .try_get::<_, Option<String>>("value")?
                .unwrap_or_default(),
            version: row
                .try_get::<_, Option<String>>("version")?
                .unwrap_or_default(),
            metadata: json_metadata(metadata.as_ref()),
        },
    ))
}

fn json_metadata(v: Option<&serde_json::Value>) -> Metadata {
    v.and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl PostgresConfig {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let table = m
            .get("table")
            .filter(|v| !v.is_empty())
            .ok_or(
                "metadata `table` is required: the table holding key, value, version and metadata",
            )?
            .clone();
        identifier("metadata `table`", &table)?;
        let pool = crate::components::metadata::postgres_pool(m)?;
        let (config, _) = crate::components::postgres_conn::config(m)?;
        // Dapr's component-level channel; a subscription's own
        // `pgNotifyChannel` is used when the component names none.
        let channel = m.get("notifyChannel").filter(|v| !v.is_empty()).cloned();
        if let Some(c) = &channel {
            identifier("metadata `notifyChannel`", c)?;
        }
        let client = pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to postgresql: {e}"))?;
        client
            .query(&format!("SELECT key, value, version, metadata FROM {table} LIMIT 0"), &[])
            .await
            .map_err(|e| format!("table `{table}` cannot be read (it needs columns key, value, version, metadata): {e}"))?;
        Ok(Self {
            pool,
            config,
            table,
            channel,
        })
    }
}

impl ConfigurationStore for PostgresConfig {
    fn get<'a>(
        &'a self,
        keys: &'a [String],
        _metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<Items, String>> {
        Box::pin(async move {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| format!("postgresql: {e}"))?;
            let sql = format!("SELECT key, value, version, metadata FROM {}", self.table);
            let rows = if keys.is_empty() {
                client.query(&sql, &[]).await
            } else {
                client
                    .query(&format!("{sql} WHERE key = ANY($1)"), &[&keys])
                    .await
            }
            .map_err(|e| format!("postgresql: {e}"))?;
            rows.iter()
                .map(row_item)
                .collect::<Result<Items, _>>()
                .map_err(|e| format!("postgresql: {e}"))
        })
    }

    fn subscribe(
        &self,
        keys: Vec<String>,
        metadata: Metadata,
        handler: ChangeHandler,
    ) -> BoxFuture<'_, Result<SubscriptionHandle, String>> {
        Box::pin(async move {
            let channel = self
                .channel
                .clone()
                .or_else(|| metadata.get("pgNotifyChannel").filter(|v| !v.is_empty()).cloned())
                .ok_or("subscribing to configuration.postgresql needs a channel: the component's `notifyChannel`, or the subscription's metadata `pgNotifyChannel` (the channel the table's trigger notifies)")?;
            identifier("metadata `pgNotifyChannel`", &channel)?;
            let (client, mut connection) = self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("postgresql: {e}"))?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            if tx.send(n.payload().to_string()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "configuration.postgresql: the notification connection failed");
                            return;
                        }
                    }
                }
            });
            client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .map_err(|e| format!("postgresql: LISTEN {channel}: {e}"))?;
            let task = tokio::spawn(async move {
                // Holds the client (the LISTEN lives with it) and the driver.
                let _client = client;
                let _driver = AbortOnDrop(driver);
                while let Some(payload) = rx.recv().await {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload) else {
                        tracing::warn!(payload = %payload, "configuration.postgresql: a notification that is not JSON; ignored");
                        continue;
                    };
                    let data = &v["data"];
                    let Some(key) = data["key"].as_str() else {
                        continue;
                    };
                    if !keys.is_empty() && !keys.iter().any(|k| k == key) {
                        continue;
                    }
                    let item = if v["action"].as_str() == Some("DELETE") {
                        Item::default()
                    } else {
                        let text = |f: &str| match &data[f] {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        Item {
                            value: text("value"),
                            version: text("version"),
                            metadata: json_metadata(Some(&data["metadata"])),
                        }
                    };
                    handler(Items::from([(key.to_string(), item)]));
                }
            });
            Ok(SubscriptionHandle::new(task))
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
