//! Actor reminders: durable, kept as jobs of the scheduler under the
//! app's reminder owner (`<app>||actorreminders`, so the Jobs API never
//! shows them), named `<type>||<id>||<reminder>`. Whichever sidecar of the
//! app claims a tick fires it through the actor call path, so it reaches
//! the actor on the host that owns it now; an answer with
//! `X-DaprReminderCancel` ends the reminder.

use super::{CANCEL_HEADER, Call, check_names, segment};
use crate::api::jobs;
use crate::delivery::jobs::VALUE_TYPE;
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Weak};
use tandem_stateful::engine::EngineError;
use tandem_stateful::job::{Data, Job};
use tandem_stateful::scheduler::{Deliver, now_ms};

/// A reminder as the API takes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reminder {
    pub due_time: String,
    pub period: String,
    pub ttl: String,
    pub data: Value,
    pub overwrite: bool,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        code,
        message,
    )
}

fn job_name(actor_type: &str, actor_id: &str, name: &str) -> String {
    format!("{actor_type}||{actor_id}||{name}")
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.contains("||") || name.chars().any(char::is_control) {
        return Err(bad(
            "ERR_MALFORMED_REQUEST",
            format!(
                "the reminder name `{}` is not allowed: not empty, no `||`, no control characters",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// The job that carries a reminder (checked: the period, due time and
/// ttl in Dapr's forms).
pub fn to_job(actor_type: &str, actor_id: &str, name: &str, r: &Reminder) -> Result<Job, ApiError> {
    let code = "ERR_ACTOR_REMINDER_CREATE";
    let (schedule, repeats) = if r.period.trim().is_empty() {
        (None, None)
    } else {
        let (ms, repeats) = super::period(&r.period).map_err(|e| bad(code, e))?;
        if ms == 0 {
            return Err(bad(code, "period must be longer than zero"));
        }
        if repeats == Some(0) {
            return Err(bad(code, "a period of R0 repetitions never fires"));
        }
        (
            Some(format!("{}{ms}ms", tandem_stateful::job::PERIOD_PREFIX)),
            repeats,
        )
    };
    let due = super::due_ms(&r.due_time, now_ms()).map_err(|e| bad(code, e))?;
    let body = json!({"data": r.data, "dueTime": r.due_time, "period": r.period});
    let data = serde_json::to_vec(&body).unwrap_or_default();
    if data.len() > jobs::MAX_DATA {
        return Err(bad(
            code,
            format!(
                "the reminder's data is {} bytes; at most {} are kept with a reminder",
                data.len(),
                jobs::MAX_DATA
            ),
        ));
    }
    let job = Job {
        name: job_name(actor_type, actor_id, name),
        schedule,
        repeats,
        due_time: Some(format!("{due}ms")),
        ttl: (!r.ttl.trim().is_empty()).then(|| r.ttl.trim().to_string()),
        data: Some(Data {
            type_url: VALUE_TYPE.into(),
            value: data,
        }),
        ..Job::default()
    };
    job.plan(now_ms()).map_err(|e| bad(code, e))?;
    Ok(job)
}

pub async fn register(
    rt: &Arc<Runtime>,
    actor_type: &str,
    actor_id: &str,
    name: &str,
    r: Reminder,
) -> Result<(), ApiError> {
    check_names(actor_type, actor_id)?;
    check_name(name)?;
    let job = to_job(actor_type, actor_id, name, &r)?;
    let plan = job
        .plan(now_ms())
        .map_err(|e| bad("ERR_ACTOR_REMINDER_CREATE", e))?;
    let (j, a) = jobs::reminders(rt)?;
    match a
        .engine()
        .put(j.owner(), &job, plan.first, plan.expires, r.overwrite)
        .await
    {
        Ok(()) => {
            a.poke();
            Ok(())
        }
        Err(EngineError::Exists(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            tonic::Code::AlreadyExists,
            "ERR_ACTOR_REMINDER_ALREADY_EXISTS",
            format!("reminder {name} already exists for actor {actor_type}/{actor_id}"),
        )),
        Err(e) => Err(a.failed("ERR_ACTOR_REMINDER_CREATE", "storing the reminder", e)),
    }
}

/// A reminder as the API shows it.
pub async fn get(
    rt: &Arc<Runtime>,
    actor_type: &str,
    actor_id: &str,
    name: &str,
) -> Result<Value, ApiError> {
    check_names(actor_type, actor_id)?;
    check_name(name)?;
    let (j, a) = jobs::reminders(rt)?;
    let job = a
        .engine()
        .get(j.owner(), &job_name(actor_type, actor_id, name))
        .await
        .map_err(|e| a.failed("ERR_ACTOR_REMINDER_GET", "reading the reminder", e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                tonic::Code::NotFound,
                "ERR_ACTOR_REMINDER_NOT_FOUND",
                format!("reminder {name} not found for actor {actor_type}/{actor_id}"),
            )
        })?;
    Ok(shown(actor_type, actor_id, &job))
}

fn shown(actor_type: &str, actor_id: &str, job: &Job) -> Value {
    let stored: Value = job
        .data
        .as_ref()
        .and_then(|d| serde_json::from_slice(&d.value).ok())
        .unwrap_or(Value::Null);
    let mut o = serde_json::Map::new();
    o.insert("actorID".into(), json!(actor_id));
    o.insert("actorType".into(), json!(actor_type));
    if let Some(n) = job.name.rsplit("||").next() {
        o.insert("name".into(), json!(n));
    }
    o.insert("data".into(), stored["data"].clone());
    o.insert("dueTime".into(), stored["dueTime"].clone());
    o.insert("period".into(), stored["period"].clone());
    if let Some(t) = &job.ttl {
        o.insert("ttl".into(), json!(t));
    }
    Value::Object(o)
}

pub async fn unregister(
    rt: &Arc<Runtime>,
    actor_type: &str,
    actor_id: &str,
    name: &str,
) -> Result<(), ApiError> {
    check_names(actor_type, actor_id)?;
    check_name(name)?;
    let (j, a) = jobs::reminders(rt)?;
    a.engine()
        .delete(j.owner(), &job_name(actor_type, actor_id, name))
        .await
        .map_err(|e| a.failed("ERR_ACTOR_REMINDER_DELETE", "deleting the reminder", e))
}

/// Every reminder of a type (and id, when given).
pub async fn list(
    rt: &Arc<Runtime>,
    actor_type: &str,
    actor_id: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let (j, a) = jobs::reminders(rt)?;
    let prefix = match actor_id {
        Some(id) => format!("{actor_type}||{id}||"),
        None => format!("{actor_type}||"),
    };
    let all = a
        .engine()
        .list(j.owner())
        .await
        .map_err(|e| a.failed("ERR_ACTOR_REMINDER_GET", "listing the reminders", e))?;
    Ok(all
        .iter()
        .filter(|job| job.name.starts_with(&prefix))
        .filter_map(|job| {
            let mut parts = job.name.splitn(3, "||");
            let (t, id) = (parts.next()?, parts.next()?);
            Some(shown(t, id, job))
        })
        .collect())
}

/// Deletes every reminder of a type (of one actor, with `actor_id`).
pub async fn unregister_type(
    rt: &Arc<Runtime>,
    actor_type: &str,
    actor_id: Option<&str>,
) -> Result<u64, ApiError> {
    let prefix = match actor_id {
        Some(id) => {
            check_names(actor_type, id)?;
            format!("{actor_type}||{id}||")
        }
        None => {
            check_names(actor_type, "-")?;
            format!("{actor_type}||")
        }
    };
    let (j, a) = jobs::reminders(rt)?;
    a.engine()
        .delete_prefix(j.owner(), &prefix)
        .await
        .map_err(|e| a.failed("ERR_ACTOR_REMINDER_DELETE", "deleting the reminders", e))
}

/// Fires reminder ticks at their actors.
pub struct ToActors(pub Weak<Runtime>);

impl Deliver for ToActors {
    fn deliver(&self, job: Job, _due: i64) -> BoxFuture<'static, Result<(), String>> {
        let rt = self.0.clone();
        Box::pin(async move {
            let rt = rt.upgrade().ok_or("the sidecar is stopping")?;
            let actors = rt
                .actors
                .get()
                .cloned()
                .ok_or("the actor runtime is not running yet")?;
            let mut parts = job.name.splitn(3, "||");
            let (Some(t), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                // Not a reminder's name: nothing to fire it at.
                return Ok(());
            };
            let body = job
                .data
                .as_ref()
                .map(|d| Bytes::from(d.value.clone()))
                .unwrap_or_default();
            let call = Call {
                actor_type: t.to_string(),
                actor_id: id.to_string(),
                what: format!("method/remind/{}", segment(name)),
                method: Method::PUT,
                headers: HeaderMap::new(),
                body,
            };
            let answer = actors.call(call, 0).await.map_err(|e| e.message)?;
            rt.metrics
                .actor(tandem_proxy::telemetry::ActorEvent::ReminderFired, t);
            if answer.headers.contains_key(CANCEL_HEADER) {
                unregister(&rt, t, id, name).await.map_err(|e| e.message)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminders_become_jobs_in_daprs_forms() {
        let r = Reminder {
            due_time: "2s".into(),
            period: "R3/PT1S".into(),
            data: json!({"a": 1}),
            ..Default::default()
        };
        let j = to_job("T", "1", "r", &r).unwrap();
        assert_eq!(j.name, "T||1||r");
        assert_eq!(j.schedule.as_deref(), Some("@period 1000ms"));
        assert_eq!(j.repeats, Some(3));
        assert_eq!(j.due_time.as_deref(), Some("2000ms"));
        let body: Value = serde_json::from_slice(&j.data.unwrap().value).unwrap();
        assert_eq!(
            body,
            json!({"data": {"a": 1}, "dueTime": "2s", "period": "R3/PT1S"})
        );
        // One shot, at once.
        let j = to_job("T", "1", "r", &Reminder::default()).unwrap();
        assert_eq!((j.schedule, j.due_time.as_deref()), (None, Some("0ms")));
        for (due, period, ttl) in [
            ("soon", "", ""),
            ("", "every day", ""),
            ("", "0s", ""),
            ("", "R0/PT1S", ""),
            ("", "1s", "whenever"),
        ] {
            let r = Reminder {
                due_time: due.into(),
                period: period.into(),
                ttl: ttl.into(),
                ..Default::default()
            };
            let e = to_job("T", "1", "r", &r).unwrap_err();
            assert_eq!(e.http, StatusCode::BAD_REQUEST, "{due}/{period}/{ttl}");
        }
        assert!(check_name("a||b").is_err());
        assert!(check_name("").is_err());
    }
}
