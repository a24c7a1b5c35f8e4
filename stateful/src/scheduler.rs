//! One app's jobs, fired from one sidecar: a loop that claims due jobs
//! from the engine (so several sidecars of the app share the work, each
//! tick going to one of them), hands each to the app, and settles it by
//! the outcome and the job's failure policy. The loop sleeps until the next
//! job is due (a second at most: another sidecar may have added one), and
//! wakes at once when this sidecar adds one. It ends when the `Scheduler`
//! is dropped.

use crate::engine::{Claim, Engine, Owner, Settle};
use crate::job::{FailurePolicy, Job};
use futures_util::future::BoxFuture;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};

/// How a trigger reaches the app.
pub trait Deliver: Send + Sync + 'static {
    /// Fires `job`, due at `due` (Unix ms), at the app: `Ok` when it took
    /// it (or has no handler, which no retry changes), `Err` with why when
    /// it failed.
    fn deliver(&self, job: Job, due: i64) -> BoxFuture<'static, Result<(), String>>;
}

/// How long a claimed tick is this sidecar's before another may take it
/// (the default; a coordination component may choose another).
pub const LEASE: Duration = Duration::from_secs(30);
/// The longest sleep between looks at the engine.
const POLL: Duration = Duration::from_secs(1);
/// Claims taken at once, and triggers in flight.
const BATCH: usize = 256;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Inner {
    wake: Notify,
}

pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// Starts firing `owner`'s jobs from `engine` as `holder` (this
    /// sidecar's unique name).
    pub fn start(
        engine: Arc<dyn Engine>,
        owner: Owner,
        holder: String,
        deliver: Arc<dyn Deliver>,
    ) -> Self {
        Self::start_with_lease(engine, owner, holder, deliver, LEASE)
    }

    /// As [`Scheduler::start`], holding each claimed tick for `lease`: a
    /// sidecar that dies with triggers in flight has them fired by another
    /// after that long. A trigger the app has not answered within two
    /// thirds of it counts as failed (so it is never in flight past its
    /// lease).
    pub fn start_with_lease(
        engine: Arc<dyn Engine>,
        owner: Owner,
        holder: String,
        deliver: Arc<dyn Deliver>,
        lease: Duration,
    ) -> Self {
        let inner = Arc::new(Inner {
            wake: Notify::new(),
        });
        let lease = lease.max(Duration::from_millis(300));
        tokio::spawn(run(
            Arc::downgrade(&inner),
            engine,
            owner,
            holder,
            deliver,
            lease,
        ));
        Self { inner }
    }

    /// A job was added or changed here: look again now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }
}

