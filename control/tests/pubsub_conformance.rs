//! The pub/sub conformance suite: every broker delivers each message to
//! every consumer group, once per group across competing consumers, and
//! redelivers what a handler did not acknowledge.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_control::components::pubsub::{
    Handler, Message, PubSub, SubscribeRequest, SubscriptionHandle, memory::MemoryPubSub,
};

type Seen = Arc<Mutex<Vec<String>>>;

/// How long a new subscription gets to be in place before publishing.
const SETTLE: Duration = Duration::from_secs(1);

fn recorder(seen: &Seen) -> Handler {
    let seen = seen.clone();
    Arc::new(move |m: Message| {
        let seen = seen.clone();
        Box::pin(async move {
            seen.lock()
                .unwrap()
                .push(String::from_utf8(m.data.to_vec()).unwrap());
            Ok(())
        })
    })
}

/// Fails each message the first time it sees it.
fn fails_once(seen: &Seen) -> Handler {
    let seen = seen.clone();
    let tried = Arc::new(Mutex::new(BTreeSet::new()));
    Arc::new(move |m: Message| {
        let (seen, tried) = (seen.clone(), tried.clone());
        Box::pin(async move {
            let text = String::from_utf8(m.data.to_vec()).unwrap();
            if tried.lock().unwrap().insert(text.clone()) {
                return Err("not this time".to_string());
            }
            seen.lock().unwrap().push(text);
            Ok(())
        })
    })
}

fn sub(b: &dyn PubSub, topic: &str, group: &str, handler: Handler) -> SubscriptionHandle {
    sub_n(b, topic, group, handler, 1)
}

fn sub_n(
    b: &dyn PubSub,
    topic: &str,
    group: &str,
    handler: Handler,
    concurrency: usize,
) -> SubscriptionHandle {
    b.subscribe(SubscribeRequest {
        topic: topic.into(),
        consumer_group: group.into(),
        handler,
        concurrency,
    })
    .unwrap()
}

