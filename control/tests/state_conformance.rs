//! The state store conformance suite: every `StateStore` runs the same
//! checks of Dapr's semantics (dapr-wire.md §6.1). A new store proves itself
//! by passing `conformance` here.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tandem_control::components::state::{
    Concurrency, DeleteRequest, GetRequest, SetRequest, StateError, StateStore, TransactionOp,
    feature, memory::MemoryStore, sqlite::SqliteStore,
};

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

fn del(key: &str) -> DeleteRequest {
    DeleteRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// The value as text and the ETag. JSON values are compared in compact
/// form: a store may normalise JSON spacing (PostgreSQL's jsonb does), not
/// its meaning.
async fn get(s: &dyn StateStore, key: &str) -> Option<(String, String)> {
    s.get(GetRequest {
        key: key.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .map(|v| {
        let text = match serde_json::from_slice::<serde_json::Value>(&v.data) {
            Ok(json) => json.to_string(),
            Err(_) => String::from_utf8(v.data.to_vec()).unwrap(),
        };
        (text, v.etag)
    })
}

/// Keys are namespaced per run so shared backends (files, servers) can hold
/// leftovers from earlier runs.
fn k(run: &str, key: &str) -> String {
    format!("{run}||{key}")
}

pub async fn conformance(store: Arc<dyn StateStore>) {
    let s = store.as_ref();
    let run = uuid_like();
    let run = run.as_str();

    // CRUD
    assert_eq!(get(s, &k(run, "a")).await, None, "missing key");
    s.set(set(&k(run, "a"), "\"one\"")).await.unwrap();
    let (v, etag1) = get(s, &k(run, "a")).await.unwrap();
    assert_eq!(v, "\"one\"");
    assert!(!etag1.is_empty(), "ETags are reported");
    s.set(set(&k(run, "a"), "{\"n\":2}")).await.unwrap();
    let (v, etag2) = get(s, &k(run, "a")).await.unwrap();
    assert_eq!(v, "{\"n\":2}");
    assert_ne!(etag1, etag2, "every write gets a new ETag");
    s.delete(del(&k(run, "a"))).await.unwrap();
    assert_eq!(get(s, &k(run, "a")).await, None);
    s.delete(del(&k(run, "a")))
        .await
        .expect("deleting a missing key is fine");

    // ETags
    if store.has(feature::ETAG) {
        s.set(set(&k(run, "e"), "1")).await.unwrap();
        let (_, etag) = get(s, &k(run, "e")).await.unwrap();
        let stale = SetRequest {
            etag: Some("not-the-etag".into()),
            ..set(&k(run, "e"), "2")
        };
        assert!(matches!(
            s.set(stale).await,
            Err(StateError::EtagMismatch(_) | StateError::InvalidEtag(_))
        ));
        let ok = SetRequest {
            etag: Some(etag.clone()),
            ..set(&k(run, "e"), "3")
        };
        s.set(ok).await.unwrap();
        let reuse = SetRequest {
            etag: Some(etag.clone()),
            ..set(&k(run, "e"), "4")
        };
        assert!(s.set(reuse).await.is_err(), "an ETag is good for one write");
        assert_eq!(get(s, &k(run, "e")).await.unwrap().0, "3");
        let on_missing = SetRequest {
            etag: Some(etag.clone()),
            ..set(&k(run, "nope"), "x")
        };
        assert!(
            s.set(on_missing).await.is_err(),
            "an ETag needs an existing item"
        );

        let (_, current) = get(s, &k(run, "e")).await.unwrap();
        let bad_delete = DeleteRequest {
            etag: Some(etag),
            ..del(&k(run, "e"))
        };
        assert!(s.delete(bad_delete).await.is_err());
        assert!(
            get(s, &k(run, "e")).await.is_some(),
            "nothing deleted on mismatch"
        );
        s.delete(DeleteRequest {
            etag: Some(current),
            ..del(&k(run, "e"))
        })
        .await
        .unwrap();
        assert!(get(s, &k(run, "e")).await.is_none());

        // first-write without an ETag only inserts
        let first = |v: &str| SetRequest {
            concurrency: Concurrency::FirstWrite,
            ..set(&k(run, "fw"), v)
        };
        s.set(first("1")).await.unwrap();
        assert!(matches!(
            s.set(first("2")).await,
            Err(StateError::EtagMismatch(_))
        ));
        assert_eq!(get(s, &k(run, "fw")).await.unwrap().0, "1");
    }

    // Concurrent writers with the same ETag: exactly one wins.
    if store.has(feature::ETAG) {
        s.set(set(&k(run, "race"), "0")).await.unwrap();
        let (_, etag) = get(s, &k(run, "race")).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let req = SetRequest {
                    etag: Some(etag.clone()),
                    ..set(&k(run, "race"), &i.to_string())
                };
                tokio::spawn(async move { store.set(req).await.is_ok() })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1, "exactly one writer with the shared ETag succeeds");

        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let req = SetRequest {
                    concurrency: Concurrency::FirstWrite,
                    ..set(&k(run, "race-insert"), &i.to_string())
                };
                tokio::spawn(async move { store.set(req).await.is_ok() })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1, "exactly one first-write insert succeeds");
    }

    // Transactions: all or nothing.
    if store.has(feature::TRANSACTIONAL) {
        s.set(set(&k(run, "t1"), "old")).await.unwrap();
        s.transact(vec![
            TransactionOp::Upsert(set(&k(run, "t1"), "new")),
            TransactionOp::Upsert(set(&k(run, "t2"), "two")),
            TransactionOp::Delete(del(&k(run, "t3"))),
        ])
        .await
        .unwrap();
        assert_eq!(get(s, &k(run, "t1")).await.unwrap().0, "new");
        assert_eq!(get(s, &k(run, "t2")).await.unwrap().0, "two");

        let failing = s
            .transact(vec![
                TransactionOp::Upsert(set(&k(run, "t1"), "newer")),
                TransactionOp::Delete(del(&k(run, "t2"))),
                TransactionOp::Upsert(SetRequest {
                    etag: Some("wrong".into()),
                    ..set(&k(run, "t2"), "x")
                }),
            ])
            .await;
        assert!(
            failing.is_err(),
            "a mismatch inside fails the whole transaction"
        );
        assert_eq!(
            get(s, &k(run, "t1")).await.unwrap().0,
            "new",
            "nothing of it applied"
        );
        assert_eq!(
            get(s, &k(run, "t2")).await.unwrap().0,
            "two",
            "nothing of it applied"
        );

        // the same key twice in one transaction: the last operation wins
        s.transact(vec![
            TransactionOp::Upsert(set(&k(run, "t4"), "a")),
            TransactionOp::Delete(del(&k(run, "t4"))),
            TransactionOp::Upsert(set(&k(run, "t4"), "b")),
        ])
        .await
        .unwrap();
        assert_eq!(get(s, &k(run, "t4")).await.unwrap().0, "b");
    }

    // Large values and unicode keys.
    let big = "x".repeat(2 << 20);
    s.set(set(&k(run, "big"), &big)).await.unwrap();
    assert_eq!(get(s, &k(run, "big")).await.unwrap().0.len(), big.len());
    let key = k(run, "ключ/鍵 🔑 with spaces");
    s.set(set(&key, "\"unicode\"")).await.unwrap();
    assert_eq!(get(s, &key).await.unwrap().0, "\"unicode\"");

    // TTL
    if store.has(feature::TTL) {
        let md = BTreeMap::from([("ttlInSeconds".to_string(), "1".to_string())]);
        s.set(SetRequest {
            metadata: md,
            ..set(&k(run, "ttl"), "short")
        })
        .await
        .unwrap();
        let v = s
            .get(GetRequest {
                key: k(run, "ttl"),
                ..Default::default()
            })
            .await
            .unwrap()
            .unwrap();
        let expire = v
            .metadata
            .get("ttlExpireTime")
            .expect("ttlExpireTime reported");
        assert!(expire.ends_with('Z') && expire.len() == 20, "{expire}");
        let forever = BTreeMap::from([("ttlInSeconds".to_string(), "-1".to_string())]);
        s.set(SetRequest {
            metadata: forever,
            ..set(&k(run, "no-ttl"), "long")
        })
        .await
        .unwrap();
        let v = s
            .get(GetRequest {
                key: k(run, "no-ttl"),
                ..Default::default()
            })
            .await
            .unwrap()
            .unwrap();
        assert!(!v.metadata.contains_key("ttlExpireTime"));
        let bad = BTreeMap::from([("ttlInSeconds".to_string(), "soon".to_string())]);
        assert!(matches!(
            s.set(SetRequest {
                metadata: bad,
                ..set(&k(run, "x"), "1")
            })
            .await,
            Err(StateError::BadRequest(_))
        ));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            get(s, &k(run, "ttl")).await,
            None,
            "expired keys read as missing"
        );
        s.set(SetRequest {
            concurrency: Concurrency::FirstWrite,
            ..set(&k(run, "ttl"), "again")
        })
        .await
        .expect("an expired key can be inserted again with first-write");
        assert!(get(s, &k(run, "no-ttl")).await.is_some());
    }
}

