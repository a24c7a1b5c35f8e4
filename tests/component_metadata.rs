//! Component metadata as Dapr's reference pages document it: for each
//! component type tandem has, a resource with the documented fields set to
//! documented values loads, and the component then works against the real
//! service. Plus the documented settings tandem cannot honour, refused at
//! start with the field named.

mod common;

use common::{Sidecar, TempDir, component, free_port, run_id, sidecar};

/// A sidecar with one component; fails the test with the sidecar's words
/// if it does not start.
fn with(name: &str, type_: &str, md: &[(&str, &str)]) -> (Sidecar, TempDir) {
    let res = TempDir::new("docmeta");
    res.write(&format!("{name}.yaml"), &component(name, type_, md));
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .env("TANDEMDOC_GREETING", "hello")
        .start();
    let m = s.get("/v1.0/metadata").json();
    assert!(
        m["components"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == name)),
        "{type_} is loaded: {m}"
    );
    (s, res)
}

fn save_and_get(s: &Sidecar, store: &str) {
    let key = format!("k-{}", run_id());
    let body = format!(r#"[{{"key":"{key}","value":{{"n":1}}}}]"#);
    let r = s.request("POST", &format!("/v1.0/state/{store}"), body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    let r = s.get(&format!("/v1.0/state/{store}/{key}"));
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"n": 1})));
}