/// Takes 50 ms per message and notes the most it was given at once.
fn slow_counter(seen: &Seen, most: &Arc<Mutex<(usize, usize)>>) -> Handler {
    let (seen, most) = (seen.clone(), most.clone());
    Arc::new(move |m: Message| {
        let (seen, most) = (seen.clone(), most.clone());
        Box::pin(async move {
            {
                let mut g = most.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            most.lock().unwrap().0 -= 1;
            seen.lock()
                .unwrap()
                .push(String::from_utf8(m.data.to_vec()).unwrap());
            Ok(())
        })
    })
}

async fn publish(b: &dyn PubSub, topic: &str, payloads: &[String]) {
    for p in payloads {
        b.publish(Message {
            topic: topic.into(),
            data: Bytes::from(p.clone()),
            content_type: "text/plain".into(),
            metadata: BTreeMap::new(),
        })
        .await
        .unwrap();
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn set(seen: &Seen) -> BTreeSet<String> {
    seen.lock().unwrap().iter().cloned().collect()
}

fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `make` builds a fresh broker handle (a new "sidecar") on the same backend.
/// Returns the topic it used.
pub async fn conformance(make: impl Fn() -> Arc<dyn PubSub>, redelivery: Duration) -> String {
    conformance_with(make, redelivery, Groups::Compete).await
}

/// How the subscribers of one consumer group share a topic.
#[derive(PartialEq)]
pub enum Groups {
    /// Each message goes to one subscriber of the group.
    Compete,
    /// The broker has no groups (MQTT 3): a group is one client, and a
    /// second subscriber of it needs a client of its own.
    PerClient,
}

pub async fn conformance_with(
    make: impl Fn() -> Arc<dyn PubSub>,
    redelivery: Duration,
    groups: Groups,
) -> String {
    let run = run_id();
    let topic = format!("conf-{run}");
    let broker = make();
    let payloads: Vec<String> = (0..20).map(|i| format!("m-{i}")).collect();
    let expected: BTreeSet<String> = payloads.iter().cloned().collect();

    let (a, b, c1, c2, d) = (
        Seen::default(),
        Seen::default(),
        Seen::default(),
        Seen::default(),
        Seen::default(),
    );
    let _ha = sub(broker.as_ref(), &topic, "group-a", recorder(&a));
    let _hb = sub(broker.as_ref(), &topic, "group-b", recorder(&b));
    // Two competing consumers of one group, on two broker handles.
    let other = make();
    let _hc1 = sub(broker.as_ref(), &topic, "group-c", recorder(&c1));
    let _hc2 =
        (groups == Groups::Compete).then(|| sub(other.as_ref(), &topic, "group-c", recorder(&c2)));
    let _hd = sub(broker.as_ref(), &topic, "group-d", fails_once(&d));
    // A group whose handler is given up to four messages at once.
    let (e, most) = (Seen::default(), Arc::new(Mutex::new((0, 0))));
    let _he = sub_n(
        broker.as_ref(),
        &topic,
        "group-e",
        slow_counter(&e, &most),
        4,
    );
    // Subscribing is asynchronous: a broker may bind the group's queue a
    // moment later (RabbitMQ drops what reaches a fanout exchange before).
    tokio::time::sleep(SETTLE).await;
    publish(broker.as_ref(), &topic, &payloads).await;

    wait_until(
        "every group to get every message",
        Duration::from_secs(10),
        || set(&a) == expected && set(&b) == expected,
    )
    .await;
    wait_until(
        "the competing group to get every message",
        Duration::from_secs(10),
        || {
            let mut all = set(&c1);
            all.extend(set(&c2));
            all == expected
        },
    )
    .await;
    let total = c1.lock().unwrap().len() + c2.lock().unwrap().len();
    assert_eq!(
        total, 20,
        "competing consumers share the messages, none twice"
    );
    wait_until("redelivery of refused messages", redelivery, || {
        set(&d) == expected
    })
    .await;
    assert_eq!(
        a.lock().unwrap().len(),
        20,
        "no duplicates when every handler acknowledges"
    );
    wait_until("the concurrent group", Duration::from_secs(10), || {
        set(&e) == expected
    })
    .await;
    let most = most.lock().unwrap().1;
    assert!(
        (2..=4).contains(&most),
        "concurrency 4 gives the handler several messages at once, never more than 4: {most}"
    );
    topic
}

/// A consumer that takes messages and never answers: a sidecar that hangs
/// and is then killed.
fn stuck(taken: &Seen) -> Handler {
    let taken = taken.clone();
    Arc::new(move |m: Message| {
        let taken = taken.clone();
        Box::pin(async move {
            taken
                .lock()
                .unwrap()
                .push(String::from_utf8(m.data.to_vec()).unwrap());
            std::future::pending::<()>().await;
            Ok(())
        })
    })
}

/// `first` takes messages of `topic` without acknowledging them and is
/// dropped; `second` (another process on the same backend) must then get
/// every message. Returns `second` and what was published.
pub async fn survives_a_killed_subscriber(
    first: Arc<dyn PubSub>,
    second: impl std::future::Future<Output = Arc<dyn PubSub>>,
    topic: &str,
) -> (Arc<dyn PubSub>, BTreeSet<String>) {
    let taken = Seen::default();
    let h = sub(first.as_ref(), topic, "orders", stuck(&taken));
    // Subscribing is asynchronous: a broker may bind the group's queue a
    // moment later (RabbitMQ drops what reaches a fanout exchange before).
    tokio::time::sleep(SETTLE).await;
    let payloads: Vec<String> = (0..10).map(|i| format!("k-{i}")).collect();
    publish(first.as_ref(), topic, &payloads).await;
    wait_until(
        "the first consumer to take a message",
        Duration::from_secs(5),
        || !taken.lock().unwrap().is_empty(),
    )
    .await;
    drop(h);
    drop(first);
    let second = second.await;
    let got = Seen::default();
    let handle = sub(second.as_ref(), topic, "orders", recorder(&got));
    let expected: BTreeSet<String> = payloads.iter().cloned().collect();
    wait_until(
        "every message, including those the dead consumer held",
        Duration::from_secs(10),
        || set(&got) == expected,
    )
    .await;
    drop(handle);
    (second, expected)
}

/// Hands out two broker handles in turn (two "sidecars" on one backend).
fn alternate(handles: [Arc<dyn PubSub>; 2]) -> impl Fn() -> Arc<dyn PubSub> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    move || handles[next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_passes() {
    let shared: Arc<dyn PubSub> = Arc::new(MemoryPubSub::default());
    conformance(move || shared.clone(), Duration::from_secs(10)).await;
}

#[cfg(feature = "redis")]
mod redis_streams {
    use super::*;
    use tandem_control::components::pubsub::redis::RedisPubSub;

    fn md() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("redisHost".to_string(), "127.0.0.1:6379".to_string()),
            ("processingTimeout".to_string(), "300ms".to_string()),
            ("redeliverInterval".to_string(), "100ms".to_string()),
        ])
    }

    async fn broker() -> Arc<dyn PubSub> {
        Arc::new(
            RedisPubSub::connect(&md())
                .await
                .expect("the machine's Redis on 6379"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_streams_pass() {
        conformance(
            alternate([broker().await, broker().await]),
            Duration::from_secs(10),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_subscriber_loses_nothing() {
        let topic = format!("kill-{}", run_id());
        survives_a_killed_subscriber(broker().await, broker(), &topic).await;
    }
}

mod embedded_log {
    use super::*;
    use tandem_control::components::pubsub::embedded::EmbeddedPubSub;

    fn md(path: &std::path::Path) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("path".to_string(), path.display().to_string()),
            ("processingTimeout".to_string(), "500ms".to_string()),
            ("pollInterval".to_string(), "20ms".to_string()),
            ("redeliveryPause".to_string(), "50ms".to_string()),
        ])
    }

    fn temp_file(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-embedded-{tag}-{}", run_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("pubsub.db")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_log_passes_with_several_handles_on_one_file() {
        let file = temp_file("conf");
        let f = file.clone();
        // Every handle is another "sidecar" opening the same file.
        conformance(
            move || Arc::new(EmbeddedPubSub::new(&md(&f)).unwrap()) as Arc<dyn PubSub>,
            Duration::from_secs(10),
        )
        .await;
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_log_survives_a_killed_subscriber_and_a_restart() {
        let file = temp_file("kill");
        let first: Arc<dyn PubSub> = Arc::new(EmbeddedPubSub::new(&md(&file)).unwrap());
        // A new process: nothing but the file carries over.
        let second =
            async { Arc::new(EmbeddedPubSub::new(&md(&file)).unwrap()) as Arc<dyn PubSub> };
        let (second, expected) = survives_a_killed_subscriber(first, second, "orders").await;
        // A group that subscribes later still gets the retained messages.
        let late = Seen::default();
        let _h = sub(second.as_ref(), "orders", "audit", recorder(&late));
        wait_until(
            "a late group to read the log from the start",
            Duration::from_secs(10),
            || set(&late) == expected,
        )
        .await;
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq_broker {
    use super::*;
    use tandem_control::components::pubsub::rabbitmq::RabbitPubSub;

    async fn broker() -> Arc<dyn PubSub> {
        let md = BTreeMap::from([
            (
                "connectionString".to_string(),
                "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            ),
            ("requeueInFailureDelay".to_string(), "50ms".to_string()),
        ]);
        Arc::new(
            RabbitPubSub::connect(&md)
                .await
                .expect("the machine's RabbitMQ on 5672"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq_passes() {
        conformance(
            alternate([broker().await, broker().await]),
            Duration::from_secs(10),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq_redelivers_what_a_killed_subscriber_held() {
        let topic = format!("kill-{}", run_id());
        survives_a_killed_subscriber(broker().await, broker(), &topic).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq_expires_messages_natively() {
        use tandem_control::components::pubsub::feature::MESSAGE_TTL;
        let b = broker().await;
        assert!(b.features().contains(&MESSAGE_TTL));
        let topic = format!("ttl-{}", run_id());
        // The group's queue exists from its first subscription on.
        let first = sub(b.as_ref(), &topic, "ttl", recorder(&Seen::default()));
        tokio::time::sleep(SETTLE).await;
        drop(first);
        for (text, ttl) in [("short", Some("1")), ("kept", None)] {
            b.publish(Message {
                topic: topic.clone(),
                data: Bytes::from(text),
                content_type: "text/plain".into(),
                metadata: ttl
                    .map(|t| BTreeMap::from([("ttlInSeconds".to_string(), t.to_string())]))
                    .unwrap_or_default(),
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let got = Seen::default();
        let _h = sub(b.as_ref(), &topic, "ttl", recorder(&got));
        wait_until("the message without TTL", Duration::from_secs(5), || {
            set(&got).contains("kept")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(set(&got), BTreeSet::from(["kept".to_string()]));
    }

    #[tokio::test]
    async fn an_unreachable_rabbitmq_is_named() {
        let md = BTreeMap::from([(
            "connectionString".to_string(),
            "amqp://guest:guest@127.0.0.1:1/%2f".to_string(),
        )]);
        let e = RabbitPubSub::connect(&md).await.err().unwrap();
        assert!(
            e.contains("cannot connect to rabbitmq at 127.0.0.1:1"),
            "{e}"
        );
        assert!(
            !e.contains("guest:guest"),
            "credentials are not echoed: {e}"
        );
    }
}

#[cfg(feature = "jetstream")]
mod nats_jetstream {
    use super::*;
    use tandem_control::components::pubsub::jetstream::JetStreamPubSub;

    const URL: &str = "nats://127.0.0.1:4222";

    fn md() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("natsURL".to_string(), URL.to_string()),
            ("ackWait".to_string(), "1s".to_string()),
            ("nakDelay".to_string(), "50ms".to_string()),
        ])
    }

    async fn broker() -> Arc<dyn PubSub> {
        Arc::new(
            JetStreamPubSub::connect(&md())
                .await
                .expect("the machine's NATS JetStream on 4222"),
        )
    }

    /// The streams a test made on the machine's server are removed after it.
    async fn delete_stream_of(topic: &str) {
        let js = async_nats::jetstream::new(async_nats::connect(URL).await.unwrap());
        if let Ok(name) = js.stream_by_subject(topic).await {
            let _ = js.delete_stream(name).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream_passes() {
        let (a, b) = (broker().await, broker().await);
        let topic = conformance(alternate([a, b]), Duration::from_secs(10)).await;
        delete_stream_of(&topic).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream_redelivers_what_a_killed_subscriber_held() {
        let topic = format!("kill-{}", run_id());
        survives_a_killed_subscriber(broker().await, broker(), &topic).await;
        delete_stream_of(&topic).await;
    }

    #[tokio::test]
    async fn a_stream_that_does_not_cover_the_topic_is_named() {
        let run = run_id();
        let js = async_nats::jetstream::new(async_nats::connect(URL).await.unwrap());
        let name = format!("owned-{run}");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("owned.{run}")],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut m = md();
        m.insert("streamName".into(), name.clone());
        let b = JetStreamPubSub::connect(&m).await.unwrap();
        let e = b
            .publish(Message {
                topic: format!("elsewhere-{run}"),
                data: Bytes::from_static(b"x"),
                content_type: "text/plain".into(),
                metadata: BTreeMap::new(),
            })
            .await
            .unwrap_err();
        assert!(e.contains(&name) && e.contains("does not cover"), "{e}");
        js.delete_stream(&name).await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() {
        let m = BTreeMap::from([("natsURL".to_string(), "nats://127.0.0.1:1".to_string())]);
        let e = JetStreamPubSub::connect(&m).await.err().unwrap();
        assert!(e.contains("cannot connect to nats at 127.0.0.1:1"), "{e}");
    }
}

#[cfg(feature = "mqtt")]
mod mqtt3 {
    use super::*;
    use tandem_control::components::pubsub::mqtt::MqttPubSub;

    fn broker() -> Arc<dyn PubSub> {
        let md = BTreeMap::from([
            ("url".to_string(), "tcp://127.0.0.1:1883".to_string()),
            ("consumerID".to_string(), format!("conf-{}", run_id())),
            ("redeliveryPause".to_string(), "50ms".to_string()),
        ]);
        Arc::new(MqttPubSub::new(&md).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt3_passes() {
        conformance_with(
            alternate([broker(), broker()]),
            Duration::from_secs(10),
            Groups::PerClient,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt3_resumes_the_session_of_a_killed_subscriber() {
        // The same client id reconnects: the broker sends what the dead
        // connection held unacknowledged and what was queued meanwhile.
        let topic = format!("kill-{}", run_id());
        survives_a_killed_subscriber(broker(), async { broker() }, &topic).await;
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_the_publish_clearly() {
        let md = BTreeMap::from([("url".to_string(), "tcp://127.0.0.1:1".to_string())]);
        let b = MqttPubSub::new(&md).unwrap();
        let e = b
            .publish(Message {
                topic: "t".into(),
                data: Bytes::from_static(b"x"),
                content_type: String::new(),
                metadata: BTreeMap::new(),
            })
            .await
            .unwrap_err();
        assert!(e.contains("mqtt broker"), "{e}");
    }
}