async fn run(
    inner: Weak<Inner>,
    engine: Arc<dyn Engine>,
    owner: Owner,
    holder: String,
    deliver: Arc<dyn Deliver>,
    lease: Duration,
) {
    let answer_within = lease * 2 / 3;
    let margin = margin(lease);
    let permits = Arc::new(Semaphore::new(BATCH));
    // Outcomes are written in batches (a group commit: one sync for many
    // triggers); a trigger's permit is held until its outcome is written.
    let (settled, mut outcomes) = mpsc::unbounded_channel::<Outcome>();
    {
        let (engine, owner, inner) = (engine.clone(), owner.clone(), inner.clone());
        let places = permits.clone();
        tokio::spawn(async move {
            while let Some(first) = outcomes.recv().await {
                let mut batch = vec![first];
                // Triggers still at the app may answer in a moment: give
                // them one turn of the runtime to join this commit (one
                // sync to disk for all) before writing.
                for turn in 0..2 {
                    while batch.len() < BATCH {
                        match outcomes.try_recv() {
                            Ok(o) => batch.push(o),
                            Err(_) => break,
                        }
                    }
                    let others = BATCH - places.available_permits() - batch.len();
                    if turn == 1 || others == 0 || batch.len() == BATCH {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let earliest = batch.iter().map(|o| o.lease_until).min().unwrap_or(0);
                let (settles, permits): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|o| (o.settle, o.permit)).unzip();
                // An engine that cannot write (etcd electing a leader after
                // a member died) is asked again for a while: a settle
                // already applied is a no-op the second time (its token is
                // gone). Given up, the leases run out and the ticks fire
                // again: at least once. The permits are held meanwhile.
                let give_up = retry_settles_until(now_ms(), lease, margin, earliest);
                let mut pause = Duration::from_millis(100);
                while let Err(e) = engine.settle_many(&owner, settles.clone()).await {
                    if now_ms().saturating_add(pause.as_millis() as i64) >= give_up {
                        tracing::warn!(error = %e, app_id = %owner.app_id, "jobs: cannot record triggers");
                        break;
                    }
                    tracing::debug!(error = %e, app_id = %owner.app_id, "jobs: recording triggers again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                drop(permits);
                if let Some(me) = inner.upgrade() {
                    me.wake.notify_one();
                }
            }
        });
    }
    loop {
        let Some(me) = inner.upgrade() else { return };
        let now = now_ms();
        let free = permits.available_permits();
        if free < BATCH / 2 {
            // Claims are written (and synced) a batch at a time: wait for
            // answers to free half the places rather than claim a few at a
            // time (the outcome writer wakes this loop).
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = me.wake.notified() => {}
            }
            continue;
        }
        let claims = match engine
            .claim(&owner, &holder, now, lease.as_millis() as i64, free)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // The engine is down or failing: look again after a pause
                // (not at once: the due jobs it still reports are due).
                tracing::warn!(error = %e, app_id = %owner.app_id, "jobs: cannot claim due jobs");
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = me.wake.notified() => {}
                }
                continue;
            }
        };
        let full = !claims.is_empty() && claims.len() == free;
        for claim in claims {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (owner, deliver, settled) = (owner.clone(), deliver.clone(), settled.clone());
            tokio::spawn(async move {
                let lease_until = claim.lease_until;
                let settle = fire(&owner, &*deliver, claim, answer_within, margin).await;
                let _ = settled.send(Outcome {
                    settle,
                    lease_until,
                    permit,
                });
            });
        }
        if full {
            continue;
        }
        let next = engine.next_due(&owner).await.ok().flatten();
        let wait = next
            .map(|at| {
                Duration::from_millis((at - now_ms()).clamp(0, POLL.as_millis() as i64) as u64)
            })
            .unwrap_or(POLL);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = me.wake.notified() => {}
        }
    }
}

/// What to do after a tick, by its outcome and the job's policy.
pub fn outcome(claim: &Claim, delivered: Result<(), String>, now: i64) -> Settle {
    let advance = || {
        let ticks = claim.ticks.saturating_add(1);
        let plan = claim.job.resumed(claim.expires);
        // Ticks missed while no sidecar ran fire once, not as a burst.
        let next = plan.after(claim.due, ticks).and_then(|n| {
            if n <= now {
                plan.after(now, ticks)
            } else {
                Some(n)
            }
        });
        Settle::Next { next, ticks }
    };
    match (delivered, &claim.job.failure_policy) {
        (Ok(()), _) | (Err(_), FailurePolicy::Drop) => advance(),
        (
            Err(_),
            FailurePolicy::Constant {
                interval_ms,
                max_retries,
            },
        ) => {
            if max_retries.is_none_or(|m| claim.attempts < m) {
                Settle::Retry {
                    at: now.saturating_add(*interval_ms as i64),
                    attempts: claim.attempts.saturating_add(1),
                }
            } else {
                advance()
            }
        }
    }
}

