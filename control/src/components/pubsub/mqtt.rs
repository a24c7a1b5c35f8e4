//! `pubsub.mqtt3`: MQTT 3.1.1 (Mosquitto, EMQX, …). As in Dapr, MQTT 3
//! has no consumer groups: `consumerID` names the client, and every client
//! subscribed to a topic gets every message. Each subscription is one
//! client, `<consumerID>-<topic>`, with a persistent session
//! (`cleanSession: false`) at `qos` (default 1), so a sidecar that restarts
//! resumes its session and the broker sends it what it held or missed.
//! PUBACK is sent only after the handler acknowledged the message; a
//! refused message is handed to the handler again after a pause (MQTT 3 has
//! no negative acknowledgement), in order. Publishes wait for the broker's
//! PUBACK. Replicas of one app need distinct `consumerID`s (`{podName}`,
//! `{uuid}`): two clients with one id take each other's session.

use super::*;
use crate::components::metadata::duration;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

pub struct MqttPubSub {
    base: Options,
    consumer_id: String,
    qos: QoS,
    retain: bool,
    clean_session: bool,
    redelivery_pause: Duration,
    publisher: Mutex<Option<Publisher>>,
}

#[derive(Clone, Debug)]
struct Options {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Options {
    fn mqtt(&self, client_id: String, clean_session: bool) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(20))
            .set_clean_session(clean_session)
            .set_max_packet_size(64 << 20, 64 << 20);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        o
    }
}

/// `tcp://[user[:password]@]host[:port]` (also `mqtt://`).
fn parse_url(url: &str) -> Result<Options, String> {
    let rest = match url.split_once("://") {
        Some(("tcp" | "mqtt", rest)) => rest,
        Some(("ssl" | "tls" | "mqtts" | "tcps", _)) => {
            return Err(
                "metadata `url`: TLS (ssl://) is not supported yet by pubsub.mqtt3; use tcp://"
                    .into(),
            );
        }
        Some((scheme, _)) => {
            return Err(format!(
                "metadata `url`: unknown scheme `{scheme}://`; expected tcp://host:port"
            ));
        }
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    let (credentials, hostport) = match rest.rsplit_once('@') {
        Some((cred, hp)) => {
            let (u, p) = cred.split_once(':').unwrap_or((cred, ""));
            (Some((u.to_string(), p.to_string())), hp)
        }
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("metadata `url`: port `{p}` is not a number"))?,
        ),
        None => (hostport, 1883),
    };
    if host.is_empty() {
        return Err("metadata `url` names no host; expected tcp://host:port".into());
    }
    Ok(Options {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        credentials,
    })
}

fn qos(m: &Metadata) -> Result<QoS, String> {
    match m.get("qos").map(|s| s.as_str()).unwrap_or("1") {
        "0" => Ok(QoS::AtMostOnce),
        "" | "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        v => Err(format!("metadata `qos` is `{v}`; expected 0, 1 or 2")),
    }
}

fn flag(m: &Metadata, key: &str, default: bool) -> Result<bool, String> {
    match m.get(key).map(|s| s.as_str()).unwrap_or("") {
        "" => Ok(default),
        "true" => Ok(true),
        "false" => Ok(false),
        v => Err(format!("metadata `{key}` is `{v}`; expected true or false")),
    }
}

impl MqttPubSub {
    pub fn new(m: &Metadata) -> Result<Self, String> {
        let url = m
            .get("url")
            .filter(|v| !v.is_empty())
            .ok_or("metadata `url` is required (tcp://host:port)")?;
        Ok(Self {
            base: parse_url(url)?,
            consumer_id: m
                .get("consumerID")
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "tandem".into()),
            qos: qos(m)?,
            retain: flag(m, "retain", false)?,
            clean_session: flag(m, "cleanSession", false)?,
            redelivery_pause: duration(m, "redeliveryPause", Duration::from_millis(500))?,
            publisher: Mutex::new(None),
        })
    }
}

/// A publishing client: one publish in flight at a time, answered when the
/// broker's PUBACK (or PUBCOMP) for it arrives.
struct Publisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<Ack>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Ack {
    Sent(u16),
    Done(u16),
    Down(String),
}

fn publisher(base: &Options, id: String) -> Publisher {
    let (client, mut events) = AsyncClient::new(base.mqtt(id, true), 64);
    let (tx, acks) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ack = match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ack::Sent(pkid),
                Ok(Event::Incoming(Incoming::PubAck(a))) => Ack::Done(a.pkid),
                Ok(Event::Incoming(Incoming::PubComp(a))) => Ack::Done(a.pkid),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Ack::Down(e.to_string()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if tx.send(ack).is_err() {
                return;
            }
        }
    });
    Publisher { client, acks, task }
}

