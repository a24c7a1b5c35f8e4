//! The Jobs API, shared by the HTTP and gRPC doors: jobs checked and
//! planned (`tandem_stateful::job`), kept in the coordination engine (the
//! `coordination.*` component when one is loaded, else the embedded SQLite
//! file the host's sidecars share, `$TANDEM_HOME/jobs.db`), and fired at the
//! app by this sidecar's scheduler once the app is up. A reload that
//! changes the coordination component moves the API and the scheduler to
//! the new engine (jobs are not copied between engines).
//! Errors carry daprd's `DAPR_SCHEDULER_*` codes; bad input is a 400 (where
//! daprd's scheduler answers 500) so callers know it is theirs to fix.

use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::sync::{Arc, Mutex, OnceLock};
use tandem_stateful::engine::{Engine, EngineError, Owner};
use tandem_stateful::job::{Data, Job};
use tandem_stateful::scheduler::{Scheduler, now_ms};

/// The largest data a job carries: jobs live in the engine (etcd's
/// values are meant to be small), not in memory.
pub const MAX_DATA: usize = 256 << 10;

pub struct Jobs {
    owner: Owner,
    /// The engine in use and the scheduler firing from it.
    active: Mutex<Option<Arc<Active>>>,
    /// Where triggers go, once the app is up (`start`).
    /// (No app channel for reminders: they fire through the actor
    /// runtime, which may run the sidecar's own actors without an app.)
    fire: OnceLock<(
        Option<Arc<tandem_proxy::AppChannel>>,
        Arc<tandem_proxy::telemetry::Metrics>,
    )>,
    /// This sidecar's name as a lease holder.
    holder: String,
    /// The embedded engine once opened (kept: opened once, not on every
    /// switch back to it).
    embedded: Mutex<Option<(Arc<dyn Engine>, String)>>,
    /// Whose triggers these are: the app's jobs, or its actors' reminders
    /// (jobs of their own owner, `<app>||actorreminders`, fired through
    /// the actor runtime).
    reminders: Option<std::sync::Weak<Runtime>>,
}

/// An engine, the coordination component it came from, and the scheduler
/// firing this app's jobs from it (dropped with it).
pub struct Active {
    engine: Arc<dyn Engine>,
    /// Which engine, for errors and the metadata API.
    what: String,
    /// The component's engine (`None`: the embedded one).
    from: Option<Arc<dyn Engine>>,
    /// Taken out (and so stopped) the moment another engine replaces this
    /// one, though calls that began on it may still hold it.
    scheduler: Mutex<Option<Scheduler>>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        code,
        message,
    )
}

impl Active {
    /// The engine failed `doing` something: a 500 that names it.
    fn unavailable(&self, code: &'static str, doing: &str, e: EngineError) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            code,
            format!("{doing} failed: the job engine ({}: {e})", self.what),
        )
    }

    /// Where jobs are kept, for the metadata API.
    pub fn engine_name(&self) -> &str {
        &self.what
    }

    /// This sidecar added or changed a job: its scheduler looks now.
    fn wake(&self) {
        if let Some(s) = self
            .scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            s.wake();
        }
    }
}

impl Jobs {
    fn new(rt: &Runtime) -> Self {
        let app_id = rt.app_id().to_string();
        Self {
            holder: format!("{app_id}-{}-{:x}", std::process::id(), now_ms()),
            owner: Owner {
                namespace: rt
                    .options
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".into()),
                app_id,
            },
            active: Mutex::new(None),
            fire: OnceLock::new(),
            embedded: Mutex::new(None),
            reminders: None,
        }
    }

    /// The jobs that carry actor reminders: another owner, so the app's
    /// Jobs API neither lists nor deletes them.
    fn for_reminders(rt: &Arc<Runtime>) -> Self {
        let mut j = Self::new(rt);
        j.owner.app_id = format!("{}||actorreminders", j.owner.app_id);
        j.holder = format!("{}-reminders", j.holder);
        j.reminders = Some(Arc::downgrade(rt));
        j
    }

