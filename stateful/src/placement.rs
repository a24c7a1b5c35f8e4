//! Actor placement: which sidecar runs an actor, and the guarantee that
//! no two ever run the same one at once.
//!
//! Two parts, kept apart on purpose:
//! - **Where calls go** ([`Table`]): a consistent-hash ring per actor type
//!   (virtual nodes) over the live hosts that registered the type, built
//!   from the membership the engine keeps. Every sidecar builds its own;
//!   two sidecars with different views only send a call to a different
//!   host — they cannot make a second activation.
//! - **Who may run an actor** ([`Placement::acquire`]): an activation
//!   record per actor id in the engine, naming its host, valid while that
//!   host's lease lives. A host runs an actor only while it holds the
//!   record and its own lease has not lapsed (by its own clock, with a
//!   margin); another host takes the record only once that lease has
//!   lapsed, or once the holder released it after draining. So a
//!   membership change pauses only the actors whose owner changes, for as
//!   long as their old host takes to drain them, and never the rest.

use crate::engine::{EngineError, EngineFuture};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// One sidecar that hosts actors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Unique per sidecar process (its lease holder name).
    pub id: String,
    pub app_id: String,
    /// Its internal (peer) address, `host:port`.
    pub address: String,
    /// The actor types its app hosts.
    pub types: Vec<String>,
}

/// The answer to [`Placement::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The actor is this host's to run.
    Mine,
    /// Another live host runs it.
    Held(Host),
}

pub trait Placement: Send + Sync {
    /// Which engine, for errors and the metadata API.
    fn what(&self) -> &str;

    /// Registers `me` (or renews it) until `now + lease_ms` and answers
    /// the namespace's live hosts, `me` included.
    fn heartbeat<'a>(
        &'a self,
        namespace: &'a str,
        me: &'a Host,
        now: i64,
        lease_ms: i64,
    ) -> EngineFuture<'a, Vec<Host>>;

    /// Forgets hosts gone for a whole lease more, with their activations
    /// (off the heartbeat's path: it may take long). The embedded table
    /// does it inside each heartbeat's transaction, so this does nothing.
    fn sweep<'a>(&'a self, _namespace: &'a str, _now: i64, _lease_ms: i64) -> EngineFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Takes `me` out: its lease and every activation it held.
    fn leave<'a>(&'a self, namespace: &'a str, me: &'a str) -> EngineFuture<'a, ()>;

    /// Takes the activation of an actor for `me` when nobody live holds
    /// it. Fails when `me`'s own lease has lapsed at `now`.
    fn acquire<'a>(
        &'a self,
        namespace: &'a str,
        actor_type: &'a str,
        actor_id: &'a str,
        me: &'a str,
        now: i64,
    ) -> EngineFuture<'a, Acquired>;

    /// Gives an activation up (after the actor was deactivated).
    fn release<'a>(
        &'a self,
        namespace: &'a str,
        actor_type: &'a str,
        actor_id: &'a str,
        me: &'a str,
    ) -> EngineFuture<'a, ()>;
}

/// Virtual nodes per host on each ring: enough that hosts get even shares
/// (±10 % at 128) and a joining host takes a little from each.
const VNODES: u32 = 128;

/// FNV-1a, then a 64-bit finaliser: the same on every build and host
/// (std's hasher may change between Rust versions).
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The placement table: a ring per actor type.
#[derive(Default, Debug)]
pub struct Table {
    hosts: Vec<Host>,
    rings: HashMap<String, Vec<(u64, usize)>>,
}

impl Table {
    pub fn new(mut hosts: Vec<Host>) -> Self {
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        let mut rings: HashMap<String, Vec<(u64, usize)>> = HashMap::new();
        for (i, h) in hosts.iter().enumerate() {
            for t in &h.types {
                let ring = rings.entry(t.clone()).or_default();
                for v in 0..VNODES {
                    ring.push((hash(&[&h.id, &v.to_string()]), i));
                }
            }
        }
        for ring in rings.values_mut() {
            ring.sort_unstable();
        }
        Self { hosts, rings }
    }

