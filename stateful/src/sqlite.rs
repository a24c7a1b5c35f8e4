//! The embedded engine: jobs in a SQLite file that the sidecars of one
//! host share (WAL, a busy timeout). A claim is a lease written in the
//! same transaction that found the job due, so two sidecars never hold one
//! tick at once, and a sidecar that dies holding one loses it when the
//! lease ends. Each row carries a version that every change bumps: a claim
//! settles only against the version it took. A new row's version starts
//! above every version a deleted row ever had (`tandem_jobs_seq` keeps the
//! highest), so a job deleted and made anew under the same name never
//! hands out a token of the old one.

use crate::engine::{Claim, Engine, EngineError, EngineFuture, Owner, Settle};
use crate::job::Job;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;

pub struct Sqlite {
    db: crate::shared_sqlite::Db,
    what: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tandem_jobs (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    job TEXT NOT NULL,
    next_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    ticks INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    holder TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (owner, name)
);
CREATE INDEX IF NOT EXISTS tandem_jobs_due ON tandem_jobs (owner, next_ms);
CREATE TABLE IF NOT EXISTS tandem_jobs_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    v INTEGER NOT NULL
);
INSERT OR IGNORE INTO tandem_jobs_seq (id, v)
    SELECT 1, COALESCE(MAX(version), 0) FROM tandem_jobs;
";

/// Raises the floor of new rows' versions above the rows `filter` picks
/// (about to be deleted; `?1` is the owner, `?2` the name or pattern).
fn retire(filter: &str) -> String {
    format!(
        "UPDATE tandem_jobs_seq SET v = MAX(v, COALESCE(
           (SELECT MAX(version) FROM tandem_jobs WHERE {filter}), 0)) WHERE id = 1"
    )
}

fn failed(what: &str) -> impl Fn(rusqlite::Error) -> EngineError + '_ {
    move |e| EngineError::Unavailable(format!("{what}: {e}"))
}

impl Sqlite {
    /// Opens (creating) the engine's tables in the SQLite file at `path`,
    /// shared with the host's other sidecars.
    pub fn open(path: &Path) -> Result<Self, String> {
        let conn = crate::shared_sqlite::open(path, Duration::from_secs(5))?;
        // Every acknowledged job and outcome is synced to disk (the shared
        // opener's NORMAL would only survive a process crash).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| format!("cannot set up {}: {e}", path.display()))?;
        // Sidecars of the host take turns at the write lock many times a
        // second: wait for it in short steps, not SQLite's own back-off
        // (which sleeps up to 100 ms a try and made p99 trigger lateness
        // 399 ms with another writer on the file).
        conn.busy_handler(Some(wait_briefly))
            .map_err(|e| format!("cannot set up {}: {e}", path.display()))?;
        Self::setup(conn, format!("the job store {}", path.display()))
    }

    /// An engine in memory, for one process (tests).
    pub fn in_memory() -> Result<Self, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        Self::setup(conn, "the in-memory job store".into())
    }

    fn setup(conn: Connection, what: String) -> Result<Self, String> {
        Ok(Self {
            db: crate::shared_sqlite::Db::new(conn, SCHEMA, what.clone())?,
            what,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        self.db.with(f).await
    }
}

/// The job store's busy handler: waits 0.2 ms a try at first, then 1 ms,
/// and gives up after about 5 s (the busy timeout of the other stores).
fn wait_briefly(tries: i32) -> bool {
    if tries >= 5_000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(if tries < 100 { 200 } else { 1_000 }));
    true
}

fn decode(text: &str) -> Result<Job, EngineError> {
    serde_json::from_str(text)
        .map_err(|e| EngineError::Unavailable(format!("a stored job is unreadable: {e}")))
}

