//! The Jobs API, shared by the HTTP and gRPC doors: jobs checked and
//! planned (`tandem_stateful::job`), kept in the coordination engine (the
//! embedded SQLite file the host's sidecars share, `$TANDEM_HOME/jobs.db`),
//! and fired at the app by this sidecar's scheduler once the app is up.
//! Errors carry daprd's `DAPR_SCHEDULER_*` codes; bad input is a 400 (where
//! daprd's scheduler answers 500) so callers know it is theirs to fix.

use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::sync::{Arc, OnceLock};
use tandem_stateful::engine::{Engine, EngineError, Owner};
use tandem_stateful::job::{Data, Job};
use tandem_stateful::scheduler::{Scheduler, now_ms};

/// The largest data a job carries: jobs live in the engine (etcd's
/// values are meant to be small), not in memory.
pub const MAX_DATA: usize = 256 << 10;

pub struct Jobs {
    engine: Arc<dyn Engine>,
    owner: Owner,
    /// Which engine, for errors.
    what: String,
    scheduler: OnceLock<Scheduler>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        code,
        message,
    )
}

impl Jobs {
    fn open(rt: &Runtime) -> Result<Self, String> {
        let path = crate::home::dir().join("jobs.db");
        let engine = tandem_stateful::sqlite::Sqlite::open(&path)?;
        Ok(Self {
            engine: Arc::new(engine),
            owner: Owner {
                namespace: rt
                    .options
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".into()),
                app_id: rt.app_id().to_string(),
            },
            what: format!("SQLite {}", path.display()),
            scheduler: OnceLock::new(),
        })
    }

    /// Starts firing this app's jobs at it (once; later calls do nothing).
    pub fn start(
        &self,
        app: Arc<tandem_proxy::AppChannel>,
        metrics: Arc<tandem_proxy::telemetry::Metrics>,
    ) {
        self.scheduler.get_or_init(|| {
            let holder = format!(
                "{}-{}-{:x}",
                self.owner.app_id,
                std::process::id(),
                now_ms()
            );
            tracing::info!(engine = %self.what, "jobs: firing this app's jobs");
            Scheduler::start(
                self.engine.clone(),
                self.owner.clone(),
                holder,
                Arc::new(crate::delivery::jobs::ToApp { app, metrics }),
            )
        });
    }

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
}

/// The sidecar's jobs (the engine opened on first use).
pub fn jobs(rt: &Runtime) -> Result<&Jobs, ApiError> {
    if let Some(j) = rt.jobs.get() {
        return Ok(j);
    }
    // Not kept when it fails: the next call tries again (a home folder
    // made writable, a disk with room again).
    match Jobs::open(rt) {
        Ok(j) => Ok(rt.jobs.get_or_init(|| j)),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "DAPR_SCHEDULER_SCHEDULE_JOB",
            format!("the job engine is not available: {e}"),
        )),
    }
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
    let j = jobs(rt)?;
    match j
        .engine
        .put(&j.owner, &job, plan.first, plan.expires, overwrite)
        .await
    {
        Ok(()) => {
            rt.metrics.job_created();
            if let Some(s) = j.scheduler.get() {
                s.wake();
            }
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
        Err(e) => Err(j.unavailable("DAPR_SCHEDULER_SCHEDULE_JOB", "scheduling the job", e)),
    }
}

pub async fn get(rt: &Runtime, name: &str) -> Result<Job, ApiError> {
    if name.is_empty() {
        return Err(bad("DAPR_SCHEDULER_JOB_NAME_EMPTY", "Name is empty"));
    }
    let j = jobs(rt)?;
    match j.engine.get(&j.owner, name).await {
        Ok(Some(job)) => Ok(job),
        // daprd's answer for a job that is not there.
        Ok(None) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "DAPR_SCHEDULER_GET_JOB",
            format!("failed to get job due to: job not found: {name}"),
        )),
        Err(e) => Err(j.unavailable("DAPR_SCHEDULER_GET_JOB", "getting the job", e)),
    }
}

pub async fn delete(rt: &Runtime, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(bad("DAPR_SCHEDULER_JOB_NAME_EMPTY", "Name is empty"));
    }
    let j = jobs(rt)?;
    j.engine
        .delete(&j.owner, name)
        .await
        .map_err(|e| j.unavailable("DAPR_SCHEDULER_DELETE_JOB", "deleting the job", e))
}

pub async fn delete_prefix(rt: &Runtime, prefix: &str) -> Result<(), ApiError> {
    let j = jobs(rt)?;
    j.engine
        .delete_prefix(&j.owner, prefix)
        .await
        .map(|_| ())
        .map_err(|e| j.unavailable("DAPR_SCHEDULER_DELETE_JOB", "deleting the jobs", e))
}

pub async fn list(rt: &Runtime) -> Result<Vec<Job>, ApiError> {
    let j = jobs(rt)?;
    j.engine
        .list(&j.owner)
        .await
        .map_err(|e| j.unavailable("DAPR_SCHEDULER_LIST_JOBS", "listing the jobs", e))
}

/// Starts firing jobs at the app (called when the app is ready; once).
pub fn start(rt: &Arc<Runtime>) {
    let Some(app) = rt.app.clone() else { return };
    match jobs(rt) {
        Ok(j) => j.start(app, rt.metrics.clone()),
        Err(e) => {
            tracing::warn!(error = %e.message, "jobs: not firing: the job engine is not available")
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