    /// The host an actor's calls go to; `None` when no live host
    /// registered the type.
    pub fn owner(&self, actor_type: &str, actor_id: &str) -> Option<&Host> {
        let ring = self.rings.get(actor_type)?;
        let k = hash(&[actor_type, actor_id]);
        let at = ring.partition_point(|(p, _)| *p < k);
        let (_, i) = ring.get(at).or_else(|| ring.first())?;
        self.hosts.get(*i)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Whether some live host registered the type.
    pub fn hosts_type(&self, actor_type: &str) -> bool {
        self.rings.contains_key(actor_type)
    }
}

/// Placement in the host's SQLite file (the embedded engine).
pub struct SqlitePlacement {
    db: crate::shared_sqlite::Db,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tandem_actor_hosts (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE TABLE IF NOT EXISTS tandem_actor_activations (
    namespace TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (namespace, actor_type, actor_id)
);
CREATE INDEX IF NOT EXISTS tandem_actor_activations_host
    ON tandem_actor_activations (namespace, host);
";

fn failed(what: &str) -> impl Fn(rusqlite::Error) -> EngineError + '_ {
    move |e| EngineError::Unavailable(format!("{what}: {e}"))
}

impl SqlitePlacement {
    pub fn open(path: &Path) -> Result<Self, String> {
        let conn = crate::shared_sqlite::open(path, Duration::from_secs(5))?;
        Self::setup(conn, format!("the placement table {}", path.display()))
    }

    pub fn in_memory() -> Result<Self, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        Self::setup(conn, "the in-memory placement table".into())
    }

    fn setup(conn: Connection, what: String) -> Result<Self, String> {
        Ok(Self {
            db: crate::shared_sqlite::Db::new(conn, SCHEMA, what)?,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let what = self.db.what.clone();
        self.db.with(move |c| f(c, &what)).await
    }
}

fn decode(text: &str, what: &str) -> Result<Host, EngineError> {
    serde_json::from_str(text)
        .map_err(|e| EngineError::Unavailable(format!("{what}: a host record is unreadable: {e}")))
}

impl Placement for SqlitePlacement {
    fn what(&self) -> &str {
        &self.db.what
    }

    fn heartbeat<'a>(
        &'a self,
        namespace: &'a str,
        me: &'a Host,
        now: i64,
        lease_ms: i64,
    ) -> EngineFuture<'a, Vec<Host>> {
        let (ns, me) = (namespace.to_string(), me.clone());
        Box::pin(self.with(move |c, what| {
            let record = serde_json::to_string(&me).expect("a host serialises");
            let tx = c.savepoint().map_err(failed(what))?;
            tx.execute(
                "INSERT INTO tandem_actor_hosts (namespace, id, host, lease_until)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, id) DO UPDATE
                 SET host = excluded.host,
                     lease_until = MAX(lease_until, excluded.lease_until)",
                params![ns, me.id, record, now + lease_ms],
            )
            .map_err(failed(what))?;
            // Hosts gone for a whole lease more are forgotten with their
            // activations (a lapsed holder's records are taken over
            // before that anyway).
            tx.execute(
                "DELETE FROM tandem_actor_activations WHERE namespace = ?1 AND host IN
                   (SELECT id FROM tandem_actor_hosts WHERE namespace = ?1 AND lease_until < ?2)",
                params![ns, now - lease_ms],
            )
            .map_err(failed(what))?;
            tx.execute(
                "DELETE FROM tandem_actor_hosts WHERE namespace = ?1 AND lease_until < ?2",
                params![ns, now - lease_ms],
            )
            .map_err(failed(what))?;
            let live = {
                let mut q = tx
                    .prepare_cached(
                        "SELECT host FROM tandem_actor_hosts
                         WHERE namespace = ?1 AND lease_until > ?2 ORDER BY id",
                    )
                    .map_err(failed(what))?;
                let rows = q
                    .query_map(params![ns, now], |r| r.get::<_, String>(0))
                    .map_err(failed(what))?;
                let mut live = Vec::new();
                for r in rows {
                    live.push(decode(&r.map_err(failed(what))?, what)?);
                }
                live
            };
            tx.commit().map_err(failed(what))?;
            Ok(live)
        }))
    }