/// `prefix` as a LIKE pattern matching names that start with it.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// One claim's outcome, against the version the claim took.
fn settle_one(
    c: &rusqlite::Connection,
    key: &str,
    name: &str,
    token: u64,
    outcome: Settle,
) -> rusqlite::Result<usize> {
    let token = i64::try_from(token).unwrap_or(-1);
    match outcome {
        Settle::Next { next: None, .. } => {
            let n = c
                .prepare_cached(
                    "DELETE FROM tandem_jobs WHERE owner = ?1 AND name = ?2 AND version = ?3",
                )?
                .execute(params![key, name, token])?;
            if n > 0 {
                c.prepare_cached("UPDATE tandem_jobs_seq SET v = MAX(v, ?1) WHERE id = 1")?
                    .execute(params![token])?;
            }
            Ok(n)
        }
        Settle::Next {
            next: Some(at),
            ticks,
        } => c
            .prepare_cached(
                "UPDATE tandem_jobs SET next_ms = ?1, ticks = ?2, attempts = 0,
                   holder = NULL, lease_until = 0, version = version + 1
                 WHERE owner = ?3 AND name = ?4 AND version = ?5",
            )?
            .execute(params![at, ticks, key, name, token]),
        Settle::Retry { at, attempts } => c
            .prepare_cached(
                "UPDATE tandem_jobs SET next_ms = ?1, attempts = ?2,
                   holder = NULL, lease_until = 0, version = version + 1
                 WHERE owner = ?3 AND name = ?4 AND version = ?5",
            )?
            .execute(params![at, attempts, key, name, token]),
    }
}

