//! Opening a SQLite file that several sidecars (processes) share: the
//! embedded state store, the embedded pub/sub log and the job store.

use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

/// Opens `path` (creating its directory), in WAL mode with a busy timeout.
/// Switching to WAL needs a moment of exclusive access and SQLite does not
/// wait for it, so sidecars that start together retry it here.
pub fn open(path: &Path, busy: Duration) -> Result<Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the directory of {}: {e}", path.display()))?;
    }
    let conn =
        Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    setup(conn, &path.display().to_string(), busy, true)
}

/// Opens a SQLite `file:` URI as Dapr's SQLite components take it
/// (`file:data.db?mode=ro`, `file::memory:?cache=shared`): its parameters
/// are SQLite's. WAL unless `wal` is false, the database lives in memory,
/// or it is opened read-only.
pub fn open_uri(uri: &str, busy: Duration, wal: bool) -> Result<Connection, String> {
    use rusqlite::OpenFlags;
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    };
    let read_only = matches!(param("mode"), Some("ro")) || param("immutable") == Some("1");
    let memory = uri.starts_with("file::memory:") || param("mode") == Some("memory");
    let mut flags = OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    flags |= if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    };
    let conn =
        Connection::open_with_flags(uri, flags).map_err(|e| format!("cannot open {uri}: {e}"))?;
    setup(conn, uri, busy, wal && !memory && !read_only)
}

fn setup(conn: Connection, what: &str, busy: Duration, wal: bool) -> Result<Connection, String> {
    conn.busy_timeout(busy).map_err(|e| e.to_string())?;
    if !wal {
        return Ok(conn);
    }
    let deadline = Instant::now() + busy.max(Duration::from_secs(1));
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("cannot switch {what} to WAL: {e}")),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A queued call: runs with the connection and leaves what answers its
/// caller once the transaction holding it is committed (or not).
type Job = Box<dyn FnOnce(&mut Connection) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Calls waiting for the connection, and whether a runner takes them.
#[derive(Default)]
struct Queue {
    jobs: std::collections::VecDeque<Job>,
    running: bool,
}

/// One engine's connection, used off the async threads. Calls queue; one
/// runner on the blocking pool takes what is queued and runs it in one
/// IMMEDIATE transaction — each call inside its own savepoint (the
/// engines' calls open savepoints, not transactions), one that fails
/// rolled back alone — and answers the callers only after the commit. So
/// under load many calls share one commit (one sync to disk, with the job
/// store's `synchronous = FULL`) and one trip to the blocking pool, and a
/// call alone is one transaction as before.
pub struct Db {
    conn: std::sync::Arc<std::sync::Mutex<Connection>>,
    queue: std::sync::Arc<std::sync::Mutex<Queue>>,
    /// What it is, for errors ("the job store /path/jobs.db").
    pub what: String,
}

impl Db {
    /// Creates `schema`'s tables on `conn`.
    pub fn new(conn: Connection, schema: &str, what: String) -> Result<Self, String> {
        conn.execute_batch(schema)
            .map_err(|e| format!("cannot create the tables of {what}: {e}"))?;
        Ok(Self {
            conn: std::sync::Arc::new(std::sync::Mutex::new(conn)),
            queue: std::sync::Arc::default(),
            what,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, crate::engine::EngineError> + Send + 'static,
    ) -> Result<T, crate::engine::EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let what = self.what.clone();
        let job: Job = Box::new(move |c: &mut Connection| {
            let out = f(c);
            Box::new(move |commit_failed: Option<&str>| {
                let out = match (out, commit_failed) {
                    (Ok(_), Some(e)) => Err(crate::engine::EngineError::Unavailable(format!(
                        "{what}: committing failed: {e}"
                    ))),
                    (out, _) => out,
                };
                let _ = tx.send(out);
            })
        });
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.jobs.push_back(job);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let (conn, queue) = (self.conn.clone(), self.queue.clone());
            tokio::task::spawn_blocking(move || run(&conn, &queue));
        }
        rx.await.map_err(|_| {
            crate::engine::EngineError::Unavailable(format!("{}: the call was dropped", self.what))
        })?
    }
}

/// Runs queued calls until none is left.
fn run(conn: &std::sync::Mutex<Connection>, queue: &std::sync::Mutex<Queue>) {
    /// A call that panics leaves the queue to the next caller.
    struct Stopped<'a>(&'a std::sync::Mutex<Queue>);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).running = false;
            }
        }
    }
    let _stopped = Stopped(queue);
    loop {
        let batch: Vec<Job> = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.jobs.is_empty() {
                q.running = false;
                return;
            }
            let n = q.jobs.len().min(GROUP);
            q.jobs.drain(..n).collect()
        };
        let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
        if !c.is_autocommit() {
            // Left open by a call that panicked: nothing of it is kept.
            let _ = c.execute_batch("ROLLBACK");
        }
        // The write lock for the whole batch (the busy handler waits for
        // it); a batch that cannot have it runs each call on its own.
        let grouped = c.execute_batch("BEGIN IMMEDIATE").is_ok();
        let answers: Vec<Answer> = batch.into_iter().map(|job| job(&mut c)).collect();
        let failed = if grouped {
            c.execute_batch("COMMIT").err().map(|e| {
                let _ = c.execute_batch("ROLLBACK");
                e.to_string()
            })
        } else {
            None
        };
        drop(c);
        for answer in answers {
            answer(failed.as_deref());
        }
    }
}

/// The most calls one commit carries.
const GROUP: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_openers_at_once_all_succeed() {
        let dir = std::env::temp_dir().join(format!("tandem-shared-sqlite-{}", std::process::id()));
        let path = dir.join("x.db");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || open(&path, Duration::from_secs(5)).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().expect("every opener gets the file");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
