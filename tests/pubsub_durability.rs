//! At-least-once through real sidecars, per durable broker (Redis Streams,
//! NATS JetStream, MQTT, RabbitMQ, the embedded log): a subscriber's
//! sidecar killed mid-stream loses nothing once it is back, another
//! consumer group gets every message too, and a broker that restarts
//! mid-stream loses no message whose publish was acknowledged (204).

mod common;

use common::event_app::{App, start_app};
use common::{OwnServer, Sidecar, TempDir, component, free_port, run_id, sidecar, spawn_quiet};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// RabbitMQ is the machine's own: its restart must not overlap the other
/// RabbitMQ scenario of this binary.
static RABBITMQ: Mutex<()> = Mutex::new(());

fn payloads(app: &App) -> BTreeSet<String> {
    app.got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|g| g.event["data"].as_str().map(String::from))
        .collect()
}

fn wait_all(app: &App, expected: &BTreeSet<String>, what: &str) {
    let end = Instant::now() + Duration::from_secs(40);
    while !payloads(app).is_superset(expected) {
        assert!(
            Instant::now() < end,
            "{what}: got {} of {}; missing {:?}",
            payloads(app).len(),
            expected.len(),
            expected.difference(&payloads(app)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_some(app: &App, n: usize) {
    let end = Instant::now() + Duration::from_secs(15);
    while payloads(app).len() < n {
        assert!(Instant::now() < end, "no deliveries started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_sub(app_id: &str, port: u16, res: &str) -> Sidecar {
    let s = sidecar()
        .app_id(app_id)
        .args(["--app-port", &port.to_string(), "--resources-path", res])
        .start();
    assert!(s.wait_healthz(204, Duration::from_secs(10)));
    s
}

fn subscription(topic: &str) -> String {
    format!(r#"[{{"pubsubname":"bus","topic":"{topic}","route":"/in"}}]"#)
}

/// The subscriber is a `tandem run` of the recorder app, SIGKILLed with its
/// whole process group part-way through (what supervisors and test
/// harnesses do) and started again the same way: every message arrives.
fn killed_subscriber_run(yaml: &str) -> String {
    use std::os::unix::process::CommandExt;
    let run = run_id();
    let topic = format!("runkill-{run}");
    let dir = TempDir::new("runkill");
    dir.write("res/bus.yaml", yaml);
    let record = dir.path().join("record.txt");
    let res = dir.path().join("res");
    let port = free_port();
    let home = TempDir::new("runkill-home");
    let start = || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/event_recorder.py");
        let mut child = Command::new(common::BIN)
            .env("TANDEM_HOME", home.path())
            .env("RECORD", &record)
            .env("SUBSCRIBE", subscription(&topic))
            .env("DELAY_MS", "20")
            .args([
                "run",
                "--app-id",
                &format!("orders-{run}"),
                "--app-port",
                &port.to_string(),
            ])
            .args([
                "--resources-path",
                res.to_str().unwrap(),
                "--",
                "python3",
                script,
                &port.to_string(),
            ])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = common::Output::capture(child.stdout.take().unwrap());
        assert!(
            out.wait_for("You're up and running!", Duration::from_secs(30)),
            "{}",
            out.text()
        );
        (child, out)
    };
    let recorded = || -> BTreeSet<String> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let (mut first, _) = start();
    std::thread::sleep(Duration::from_secs(1));
    let publisher = sidecar()
        .app_id(&format!("shop-{run}"))
        .args(["--resources-path", res.to_str().unwrap()])
        .start();
    let expected: BTreeSet<String> = (0..60).map(|i| format!("m-{i}")).collect();
    for p in &expected {
        let r = publisher.request("POST", &format!("/v1.0/publish/bus/{topic}"), p.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let end = Instant::now() + Duration::from_secs(15);
    while recorded().len() < 5 {
        assert!(Instant::now() < end, "no deliveries started");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(first.id() as i32)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = first.wait();
    let before = recorded().len();
    assert!(
        before < expected.len(),
        "killed mid-stream ({before} delivered)"
    );
    // The killed run's app is stopped by its guard (SIGTERM, then SIGKILL
    // 400 ms later); a restart before that finds the port taken, and its
    // sidecar would see the dying app as its own. Restart once it is free,
    // as tests/run.rs does.
    let end = Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "the killed run's app still holds {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut second, second_out) = start();
    let end = Instant::now() + Duration::from_secs(40);
    while !recorded().is_superset(&expected) {
        assert!(
            Instant::now() < end,
            "the restarted run's app got {} of {}\n{}",
            recorded().len(),
            expected.len(),
            second_out.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(second.id() as i32)),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = second.wait();
    topic
}

/// Publishes one message; true when the sidecar acknowledged it (204).
fn publish(publisher: &Sidecar, topic: &str, payload: &str) -> bool {
    publisher
        .try_request(
            "POST",
            &format!("/v1.0/publish/bus/{topic}"),
            &[],
            payload.as_bytes(),
        )
        .is_ok_and(|r| r.status == 204)
}

/// Publishes until the sidecar acknowledges (the broker may be coming back).
fn publish_until_acked(publisher: &Sidecar, topic: &str, payload: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while !publish(publisher, topic, payload) {
        assert!(
            Instant::now() < end,
            "publish of {payload} never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two subscriber apps in two consumer groups and a publisher, all through
/// their own sidecars on the `bus` component in `res`; the first
/// subscriber's sidecar is killed part-way through and started again.
/// Returns the topic.
fn killed_subscriber_sidecar(yaml: &str) -> String {
    let run = run_id();
    let topic = format!("durable-{run}");
    let dir = TempDir::new("durable");
    dir.write("bus.yaml", yaml);
    let res = dir.path().to_str().unwrap().to_string();
    let slow = Arc::new(App {
        subscribe: subscription(&topic),
        delay: Duration::from_millis(30),
        ..Default::default()
    });
    let other = Arc::new(App {
        subscribe: subscription(&topic),
        ..Default::default()
    });
    let (slow_port, other_port) = (start_app(slow.clone()), start_app(other.clone()));
    let mut first = start_sub(&format!("orders-{run}"), slow_port, &res);
    let _audit = start_sub(&format!("audit-{run}"), other_port, &res);
    // The groups' queues and sessions are bound asynchronously.
    std::thread::sleep(Duration::from_secs(1));
    let publisher = sidecar()
        .app_id(&format!("shop-{run}"))
        .args(["--resources-path", &res])
        .start();

    let expected: BTreeSet<String> = (0..40).map(|i| format!("m-{i}")).collect();
    for p in &expected {
        let r = publisher.request("POST", &format!("/v1.0/publish/bus/{topic}"), p.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    wait_some(&slow, 5);
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let before = payloads(&slow).len();
    assert!(
        before < expected.len(),
        "the kill happened mid-stream ({before} delivered)"
    );

    let _second = start_sub(&format!("orders-{run}"), slow_port, &res);
    wait_all(&slow, &expected, "the restarted subscriber");
    wait_all(&other, &expected, "the other consumer group");
    assert_eq!(payloads(&other), expected, "nothing from elsewhere");
    let got = other.got.lock().unwrap();
    assert!(
        got.iter()
            .filter(|g| g.path == "/in")
            .all(|g| g.event["topic"] == topic.as_str()),
        "only this topic"
    );
    drop(got);
    topic
}

/// The subscriber app is a process of its own (tests/apps/event_recorder.py),
/// killed part-way through and started again on the same port: what it
/// never answered is delivered once it is back.
fn killed_subscriber_app(yaml: &str) -> String {
    let run = run_id();
    let topic = format!("appkill-{run}");
    let dir = TempDir::new("appkill");
    dir.write("bus.yaml", yaml);
    let record = dir.path().join("record.txt");
    let res = dir.path().to_str().unwrap().to_string();
    let port = free_port();
    let app = || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/event_recorder.py");
        Command::new("python3")
            .args([script, &port.to_string()])
            .env("RECORD", &record)
            .env("SUBSCRIBE", subscription(&topic))
            .env("DELAY_MS", "20")
            .spawn()
            .expect("python3 runs the recorder app")
    };
    let recorded = || -> BTreeSet<String> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let mut first = app();
    let _sub = start_sub(&format!("orders-{run}"), port, &res);
    std::thread::sleep(Duration::from_secs(1));
    let publisher = sidecar()
        .app_id(&format!("shop-{run}"))
        .args(["--resources-path", &res])
        .start();
    let expected: BTreeSet<String> = (0..40).map(|i| format!("m-{i}")).collect();
    for p in &expected {
        let r = publisher.request("POST", &format!("/v1.0/publish/bus/{topic}"), p.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let end = Instant::now() + Duration::from_secs(15);
    while recorded().len() < 5 {
        assert!(Instant::now() < end, "no deliveries started");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap();
    let _ = first.wait();
    let before = recorded().len();
    assert!(
        before < expected.len(),
        "killed mid-stream ({before} delivered)"
    );
    // Deliveries fail while it is down; then it comes back.
    std::thread::sleep(Duration::from_millis(800));
    let mut second = app();
    let end = Instant::now() + Duration::from_secs(40);
    while !recorded().is_superset(&expected) {
        assert!(
            Instant::now() < end,
            "the restarted app got {} of {}",
            recorded().len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = second.kill();
    let _ = second.wait();
    topic
}

/// Publishes 40 messages while the broker goes down and comes back; every
/// acknowledged one reaches the subscriber.
fn survives_broker_restart(yaml: &str, restart: impl FnOnce()) {
    let run = run_id();
    let topic = format!("restart-{run}");
    let dir = TempDir::new("restart");
    dir.write("bus.yaml", yaml);
    let res = dir.path().to_str().unwrap().to_string();
    let app = Arc::new(App {
        subscribe: subscription(&topic),
        delay: Duration::from_millis(20),
        ..Default::default()
    });
    let port = start_app(app.clone());
    let _sub = start_sub(&format!("orders-{run}"), port, &res);
    std::thread::sleep(Duration::from_secs(1));
    let publisher = sidecar()
        .app_id(&format!("shop-{run}"))
        .args(["--resources-path", &res])
        .start();

    let mut acked = BTreeSet::new();
    for i in 0..20 {
        let p = format!("m-{i}");
        publish_until_acked(&publisher, &topic, &p);
        acked.insert(p);
    }
    wait_some(&app, 3);
    restart();
    for i in 20..40 {
        let p = format!("m-{i}");
        publish_until_acked(&publisher, &topic, &p);
        acked.insert(p);
    }
    wait_all(&app, &acked, "the subscriber after the broker restart");
}

mod redis_streams {
    use super::*;

    fn yaml(port: u16) -> String {
        component(
            "bus",
            "pubsub.redis",
            &[
                ("redisHost", &format!("127.0.0.1:{port}")),
                ("processingTimeout", "1s"),
                ("redeliverInterval", "200ms"),
            ],
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_subscriber_sidecar_loses_nothing() {
        killed_subscriber_sidecar(&yaml(6379));
    }

    #[test]
    fn killed_subscriber_app_loses_nothing() {
        killed_subscriber_app(&yaml(6379));
    }

    #[test]
    fn killed_subscriber_run_loses_nothing() {
        killed_subscriber_run(&yaml(6379));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_redis_with_aof_loses_nothing_acknowledged() {
        let port = free_port();
        let data = TempDir::new("redis-aof");
        let dir = data.path().to_str().unwrap().to_string();
        let mut broker = OwnServer::new(port, move || {
            spawn_quiet(
                "redis-server",
                &[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--dir",
                    &dir,
                ],
            )
        });
        survives_broker_restart(&yaml(port), || {
            broker.down("-KILL");
            std::thread::sleep(Duration::from_millis(500));
            broker.up();
        });
    }
}

mod nats_jetstream {
    use super::*;

    fn yaml(port: u16) -> String {
        component(
            "bus",
            "pubsub.jetstream",
            &[
                ("natsURL", &format!("nats://127.0.0.1:{port}")),
                ("ackWait", "1s"),
                ("nakDelay", "100ms"),
            ],
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_subscriber_sidecar_loses_nothing() {
        let topic = killed_subscriber_sidecar(&yaml(4222));
        common::nats::delete_stream(&format!("tandem-{topic}"));
    }

    #[test]
    fn killed_subscriber_app_loses_nothing() {
        let topic = killed_subscriber_app(&yaml(4222));
        common::nats::delete_stream(&format!("tandem-{topic}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_nats_server_loses_nothing_acknowledged() {
        let port = free_port();
        let data = TempDir::new("nats-js");
        let dir = data.path().to_str().unwrap().to_string();
        let mut broker = OwnServer::new(port, move || {
            spawn_quiet(
                "nats-server",
                &[
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-js",
                    "-sd",
                    &dir,
                ],
            )
        });
        survives_broker_restart(&yaml(port), || {
            broker.down("-KILL");
            std::thread::sleep(Duration::from_millis(500));
            broker.up();
        });
    }
}

mod mqtt3 {
    use super::*;

    fn yaml(port: u16) -> String {
        component(
            "bus",
            "pubsub.mqtt3",
            &[
                ("url", &format!("tcp://127.0.0.1:{port}")),
                ("redeliveryPause", "100ms"),
            ],
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_subscriber_sidecar_loses_nothing() {
        killed_subscriber_sidecar(&yaml(1883));
    }

    #[test]
    fn killed_subscriber_app_loses_nothing() {
        killed_subscriber_app(&yaml(1883));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_mosquitto_keeps_the_sessions() {
        // Mosquitto writes its persistence file when it stops, so this is a
        // clean restart (SIGTERM), not a crash.
        let port = free_port();
        let data = TempDir::new("mosquitto");
        let conf = data.write(
            "mosquitto.conf",
            &format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
                data.path().display()
            ),
        );
        let conf = conf.to_str().unwrap().to_string();
        let mut broker = OwnServer::new(port, move || spawn_quiet("mosquitto", &["-c", &conf]));
        survives_broker_restart(&yaml(port), || {
            broker.down("-TERM");
            broker.up();
        });
    }
}

mod rabbitmq {
    use super::*;

    fn yaml() -> String {
        component(
            "bus",
            "pubsub.rabbitmq",
            &[
                ("connectionString", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                ("requeueInFailureDelay", "100ms"),
            ],
        )
    }

    fn rabbitmqctl(args: &[&str]) {
        let out = Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("rabbitmqctl is installed");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_subscriber_sidecar_loses_nothing() {
        let _one = RABBITMQ.lock().unwrap_or_else(|e| e.into_inner());
        killed_subscriber_sidecar(&yaml());
    }

    #[test]
    fn killed_subscriber_app_loses_nothing() {
        let _one = RABBITMQ.lock().unwrap_or_else(|e| e.into_inner());
        killed_subscriber_app(&yaml());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_rabbitmq_loses_nothing_acknowledged() {
        let _one = RABBITMQ.lock().unwrap_or_else(|e| e.into_inner());
        survives_broker_restart(&yaml(), || {
            rabbitmqctl(&["stop_app"]);
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        });
    }
}

mod embedded_log {
    use super::*;

    fn yaml(file: &TempDir) -> String {
        let path = file.path().join("pubsub.db");
        component(
            "bus",
            "pubsub.embedded",
            &[
                ("path", path.to_str().unwrap()),
                ("processingTimeout", "1s"),
            ],
        )
    }

    #[test]
    fn killed_subscriber_app_loses_nothing() {
        killed_subscriber_app(&yaml(&TempDir::new("embedded-app")));
    }

    #[test]
    fn killed_subscriber_run_loses_nothing() {
        killed_subscriber_run(&yaml(&TempDir::new("embedded-run")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_subscriber_sidecar_loses_nothing() {
        killed_subscriber_sidecar(&yaml(&TempDir::new("embedded-bus")));
    }
}
