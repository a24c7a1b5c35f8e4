//! The coordination engine behind the scheduler: where jobs and their next
//! fire times live, and how sidecars split the firing between them —
//! leases on due jobs, so a trigger goes to one sidecar at a time and a
//! dead sidecar's claims lapse to another. One trait, one conformance
//! suite; SQLite on one host (`sqlite`), etcd across hosts next.

use crate::job::Job;
use futures_util::future::BoxFuture;

/// Whose jobs: an app id in a namespace (jobs belong to the app, not to
/// one of its sidecars).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub namespace: String,
    pub app_id: String,
}

impl Owner {
    /// The key Dapr's scheduler files jobs under (`app||ns||id`).
    pub fn key(&self) -> String {
        format!("app||{}||{}", self.namespace, self.app_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A job of that name exists and overwrite was not asked for.
    #[error("job already exists: '{0}'")]
    Exists(String),
    /// The engine cannot be reached or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// A due job leased to one sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub job: Job,
    /// When this tick was due (Unix ms).
    pub due: i64,
    /// No tick after this (Unix ms): the job's ttl, fixed when it was put.
    pub expires: Option<i64>,
    /// Ticks done before this one.
    pub ticks: u32,
    /// Failed tries of this tick so far.
    pub attempts: u32,
    /// Proves the claim when it is settled: a job replaced or deleted
    /// meanwhile is not touched (tokens of one job never repeat, even
    /// across a delete and a new job of the same name).
    pub token: u64,
    /// The claim is this sidecar's until then (Unix ms, its own clock):
    /// after that another may take the tick, so a trigger is not started
    /// (nor waited for) past it.
    pub lease_until: i64,
}

/// What became of a claimed tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The tick is done (or given up): fire next at `next`, or delete the
    /// job when there is none.
    Next { next: Option<i64>, ticks: u32 },
    /// Try this tick again at `at` (Unix ms); `attempts` so far.
    Retry { at: i64, attempts: u32 },
}

pub type EngineFuture<'a, T> = BoxFuture<'a, Result<T, EngineError>>;

pub trait Engine: Send + Sync {
    /// Stores `job` to fire first at `first` and never after `expires`;
    /// with `overwrite` an existing one is replaced (its progress reset),
    /// without it refused.
    fn put<'a>(
        &'a self,
        owner: &'a Owner,
        job: &'a Job,
        first: i64,
        expires: Option<i64>,
        overwrite: bool,
    ) -> EngineFuture<'a, ()>;

    fn get<'a>(&'a self, owner: &'a Owner, name: &'a str) -> EngineFuture<'a, Option<Job>>;

    /// Deletes job `name`; deleting none is no error (as Dapr).
    fn delete<'a>(&'a self, owner: &'a Owner, name: &'a str) -> EngineFuture<'a, ()>;

    /// Deletes every job whose name starts with `prefix` (all for "");
    /// answers how many went.
    fn delete_prefix<'a>(&'a self, owner: &'a Owner, prefix: &'a str) -> EngineFuture<'a, u64>;

    /// The owner's jobs, by name.
    fn list<'a>(&'a self, owner: &'a Owner) -> EngineFuture<'a, Vec<Job>>;

    /// Leases up to `limit` of the owner's jobs due at `now` (and not
    /// leased to another) to `holder` until `now + lease_ms`, earliest
    /// first.
    fn claim<'a>(
        &'a self,
        owner: &'a Owner,
        holder: &'a str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> EngineFuture<'a, Vec<Claim>>;

    /// Settles a claim (see [`Settle`]); a stale token changes nothing.
    fn settle<'a>(
        &'a self,
        owner: &'a Owner,
        name: &'a str,
        token: u64,
        outcome: Settle,
    ) -> EngineFuture<'a, ()>;

    /// Settles several claims at once (one write to the store where it
    /// can: a group commit); each as [`Engine::settle`].
    fn settle_many<'a>(
        &'a self,
        owner: &'a Owner,
        settles: Vec<(String, u64, Settle)>,
    ) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            for (name, token, outcome) in settles {
                self.settle(owner, &name, token, outcome).await?;
            }
            Ok(())
        })
    }

    /// When the owner's next job is due (a leased one when its lease
    /// ends), to sleep until then.
    fn next_due<'a>(&'a self, owner: &'a Owner) -> EngineFuture<'a, Option<i64>>;
}