impl Engine for Sqlite {
    fn put<'a>(
        &'a self,
        owner: &'a Owner,
        job: &'a Job,
        first: i64,
        expires: Option<i64>,
        overwrite: bool,
    ) -> EngineFuture<'a, ()> {
        let (key, name) = (owner.key(), job.name.clone());
        let text = serde_json::to_string(job).unwrap_or_default();
        let what = self.what.clone();
        Box::pin(self.with(move |c| {
            let fail = failed(&what);
            if overwrite {
                // Replaced: progress and any lease start again; the
                // version moves on so an old claim cannot settle it.
                c.execute(
                    "INSERT INTO tandem_jobs (owner, name, job, next_ms, expires_ms, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, (SELECT v + 1 FROM tandem_jobs_seq))
                     ON CONFLICT (owner, name) DO UPDATE SET job = excluded.job,
                       next_ms = excluded.next_ms, expires_ms = excluded.expires_ms, ticks = 0,
                       attempts = 0, holder = NULL, lease_until = 0, version = version + 1",
                    params![key, name, text, first, expires],
                )
                .map_err(fail)?;
                return Ok(());
            }
            let n = c
                .execute(
                    "INSERT INTO tandem_jobs (owner, name, job, next_ms, expires_ms, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, (SELECT v + 1 FROM tandem_jobs_seq))
                     ON CONFLICT (owner, name) DO NOTHING",
                    params![key, name, text, first, expires],
                )
                .map_err(fail)?;
            if n == 0 {
                return Err(EngineError::Exists(format!("{key}||{name}")));
            }
            Ok(())
        }))
    }

    fn get<'a>(&'a self, owner: &'a Owner, name: &'a str) -> EngineFuture<'a, Option<Job>> {
        let (key, name, what) = (owner.key(), name.to_string(), self.what.clone());
        Box::pin(self.with(move |c| {
            let text: Option<String> = c
                .query_row(
                    "SELECT job FROM tandem_jobs WHERE owner = ?1 AND name = ?2",
                    params![key, name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(failed(&what))?;
            text.as_deref().map(decode).transpose()
        }))
    }

    fn delete<'a>(&'a self, owner: &'a Owner, name: &'a str) -> EngineFuture<'a, ()> {
        let (key, name, what) = (owner.key(), name.to_string(), self.what.clone());
        Box::pin(self.with(move |c| {
            let fail = failed(&what);
            let tx = c.savepoint().map_err(&fail)?;
            tx.execute(&retire("owner = ?1 AND name = ?2"), params![key, name])
                .map_err(&fail)?;
            tx.execute(
                "DELETE FROM tandem_jobs WHERE owner = ?1 AND name = ?2",
                params![key, name],
            )
            .map_err(&fail)?;
            tx.commit().map_err(&fail)
        }))
    }

    fn delete_prefix<'a>(&'a self, owner: &'a Owner, prefix: &'a str) -> EngineFuture<'a, u64> {
        let (key, pattern, what) = (owner.key(), like_prefix(prefix), self.what.clone());
        Box::pin(self.with(move |c| {
            let fail = failed(&what);
            let filter = "owner = ?1 AND name LIKE ?2 ESCAPE '\\'";
            let tx = c.savepoint().map_err(&fail)?;
            tx.execute(&retire(filter), params![key, pattern])
                .map_err(&fail)?;
            let n = tx
                .execute(
                    &format!("DELETE FROM tandem_jobs WHERE {filter}"),
                    params![key, pattern],
                )
                .map_err(&fail)?;
            tx.commit().map_err(&fail)?;
            Ok(n as u64)
        }))
    }

    fn list<'a>(&'a self, owner: &'a Owner) -> EngineFuture<'a, Vec<Job>> {
        let (key, what) = (owner.key(), self.what.clone());
        Box::pin(self.with(move |c| {
            let fail = failed(&what);
            let mut stmt = c
                .prepare("SELECT job FROM tandem_jobs WHERE owner = ?1 ORDER BY name")
                .map_err(&fail)?;
            let rows = stmt
                .query_map(params![key], |r| r.get::<_, String>(0))
                .map_err(&fail)?;
            let mut jobs = Vec::new();
            for row in rows {
                jobs.push(decode(&row.map_err(&fail)?)?);
            }
            Ok(jobs)
        }))
    }

    fn claim<'a>(
        &'a self,
        owner: &'a Owner,
        holder: &'a str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> EngineFuture<'a, Vec<Claim>> {
        let (key, holder, what) = (owner.key(), holder.to_string(), self.what.clone());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Box::pin(self.with(move |c| {
            let fail = failed(&what);
            let tx = c
                .savepoint()
                .map_err(&fail)?;
            let mut found = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT job, next_ms, ticks, attempts, version, expires_ms, rowid
                         FROM tandem_jobs
                         WHERE owner = ?1 AND next_ms <= ?2 AND lease_until <= ?2
                         ORDER BY next_ms LIMIT ?3",
                    )
                    .map_err(&fail)?;
                let rows = stmt
                    .query_map(params![key, now, limit], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, u32>(2)?,
                            r.get::<_, u32>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    })
                    .map_err(&fail)?;
                for row in rows {
                    found.push(row.map_err(&fail)?);
                }
            }
            let mut claims = Vec::with_capacity(found.len());
            let mut lease = tx
                .prepare_cached(
                    "UPDATE tandem_jobs SET holder = ?1, lease_until = ?2, version = ?3
                     WHERE rowid = ?4",
                )
                .map_err(&fail)?;
            let lease_until = now.saturating_add(lease_ms);
            for (text, due, ticks, attempts, version, expires, rowid) in found {
                let token = version + 1;
                lease
                    .execute(params![holder, lease_until, token, rowid])
                    .map_err(&fail)?;
                // A record this build cannot read stays leased (looked at
                // again when the lease ends) rather than failing the batch.
                let job = match decode(&text) {
                    Ok(job) => job,
                    Err(e) => {
                        tracing::warn!(owner = %key, row = rowid, error = %e, "jobs: skipping a stored job");
                        continue;
                    }
                };
                claims.push(Claim {
                    job,
                    due,
                    expires,
                    ticks,
                    attempts,
                    token: token as u64,
                    lease_until,
                });
            }
            drop(lease);
            tx.commit().map_err(&fail)?;
            Ok(claims)
        }))
    }

    fn settle<'a>(
        &'a self,
        owner: &'a Owner,
        name: &'a str,
        token: u64,
        outcome: Settle,
    ) -> EngineFuture<'a, ()> {
        self.settle_many(owner, vec![(name.to_string(), token, outcome)])
    }

    fn settle_many<'a>(
        &'a self,
        owner: &'a Owner,
        settles: Vec<(String, u64, Settle)>,
    ) -> EngineFuture<'a, ()> {
        let (key, what) = (owner.key(), self.what.clone());
        Box::pin(self.with(move |c| {
            let fail = failed(&what);
            // One transaction for the lot: one sync to disk, however many.
            let tx = c.savepoint().map_err(&fail)?;
            for (name, token, outcome) in settles {
                settle_one(&tx, &key, &name, token, outcome).map_err(&fail)?;
            }
            tx.commit().map_err(&fail)
        }))
    }

    fn next_due<'a>(&'a self, owner: &'a Owner) -> EngineFuture<'a, Option<i64>> {
        let (key, what) = (owner.key(), self.what.clone());
        Box::pin(self.with(move |c| {
            c.query_row(
                "SELECT MIN(MAX(next_ms, lease_until)) FROM tandem_jobs WHERE owner = ?1",
                params![key],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(failed(&what))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_sidecars_on_one_file_pass_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tandem.db");
        let (a, b) = (Sqlite::open(&path).unwrap(), Sqlite::open(&path).unwrap());
        crate::conformance::run(&a, &b).await;
        let m = Sqlite::in_memory().unwrap();
        crate::conformance::run(&m, &m).await;
    }

    #[tokio::test]
    async fn an_unreadable_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Sqlite::open(dir.path()).err().unwrap();
        assert!(e.contains("cannot"), "{e}");
    }
}