    /// The embedded engine, opened on first use. Not kept when it fails:
    /// the next call tries again (a home folder made writable, a disk with
    /// room again).
    fn embedded(&self) -> Result<(Arc<dyn Engine>, String), ApiError> {
        let mut e = self.embedded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = e.as_ref() {
            return Ok(found.clone());
        }
        let path = crate::home::dir().join("jobs.db");
        let engine = tandem_stateful::sqlite::Sqlite::open(&path).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                format!("the job engine is not available: {e}"),
            )
        })?;
        let found: (Arc<dyn Engine>, String) =
            (Arc::new(engine), format!("SQLite {}", path.display()));
        *e = Some(found.clone());
        Ok(found)
    }

    /// The engine the current configuration chooses, opened (and the
    /// scheduler moved to it) when it is not the one in use. The
    /// configuration is read under the lock: a call that began before a
    /// reload cannot move the jobs back to the engine it replaced.
    pub fn active(&self, rt: &Runtime) -> Result<Arc<Active>, ApiError> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = rt.snapshot().coordination.clone();
        if let Some(a) = active.as_ref() {
            let same = match (&a.from, &chosen) {
                (None, None) => true,
                (Some(a), Some((_, c))) => Arc::ptr_eq(a, &c.engine),
                _ => false,
            };
            if same {
                return Ok(a.clone());
            }
        }
        let (engine, what, from, lease): (Arc<dyn Engine>, String, _, _) = match chosen {
            Some((name, c)) => (
                c.engine.clone(),
                format!("{} (component {name})", c.what),
                Some(c.engine),
                c.lease,
            ),
            None => {
                let (engine, what) = self.embedded()?;
                // Reminders move with their actors, whose host lease is
                // 6 s: a tick held by a sidecar that died waits this long.
                let lease = if self.reminders.is_some() {
                    REMINDER_LEASE
                } else {
                    tandem_stateful::scheduler::LEASE
                };
                (engine, what, None, lease)
            }
        };
        if let Some(old) = active.take() {
            // Stopped now: two schedulers of one sidecar never fire at once.
            drop(
                old.scheduler
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
            if old.what != what {
                tracing::info!(engine = %what, "jobs: the coordination engine changed; jobs are kept and fired from the new one");
            }
        }
        let scheduler = self.fire.get().map(|(app, metrics)| {
            if self.reminders.is_some() {
                tracing::info!(engine = %what, "actors: firing this app's reminders");
            } else {
                tracing::info!(engine = %what, "jobs: firing this app's jobs");
            }
            Scheduler::start_with_lease(
                engine.clone(),
                self.owner.clone(),
                self.holder.clone(),
                match &self.reminders {
                    Some(rt) => Arc::new(crate::actors::reminders::ToActors(rt.clone()))
                        as Arc<dyn tandem_stateful::scheduler::Deliver>,
                    None => Arc::new(crate::delivery::jobs::ToApp {
                        app: app.clone().expect("app jobs start only with an app"),
                        metrics: metrics.clone(),
                    }),
                },
                lease,
            )
        });
        let a = Arc::new(Active {
            engine,
            what,
            from,
            scheduler: Mutex::new(scheduler),
        });
        *active = Some(a.clone());
        Ok(a)
    }

    /// Drops the engine in use (and stops its scheduler): the next call
    /// opens the chosen one afresh.
    fn reset(&self) {
        if let Some(old) = self.active.lock().unwrap_or_else(|e| e.into_inner()).take() {
            drop(
                old.scheduler
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
        }
    }
}

/// The sidecar's jobs and the engine the configuration chooses.
pub fn jobs(rt: &Runtime) -> Result<(&Jobs, Arc<Active>), ApiError> {
    let j = rt.jobs.get_or_init(|| Jobs::new(rt));
    let a = j.active(rt)?;
    Ok((j, a))
}