impl Publisher {
    async fn publish(&mut self, msg: &Message, qos: QoS, retain: bool) -> Result<(), String> {
        while self.acks.try_recv().is_ok() {}
        self.client
            .publish(msg.topic.clone(), qos, retain, msg.data.to_vec())
            .await
            .map_err(|e| format!("mqtt: {e}"))?;
        let wait = async {
            let mut mine = None;
            loop {
                match self.acks.recv().await {
                    Some(Ack::Sent(pkid)) if mine.is_none() => {
                        if qos == QoS::AtMostOnce {
                            return Ok(());
                        }
                        mine = Some(pkid);
                    }
                    Some(Ack::Done(pkid)) if Some(pkid) == mine => return Ok(()),
                    Some(Ack::Down(e)) => return Err(format!("mqtt broker unreachable: {e}")),
                    Some(_) => {}
                    None => return Err("mqtt publisher stopped".to_string()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .map_err(|_| "mqtt broker did not acknowledge the message within 5s".to_string())?
    }
}

/// Counts connections: a packet id means something only on the
/// connection it arrived on.
type Connection = Arc<AtomicU64>;

/// Polls one subscription's connection; hands messages to `worker` in
/// order and subscribes again after every (re)connect.
async fn subscription(
    mut events: EventLoop,
    client: AsyncClient,
    topic: String,
    qos: QoS,
    connection: Connection,
    worker: mpsc::UnboundedSender<(u64, rumqttc::Publish)>,
) {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connection.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = client.subscribe(topic.clone(), qos).await {
                    tracing::warn!(topic = %topic, error = %e, "mqtt subscribe failed");
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if worker.send((connection.load(Ordering::SeqCst), p)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "mqtt subscription interrupted; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn work(
    client: AsyncClient,
    topic: String,
    handler: Handler,
    pause: Duration,
    connection: Connection,
    in_flight: usize,
    inbox: mpsc::UnboundedReceiver<(u64, rumqttc::Publish)>,
) {
    use futures_util::StreamExt;
    let inbox =
        futures_util::stream::unfold(
            inbox,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        );
    let handled = inbox
        .map(|(arrived_on, p)| {
            let (handler, topic) = (handler.clone(), topic.clone());
            async move {
                let msg = Message {
                    topic,
                    data: p.payload.clone(),
                    content_type: String::new(),
                    metadata: Metadata::new(),
                };
                while handler(msg.clone()).await.is_err() {
                    tokio::time::sleep(pause).await;
                }
                (arrived_on, p)
            }
        })
        // Handled concurrently, acknowledged in the order of arrival.
        .buffered(in_flight);
    handled
        .for_each(|(arrived_on, p)| {
            let (client, connection, topic) = (&client, &connection, &topic);
            async move {
                // After a reconnect the packet id may name another message:
                // the broker resends this one if the session survived.
                if connection.load(Ordering::SeqCst) != arrived_on {
                    return;
                }
                if let Err(e) = client.ack(&p).await {
                    tracing::warn!(topic = %topic, error = %e, "mqtt ack not sent; the broker will redeliver");
                }
            }
        })
        .await;
}

impl PubSub for MqttPubSub {
    fn features(&self) -> Vec<&'static str> {
        vec![feature::SUBSCRIBE_WILDCARDS]
    }

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut slot = self.publisher.lock().await;
            let p = slot.get_or_insert_with(|| {
                publisher(
                    &self.base,
                    format!("{}-pub-{}", self.consumer_id, uuid::Uuid::new_v4().simple()),
                )
            });
            let r = p.publish(&msg, self.qos, self.retain).await;
            if r.is_err() {
                // A fresh client next time: no stale packet ids or acks.
                *slot = None;
            }
            r
        })
    }

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String> {
        let mut o = self.base.mqtt(
            format!("{}-{}", req.consumer_group, req.topic),
            self.clean_session,
        );
        o.set_manual_acks(true);
        let (client, events) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = req.in_flight();
        let (topic, qos, pause) = (req.topic, self.qos, self.redelivery_pause);
        let connection = Connection::default();
        let worker = tokio::spawn(work(
            client.clone(),
            topic.clone(),
            req.handler,
            pause,
            connection.clone(),
            in_flight,
            rx,
        ));
        Ok(SubscriptionHandle::new(tokio::spawn(async move {
            // Aborting this task drops the guard, which stops the worker.
            let _guard = AbortOnDrop(worker);
            subscription(events, client, topic, qos, connection, tx).await;
        })))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = parse_url("tcp://user:pw@broker:1884").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("broker", 1884));
        assert_eq!(o.credentials, Some(("user".into(), "pw".into())));
        let o = parse_url("tcp://localhost").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.credentials),
            ("localhost", 1883, None)
        );
        assert!(parse_url("ssl://h:8883").unwrap_err().contains("TLS"));
        assert!(
            parse_url("http://h")
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(parse_url("tcp://h:x").unwrap_err().contains("port"));
    }
}
