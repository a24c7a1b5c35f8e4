//! `pubsub.in-memory`: a broker inside this process. Each consumer group of
//! a topic has one queue; its subscribers take turns. A message a handler
//! refuses is queued again after a pause (behind newer messages), so
//! delivery is at-least-once for as long as the process lives (nothing
//! survives a restart).

use super::*;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages go boxed: a channel allocates its first block of 32 slots when
/// it is made, and 32 unboxed messages made each subscription cost ~8 KiB
/// before any message was sent (10,000 subscriptions: 80 MiB).
type Queue = mpsc::UnboundedSender<Box<Message>>;

/// The subscribers' queues of one consumer group, and whose turn it is.
type Group = (Vec<Queue>, usize);

#[derive(Default)]
pub struct MemoryPubSub {
    /// topic → consumer group → its queues.
    topics: Mutex<HashMap<String, HashMap<String, Group>>>,
}

const REDELIVERY_PAUSE: Duration = Duration::from_millis(500);

impl MemoryPubSub {
    pub fn new(_metadata: &Metadata) -> Result<Self, String> {
        Ok(Self::default())
    }
}

impl PubSub for MemoryPubSub {
    fn features(&self) -> Vec<&'static str> {
        vec![feature::SUBSCRIBE_WILDCARDS]
    }

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut topics = self.topics.lock().expect("broker lock");
            if let Some(groups) = topics.get_mut(&msg.topic) {
                for (queues, turn) in groups.values_mut() {
                    queues.retain(|q| !q.is_closed());
                    if queues.is_empty() {
                        continue;
                    }
                    *turn = (*turn + 1) % queues.len();
                    let _ = queues[*turn].send(Box::new(msg.clone()));
                }
            }
            Ok(())
        })
    }

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Box<Message>>();
        let tx_for_redelivery = tx.clone();
        self.topics
            .lock()
            .expect("broker lock")
            .entry(req.topic.clone())
            .or_default()
            .entry(req.consumer_group.clone())
            .or_default()
            .0
            .push(tx);
        let in_flight = req.in_flight();
        let handler = req.handler;
        let requeue = tx_for_redelivery;
        let task = tokio::spawn(async move {
            let stream = futures_util::stream::unfold(&mut rx, |rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            stream
                .for_each_concurrent(in_flight, |msg| {
                    let (handler, requeue) = (handler.clone(), requeue.clone());
                    async move {
                        if let Err(e) = handler((*msg).clone()).await {
                            // Offer it again later without holding up the
                            // messages behind it.
                            tracing::debug!(topic = %msg.topic, error = %e, "message not acknowledged; redelivering");
                            tokio::spawn(async move {
                                tokio::time::sleep(REDELIVERY_PAUSE).await;
                                let _ = requeue.send(msg);
                            });
                        }
                    }
                })
                .await;
        });
        Ok(SubscriptionHandle::new(task))
    }
}