    fn leave<'a>(&'a self, namespace: &'a str, me: &'a str) -> EngineFuture<'a, ()> {
        let (ns, me) = (namespace.to_string(), me.to_string());
        Box::pin(self.with(move |c, what| {
            let tx = c.savepoint().map_err(failed(what))?;
            tx.execute(
                "DELETE FROM tandem_actor_activations WHERE namespace = ?1 AND host = ?2",
                params![ns, me],
            )
            .map_err(failed(what))?;
            tx.execute(
                "DELETE FROM tandem_actor_hosts WHERE namespace = ?1 AND id = ?2",
                params![ns, me],
            )
            .map_err(failed(what))?;
            tx.commit().map_err(failed(what))
        }))
    }

    fn acquire<'a>(
        &'a self,
        namespace: &'a str,
        actor_type: &'a str,
        actor_id: &'a str,
        me: &'a str,
        now: i64,
    ) -> EngineFuture<'a, Acquired> {
        let (ns, t, id, me) = (
            namespace.to_string(),
            actor_type.to_string(),
            actor_id.to_string(),
            me.to_string(),
        );
        Box::pin(self.with(move |c, what| {
            let tx = c.savepoint().map_err(failed(what))?;
            let lease = |tx: &rusqlite::Savepoint, host: &str| {
                tx.query_row(
                    "SELECT host, lease_until FROM tandem_actor_hosts
                     WHERE namespace = ?1 AND id = ?2",
                    params![ns, host],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(failed(what))
            };
            match lease(&tx, &me)? {
                Some((_, until)) if until > now => {}
                _ => {
                    return Err(EngineError::Unavailable(format!(
                        "{what}: this sidecar's placement lease has lapsed (it is renewing it)"
                    )));
                }
            }
            let holder: Option<String> = tx
                .query_row(
                    "SELECT host FROM tandem_actor_activations
                     WHERE namespace = ?1 AND actor_type = ?2 AND actor_id = ?3",
                    params![ns, t, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(failed(what))?;
            if let Some(holder) = holder.filter(|h| *h != me)
                && let Some((record, until)) = lease(&tx, &holder)?
                && until > now
            {
                return Ok(Acquired::Held(decode(&record, what)?));
            }
            tx.execute(
                "INSERT INTO tandem_actor_activations (namespace, actor_type, actor_id, host)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, actor_type, actor_id) DO UPDATE SET host = excluded.host",
                params![ns, t, id, me],
            )
            .map_err(failed(what))?;
            tx.commit().map_err(failed(what))?;
            Ok(Acquired::Mine)
        }))
    }

    fn release<'a>(
        &'a self,
        namespace: &'a str,
        actor_type: &'a str,
        actor_id: &'a str,
        me: &'a str,
    ) -> EngineFuture<'a, ()> {
        let (ns, t, id, me) = (
            namespace.to_string(),
            actor_type.to_string(),
            actor_id.to_string(),
            me.to_string(),
        );
        Box::pin(self.with(move |c, what| {
            c.execute(
                "DELETE FROM tandem_actor_activations
                 WHERE namespace = ?1 AND actor_type = ?2 AND actor_id = ?3 AND host = ?4",
                params![ns, t, id, me],
            )
            .map_err(failed(what))?;
            Ok(())
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    fn host(id: &str, types: &[&str]) -> Host {
        Host {
            id: id.into(),
            app_id: "app".into(),
            address: format!("127.0.0.1:{}", 40000 + id.len()),
            types: types.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn the_ring_spreads_ids_and_a_new_host_takes_only_its_share() {
        let three = Table::new(vec![
            host("a", &["T"]),
            host("b", &["T"]),
            host("c", &["T", "U"]),
        ]);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..30_000 {
            *counts
                .entry(three.owner("T", &i.to_string()).unwrap().id.clone())
                .or_default() += 1;
        }
        for (h, n) in &counts {
            assert!((7_000..13_000).contains(n), "{h} got {n} of 30000");
        }
        // Only c hosts U; nobody hosts V.
        assert_eq!(three.owner("U", "x").unwrap().id, "c");
        assert!(three.owner("V", "x").is_none());
        // A fourth host moves about a quarter, and only onto itself.
        let four = Table::new(vec![
            host("a", &["T"]),
            host("b", &["T"]),
            host("c", &["T", "U"]),
            host("d", &["T"]),
        ]);
        let mut moved = 0;
        for i in 0..30_000 {
            let (was, now) = (
                three.owner("T", &i.to_string()).unwrap(),
                four.owner("T", &i.to_string()).unwrap(),
            );
            if was != now {
                assert_eq!(now.id, "d", "an id moved between old hosts");
                moved += 1;
            }
        }
        assert!((5_000..10_500).contains(&moved), "moved {moved}");
        // The order hosts are listed in does not matter.
        let shuffled = Table::new(vec![
            host("c", &["T", "U"]),
            host("a", &["T"]),
            host("b", &["T"]),
        ]);
        for i in 0..1000 {
            assert_eq!(
                three.owner("T", &i.to_string()),
                shuffled.owner("T", &i.to_string())
            );
        }
    }

    #[tokio::test]
    async fn one_holder_per_actor_until_its_lease_lapses_or_it_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        one_holder_per_actor(
            &SqlitePlacement::open(&path).unwrap(),
            &SqlitePlacement::open(&path).unwrap(),
        )
        .await;
    }

    /// The rules every engine keeps, through two handles on one table.
    pub(crate) async fn one_holder_per_actor(p1: &dyn Placement, p2: &dyn Placement) {
        let (a, b) = (host("a", &["T"]), host("b", &["T"]));
        let t0 = 1_000_000;
        p1.heartbeat("ns", &a, t0, 5_000).await.unwrap();
        let live = p2.heartbeat("ns", &b, t0, 5_000).await.unwrap();
        assert_eq!(live, vec![a.clone(), b.clone()]);

        assert_eq!(
            p1.acquire("ns", "T", "1", "a", t0).await.unwrap(),
            Acquired::Mine
        );
        // Again: still a's (idempotent).
        assert_eq!(
            p1.acquire("ns", "T", "1", "a", t0 + 1).await.unwrap(),
            Acquired::Mine
        );
        assert_eq!(
            p2.acquire("ns", "T", "1", "b", t0 + 2).await.unwrap(),
            Acquired::Held(a.clone())
        );
        // Another namespace is another actor.
        p2.heartbeat("other", &b, t0, 5_000).await.unwrap();
        assert_eq!(
            p2.acquire("other", "T", "1", "b", t0 + 2).await.unwrap(),
            Acquired::Mine
        );
        // Released: b may take it.
        p1.release("ns", "T", "1", "a").await.unwrap();
        assert_eq!(
            p2.acquire("ns", "T", "1", "b", t0 + 3).await.unwrap(),
            Acquired::Mine
        );
        // a's release of an activation it no longer holds changes nothing.
        p1.release("ns", "T", "1", "a").await.unwrap();
        assert_eq!(
            p1.acquire("ns", "T", "1", "a", t0 + 4).await.unwrap(),
            Acquired::Held(b.clone())
        );

        // b stops renewing: a takes over only once b's lease has lapsed,
        // and only if a renewed its own.
        p1.heartbeat("ns", &a, t0 + 4_000, 5_000).await.unwrap();
        assert_eq!(
            p1.acquire("ns", "T", "1", "a", t0 + 4_999).await.unwrap(),
            Acquired::Held(b.clone())
        );
        assert_eq!(
            p1.acquire("ns", "T", "1", "a", t0 + 5_000).await.unwrap(),
            Acquired::Mine
        );
        let live = p1.heartbeat("ns", &a, t0 + 5_001, 5_000).await.unwrap();
        assert_eq!(live, vec![a.clone()], "b's lapsed lease is not live");
        // b, back after a pause longer than its lease, holds nothing and
        // cannot take anything until it renews.
        assert!(matches!(
            p2.acquire("ns", "T", "2", "b", t0 + 6_000).await,
            Err(EngineError::Unavailable(m)) if m.contains("lapsed")
        ));
        p2.heartbeat("ns", &b, t0 + 6_000, 5_000).await.unwrap();
        assert_eq!(
            p2.acquire("ns", "T", "1", "b", t0 + 6_001).await.unwrap(),
            Acquired::Held(a.clone())
        );

        // Leaving gives up every activation at once.
        p1.leave("ns", "a").await.unwrap();
        assert_eq!(
            p2.acquire("ns", "T", "1", "b", t0 + 6_002).await.unwrap(),
            Acquired::Mine
        );
    }

    #[tokio::test]
    async fn racing_hosts_on_one_file_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        racing_hosts_never_both_win(
            (0..4)
                .map(|_| Arc::new(SqlitePlacement::open(&path).unwrap()) as Arc<dyn Placement>)
                .collect(),
        )
        .await;
    }

    /// Four hosts race for 50 actors: each is won exactly once.
    pub(crate) async fn racing_hosts_never_both_win(engines: Vec<Arc<dyn Placement>>) {
        let t0 = 1_000_000;
        for (i, e) in engines.iter().enumerate() {
            e.heartbeat("ns", &host(&format!("h{i}"), &["T"]), t0, 60_000)
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for (i, e) in engines.iter().enumerate() {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let mut won = Vec::new();
                for id in 0..50 {
                    if e.acquire("ns", "T", &id.to_string(), &format!("h{i}"), t0 + 1)
                        .await
                        .unwrap()
                        == Acquired::Mine
                    {
                        won.push(id);
                    }
                }
                won
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>(), "each id won exactly once");
    }
}
