//! The bindings conformance suite, against the real systems on this
//! machine: output operations answer as Dapr's components do, input
//! bindings deliver what was written, in order, and deliver again what the
//! app did not take.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_control::components::bindings::{
    Binding, BindingError, InputEvent, InputHandler, OutputRequest, OutputResponse,
};

fn md(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn op(
    b: &dyn Binding,
    operation: &str,
    data: &str,
    metadata: &[(&str, &str)],
) -> Result<OutputResponse, BindingError> {
    b.invoke(OutputRequest {
        operation: operation.into(),
        data: Bytes::from(data.to_string()),
        metadata: md(metadata),
    })
    .await
}

fn text(r: &OutputResponse) -> String {
    String::from_utf8(r.data.clone().unwrap_or_default().to_vec()).unwrap()
}

fn run_id() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

type Seen = Arc<Mutex<Vec<String>>>;

/// Records what it is given; refuses each event the first time when
/// `fail_first`.
fn recorder(seen: &Seen, fail_first: bool) -> InputHandler {
    let seen = seen.clone();
    let tried = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    Arc::new(move |e: InputEvent| {
        let (seen, tried) = (seen.clone(), tried.clone());
        Box::pin(async move {
            let t = String::from_utf8(e.data.to_vec()).unwrap();
            if fail_first && tried.lock().unwrap().insert(t.clone()) {
                return Err("not yet".to_string());
            }
            seen.lock().unwrap().push(t);
            Ok(Bytes::new())
        })
    })
}

async fn wait_for(seen: &Seen, want: &[String]) {
    let end = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().as_slice() != want {
        assert!(
            Instant::now() < end,
            "wanted {want:?}, got {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Input conformance: what `create` writes reaches the reader in order,
/// and an event the app refused comes again.
async fn input_round_trip(b: &dyn Binding, run: &str) {
    assert!(b.is_input());
    let seen = Seen::default();
    let _reading = b.read(recorder(&seen, true)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let want: Vec<String> = (0..3).map(|i| format!("{run}-{i}")).collect();
    for w in &want {
        op(b, "create", w, &[]).await.unwrap();
    }
    wait_for(&seen, &want).await;
}

mod localstorage {
    use super::*;
    use tandem_control::components::bindings::localstorage::LocalStorage;

    #[tokio::test]
    async fn files_round_trip_and_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStorage::new(&md(&[("rootPath", dir.path().to_str().unwrap())])).unwrap();
        let r = op(&b, "create", r#""Hello World""#, &[("fileName", "a/b.txt")])
            .await
            .unwrap();
        assert_eq!(text(&r), r#"{"fileName":"a/b.txt"}"#);
        let r = op(&b, "get", "", &[("fileName", "a/b.txt")]).await.unwrap();
        assert_eq!(text(&r), "Hello World", "the JSON string's text");
        let r = op(&b, "create", r#""x""#, &[]).await.unwrap();
        let named: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
        let uuid = named["fileName"].as_str().unwrap().to_string();
        assert_eq!(uuid.len(), 36, "a random UUID: {uuid}");
        let r = op(&b, "list", "", &[]).await.unwrap();
        let list: Vec<String> = serde_json::from_str(&text(&r)).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains(&"a/b.txt".to_string()) && list.contains(&uuid));
        op(&b, "delete", "", &[("fileName", "a/b.txt")])
            .await
            .unwrap();
        let e = op(&b, "get", "", &[("fileName", "a/b.txt")])
            .await
            .unwrap_err();
        assert!(
            matches!(e, BindingError::BadRequest(ref m) if m.contains("does not exist")),
            "{e:?}"
        );
        for bad in ["../escape.txt", "a/../../escape.txt", "/etc/passwd"] {
            let e = op(&b, "create", "\"x\"", &[("fileName", bad)])
                .await
                .unwrap_err();
            assert!(
                matches!(e, BindingError::BadRequest(ref m) if m.contains("leaves")),
                "{bad}: {e:?}"
            );
        }
        assert!(!dir.path().parent().unwrap().join("escape.txt").exists());
        let e = op(&b, "get", "", &[]).await.unwrap_err();
        assert!(
            matches!(e, BindingError::BadRequest(ref m) if m.contains("fileName")),
            "{e:?}"
        );
    }
}

mod http_binding {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tandem_control::components::bindings::http::HttpBinding;

    /// A server that echoes method, path, a header and the body; `/missing`
    /// answers 404.
    async fn server() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let echo = format!(
                                "{} {} x-test={} body={}",
                                parts.method,
                                parts.uri,
                                parts
                                    .headers
                                    .get("x-test")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-"),
                                String::from_utf8_lossy(&body)
                            );
                            let status = if parts.uri.path() == "/missing" {
                                404
                            } else {
                                200
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("x-answer", "yes")
                                    .body(Full::new(Bytes::from(echo)))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn verbs_paths_headers_and_statuses() {
        let port = server().await;
        let url = format!("http://127.0.0.1:{port}/base");
        let b = HttpBinding::new(&md(&[("url", &url)])).unwrap();
        let r = op(&b, "get", "", &[("path", "/items?x=1"), ("x-test", "hdr")])
            .await
            .unwrap();
        assert_eq!(text(&r), "GET /base/items?x=1 x-test=hdr body=");
        assert_eq!(r.metadata["statusCode"], "200");
        assert_eq!(r.metadata["x-answer"], "yes");
        let r = op(&b, "create", r#"{"a":1}"#, &[]).await.unwrap();
        assert_eq!(text(&r), r#"POST /base x-test=- body={"a":1}"#);
        let r = op(&b, "delete", "", &[("path", "one")]).await.unwrap();
        assert!(text(&r).starts_with("DELETE /base/one"));
        let missing =
            HttpBinding::new(&md(&[("url", &format!("http://127.0.0.1:{port}"))])).unwrap();
        let e = op(&missing, "get", "", &[("path", "missing")])
            .await
            .unwrap_err();
        assert!(
            matches!(e, BindingError::Failed(ref m) if m.contains("404")),
            "{e:?}"
        );
        let lenient = HttpBinding::new(&md(&[
            ("url", &format!("http://127.0.0.1:{port}")),
            ("errorIfNot2XX", "false"),
        ]))
        .unwrap();
        let r = op(&lenient, "get", "", &[("path", "missing")])
            .await
            .unwrap();
        assert_eq!(r.metadata["statusCode"], "404");
        // Nothing listening: a failure that names the address.
        let down = HttpBinding::new(&md(&[("url", "http://127.0.0.1:1/")])).unwrap();
        let e = op(&down, "get", "", &[]).await.unwrap_err();
        assert!(
            matches!(e, BindingError::Failed(ref m) if m.contains("127.0.0.1:1")),
            "{e:?}"
        );
        assert!(HttpBinding::new(&md(&[("url", "ftp://x")])).is_err());
        assert!(HttpBinding::new(&md(&[])).err().unwrap().contains("url"));
    }
}

/// HTTPS with `MTLSRootCA`: a real TLS server (`openssl s_server`) with a
/// certificate of the test's own is trusted only when its root is given.
#[tokio::test]
async fn http_binding_trusts_the_root_it_is_given() {
    use tandem_control::components::bindings::http::HttpBinding;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (ca, cert, key) = (p("ca.pem"), p("c.pem"), p("k.pem"));
    std::fs::write(
        p("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for args in [
        // A CA of the test's own, and a server certificate it signs.
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                &p("ca.key"),
                "-out",
                &ca,
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                &key,
                "-out",
                &p("leaf.csr"),
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &ca,
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &cert,
            "-extfile",
            &p("ext"),
        ],
    ] {
        let made = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Killed(
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "openssl s_server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("https://localhost:{port}");
    let untrusted = HttpBinding::new(&md(&[("url", &url)])).unwrap();
    let e = op(&untrusted, "get", "", &[]).await.unwrap_err();
    assert!(
        matches!(e, BindingError::Failed(ref m) if m.to_lowercase().contains("certificate")),
        "{e:?}"
    );
    let trusted = HttpBinding::new(&md(&[("url", &url), ("MTLSRootCA", ca.as_str())])).unwrap();
    let r = op(&trusted, "get", "", &[]).await.unwrap();
    assert_eq!(r.metadata["statusCode"], "200");
    assert!(text(&r).contains("s_server"), "{}", text(&r));
    let e = HttpBinding::new(&md(&[("url", &url), ("MTLSRootCA", "/no/such/file.pem")]))
        .err()
        .unwrap();
    assert!(e.contains("MTLSRootCA"), "{e}");
}

#[cfg(feature = "redis")]
mod redis_binding {
    use super::*;
    use tandem_control::components::bindings::redis::RedisBinding;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_round_trip() {
        let b = RedisBinding::connect(&md(&[("redisHost", "127.0.0.1:6379")]))
            .await
            .expect("the machine's Redis on 6379 (scripts/services.sh starts it)");
        let key = format!("binding-{}", run_id());
        let k = key.as_str();
        op(&b, "create", r#""v1""#, &[("key", k)]).await.unwrap();
        assert_eq!(
            text(&op(&b, "get", "", &[("key", k)]).await.unwrap()),
            r#""v1""#
        );
        op(&b, "delete", "", &[("key", k)]).await.unwrap();
        assert_eq!(op(&b, "get", "", &[("key", k)]).await.unwrap().data, None);
        let n = format!("{key}-n");
        assert_eq!(
            text(&op(&b, "increment", "", &[("key", &n)]).await.unwrap()),
            "1"
        );
        assert_eq!(
            text(&op(&b, "increment", "", &[("key", &n)]).await.unwrap()),
            "2"
        );
        op(&b, "delete", "", &[("key", &n)]).await.unwrap();
        // A TTL expires the key.
        let t = format!("{key}-ttl");
        op(&b, "create", "x", &[("key", &t), ("ttlInSeconds", "1")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(op(&b, "get", "", &[("key", &t)]).await.unwrap().data, None);
        let e = op(&b, "create", "x", &[]).await.unwrap_err();
        assert!(
            matches!(e, BindingError::BadRequest(ref m) if m.contains("key")),
            "{e:?}"
        );
        let e = op(&b, "create", "x", &[("key", k), ("ttlInSeconds", "soon")])
            .await
            .unwrap_err();
        assert!(matches!(e, BindingError::BadRequest(_)), "{e:?}");
    }
}

#[cfg(feature = "postgres")]
mod postgres_binding {
    use super::*;
    use tandem_control::components::bindings::postgres::PostgresBinding;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_and_query_with_params() {
        let b = PostgresBinding::connect(&md(&[(
            "connectionString",
            "host=127.0.0.1 port=5432 user=postgres dbname=test",
        )]))
        .await
        .expect("the machine's PostgreSQL on 5432 (scripts/services.sh starts it)");
        let t = format!("tandem_bind_{}", std::process::id());
        let sql = |s: &str| s.replace("{t}", &t);
        op(&b, "exec", "", &[("sql", &sql("DROP TABLE IF EXISTS {t}"))])
            .await
            .unwrap();
        op(&b, "exec", "", &[("sql", &sql("CREATE TABLE {t} (id int PRIMARY KEY, name text, score float8, ok bool, doc jsonb)"))])
            .await
            .unwrap();
        let r = op(
            &b,
            "exec",
            "",
            &[
                (
                    "sql",
                    &sql("INSERT INTO {t} VALUES ($1, $2, $3, $4, $5), ($6, $7, NULL, NULL, NULL)"),
                ),
                ("params", r#"[1, "one", 1.5, true, {"k": [1]}, 2, "two"]"#),
            ],
        )
        .await
        .unwrap();
        assert_eq!(r.metadata["rows-affected"], "2");
        let r = op(
            &b,
            "query",
            "",
            &[
                (
                    "sql",
                    &sql("SELECT id, name, score, ok, doc FROM {t} WHERE id >= $1 ORDER BY id"),
                ),
                ("params", "[1]"),
            ],
        )
        .await
        .unwrap();
        let rows: serde_json::Value = serde_json::from_str(&text(&r)).unwrap();
        assert_eq!(
            rows,
            serde_json::json!([[1, "one", 1.5, true, {"k": [1]}], [2, "two", null, null, null]])
        );
        assert_eq!(r.metadata["operation"], "query");
        // What the caller can fix is a bad request.
        let e = op(&b, "query", "", &[("sql", "SELEC nonsense")])
            .await
            .unwrap_err();
        assert!(
            matches!(e, BindingError::BadRequest(ref m) if m.contains("syntax")),
            "{e:?}"
        );
        let e = op(
            &b,
            "query",
            "",
            &[("sql", &sql("SELECT * FROM {t} WHERE id = $1"))],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, BindingError::BadRequest(ref m) if m.contains("1 parameters")),
            "{e:?}"
        );
        let e = op(
            &b,
            "exec",
            "",
            &[("sql", &sql("SELECT 1")), ("params", "not json")],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, BindingError::BadRequest(ref m) if m.contains("JSON array")),
            "{e:?}"
        );
        op(&b, "close", "", &[]).await.unwrap();
        // Closed connections come back when needed.
        op(&b, "exec", "", &[("sql", &sql("DROP TABLE {t}"))])
            .await
            .unwrap();
    }
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq_binding {
    use super::*;
    use tandem_control::components::bindings::rabbitmq::RabbitBinding;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_round_trip_with_redelivery() {
        let run = run_id();
        let b = RabbitBinding::connect(&md(&[
            ("host", "amqp://guest:guest@127.0.0.1:5672"),
            ("queueName", &format!("tandem-binding-{run}")),
            ("deleteWhenUnused", "true"),
        ]))
        .await
        .expect("the machine's RabbitMQ on 5672 (scripts/services.sh starts it)");
        input_round_trip(&b, &run).await;
        let e = op(&b, "get", "", &[]).await.unwrap_err();
        assert!(matches!(e, BindingError::BadRequest(_)));
    }
}

#[cfg(feature = "mqtt")]
mod mqtt_binding {
    use super::*;
    use tandem_control::components::bindings::mqtt::MqttBinding;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topic_round_trip_with_redelivery() {
        let run = run_id();
        let b = MqttBinding::new(&md(&[
            ("url", "tcp://127.0.0.1:1883"),
            ("topic", &format!("tandem/binding/{run}")),
            ("consumerID", &format!("conf-{run}")),
        ]))
        .unwrap();
        input_round_trip(&b, &run).await;
    }
}