fn uuid_like() -> String {
    format!(
        "run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn temp_db(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-state-{tag}-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.db")
}

fn sqlite_at(path: &std::path::Path) -> SqliteStore {
    SqliteStore::new(&BTreeMap::from([(
        "connectionString".to_string(),
        path.display().to_string(),
    )]))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_passes() {
    conformance(Arc::new(MemoryStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes() {
    let db = temp_db("conf");
    conformance(Arc::new(sqlite_at(&db))).await;
    query_conformance(Arc::new(sqlite_at(&db))).await;
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_is_shared_safely_by_several_stores() {
    // Two stores on one file stand for two sidecars on one host.
    let db = temp_db("shared");
    let a: Arc<dyn StateStore> = Arc::new(sqlite_at(&db));
    let b: Arc<dyn StateStore> = Arc::new(sqlite_at(&db));
    a.set(set("k", "from-a")).await.unwrap();
    assert_eq!(get(b.as_ref(), "k").await.unwrap().0, "from-a");
    let (_, etag) = get(a.as_ref(), "k").await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let req = SetRequest {
                etag: Some(etag.clone()),
                ..set("k", &i.to_string())
            };
            tokio::spawn(async move { store.set(req).await.is_ok() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(
        wins, 1,
        "the ETag check and the write are atomic across stores"
    );
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn sqlite_refuses_bad_metadata() {
    let e = SqliteStore::new(&BTreeMap::from([(
        "tableName".into(),
        "x; DROP TABLE y".into(),
    )]))
    .err()
    .unwrap();
    assert!(e.contains("tableName"), "{e}");
    let e = SqliteStore::new(&BTreeMap::from([(
        "connectionString".into(),
        "/proc/forbidden/state.db".into(),
    )]))
    .err()
    .unwrap();
    assert!(e.contains("/proc/forbidden"), "{e}");
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use tandem_control::components::state::redis::RedisStore;

    fn md(host: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("redisHost".to_string(), host.to_string())])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_passes() {
        let store = RedisStore::connect(&md("127.0.0.1:6379"))
            .await
            .expect("the machine's Redis on 6379 (scripts/services.sh starts it)");
        conformance(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_refuses_bad_etags_and_unreachable_servers() {
        let store = RedisStore::connect(&md("127.0.0.1:6379")).await.unwrap();
        let key = format!("{}||e", uuid_like());
        store.set(set(&key, "1")).await.unwrap();
        let r = store
            .set(SetRequest {
                etag: Some("not-a-version".into()),
                ..set(&key, "2")
            })
            .await;
        assert!(matches!(r, Err(StateError::InvalidEtag(_))), "{r:?}");
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = RedisStore::connect(&md(&format!("127.0.0.1:{free}")))
            .await
            .err()
            .unwrap();
        assert!(
            e.contains("cannot connect to redis") && e.contains(&free.to_string()),
            "{e}"
        );
    }

    /// A private redis-server, so the test can stop and restart it.
    struct OwnRedis {
        port: u16,
        child: std::process::Child,
    }

    impl OwnRedis {
        fn start(port: u16) -> Self {
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Self { port, child }
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_outage_is_an_error_and_recovery_needs_no_restart() {
        // Below the ephemeral range, so no outgoing connection holds it
        // when redis-server restarts on it.
        let start = (std::process::id() % 12_000) as u16;
        let port = (0..12_000u16)
            .map(|i| 20_000 + (start + i) % 12_000)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .unwrap();
        let server = OwnRedis::start(port);
        let store = RedisStore::connect(&md(&format!("127.0.0.1:{}", server.port)))
            .await
            .unwrap();
        store.set(set("k", "before")).await.unwrap();
        drop(server);
        let e = store.set(set("k", "during")).await.unwrap_err();
        assert!(
            matches!(&e, StateError::Store(m) if m.starts_with("redis:")),
            "{e:?}"
        );
        assert!(
            store
                .get(GetRequest {
                    key: "k".into(),
                    ..Default::default()
                })
                .await
                .is_err()
        );
        let _server = OwnRedis::start(port);
        let mut ok = false;
        for _ in 0..50 {
            if store.set(set("k", "after")).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "the store reconnects by itself");
        assert_eq!(get(&store, "k").await.unwrap().0, "after");
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use super::*;
    use tandem_control::components::state::postgres::PostgresStore;

    const CONN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

    async fn store(table: &str) -> PostgresStore {
        PostgresStore::connect(&BTreeMap::from([
            ("connectionString".to_string(), CONN.to_string()),
            ("tableName".to_string(), table.to_string()),
        ]))
        .await
        .expect("the machine's PostgreSQL on 5432 (scripts/services.sh starts it)")
    }

    fn table(tag: &str) -> String {
        format!("tandem_{tag}_{}", std::process::id())
    }

    /// Drops a test's table when the test ends, however it ends.
    struct DropTable(String);

    impl Drop for DropTable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(format!("DROP TABLE IF EXISTS {}", self.0))
                .output();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgresql_passes() {
        let t = table("conf");
        let _cleanup = DropTable(t.clone());
        conformance(Arc::new(store(&t).await)).await;
        query_conformance(Arc::new(store(&t).await)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgresql_keeps_binary_values_and_refuses_bad_etags() {
        let _cleanup = DropTable(table("bin"));
        let s = store(&table("bin")).await;
        let key = format!("{}||bin", uuid_like());
        let raw = Bytes::from_static(b"\x00\xffnot json");
        s.set(SetRequest {
            key: key.clone(),
            value: raw.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let v = s
            .get(GetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.data, raw, "non-JSON bytes come back exactly");
        assert!(v.etag.parse::<u32>().is_ok(), "xmin ETag: {}", v.etag);
        let r = s
            .set(SetRequest {
                etag: Some("abc".into()),
                ..set(&key, "1")
            })
            .await;
        assert!(matches!(r, Err(StateError::InvalidEtag(_))), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgresql_connection_killed_is_an_error_then_recovers() {
        let _cleanup = DropTable(table("kill"));
        let s = store(&table("kill")).await;
        let key = format!("{}||k", uuid_like());
        s.set(set(&key, "1")).await.unwrap();
        // Kill the server processes behind this store's pooled connections
        // (the ones that last ran a query on its table).
        let out = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc"])
            .arg(format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'test' AND pid <> pg_backend_pid() AND query LIKE '%{}%'",
                table("kill")
            ))
            .output()
            .expect("psql is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let killed: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(killed >= 1, "a connection was killed");
        // A call on the killed connection fails with a clear error; the pool
        // then replaces the connection.
        let mut recovered = false;
        let mut failures = 0;
        for _ in 0..5 {
            match s.set(set(&key, "2")).await {
                Ok(()) => {
                    recovered = true;
                    break;
                }
                Err(StateError::Store(m)) => {
                    assert!(m.starts_with("postgresql:"), "{m}");
                    failures += 1;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(recovered, "after {failures} failures");
        assert_eq!(get(&s, &key).await.unwrap().0, "2");
    }
}

/// The query API over JSON values, for stores with `QUERY_API`. Keys are
/// under the prefix `run`, which the query is limited to.
pub async fn query_conformance(store: Arc<dyn StateStore>) {
    use tandem_control::components::state::query::parse;
    let run = uuid_like();
    let people = [
        ("p1", r#"{"person":{"org":"Dev","id":1},"state":"CA"}"#),
        ("p2", r#"{"person":{"org":"Ops","id":2},"state":"WA"}"#),
        ("p3", r#"{"person":{"org":"Dev","id":3},"state":"WA"}"#),
        ("p4", r#"{"person":{"org":"Fin","id":4},"state":"CA"}"#),
    ];
    for (k, v) in people {
        store.set(set(&format!("{run}||{k}"), v)).await.unwrap();
    }
    store
        .set(set(&format!("{run}||binary"), "not json at all"))
        .await
        .unwrap();
    store
        .set(set(
            &format!("other-{run}||p9"),
            r#"{"person":{"org":"Dev","id":9}}"#,
        ))
        .await
        .unwrap();

    let keys = |r: &tandem_control::components::state::query::QueryResult| -> Vec<String> {
        r.items
            .iter()
            .map(|i| i.key.rsplit("||").next().unwrap().to_string())
            .collect()
    };
    let run_q = |text: &str| {
        let store = store.clone();
        let q = parse(text.as_bytes()).unwrap();
        let prefix = Some(run.clone());
        async move { store.query(q, prefix).await.unwrap() }
    };

    let r = run_q(r#"{"filter":{"EQ":{"person.org":"Dev"}},"sort":[{"key":"person.id"}]}"#).await;
    assert_eq!(keys(&r), ["p1", "p3"], "only this prefix's keys");
    assert!(!r.items[0].etag.is_empty());
    let r =
        run_q(r#"{"filter":{"IN":{"state":["WA"]}},"sort":[{"key":"person.id","order":"DESC"}]}"#)
            .await;
    assert_eq!(keys(&r), ["p3", "p2"]);
    let r = run_q(r#"{"filter":{"OR":[{"EQ":{"person.id":4}},{"AND":[{"EQ":{"state":"WA"}},{"EQ":{"person.org":"Dev"}}]}]}}"#).await;
    assert_eq!(keys(&r), ["p3", "p4"]);
    let r = run_q(r#"{"filter":{"EQ":{"state":"TX"}}}"#).await;
    assert!(r.items.is_empty());

    // paging: limit 2 with tokens until the end
    let page1 = run_q(r#"{"sort":[{"key":"person.id"}],"page":{"limit":2}}"#).await;
    assert_eq!(keys(&page1).len(), 2);
    let token = page1.token.clone().expect("a next page");
    let page2 = run_q(&format!(
        r#"{{"sort":[{{"key":"person.id"}}],"page":{{"limit":2,"token":"{token}"}}}}"#
    ))
    .await;
    let mut all = keys(&page1);
    all.extend(keys(&page2));
    let token = page2.token.clone().expect("a third page may exist");
    let page3 = run_q(&format!(
        r#"{{"sort":[{{"key":"person.id"}}],"page":{{"limit":2,"token":"{token}"}}}}"#
    ))
    .await;
    all.extend(keys(&page3));
    assert_eq!(page3.token, None, "the last page has no token");
    all.sort();
    assert_eq!(
        all,
        ["binary", "p1", "p2", "p3", "p4"],
        "every item once across pages"
    );
}
