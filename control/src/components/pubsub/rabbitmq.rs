//! `pubsub.rabbitmq`: a durable fanout exchange per topic; each consumer
//! group (`consumerID`) has a durable queue `<consumerID>-<topic>` bound to
//! it, so groups each get every message and the sidecars of one group share
//! a queue. Messages are persistent and publishes wait for the broker's
//! confirm. A delivery is acked after the handler acknowledged it and
//! nacked (requeued, after a pause) otherwise; an unacked delivery of a
//! sidecar that dies is redelivered by RabbitMQ. Connections are re-opened
//! after broker restarts.

use super::*;
use futures_util::TryStreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::HashSet;
use std::time::Duration;

pub struct RabbitPubSub {
    uri: String,
    publisher: tokio::sync::Mutex<Option<(Connection, Channel, HashSet<String>)>>,
    prefetch: u16,
    requeue_pause: Duration,
}

async fn open(uri: &str) -> Result<(Connection, Channel), lapin::Error> {
    let conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

async fn declare_exchange(ch: &Channel, topic: &str) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        topic.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

impl RabbitPubSub {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let uri = crate::components::metadata::rabbitmq_uri(m);
        let prefetch: u16 = match m.get("prefetchCount").filter(|v| !v.is_empty()) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("metadata `prefetchCount` is `{v}`; expected a number"))?,
            None => 16,
        };
        let requeue_pause = match m
            .get("requeueInFailureDelay")
            .or_else(|| m.get("redeliveryPause"))
            .filter(|v| !v.is_empty())
        {
            Some(v) => tandem_config::parse_duration(v)
                .map_err(|e| format!("metadata `requeueInFailureDelay`: {e}"))?,
            None => Duration::from_millis(500),
        };
        let shown = uri.split('@').next_back().unwrap_or(&uri).to_string();
        let (conn, channel) = open(&uri)
            .await
            .map_err(|e| format!("cannot connect to rabbitmq at {shown}: {e}"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("rabbitmq publisher confirms: {e}"))?;
        Ok(Self {
            uri,
            publisher: tokio::sync::Mutex::new(Some((conn, channel, HashSet::new()))),
            prefetch,
            requeue_pause,
        })
    }

    async fn try_publish(&self, msg: &Message) -> Result<(), String> {
        let mut slot = self.publisher.lock().await;
        if slot
            .as_ref()
            .is_none_or(|(c, _, _)| !c.status().connected())
        {
            let (conn, ch) = open(&self.uri)
                .await
                .map_err(|e| format!("rabbitmq: {e}"))?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("rabbitmq: {e}"))?;
            *slot = Some((conn, ch, HashSet::new()));
        }
        let (_, ch, declared) = slot.as_mut().expect("just opened");
        if !declared.contains(&msg.topic) {
            declare_exchange(ch, &msg.topic)
                .await
                .map_err(|e| format!("rabbitmq: {e}"))?;
            declared.insert(msg.topic.clone());
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(msg.content_type.as_str().into());
        // Native per-message TTL (MESSAGE_TTL): RabbitMQ drops it unread.
        if let Some(ttl) = msg.metadata.get("ttlInSeconds") {
            let secs: u64 = ttl
                .parse()
                .map_err(|_| format!("metadata ttlInSeconds is `{ttl}`; expected seconds"))?;
            props = props.with_expiration((secs * 1000).to_string().as_str().into());
        }
        let confirm = ch
            .basic_publish(
                msg.topic.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &msg.data,
                props,
            )
            .await
            .map_err(|e| format!("rabbitmq: {e}"))?
            .await
            .map_err(|e| format!("rabbitmq: {e}"))?;
        if confirm.is_nack() {
            return Err("rabbitmq refused the message (nack)".into());
        }
        Ok(())
    }
}

async fn consume(
    uri: String,
    topic: String,
    group: String,
    handler: Handler,
    prefetch: u16,
    pause: Duration,
    in_flight: usize,
) {
    loop {
        if let Err(e) =
            consume_once(&uri, &topic, &group, &handler, prefetch, pause, in_flight).await
        {
            tracing::warn!(topic = %topic, error = %e, "rabbitmq subscription interrupted; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume_once(
    uri: &str,
    topic: &str,
    group: &str,
    handler: &Handler,
    prefetch: u16,
    pause: Duration,
    in_flight: usize,
) -> Result<(), lapin::Error> {
    let (_conn, ch) = open(uri).await?;
    declare_exchange(&ch, topic).await?;
    let queue = format!("{group}-{topic}");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.as_str().into(),
        topic.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    // 0 is no limit (AMQP's and Dapr's meaning); otherwise at least what
    // may be in flight.
    let prefetch = if prefetch == 0 {
        0
    } else {
        prefetch.max(in_flight.min(u16::MAX as usize) as u16)
    };
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let each = |delivery: lapin::message::Delivery| async move {
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let msg = Message {
            topic: topic.to_string(),
            data: Bytes::from(delivery.data.clone()),
            content_type,
            metadata: Metadata::new(),
        };
        if handler(msg).await.is_ok() {
            delivery.ack(BasicAckOptions::default()).await.map(drop)
        } else {
            tokio::time::sleep(pause).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(drop)
        }
    };
    consumer.try_for_each_concurrent(in_flight, each).await
}

impl PubSub for RabbitPubSub {
    fn features(&self) -> Vec<&'static str> {
        vec![feature::MESSAGE_TTL]
    }

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // One retry on a fresh connection: the broker may have restarted.
            match self.try_publish(&msg).await {
                Ok(()) => Ok(()),
                Err(_) => {
                    *self.publisher.lock().await = None;
                    self.try_publish(&msg).await
                }
            }
        })
    }

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String> {
        let in_flight = req.in_flight();
        Ok(SubscriptionHandle::new(tokio::spawn(consume(
            self.uri.clone(),
            req.topic,
            req.consumer_group,
            req.handler,
            self.prefetch,
            self.requeue_pause,
            in_flight,
        ))))
    }
}
