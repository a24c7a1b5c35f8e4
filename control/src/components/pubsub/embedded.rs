//! `pubsub.embedded`: a durable log in one SQLite file (default
//! `$TANDEM_HOME/pubsub.db`), the default `pubsub`. No server: every sidecar
//! on the host opens the same file. Messages are appended to `messages`;
//! each consumer group (`consumerID`, default the app id) has a cursor and a
//! table of leased, unacknowledged messages. A consumer claims a batch in one
//! `BEGIN IMMEDIATE` transaction (so competing sidecars never claim the same
//! message), hands each to the handler, and deletes the lease on success. A
//! lease that is not acknowledged in `processingTimeout` (handler failure,
//! sidecar killed) is claimed again: at-least-once across restarts. New
//! groups start at the oldest retained message (`retention`, default 24h).

use super::*;
use crate::components::metadata::duration;
use futures_util::StreamExt;
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

pub struct EmbeddedPubSub {
    conn: Arc<Mutex<Connection>>,
    wake: Arc<Notify>,
    lease: Duration,
    poll: Duration,
    retry_pause: Duration,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    content_type TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages(topic, seq);
CREATE TABLE IF NOT EXISTS cursors (
    topic TEXT NOT NULL, grp TEXT NOT NULL, next_seq INTEGER NOT NULL,
    PRIMARY KEY (topic, grp)
);
CREATE TABLE IF NOT EXISTS leases (
    topic TEXT NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, until INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, seq)
);";

impl EmbeddedPubSub {
    pub fn new(m: &Metadata) -> Result<Self, String> {
        let path = m
            .get("path")
            .filter(|p| !p.is_empty())
            .map_or_else(|| crate::home::dir().join("pubsub.db"), PathBuf::from);
        let conn = crate::components::shared_sqlite::open(&path, Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| format!("cannot prepare {}: {e}", path.display()))?;
        let retention = duration(m, "retention", Duration::from_secs(24 * 3600))?;
        conn.execute(
            "DELETE FROM messages WHERE created_at < ?1",
            params![crate::clock::now_ms() - retention.as_millis() as i64],
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            wake: Arc::new(Notify::new()),
            lease: duration(m, "processingTimeout", Duration::from_secs(60))?,
            poll: duration(m, "pollInterval", Duration::from_millis(100))?,
            retry_pause: duration(m, "redeliveryPause", Duration::from_millis(500))?,
        })
    }
}

/// Claims up to `n` messages for the group: expired leases first, then new
/// ones after the cursor. One immediate transaction.
fn claim(
    conn: &mut Connection,
    topic: &str,
    group: &str,
    lease: Duration,
    n: i64,
) -> rusqlite::Result<Vec<(i64, Message)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = crate::clock::now_ms();
    let until = now + lease.as_millis() as i64;
    tx.execute(
        "INSERT OR IGNORE INTO cursors (topic, grp, next_seq) VALUES (?1, ?2, 0)",
        params![topic, group],
    )?;
    let mut claimed = Vec::new();
    {
        let mut expired = tx.prepare(
            "SELECT m.seq, m.data, m.content_type FROM leases l JOIN messages m ON m.seq = l.seq
             WHERE l.topic = ?1 AND l.grp = ?2 AND l.until <= ?3 ORDER BY l.seq LIMIT ?4",
        )?;
        let rows = expired.query_map(params![topic, group, now, n], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            claimed.push(row?);
        }
    }
    for (seq, _, _) in &claimed {
        tx.execute(
            "UPDATE leases SET until = ?1 WHERE topic = ?2 AND grp = ?3 AND seq = ?4",
            params![until, topic, group, seq],
        )?;
    }
    let room = n - claimed.len() as i64;
    if room > 0 {
        let next: i64 = tx.query_row(
            "SELECT next_seq FROM cursors WHERE topic = ?1 AND grp = ?2",
            params![topic, group],
            |r| r.get(0),
        )?;
        let fresh: Vec<(i64, Vec<u8>, String)> = {
            let mut stmt = tx.prepare(
                "SELECT seq, data, content_type FROM messages WHERE topic = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![topic, next, room], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if let Some((last, _, _)) = fresh.last() {
            tx.execute(
                "UPDATE cursors SET next_seq = ?1 WHERE topic = ?2 AND grp = ?3",
                params![last + 1, topic, group],
            )?;
        }
        for (seq, _, _) in &fresh {
            tx.execute(
                "INSERT OR REPLACE INTO leases (topic, grp, seq, until) VALUES (?1, ?2, ?3, ?4)",
                params![topic, group, seq, until],
            )?;
        }
        claimed.extend(fresh);
    }
    tx.commit()?;
    Ok(claimed
        .into_iter()
        .map(|(seq, data, content_type)| {
            (
                seq,
                Message {
                    topic: topic.to_string(),
                    data: Bytes::from(data),
                    content_type,
                    metadata: Metadata::new(),
                },
            )
        })
        .collect())
}

