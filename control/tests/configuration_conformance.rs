//! The configuration store conformance suite: every `ConfigurationStore`
//! answers the items asked for (with versions), all items when no key is
//! given, and tells a subscriber about changes and deletions of the keys
//! it watches, and only those.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_control::components::configuration::{ConfigurationStore, Item, Items};

/// How a test changes the backend behind the store.
trait Backend {
    fn set(&self, key: &str, value: &str, version: &str);
    fn delete(&self, key: &str);
}

type Seen = Arc<Mutex<Vec<Items>>>;

async fn wait_for(seen: &Seen, what: impl Fn(&[Items]) -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if what(&seen.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < end,
            "no such change arrived: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn conformance(
    s: &dyn ConfigurationStore,
    b: &dyn Backend,
    run: &str,
    sub_md: BTreeMap<String, String>,
) {
    let k = |n: &str| format!("{run}-{n}");
    b.set(&k("color"), "blue", "1");
    b.set(&k("size"), "10", "2");
    let none = BTreeMap::new();
    let got = s
        .get(&[k("color"), k("size"), k("absent")], &none)
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[&k("color")],
        Item {
            value: "blue".into(),
            version: "1".into(),
            metadata: BTreeMap::new()
        }
    );
    assert_eq!(got[&k("size")].value, "10");
    let all = s.get(&[], &none).await.unwrap();
    assert!(all.contains_key(&k("color")) && all.contains_key(&k("size")));

    let seen = Seen::default();
    let recorder = seen.clone();
    let _sub = s
        .subscribe(
            vec![k("color")],
            sub_md,
            Arc::new(move |items| recorder.lock().unwrap().push(items)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.set(&k("size"), "11", "3");
    b.set(&k("color"), "green", "4");
    wait_for(&seen, |all| {
        all.iter().any(|i| {
            i.get(&k("color"))
                .is_some_and(|c| c.value == "green" && c.version == "4")
        })
    })
    .await;
    b.delete(&k("color"));
    wait_for(&seen, |all| {
        all.iter()
            .any(|i| i.get(&k("color")).is_some_and(|c| c.value.is_empty()))
    })
    .await;
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|i| !i.contains_key(&k("size"))),
        "an unwatched key is not reported"
    );
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use tandem_control::components::configuration::redis::RedisConfig;

    struct Redis;

    fn cli(args: &[&str]) {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379"])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success());
    }

    impl Backend for Redis {
        fn set(&self, key: &str, value: &str, version: &str) {
            cli(&["SET", key, &format!("{value}||{version}")]);
        }
        fn delete(&self, key: &str) {
            cli(&["DEL", key]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_passes() {
        let store = RedisConfig::connect(&BTreeMap::from([(
            "redisHost".to_string(),
            "127.0.0.1:6379".to_string(),
        )]))
        .await
        .expect("the machine's Redis on 6379 (scripts/services.sh starts it)");
        conformance(
            &store,
            &Redis,
            &format!("cfg{}", std::process::id()),
            BTreeMap::new(),
        )
        .await;
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use super::*;
    use tandem_control::components::configuration::postgres::PostgresConfig;

    const CONN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

    fn psql(sql: &str) {
        let out = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-qc",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    struct Table(String);

    impl Backend for Table {
        fn set(&self, key: &str, value: &str, version: &str) {
            psql(&format!(
                "INSERT INTO {t} (key, value, version, metadata) VALUES ('{key}', '{value}', '{version}', '{{}}') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version",
                t = self.0
            ));
        }
        fn delete(&self, key: &str) {
            psql(&format!("DELETE FROM {} WHERE key = '{key}'", self.0));
        }
    }

    impl Drop for Table {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(format!(
                    "DROP TABLE IF EXISTS {t}; DROP FUNCTION IF EXISTS {t}_notify()",
                    t = self.0
                ))
                .output();
        }
    }

    /// A table with the trigger Dapr's documentation has users create:
    /// every change notified on `channel` as `{action, data: row}`.
    fn table(tag: &str, channel: &str) -> Table {
        let t = Table(format!("tandem_cfg_{tag}_{}", std::process::id()));
        psql(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, value text, version text, metadata json);
             CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger AS $$
             DECLARE row record;
             BEGIN
               IF TG_OP = 'DELETE' THEN row := OLD; ELSE row := NEW; END IF;
               PERFORM pg_notify('{channel}', json_build_object('table', TG_TABLE_NAME, 'action', TG_OP, 'data', row_to_json(row))::text);
               RETURN row;
             END; $$ LANGUAGE plpgsql;
             DROP TRIGGER IF EXISTS {t}_changed ON {t};
             CREATE TRIGGER {t}_changed AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE PROCEDURE {t}_notify();",
            t = t.0
        ));
        t
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgresql_passes() {
        let channel = format!("tandem_cfg_chan_{}", std::process::id());
        let t = table("pass", &channel);
        let store = PostgresConfig::connect(&BTreeMap::from([
            ("connectionString".to_string(), CONN.to_string()),
            ("table".to_string(), t.0.clone()),
        ]))
        .await
        .expect("the machine's PostgreSQL on 5432 (scripts/services.sh starts it)");
        conformance(
            &store,
            &t,
            "pg",
            BTreeMap::from([("pgNotifyChannel".to_string(), channel)]),
        )
        .await;
    }

    #[tokio::test]
    async fn a_missing_table_or_channel_says_what_to_fix() {
        let e = PostgresConfig::connect(&BTreeMap::from([
            ("connectionString".to_string(), CONN.to_string()),
            ("table".to_string(), "no_such_table_here".to_string()),
        ]))
        .await
        .err()
        .unwrap();
        assert!(e.contains("no_such_table_here"), "{e}");
        let t = table("fix", "unused_channel");
        let store = PostgresConfig::connect(&BTreeMap::from([
            ("connectionString".to_string(), CONN.to_string()),
            ("table".to_string(), t.0.clone()),
        ]))
        .await
        .unwrap();
        let e = store
            .subscribe(vec![], BTreeMap::new(), Arc::new(|_| {}))
            .await
            .err()
            .unwrap();
        assert!(e.contains("pgNotifyChannel"), "{e}");
    }
}