/// A trigger's outcome on its way to the engine, with its permit.
struct Outcome {
    settle: (String, u64, Settle),
    /// When the claim's lease ends (ms since the epoch).
    lease_until: i64,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Until when the outcome writer keeps asking an engine that cannot write
/// (ms since the epoch): a third of the lease from `now`, and never past
/// the earliest lease in the batch less the clock margin — after that
/// another sidecar may take the tick, and this one stops claiming while it
/// waits.
fn retry_settles_until(now: i64, lease: Duration, margin: Duration, earliest_lease: i64) -> i64 {
    let by_lease = earliest_lease.saturating_sub(margin.as_millis() as i64);
    now.saturating_add((lease / 3).as_millis() as i64)
        .min(by_lease)
}

/// How long before its lease ends a trigger must be answered: another
/// sidecar may take the tick once the lease is over, and clocks differ a
/// little.
fn margin(lease: Duration) -> Duration {
    (lease / 6).min(Duration::from_secs(2))
}

async fn fire(
    owner: &Owner,
    deliver: &dyn Deliver,
    claim: Claim,
    answer_within: Duration,
    margin: Duration,
) -> (String, u64, Settle) {
    let name = claim.job.name.clone();
    // Never in flight past the lease: a claim that waited (a slow engine,
    // a busy sidecar) gets what is left of it, and one with too little
    // left goes back at once, its attempts unchanged, for the next look.
    let left = claim.lease_until - now_ms() - margin.as_millis() as i64;
    if left < margin.as_millis() as i64 {
        tracing::debug!(job = %name, app_id = %owner.app_id, "jobs: claim too close to its lease's end, given back");
        let settle = Settle::Retry {
            at: claim.due,
            attempts: claim.attempts,
        };
        return (name, claim.token, settle);
    }
    let within = answer_within.min(Duration::from_millis(left as u64));
    let delivered =
        match tokio::time::timeout(within, deliver.deliver(claim.job.clone(), claim.due)).await {
            Ok(d) => d,
            Err(_) => Err(format!(
                "the app did not answer within {} ms",
                within.as_millis()
            )),
        };
    if let Err(e) = &delivered {
        tracing::warn!(job = %name, app_id = %owner.app_id, error = %e, "jobs: the app failed a trigger");
    }
    let settle = outcome(&claim, delivered, now_ms());
    (name, claim.token, settle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::Sqlite;
    use std::sync::Mutex;

    #[test]
    fn settles_are_retried_for_a_third_of_the_lease_and_never_past_the_earliest_lease() {
        let lease = Duration::from_secs(30);
        let margin = margin(lease);
        // Leases far off: a third of the lease.
        assert_eq!(retry_settles_until(1_000, lease, margin, 60_000), 11_000);
        // A lease about to end: its end less the margin.
        assert_eq!(retry_settles_until(1_000, lease, margin, 5_000), 3_000);
        // Already past it: no retry at all.
        assert!(retry_settles_until(10_000, lease, margin, 5_000) < 10_000);
    }

    /// The app: records what fired, fails the names it is told to.
    struct App {
        fired: Mutex<Vec<(String, i64)>>,
        failing: Vec<String>,
    }

    impl Deliver for Arc<App> {
        fn deliver(&self, job: Job, _due: i64) -> BoxFuture<'static, Result<(), String>> {
            let app = self.clone();
            Box::pin(async move {
                app.fired.lock().unwrap().push((job.name.clone(), now_ms()));
                if app.failing.contains(&job.name) {
                    Err("500".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_fire_on_time_retry_by_policy_and_two_sidecars_share_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let engine: Arc<dyn Engine> = Arc::new(Sqlite::open(&path).unwrap());
        let other: Arc<dyn Engine> = Arc::new(Sqlite::open(&path).unwrap());
        let owner = Owner {
            namespace: "default".into(),
            app_id: "app".into(),
        };
        let app = Arc::new(App {
            fired: Mutex::new(Vec::new()),
            failing: vec!["fails".into()],
        });
        let now = now_ms();
        let put = |name: &str,
                   schedule: Option<&str>,
                   due: Option<&str>,
                   repeats: Option<u32>,
                   policy: FailurePolicy| {
            let job = Job {
                name: name.into(),
                schedule: schedule.map(String::from),
                due_time: due.map(String::from),
                repeats,
                failure_policy: policy,
                ..Job::default()
            };
            let plan = job.plan(now).unwrap();
            (job, plan)
        };
        let jobs = [
            put("once", None, Some("300ms"), None, FailurePolicy::default()),
            put(
                "thrice",
                Some("@every 1s"),
                Some("0s"),
                Some(3),
                FailurePolicy::default(),
            ),
            put(
                "fails",
                None,
                Some("0s"),
                None,
                FailurePolicy::Constant {
                    interval_ms: 200,
                    max_retries: Some(2),
                },
            ),
            put("dropped", None, Some("0s"), None, FailurePolicy::Drop),
        ];
        for (job, plan) in &jobs {
            engine
                .put(&owner, job, plan.first, plan.expires, false)
                .await
                .unwrap();
        }
        let deliver: Arc<dyn Deliver> = Arc::new(app.clone());
        let a = Scheduler::start(engine.clone(), owner.clone(), "a".into(), deliver.clone());
        let b = Scheduler::start(other.clone(), owner.clone(), "b".into(), deliver);
        a.wake();
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        drop((a, b));
        let fired = app.fired.lock().unwrap().clone();
        let count = |n: &str| fired.iter().filter(|(f, _)| f == n).count();
        assert_eq!(count("once"), 1, "{fired:?}");
        let at = fired.iter().find(|(f, _)| f == "once").unwrap().1;
        assert!(at >= now + 300, "fired early: {}", at - now);
        assert_eq!(count("thrice"), 3, "{fired:?}");
        // 1 try + 2 retries, then given up; dropped: one try.
        assert_eq!(count("fails"), 3, "{fired:?}");
        assert_eq!(count("dropped"), 1, "{fired:?}");
        // Every job is over, and deleted.
        assert!(engine.list(&owner).await.unwrap().is_empty());
    }

    #[test]
    fn outcomes_follow_the_failure_policy() {
        let claim = |policy: FailurePolicy, attempts: u32| Claim {
            job: Job {
                name: "j".into(),
                schedule: Some("@every 10s".into()),
                failure_policy: policy,
                ..Job::default()
            },
            due: 1_000,
            expires: None,
            ticks: 4,
            attempts,
            token: 1,
            lease_until: 0,
        };
        let c = claim(FailurePolicy::default(), 0);
        assert_eq!(
            outcome(&c, Ok(()), 2_000),
            Settle::Next {
                next: Some(11_000),
                ticks: 5
            }
        );
        assert_eq!(
            outcome(&c, Err("x".into()), 2_000),
            Settle::Retry {
                at: 3_000,
                attempts: 1
            }
        );
        let c = claim(FailurePolicy::default(), 3);
        assert_eq!(
            outcome(&c, Err("x".into()), 2_000),
            Settle::Next {
                next: Some(11_000),
                ticks: 5
            }
        );
        let c = claim(FailurePolicy::Drop, 0);
        assert_eq!(
            outcome(&c, Err("x".into()), 2_000),
            Settle::Next {
                next: Some(11_000),
                ticks: 5
            }
        );
        let c = claim(
            FailurePolicy::Constant {
                interval_ms: 5,
                max_retries: None,
            },
            1_000_000,
        );
        assert_eq!(
            outcome(&c, Err("x".into()), 2_000),
            Settle::Retry {
                at: 2_005,
                attempts: 1_000_001
            }
        );
        // Long asleep: the missed ticks fire once, then on schedule from now.
        let c = claim(FailurePolicy::default(), 0);
        assert_eq!(
            outcome(&c, Ok(()), 100_500),
            Settle::Next {
                next: Some(110_500),
                ticks: 5
            }
        );
    }

    /// An app that takes every trigger and never answers.
    struct Silent(Mutex<u32>);

    impl Deliver for Arc<Silent> {
        fn deliver(&self, _job: Job, _due: i64) -> BoxFuture<'static, Result<(), String>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_trigger_is_never_in_flight_past_its_lease() {
        let owner = Owner {
            namespace: "default".into(),
            app_id: "app".into(),
        };
        let app = Arc::new(Silent(Mutex::new(0)));
        let claim = |lease_until: i64| Claim {
            job: Job {
                name: "j".into(),
                schedule: Some("@every 10s".into()),
                ..Job::default()
            },
            due: 1_000,
            expires: None,
            ticks: 0,
            attempts: 2,
            token: 7,
            lease_until,
        };
        let margin = Duration::from_millis(100);
        // Too little of the lease left: given back untried, attempts kept.
        let (_, token, settle) = fire(
            &owner,
            &app,
            claim(now_ms() + 150),
            Duration::from_secs(20),
            margin,
        )
        .await;
        assert_eq!(*app.0.lock().unwrap(), 0);
        assert_eq!(token, 7);
        assert_eq!(
            settle,
            Settle::Retry {
                at: 1_000,
                attempts: 2
            }
        );
        // Some left: the app gets what remains less the margin, not the
        // full time to answer.
        let started = std::time::Instant::now();
        let (_, _, settle) = fire(
            &owner,
            &app,
            claim(now_ms() + 600),
            Duration::from_secs(20),
            margin,
        )
        .await;
        let took = started.elapsed();
        assert_eq!(*app.0.lock().unwrap(), 1);
        assert!(took < Duration::from_millis(600), "{took:?}");
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(
            matches!(settle, Settle::Retry { attempts: 3, .. }),
            "{settle:?}"
        );
    }
}