fn publish(s: &Sidecar, pubsub: &str) {
    let r = s.request(
        "POST",
        &format!("/v1.0/publish/{pubsub}/docs-{}", run_id()),
        br#"{"n":1}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

fn binding(s: &Sidecar, name: &str, body: &str) -> common::Resp {
    let r = s.request("POST", &format!("/v1.0/bindings/{name}"), body.as_bytes());
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    r
}

fn lock_unlock(s: &Sidecar, store: &str) {
    let owner = run_id();
    let r = s.request(
        "POST",
        &format!("/v1.0-alpha1/lock/{store}"),
        format!(r#"{{"resourceId":"doc-{owner}","lockOwner":"{owner}","expiryInSeconds":10}}"#)
            .as_bytes(),
    );
    assert_eq!(r.text(), r#"{"success":true}"#);
    let r = s.request(
        "POST",
        &format!("/v1.0-alpha1/unlock/{store}"),
        format!(r#"{{"resourceId":"doc-{owner}","lockOwner":"{owner}"}}"#).as_bytes(),
    );
    assert_eq!(r.text(), r#"{"status":0}"#);
}

fn psql(sql: &str) {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Redis fields every Redis component's page lists.
const REDIS_COMMON: &[(&str, &str)] = &[
    ("redisHost", "localhost:6379"),
    ("redisPassword", ""),
    ("enableTLS", "false"),
    ("redisDB", "0"),
    ("redisType", "node"),
    ("failover", "false"),
    ("redisMaxRetries", "5"),
    ("redisMinRetryInterval", "8ms"),
    ("redisMaxRetryInterval", "512ms"),
    ("dialTimeout", "5s"),
    ("readTimeout", "3s"),
    ("writeTimeout", "3s"),
    ("poolSize", "20"),
    ("poolTimeout", "5s"),
    ("maxConnAge", "30m"),
    ("minIdleConns", "2"),
    ("idleCheckFrequency", "1m"),
    ("idleTimeout", "5m"),
];

fn redis(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    REDIS_COMMON.iter().chain(extra).copied().collect()
}

#[test]
fn state_redis_documented_fields() {
    let md = redis(&[
        ("ttlInSeconds", "600"),
        ("queryIndexes", ""),
        ("actorStateStore", "true"),
        ("keyPrefix", "appid"),
    ]);
    let (s, _r) = with("cache", "state.redis", &md);
    save_and_get(&s, "cache");
    // The component's ttlInSeconds applies to items saved without one.
    let key = format!("ttl-{}", run_id());
    s.request(
        "POST",
        "/v1.0/state/cache",
        format!(r#"[{{"key":"{key}","value":1}}]"#).as_bytes(),
    );
    let r = s.get(&format!("/v1.0/state/cache/{key}"));
    assert!(
        r.header("metadata.ttlExpireTime").is_some(),
        "{:?}",
        r.headers
    );
}

/// A plain save (no ETag, last write wins) is a `MULTI` block, not the
/// conditional script: it must still bump the version, clear an earlier
/// TTL, keep daprd's layout (a hash of `data` and `version`), and leave
/// the conditional saves to the script.
#[test]
fn state_redis_plain_saves_bump_the_version_and_clear_a_ttl() {
    let (s, _r) = with("cache", "state.redis", &redis(&[]));
    let key = format!("plain-{}", run_id());
    let save = |body: String| {
        s.request("POST", "/v1.0/state/cache", body.as_bytes())
            .status
    };
    let item = |value: u32, extra: &str| format!(r#"[{{"key":"{key}","value":{value}{extra}}}]"#);
    assert_eq!(save(item(1, r#","metadata":{"ttlInSeconds":"100"}"#)), 204);
    let r = s.get(&format!("/v1.0/state/cache/{key}"));
    assert_eq!((r.text().as_str(), r.header("etag")), ("1", Some("1")));
    assert!(r.header("metadata.ttlExpireTime").is_some());
    assert_eq!(save(item(2, "")), 204);
    let r = s.get(&format!("/v1.0/state/cache/{key}"));
    assert_eq!((r.text().as_str(), r.header("etag")), ("2", Some("2")));
    assert_eq!(r.header("metadata.ttlExpireTime"), None, "{:?}", r.headers);
    // Conditional saves: a stale ETag and first-write on an existing key.
    assert_eq!(save(item(3, r#","etag":"1""#)), 409);
    assert_eq!(
        save(item(3, r#","options":{"concurrency":"first-write"}"#)),
        409
    );
    assert_eq!(save(item(3, r#","etag":"2""#)), 204);
    // Stored under `<app id>||<key>`, Dapr's default prefix.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let stored = cli(&["--scan", "--pattern", &format!("*||{key}")]);
    assert!(!stored.is_empty() && !stored.contains('\n'), "{stored:?}");
    let fields = cli(&["HGETALL", &stored]);
    let lines: Vec<&str> = fields.lines().collect();
    let mut pairs: Vec<(&str, &str)> = lines.chunks(2).map(|p| (p[0], p[1])).collect();
    pairs.sort();
    assert_eq!(pairs, [("data", "3"), ("version", "3")]);
}

#[test]
fn pubsub_redis_documented_fields() {
    // The reference page's examples: bare numbers are milliseconds here.
    let md = redis(&[
        ("consumerID", "{appID}"),
        ("redeliverInterval", "5000"),
        ("processingTimeout", "600000"),
        ("queueDepth", "1000"),
        ("concurrency", "15"),
        ("maxLenApprox", "10000"),
    ]);
    let (s, _r) = with("redispubsub", "pubsub.redis", &md);
    publish(&s, "redispubsub");
}

#[test]
fn bindings_redis_documented_fields() {
    let (s, _r) = with("redisbinding", "bindings.redis", &redis(&[]));
    let key = run_id();
    binding(
        &s,
        "redisbinding",
        &format!(r#"{{"operation":"create","data":"v","metadata":{{"key":"{key}"}}}}"#),
    );
    let r = binding(
        &s,
        "redisbinding",
        &format!(r#"{{"operation":"get","metadata":{{"key":"{key}"}}}}"#),
    );
    assert_eq!(r.text(), "\"v\"");
}

#[test]
fn configuration_redis_documented_fields() {
    let (s, _r) = with("rediscfg", "configuration.redis", &redis(&[]));
    let key = format!("docs-{}", run_id());
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "SET", &key, "v1||3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = s.get(&format!("/v1.0/configuration/rediscfg?key={key}"));
    assert_eq!(
        r.text(),
        format!("{{\"{key}\":{{\"value\":\"v1\",\"version\":\"3\"}}}}\n")
    );
}

#[test]
fn lock_redis_documented_fields() {
    let (s, _r) = with("redislock", "lock.redis", &redis(&[("keyPrefix", "appid")]));
    lock_unlock(&s, "redislock");
}

#[test]
fn lock_in_memory() {
    let (s, _r) = with("memlock", "lock.in-memory", &[]);
    lock_unlock(&s, "memlock");
}

#[test]
fn state_postgresql_documented_fields() {
    // The reference page's connection string, verbatim but for the
    // database (this machine's is `test`; its auth is trust, so the
    // password is not checked).
    let md = [
        (
            "connectionString",
            "host=localhost user=postgres password=example port=5432 connect_timeout=10 database=test",
        ),
        ("tableName", "tandem_docs_state"),
        ("metadataTableName", "dapr_metadata"),
        ("timeout", "20"),
        ("cleanupInterval", "3600"),
        ("maxConns", "0"),
        ("connectionMaxIdleTime", "0"),
        ("queryExecMode", "cache_statement"),
        ("actorStateStore", "false"),
        ("useAzureAD", "false"),
        ("useAWSIAM", "false"),
    ];
    let (s, _r) = with("pg", "state.postgresql", &md);
    save_and_get(&s, "pg");
}

#[test]
fn bindings_postgresql_documented_fields() {
    let md = [
        (
            "url",
            "postgres://postgres:example@localhost:5432/test?sslmode=disable&pool_max_conns=10&search_path=public",
        ),
        ("timeout", "30s"),
        ("maxConns", "4"),
        ("connectionMaxIdleTime", "5m"),
    ];
    let (s, _r) = with("pgbinding", "bindings.postgresql", &md);
    let r = binding(
        &s,
        "pgbinding",
        r#"{"operation":"query","metadata":{"sql":"SELECT current_setting('search_path'), 1 + 1"}}"#,
    );
    assert_eq!(r.text(), r#"[["public",2]]"#);
}

#[test]
fn configuration_postgresql_documented_fields() {
    let table = format!("tandem_docs_cfg_{}", std::process::id());
    psql(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, value text, version text, metadata json); DELETE FROM {table}; INSERT INTO {table} VALUES ('color', 'blue', '1', '{{}}')"
    ));
    let md = [
        (
            "connectionString",
            "host=localhost user=postgres port=5432 database=test",
        ),
        ("table", table.as_str()),
        ("notifyChannel", "config"),
        ("connMaxIdleTime", "15s"),
        ("maxConns", "4"),
        ("timeout", "30s"),
    ];
    let (s, _r) = with("pgcfg", "configuration.postgresql", &md);
    let r = s.get("/v1.0/configuration/pgcfg?key=color");
    assert_eq!(
        r.text(),
        "{\"color\":{\"value\":\"blue\",\"version\":\"1\"}}\n"
    );
    psql(&format!("DROP TABLE {table}"));
}

#[test]
fn state_sqlite_documented_fields() {
    let dir = TempDir::new("docsqlite");
    let file = dir.path().join("data.db");
    let conn = format!("file:{}?_txlock=immediate", file.display());
    let md = [
        ("connectionString", conn.as_str()),
        ("timeout", "30s"),
        ("busyTimeout", "2s"),
        ("disableWAL", "true"),
        ("tableName", "state"),
        ("metadataTableName", "metadata"),
        ("cleanupInterval", "1h"),
        ("actorStateStore", "false"),
    ];
    let (s, _r) = with("lite", "state.sqlite", &md);
    save_and_get(&s, "lite");
    assert!(file.exists(), "the file: URI's path holds the data");
    assert!(
        !dir.path().join("data.db-wal").exists(),
        "disableWAL: no write-ahead log"
    );
    // The in-memory form Dapr documents.
    let (s, _r) = with(
        "memlite",
        "state.sqlite",
        &[("connectionString", "file::memory:?cache=shared")],
    );
    save_and_get(&s, "memlite");
}

#[test]
fn state_in_memory() {
    let (s, _r) = with("mem", "state.in-memory", &[]);
    save_and_get(&s, "mem");
}

#[test]
fn pubsub_rabbitmq_documented_fields() {
    // The alternative to connectionString the page documents.
    let md = [
        ("protocol", "amqp"),
        ("hostname", "localhost"),
        ("username", "guest"),
        ("password", "guest"),
        ("consumerID", "channel1"),
        ("durable", "true"),
        ("autoAck", "false"),
        ("deliveryMode", "2"),
        ("prefetchCount", "0"),
        ("publisherConfirm", "true"),
        ("concurrencyMode", "parallel"),
        ("exchangeKind", "fanout"),
        ("enableDeadLetter", "false"),
    ];
    let (s, _r) = with("rabbit", "pubsub.rabbitmq", &md);
    publish(&s, "rabbit");
}

#[test]
fn bindings_rabbitmq_documented_fields() {
    let queue = format!("docs-{}", run_id());
    let md = [
        ("host", "amqp://guest:guest@localhost:5672"),
        ("queueName", queue.as_str()),
        ("durable", "true"),
        ("deleteWhenUnused", "false"),
        ("ttl", "60s"),
        ("prefetchCount", "0"),
        ("exclusive", "false"),
        ("maxPriority", "5"),
        ("contentType", "text/plain"),
        ("direction", "output"),
    ];
    let (s, _r) = with("rabbitbinding", "bindings.rabbitmq", &md);
    binding(
        &s,
        "rabbitbinding",
        r#"{"operation":"create","data":"hello"}"#,
    );
}

#[test]
fn pubsub_jetstream_documented_fields() {
    let md = [
        ("natsURL", "nats://localhost:4222"),
        ("name", "tandem-docs"),
        ("durableName", "docs"),
        ("deliverPolicy", "all"),
        ("ackWait", "10s"),
        ("maxDeliver", "15"),
        ("maxAckPending", "5000"),
        ("replicas", "1"),
        ("memoryStorage", "true"),
        ("ackPolicy", "explicit"),
        ("concurrency", "single"),
    ];
    let (s, _r) = with("nats", "pubsub.jetstream", &md);
    publish(&s, "nats");
}

#[test]
fn pubsub_mqtt3_documented_fields() {
    let md = [
        ("url", "tcp://localhost:1883"),
        ("qos", "1"),
        ("retain", "false"),
        ("cleanSession", "false"),
        ("consumerID", "{uuid}"),
    ];
    let (s, _r) = with("mqtt", "pubsub.mqtt3", &md);
    publish(&s, "mqtt");
}

#[test]
fn bindings_mqtt3_documented_fields() {
    let md = [
        ("url", "tcp://localhost:1883"),
        ("topic", "docs-topic"),
        ("consumerID", "{uuid}"),
        ("qos", "1"),
        ("retain", "false"),
        ("cleanSession", "true"),
        ("direction", "output"),
    ];
    let (s, _r) = with("mqttbinding", "bindings.mqtt3", &md);
    binding(
        &s,
        "mqttbinding",
        r#"{"operation":"create","data":"hello"}"#,
    );
}

#[test]
fn pubsub_in_memory() {
    let (s, _r) = with("membus", "pubsub.in-memory", &[]);
    publish(&s, "membus");
}

#[test]
fn bindings_cron_documented_fields() {
    let (_s, _r) = with(
        "tick",
        "bindings.cron",
        &[
            ("schedule", "CRON_TZ=UTC @every 15m"),
            ("direction", "input"),
        ],
    );
}

#[test]
fn bindings_http_documented_fields() {
    let dir = TempDir::new("dochttp");
    dir.write("hello.txt", "hi");
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let md = [
        ("url", url.as_str()),
        ("responseTimeout", "10s"),
        ("maxResponseBodySize", "100Mi"),
        ("securityToken", "secret"),
        ("securityTokenHeader", "X-Token"),
        ("errorIfNot2XX", "false"),
    ];
    let (s, _r) = with("web", "bindings.http", &md);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < end
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = binding(
        &s,
        "web",
        r#"{"operation":"get","metadata":{"path":"/hello.txt"}}"#,
    );
    assert_eq!(r.text(), "hi");
    // A body over maxResponseBodySize is refused, not read whole.
    let res = TempDir::new("dochttp-small");
    res.write(
        "web.yaml",
        &component(
            "web",
            "bindings.http",
            &[("url", url.as_str()), ("maxResponseBodySize", "1")],
        ),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let r = s.request(
        "POST",
        "/v1.0/bindings/web",
        br#"{"operation":"get","metadata":{"path":"/hello.txt"}}"#,
    );
    assert_eq!(r.status, 500);
    assert!(r.text().contains("maxResponseBodySize"), "{}", r.text());
}

#[test]
fn bindings_localstorage_documented_fields() {
    let dir = TempDir::new("docfiles");
    let root = dir.path().to_str().unwrap().to_string();
    let (s, _r) = with(
        "files",
        "bindings.localstorage",
        &[("rootPath", root.as_str())],
    );
    binding(
        &s,
        "files",
        r#"{"operation":"create","data":"hello","metadata":{"fileName":"a.txt"}}"#,
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
        "hello"
    );
}

#[test]
fn secretstores_local_file_documented_fields() {
    let dir = TempDir::new("docsecrets");
    let file = dir.write("secrets.json", r#"{"db":{"password":"p"}}"#);
    let md = [
        ("secretsFile", file.to_str().unwrap()),
        ("nestedSeparator", ":"),
        ("multiValued", "false"),
    ];
    let (s, _r) = with("vault", "secretstores.local.file", &md);
    assert_eq!(
        s.get("/v1.0/secrets/vault/db:password").text(),
        "{\"db:password\":\"p\"}\n"
    );
}

#[test]
fn secretstores_local_env_documented_fields() {
    let (s, _r) = with(
        "envstore",
        "secretstores.local.env",
        &[("prefix", "TANDEMDOC_")],
    );
    assert_eq!(
        s.get("/v1.0/secrets/envstore/GREETING").text(),
        "{\"GREETING\":\"hello\"}\n"
    );
}

/// Keys in Dapr's spelling but another case, and Dapr's aliases.
#[test]
fn metadata_keys_are_case_insensitive_with_daprs_aliases() {
    let (s, _r) = with(
        "pgalias",
        "state.postgresql",
        &[
            ("URL", "host=localhost user=postgres database=test"),
            ("TableName", "tandem_docs_state"),
        ],
    );
    save_and_get(&s, "pgalias");
    let (s, _r) = with(
        "redisc",
        "state.redis",
        &[("RedisHost", "localhost:6379"), ("enableTLS", "no")],
    );
    save_and_get(&s, "redisc");
}

/// What Dapr documents and tandem cannot honour stops the sidecar at start
/// with the field named, instead of connecting some other way.
#[test]
fn documented_settings_tandem_cannot_honour_are_refused_by_name() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "state.redis",
            &[("redisHost", "localhost:6379"), ("enableTLS", "True")],
            "enableTLS",
        ),
        (
            "state.redis",
            &[
                ("redisHost", "localhost:6379"),
                ("failover", "true"),
                ("sentinelMasterName", "mymaster"),
            ],
            "failover",
        ),
        (
            "pubsub.redis",
            &[("redisHost", "localhost:6379"), ("redisType", "cluster")],
            "redisType",
        ),
        (
            "state.redis",
            &[("redisHost", "localhost:6380"), ("redisPort", "6379")],
            "redisPort",
        ),
        (
            "state.postgresql",
            &[("connectionString", "host=localhost sslmode=verify-full")],
            "sslmode=verify-full",
        ),
        (
            "state.postgresql",
            &[
                ("connectionString", "host=localhost"),
                ("useAzureAD", "true"),
            ],
            "useEntraID",
        ),
        (
            "state.postgresql",
            &[
                ("connectionString", "host=localhost"),
                ("queryExecMode", "simple_protocol"),
            ],
            "queryExecMode",
        ),
        (
            "pubsub.rabbitmq",
            &[("connectionString", "amqps://localhost:5671")],
            "amqps",
        ),
        (
            "pubsub.jetstream",
            &[
                ("natsURL", "nats://localhost:4222"),
                ("apiPrefix", "PREFIX"),
            ],
            "apiPrefix",
        ),
        (
            "bindings.cron",
            &[("schedule", "CRON_TZ=Europe/Paris @every 1m")],
            "Europe/Paris",
        ),
        (
            "pubsub.rabbitmq",
            &[
                ("connectionString", "amqp://localhost:5672"),
                ("deletedWhenUnused", "true"),
            ],
            "deletedWhenUnused",
        ),
        (
            "pubsub.redis",
            &[("redisHost", "localhost:6379"), ("streamTTL", "30d")],
            "streamTTL",
        ),
        (
            "pubsub.jetstream",
            &[
                ("natsURL", "nats://localhost:4222"),
                ("backOff", "50ms, 1s"),
            ],
            "backOff",
        ),
        // Not Dapr's to refuse, but it must not kill the delivery task:
        // an input binding's route that is no URL path.
        (
            "bindings.cron",
            &[("schedule", "@every 1h"), ("route", "my route")],
            "route",
        ),
    ];
    for (type_, md, field) in cases {
        let res = TempDir::new("docrefuse");
        res.write("c.yaml", &component("c", type_, md));
        let (status, out) = sidecar()
            .args(["--resources-path", res.path().to_str().unwrap()])
            .start_failing();
        assert!(!status.success(), "{type_} {md:?}");
        assert!(out.contains(field), "{type_}: `{field}` named in: {out}");
    }
}