/// Checks a job's name as the API takes it.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(bad("DAPR_SCHEDULER_JOB_NAME_EMPTY", "Name is empty"));
    }
    if name.contains("||") {
        return Err(bad(
            "DAPR_SCHEDULER_JOB_NAME",
            format!("job name is invalid: `||` separates the parts of a job's key: {name}"),
        ));
    }
    tandem_stateful::job::check_name(name)
        .map_err(|e| bad("DAPR_SCHEDULER_JOB_NAME", format!("{e}: {name}")))
}

/// Stores `job` (replacing one of its name only with `overwrite`).
pub async fn schedule(rt: &Runtime, job: Job, overwrite: bool) -> Result<(), ApiError> {
    check_name(&job.name)?;
    if job.schedule.is_none() && job.due_time.is_none() {
        return Err(bad("DAPR_SCHEDULER_SCHEDULE_EMPTY", "Schedule is empty"));
    }
    if let Some(s) = &job.schedule
        && s.trim_start()
            .starts_with(tandem_stateful::job::PERIOD_PREFIX.trim_end())
    {
        return Err(bad(
            "DAPR_SCHEDULER_SCHEDULE_JOB",
            format!(
                "failed to schedule job due to: `{s}` is not a schedule: use six cron fields, @every <duration> or an @ name"
            ),
        ));
    }
    if let Some(d) = &job.data
        && d.value.len() > MAX_DATA
    {
        return Err(bad(
            "DAPR_SCHEDULER_SCHEDULE_JOB",
            format!(
                "failed to schedule job due to: its data is {} bytes; at most {MAX_DATA} are kept with a job",
                d.value.len()
            ),
        ));
    }
    let plan = job.plan(now_ms()).map_err(|e| {
        bad(
            "DAPR_SCHEDULER_SCHEDULE_JOB",
            format!("failed to schedule job due to: {e}"),
        )
    })?;
    let (j, a) = jobs(rt)?;
    match a
        .engine
        .put(&j.owner, &job, plan.first, plan.expires, overwrite)
        .await
    {
        Ok(()) => {
            rt.metrics.job_created();
            a.wake();
            Ok(())
        }
        Err(EngineError::Exists(key)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            tonic::Code::AlreadyExists,
            "DAPR_SCHEDULER_SCHEDULE_JOB",
            format!(
                "failed to schedule job due to: job already exists: '{key}' (set overwrite to replace it)"
            ),
        )),
        Err(e) => Err(a.unavailable("DAPR_SCHEDULER_SCHEDULE_JOB", "scheduling the job", e)),
    }
}

pub async fn get(rt: &Runtime, name: &str) -> Result<Job, ApiError> {
    if name.is_empty() {
        return Err(bad("DAPR_SCHEDULER_JOB_NAME_EMPTY", "Name is empty"));
    }
    let (j, a) = jobs(rt)?;
    match a.engine.get(&j.owner, name).await {
        Ok(Some(job)) => Ok(job),
        // daprd's answer for a job that is not there.
        Ok(None) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "DAPR_SCHEDULER_GET_JOB",
            format!("failed to get job due to: job not found: {name}"),
        )),
        Err(e) => Err(a.unavailable("DAPR_SCHEDULER_GET_JOB", "getting the job", e)),
    }
}

pub async fn delete(rt: &Runtime, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(bad("DAPR_SCHEDULER_JOB_NAME_EMPTY", "Name is empty"));
    }
    let (j, a) = jobs(rt)?;
    a.engine
        .delete(&j.owner, name)
        .await
        .map_err(|e| a.unavailable("DAPR_SCHEDULER_DELETE_JOB", "deleting the job", e))
}

pub async fn delete_prefix(rt: &Runtime, prefix: &str) -> Result<(), ApiError> {
    let (j, a) = jobs(rt)?;
    a.engine
        .delete_prefix(&j.owner, prefix)
        .await
        .map(|_| ())
        .map_err(|e| a.unavailable("DAPR_SCHEDULER_DELETE_JOB", "deleting the jobs", e))
}

