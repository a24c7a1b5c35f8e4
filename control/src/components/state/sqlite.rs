//! `state.sqlite`: state in one SQLite file — the embedded default store.
//! Several sidecars on one host can share the file: WAL journal, a busy
//! timeout, and every write in a `BEGIN IMMEDIATE` transaction so writers
//! serialise and the ETag check and the write are one atomic step.
//!
//! Table: `key TEXT PRIMARY KEY, value BLOB, etag TEXT, expires_at INTEGER`
//! (Unix ms, NULL = never). Expired rows read as absent and are swept at
//! open and on writes.

use super::query::{Dialect, Param, Query, QueryItem, QueryResult};
use super::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    table: String,
    /// Writes waiting for the writer (group commit, `write`).
    writes: Arc<Mutex<Writes>>,
}

type Reply = tokio::sync::oneshot::Sender<Result<(), StateError>>;

/// Writes queued while the writer commits the ones before them.
#[derive(Default)]
struct Writes {
    queue: Vec<(Vec<TransactionOp>, Reply)>,
    /// A writer is on the blocking pool and will take the queue.
    running: bool,
}

/// The most writes one commit carries.
const GROUP: usize = 256;

fn store_err(e: rusqlite::Error) -> StateError {
    StateError::Store(format!("sqlite: {e}"))
}

