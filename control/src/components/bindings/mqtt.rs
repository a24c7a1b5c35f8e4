//! `bindings.mqtt3`: one MQTT topic (metadata `topic`) on the broker at
//! `url`, with `pubsub.mqtt3`'s client underneath (its `qos`, `retain`,
//! `cleanSession`, `consumerID` — the app id unless given). Output
//! `create` publishes the data (request metadata `topic` overrides the
//! topic) and waits for the broker's PUBACK. Input subscribes with a
//! persistent session: a message is acknowledged once the app took it,
//! and handed to it again after a pause when it did not, in order.

use super::*;
use crate::components::pubsub::{Message, PubSub, SubscribeRequest, mqtt::MqttPubSub};

pub struct MqttBinding {
    broker: MqttPubSub,
    topic: String,
    consumer: String,
}

impl MqttBinding {
    pub fn new(m: &Metadata) -> Result<Self, String> {
        let topic = m
            .get("topic")
            .filter(|v| !v.is_empty())
            .ok_or("metadata `topic` is required: the MQTT topic read from and written to")?
            .clone();
        Ok(Self {
            broker: MqttPubSub::new(m)?,
            topic,
            consumer: m
                .get("consumerID")
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "tandem".into()),
        })
    }
}

impl Binding for MqttBinding {
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
            let topic = req
                .metadata
                .get("topic")
                .filter(|t| !t.is_empty())
                .cloned()
                .unwrap_or_else(|| self.topic.clone());
            self.broker
                .publish(Message {
                    topic,
                    data: req.data,
                    content_type: String::new(),
                    metadata: Metadata::new(),
                })
                .await
                .map_err(BindingError::Failed)?;
            Ok(OutputResponse::default())
        })
    }

    fn is_input(&self) -> bool {
        true
    }

    fn read(&self, handler: InputHandler) -> Result<SubscriptionHandle, String> {
        self.broker.subscribe(SubscribeRequest {
            topic: self.topic.clone(),
            consumer_group: self.consumer.clone(),
            handler: Arc::new(move |msg: Message| {
                let handler = handler.clone();
                Box::pin(async move {
                    let event = InputEvent {
                        data: msg.data,
                        metadata: Metadata::from([("topic".to_string(), msg.topic)]),
                    };
                    handler(event).await.map(drop)
                })
            }),
            concurrency: 1,
        })
    }
}