struct Consumer {
    conn: Arc<Mutex<Connection>>,
    topic: String,
    group: String,
    handler: Handler,
    in_flight: usize,
    wake: Arc<Notify>,
    lease: Duration,
    poll: Duration,
    retry_pause: Duration,
}

impl Consumer {
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| "pubsub.db lock poisoned".to_string())?;
            f(&mut c).map_err(|e| format!("pubsub.db: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn run(self) {
        loop {
            let (topic, group, lease) = (self.topic.clone(), self.group.clone(), self.lease);
            let batch = 32.max(self.in_flight);
            match self
                .db(move |c| claim(c, &topic, &group, lease, batch as i64))
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    let this = &self;
                    let each = |(seq, msg): (i64, Message)| async move {
                        let acked = (this.handler)(msg).await.is_ok();
                        let (topic, group) = (this.topic.clone(), this.group.clone());
                        let pause = crate::clock::now_ms() + this.retry_pause.as_millis() as i64;
                        let done = this
                            .db(move |c| {
                                if acked {
                                    c.execute("DELETE FROM leases WHERE topic = ?1 AND grp = ?2 AND seq = ?3", params![topic, group, seq])
                                } else {
                                    // Offer it again after a pause, not after the whole lease.
                                    c.execute("UPDATE leases SET until = ?1 WHERE topic = ?2 AND grp = ?3 AND seq = ?4", params![pause, topic, group, seq])
                                }
                            })
                            .await;
                        if let Err(e) = done {
                            tracing::warn!(topic = %this.topic, error = %e, "could not record a delivery result; it will be redelivered");
                        }
                    };
                    futures_util::stream::iter(batch)
                        .for_each_concurrent(self.in_flight, each)
                        .await;
                }
                Ok(_) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "embedded pubsub read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl PubSub for EmbeddedPubSub {
    fn features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn publish<'a>(&'a self, msg: Message) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let conn = self.conn.clone();
            tokio::task::spawn_blocking(move || {
                let c = conn.lock().map_err(|_| "pubsub.db lock poisoned".to_string())?;
                c.execute(
                    "INSERT INTO messages (topic, data, content_type, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![msg.topic, msg.data.as_ref(), msg.content_type, crate::clock::now_ms()],
                )
                .map(|_| ())
                .map_err(|e| format!("pubsub.db: {e}"))
            })
            .await
            .map_err(|e| e.to_string())??;
            self.wake.notify_waiters();
            Ok(())
        })
    }

    fn subscribe(&self, req: SubscribeRequest) -> Result<SubscriptionHandle, String> {
        // One connection per process: SQLite's busy-wait between a local
        // publisher and consumer would add milliseconds; the mutex does not
        // (handlers run outside it). Other processes still share the file.
        let in_flight = req.in_flight();
        let consumer = Consumer {
            conn: self.conn.clone(),
            topic: req.topic,
            in_flight,
            group: req.consumer_group,
            handler: req.handler,
            wake: self.wake.clone(),
            lease: self.lease,
            poll: self.poll,
            retry_pause: self.retry_pause,
        };
        Ok(SubscriptionHandle::new(tokio::spawn(consumer.run())))
    }
}