impl SqliteStore {
    pub fn new(metadata: &Metadata) -> Result<Self, String> {
        // A path, `:memory:`, or a `file:` URI with SQLite's parameters
        // (Dapr's forms); tandem's own default file otherwise.
        let target = metadata
            .get("connectionString")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let path = match &target {
            Some(p) if p == ":memory:" => PathBuf::from("file::memory:"),
            Some(p) => PathBuf::from(p),
            None => crate::home::dir().join("state.db"),
        };
        let wal = metadata.get("disableWAL").is_none_or(|v| v != "true");
        let table = metadata
            .get("tableName")
            .cloned()
            .unwrap_or_else(|| "state".into());
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "metadata `tableName` is `{table}`; expected letters, digits and _ only"
            ));
        }
        let busy = match metadata.get("busyTimeout") {
            Some(v) => tandem_config::parse_duration(v)
                .map_err(|e| format!("metadata `busyTimeout`: {e}"))?,
            None => Duration::from_secs(5),
        };
        let text = path.display().to_string();
        let conn = if text.starts_with("file:") {
            crate::components::shared_sqlite::open_uri(&text, busy, wal)?
        } else if wal {
            crate::components::shared_sqlite::open(&path, busy)?
        } else {
            crate::components::shared_sqlite::open_uri(&format!("file:{text}"), busy, false)?
        };
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key TEXT PRIMARY KEY NOT NULL,
                value BLOB NOT NULL,
                etag TEXT NOT NULL,
                expires_at INTEGER
             );
             CREATE INDEX IF NOT EXISTS {table}_expires ON {table}(expires_at) WHERE expires_at IS NOT NULL;"
        ))
        .map_err(|e| format!("cannot create table `{table}` in {}: {e}", path.display()))?;
        let cleanup = format!("DELETE FROM {table} WHERE expires_at <= ?1");
        conn.execute(&cleanup, params![now_ms()])
            .map_err(|e| e.to_string())?;
        let conn = Arc::new(Mutex::new(conn));
        // `cleanupInterval`: expired rows deleted on that period (they are
        // never read once expired either way).
        let every =
            crate::components::metadata::duration(metadata, "cleanupInterval", Duration::ZERO)?;
        if !every.is_zero()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let weak = Arc::downgrade(&conn);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(conn) = weak.upgrade() else { return };
                    let cleanup = cleanup.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Ok(c) = conn.lock() {
                            let _ = c.execute(&cleanup, params![now_ms()]);
                        }
                    })
                    .await;
                }
            });
        }
        Ok(Self {
            conn,
            table,
            writes: Arc::default(),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, StateError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| StateError::Store("sqlite connection lock poisoned".into()))?;
            f(&mut c, &table)
        })
        .await
        .map_err(|e| StateError::Store(format!("sqlite task failed: {e}")))?
    }

    fn current_etag(
        tx: &Connection,
        table: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<String>, StateError> {
        // Statements are prepared once per connection (parsing SQL costs
        // more than running these).
        tx.prepare_cached(&format!(
            "SELECT etag FROM {table} WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)"
        ))
        .and_then(|mut st| st.query_row(params![key, now], |r| r.get(0)).optional())
        .map_err(store_err)
    }

    fn apply_set(
        tx: &Connection,
        table: &str,
        req: &SetRequest,
        now: i64,
    ) -> Result<(), StateError> {
        let ttl = ttl(&req.metadata)?;
        let current = Self::current_etag(tx, table, &req.key, now)?;
        check_write(
            &req.key,
            current.as_deref(),
            req.etag.as_deref(),
            req.concurrency,
        )?;
        tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {table} (key, value, etag, expires_at) VALUES (?1, ?2, ?3, ?4)"
        ))
        .and_then(|mut st| {
            st.execute(params![
                req.key,
                req.value.as_ref(),
                new_etag(),
                ttl.map(|d| now + d.as_millis() as i64)
            ])
        })
        .map_err(store_err)?;
        Ok(())
    }

    fn apply_delete(
        tx: &Connection,
        table: &str,
        req: &DeleteRequest,
        now: i64,
    ) -> Result<(), StateError> {
        let current = Self::current_etag(tx, table, &req.key, now)?;
        check_delete(&req.key, current.as_deref(), req.etag.as_deref())?;
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE key = ?1"))
            .and_then(|mut st| st.execute(params![req.key]))
            .map_err(store_err)?;
        Ok(())
    }

    /// One write (an all-or-nothing list of operations), committed with
    /// whatever other writes are waiting: while the writer commits, new
    /// writes queue, and the next commit takes them all, each in a
    /// savepoint of its own (one that fails rolls back alone and gets its
    /// error). Every write is answered only after the commit that holds
    /// it, so under load many writes share one commit — and one trip to
    /// the blocking pool — and alone a write is exactly one transaction.
    async fn write(&self, ops: Vec<TransactionOp>) -> Result<(), StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut w = self
                .writes
                .lock()
                .map_err(|_| StateError::Store("sqlite write queue poisoned".into()))?;
            w.queue.push((ops, tx));
            !std::mem::replace(&mut w.running, true)
        };
        if start {
            let (conn, table, writes) =
                (self.conn.clone(), self.table.clone(), self.writes.clone());
            tokio::task::spawn_blocking(move || Self::writer(&conn, &table, &writes));
        }
        rx.await
            .map_err(|_| StateError::Store("sqlite writer stopped".into()))?
    }

    /// Commits queued writes until the queue is empty.
    fn writer(conn: &Mutex<Connection>, table: &str, writes: &Mutex<Writes>) {
        /// A writer that panics leaves the queue to the next write.
        struct Stopped<'a>(&'a Mutex<Writes>);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if std::thread::panicking()
                    && let Ok(mut w) = self.0.lock()
                {
                    w.running = false;
                }
            }
        }
        let _stopped = Stopped(writes);
        loop {
            let batch: Vec<(Vec<TransactionOp>, Reply)> = {
                let Ok(mut w) = writes.lock() else { return };
                if w.queue.is_empty() {
                    w.running = false;
                    return;
                }
                let n = w.queue.len().min(GROUP);
                w.queue.drain(..n).collect()
            };
            let Ok(mut c) = conn.lock() else {
                for (_, reply) in batch {
                    let _ = reply.send(Err(StateError::Store(
                        "sqlite connection lock poisoned".into(),
                    )));
                }
                continue;
            };
            if batch.len() == 1 {
                let (ops, reply) = batch.into_iter().next().expect("one write");
                let _ = reply.send(Self::write_all(&mut c, table, &ops));
                continue;
            }
            let results = Self::write_group(&mut c, table, &batch);
            for ((_, reply), r) in batch.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        }
    }

    /// Several writes in one transaction, each in its own savepoint.
    fn write_group(
        conn: &mut Connection,
        table: &str,
        batch: &[(Vec<TransactionOp>, Reply)],
    ) -> Vec<Result<(), StateError>> {
        let failed = |e: &StateError| -> Vec<Result<(), StateError>> {
            batch
                .iter()
                .map(|_| Err(StateError::Store(e.to_string())))
                .collect()
        };
        let mut tx = match conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)
        {
            Ok(tx) => tx,
            Err(e) => return failed(&e),
        };
        let now = now_ms();
        let mut results = Vec::with_capacity(batch.len());
        for (ops, _) in batch {
            let r = (|| {
                let sp = tx.savepoint().map_err(store_err)?;
                for op in ops {
                    match op {
                        TransactionOp::Upsert(s) => Self::apply_set(&sp, table, s, now)?,
                        TransactionOp::Delete(d) => Self::apply_delete(&sp, table, d, now)?,
                    }
                }
                sp.commit().map_err(store_err)
                // On an error above, `sp` drops and rolls back to itself.
            })();
            results.push(r);
        }
        match tx.commit().map_err(store_err) {
            Ok(()) => results,
            Err(e) => failed(&e),
        }
    }

    /// Runs `ops` in one immediate transaction: all or nothing.
    fn write_all(
        conn: &mut Connection,
        table: &str,
        ops: &[TransactionOp],
    ) -> Result<(), StateError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_err)?;
        let now = now_ms();
        for op in ops {
            match op {
                TransactionOp::Upsert(s) => Self::apply_set(&tx, table, s, now)?,
                TransactionOp::Delete(d) => Self::apply_delete(&tx, table, d, now)?,
            }
        }
        tx.commit().map_err(store_err)
        // On an error above, `tx` drops and rolls back.
    }
}

struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn field(&self, n: usize) -> String {
        // CASE keeps json_extract away from values that are not JSON.
        format!(
            "(CASE WHEN json_valid(CAST(value AS TEXT)) THEN json_extract(CAST(value AS TEXT), ?{n}) END)"
        )
    }
    fn equals(&self, f: usize, v: usize) -> String {
        format!("{} = ?{v}", self.field(f))
    }
    fn placeholder(&self, n: usize) -> String {
        format!("?{n}")
    }
    fn no_limit(&self) -> &'static str {
        "-1"
    }
}

/// A query parameter as SQLite compares it with `json_extract` results.
fn sqlite_param(p: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match p {
        Param::Path(segs) => V::Text(format!(
            "$.{}",
            segs.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(".")
        )),
        Param::Int(i) => V::Integer(*i),
        Param::Text(t) => V::Text(t.clone()),
        Param::Value(v) => match v {
            serde_json::Value::Null => V::Null,
            serde_json::Value::Bool(b) => V::Integer(i64::from(*b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => V::Integer(i),
                None => V::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => V::Text(s.clone()),
            other => V::Text(other.to_string()),
        },
    }
}

impl StateStore for SqliteStore {
    fn features(&self) -> Vec<&'static str> {
        vec![
            feature::ETAG,
            feature::TRANSACTIONAL,
            feature::TTL,
            feature::ACTOR,
            feature::QUERY_API,
        ]
    }

    fn query<'a>(&'a self, q: Query, key_prefix: Option<String>) -> StateFuture<'a, QueryResult> {
        Box::pin(self.with_conn(move |c, table| {
            let (tail, params) = super::query::render(&q, &SqliteDialect, 3);
            let sql = format!(
                "SELECT key, value, etag FROM {table} WHERE key LIKE ?1 ESCAPE '\\' AND (expires_at IS NULL OR expires_at > ?2){tail}"
            );
            let mut values = vec![
                rusqlite::types::Value::Text(like_prefix(key_prefix.as_deref())),
                rusqlite::types::Value::Integer(now_ms()),
            ];
            values.extend(params.iter().map(sqlite_param));
            let mut stmt = c.prepare(&sql).map_err(store_err)?;
            let items = stmt
                .query_map(rusqlite::params_from_iter(values), |r| {
                    Ok(QueryItem {
                        key: r.get(0)?,
                        data: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                        etag: r.get(2)?,
                    })
                })
                .map_err(store_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(store_err)?;
            let token = super::query::next_token(&q, items.len());
            Ok(QueryResult { items, token })
        }))
    }

    fn get<'a>(&'a self, req: GetRequest) -> StateFuture<'a, Option<StateValue>> {
        Box::pin(self.with_conn(move |c, table| {
            c.query_row(
                &format!(
                    "SELECT value, etag, expires_at FROM {table} WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)"
                ),
                params![req.key, now_ms()],
                |r| {
                    Ok(StateValue {
                        data: Bytes::from(r.get::<_, Vec<u8>>(0)?),
                        etag: r.get(1)?,
                        metadata: expiry_metadata(r.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(store_err)
        }))
    }

    fn set<'a>(&'a self, req: SetRequest) -> StateFuture<'a, ()> {
        Box::pin(self.write(vec![TransactionOp::Upsert(req)]))
    }

    fn delete<'a>(&'a self, req: DeleteRequest) -> StateFuture<'a, ()> {
        Box::pin(self.write(vec![TransactionOp::Delete(req)]))
    }

    fn transact<'a>(&'a self, ops: Vec<TransactionOp>) -> StateFuture<'a, ()> {
        Box::pin(self.write(ops))
    }
}
