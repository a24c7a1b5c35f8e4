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

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Calls waiting for the connection, and whether a runner takes them.
#[derive(Default)]
struct Queue {
    jobs: std::collections::VecDeque<Job>,
    running: bool,
}

/// One engine's connection, used off the async threads. Calls queue; one
/// runner on the blocking pool takes them in order, each with the
/// connection to itself (each still its own transaction): under load many
/// calls share one trip to the blocking pool instead of a thread hand-off
/// each.
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
        let job: Job = Box::new(move |c: &mut Connection| {
            let _ = tx.send(f(c));
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
        let job = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            match q.jobs.pop_front() {
                Some(j) => j,
                None => {
                    q.running = false;
                    return;
                }
            }
        };
        let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
        job(&mut c);
    }
}

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