pub async fn list(rt: &Runtime) -> Result<Vec<Job>, ApiError> {
    let (j, a) = jobs(rt)?;
    a.engine
        .list(&j.owner)
        .await
        .map_err(|e| a.unavailable("DAPR_SCHEDULER_LIST_JOBS", "listing the jobs", e))
}

/// Starts firing jobs at the app (called when the app is ready; once).
pub fn start(rt: &Arc<Runtime>) {
    start_one(rt, rt.jobs.get_or_init(|| Jobs::new(rt)));
    if rt
        .actors
        .get()
        .is_some_and(|a| !a.config().entities.is_empty())
    {
        start_one(rt, reminder_jobs(rt));
    }
}

/// How long a sidecar holds a reminder tick it claimed from the embedded
/// engine (two thirds of it for the actor to answer). Shorter than the
/// jobs' 30 s so a killed host's reminders move soon after its actors.
pub const REMINDER_LEASE: std::time::Duration = std::time::Duration::from_secs(12);

/// Starts firing actor reminders (an app that registered its actor types
/// after it became ready: over its actor host stream). Once.
pub fn start_reminders(rt: &Arc<Runtime>) {
    start_one(rt, reminder_jobs(rt));
}

/// The reminders' jobs (made on first use).
pub fn reminder_jobs(rt: &Arc<Runtime>) -> &Jobs {
    rt.reminders.get_or_init(|| Jobs::for_reminders(rt))
}

/// A reminder's job, its engine, and the owner it is filed under.
pub fn reminders(rt: &Arc<Runtime>) -> Result<(&Jobs, Arc<Active>), ApiError> {
    let j = reminder_jobs(rt);
    let a = j.active(rt)?;
    Ok((j, a))
}

impl Jobs {
    pub fn owner(&self) -> &Owner {
        &self.owner
    }
}

impl Active {
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The engine failed: a 500 naming it, with `code`.
    pub fn failed(&self, code: &'static str, doing: &str, e: EngineError) -> ApiError {
        self.unavailable(code, doing, e)
    }

    pub fn poke(&self) {
        self.wake();
    }
}

fn start_one(rt: &Arc<Runtime>, j: &Jobs) {
    let app = rt.app.clone();
    if app.is_none() && j.reminders.is_none() {
        return;
    }
    if j.fire.set((app, rt.metrics.clone())).is_err() {
        return;
    }
    // The engine opened before the app was up has no scheduler: open it
    // again with one.
    j.reset();
    if let Err(e) = j.active(rt) {
        // Looked at again every few seconds (and by any jobs call) until
        // the engine opens: stored jobs fire without waiting for a call.
        tracing::warn!(error = %e.message, "jobs: not firing yet: the job engine is not available");
        let rt = Arc::downgrade(rt);
        let j_of: fn(&Arc<Runtime>) -> &Jobs = if j.reminders.is_some() {
            reminder_jobs
        } else {
            |rt| rt.jobs.get_or_init(|| Jobs::new(rt))
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let Some(rt) = rt.upgrade() else { return };
                if j_of(&rt).active(&rt).is_ok() {
                    return;
                }
            }
        });
    }
}

/// After a reload: moves to the engine the new configuration chooses.
pub fn reconfigure(rt: &Runtime) {
    for j in [rt.jobs.get(), rt.reminders.get()].into_iter().flatten() {
        if let Err(e) = j.active(rt) {
            tracing::warn!(error = %e.message, "jobs: the job engine is not available");
        }
    }
}

/// JSON data (the HTTP API's) as a job keeps it.
pub fn json_data(v: &serde_json::Value) -> Data {
    Data {
        type_url: crate::delivery::jobs::VALUE_TYPE.into(),
        value: serde_json::to_vec(v).unwrap_or_default(),
    }
}
