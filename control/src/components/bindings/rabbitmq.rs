//! `bindings.rabbitmq`: a queue (metadata `queueName`) on the broker at
//! `host` (an amqp:// URL). Output `create` publishes the data to the queue
//! through the default exchange and waits for the broker's confirm
//! (request metadata `ttlInSeconds` and `priority` per message). Input
//! consumes the queue: a message is acked once the app took it and
//! requeued (after a pause) when it did not. Queue options as Dapr names
//! them: `durable` (messages persistent too), `deleteWhenUnused`,
//! `exclusive`, `prefetchCount`, `maxPriority`, `ttlInSeconds` (the
//! queue's default message TTL), `contentType`. Connections are re-opened
//! after broker restarts.

use super::*;
use futures_util::TryStreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Duration;

#[derive(Clone)]
struct Queue {
    uri: String,
    name: String,
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
    prefetch: u16,
    max_priority: Option<u8>,
    ttl_ms: Option<u32>,
    content_type: String,
}

pub struct RabbitBinding {
    queue: Queue,
    publisher: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

fn flag(m: &Metadata, key: &str, default: bool) -> Result<bool, String> {
    match m.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(format!("metadata `{key}` is `{v}`; expected true or false")),
    }
}

fn number<T: std::str::FromStr>(m: &Metadata, key: &str) -> Result<Option<T>, String> {
    match m.get(key).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("metadata `{key}` is `{v}`; expected a number")),
    }
}

impl Queue {
    async fn open(&self) -> Result<(Connection, Channel), lapin::Error> {
        let conn = Connection::connect(&self.uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let mut args = FieldTable::default();
        if let Some(p) = self.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
        }
        if let Some(t) = self.ttl_ms {
            args.insert("x-message-ttl".into(), AMQPValue::LongUInt(t));
        }
        ch.queue_declare(
            self.name.as_str().into(),
            QueueDeclareOptions {
                durable: self.durable,
                auto_delete: self.auto_delete,
                exclusive: self.exclusive,
                ..Default::default()
            },
            args,
        )
        .await?;
        Ok((conn, ch))
    }
}

impl RabbitBinding {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let name = m
            .get("queueName")
            .filter(|v| !v.is_empty())
            .ok_or("metadata `queueName` is required: the queue read from and written to")?
            .clone();
        let queue = Queue {
            uri: crate::components::metadata::rabbitmq_uri(m),
            name,
            durable: flag(m, "durable", false)?,
            auto_delete: flag(m, "deleteWhenUnused", false)?,
            exclusive: flag(m, "exclusive", false)?,
            prefetch: number(m, "prefetchCount")?.unwrap_or(16),
            max_priority: number(m, "maxPriority")?,
            // `ttl` (an alias here): whole seconds or a duration.
            ttl_ms: match m.get("ttlInSeconds").filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(v) => Some(match v.trim().parse::<u32>() {
                    Ok(secs) => secs.saturating_mul(1000),
                    Err(_) => tandem_config::parse_duration(v)
                        .map_err(|e| format!("metadata `ttl`: {e}"))?
                        .as_millis()
                        .min(u128::from(u32::MAX)) as u32,
                }),
            },
            content_type: m
                .get("contentType")
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "text/plain".into()),
        };
        let shown = queue
            .uri
            .split('@')
            .next_back()
            .unwrap_or(&queue.uri)
            .to_string();
        let (conn, ch) = queue
            .open()
            .await
            .map_err(|e| format!("cannot connect to rabbitmq at {shown}: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("rabbitmq publisher confirms: {e}"))?;
        Ok(Self {
            queue,
            publisher: tokio::sync::Mutex::new(Some((conn, ch))),
        })
    }

    async fn try_publish(&self, req: &OutputRequest) -> Result<(), BindingError> {
        let failed = |e: lapin::Error| BindingError::Failed(format!("rabbitmq: {e}"));
        let mut slot = self.publisher.lock().await;
        if slot.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
            let (conn, ch) = self.queue.open().await.map_err(failed)?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(failed)?;
            *slot = Some((conn, ch));
        }
        let (_, ch) = slot.as_ref().expect("just opened");
        let mut props =
            BasicProperties::default().with_content_type(self.queue.content_type.as_str().into());
        if self.queue.durable {
            props = props.with_delivery_mode(2);
        }
        if let Some(ttl) = ttl_seconds(&req.metadata)? {
            props = props.with_expiration((ttl * 1000).to_string().as_str().into());
        }
        if let Some(p) = req.metadata.get("priority").filter(|v| !v.is_empty()) {
            let p: u8 = p.parse().map_err(|_| {
                BindingError::BadRequest(format!("metadata `priority` is `{p}`; expected 0–255"))
            })?;
            props = props.with_priority(p);
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                self.queue.name.as_str().into(),
                BasicPublishOptions::default(),
                &req.data,
                props,
            )
            .await
            .map_err(failed)?
            .await
            .map_err(failed)?;
        if confirm.is_nack() {
            return Err(BindingError::Failed(
                "rabbitmq refused the message (nack)".into(),
            ));
        }
        Ok(())
    }
}

async fn consume(queue: Queue, handler: InputHandler) {
    loop {
        if let Err(e) = consume_once(&queue, &handler).await {
            tracing::warn!(queue = %queue.name, error = %e, "rabbitmq binding interrupted; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume_once(queue: &Queue, handler: &InputHandler) -> Result<(), lapin::Error> {
    let (_conn, ch) = queue.open().await?;
    // 0 is no limit, as in AMQP and Dapr.
    ch.basic_qos(queue.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            queue.name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // One at a time: the app sees the queue's order.
    consumer
        .try_for_each(|delivery| async move {
            let event = InputEvent {
                data: Bytes::from(delivery.data.clone()),
                metadata: Metadata::new(),
            };
            if handler(event).await.is_ok() {
                delivery.ack(BasicAckOptions::default()).await.map(drop)
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
        })
        .await
}

impl Binding for RabbitBinding {
    fn operations(&self) -> Vec<&'static str> {
        vec!["create"]
    }

    fn invoke<'a>(
        &'a self,
        req: OutputRequest,
    ) -> BoxFuture<'a, Result<OutputResponse, BindingError>> {
        Box::pin(async move {
            if req.operation != "create" {
                return Err(unsupported(&req.operation));
            }
            // One retry on a fresh connection: the broker may have restarted.
            if let Err(BindingError::Failed(_)) = self.try_publish(&req).await {
                *self.publisher.lock().await = None;
                self.try_publish(&req).await?;
            }
            Ok(OutputResponse::default())
        })
    }

    fn is_input(&self) -> bool {
        true
    }

    fn read(&self, handler: InputHandler) -> Result<SubscriptionHandle, String> {
        Ok(SubscriptionHandle::new(tokio::spawn(consume(
            self.queue.clone(),
            handler,
        ))))
    }
}
