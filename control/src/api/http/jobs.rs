//! `POST|GET|DELETE /v1.0-alpha1/jobs/{name}` (and `/v1.0/…`, Dapr 1.18):
//! the body is daprd's `JobHTTPRequest` in protobuf's JSON mapping
//! (`schedule`, `repeats`, `dueTime`, `ttl`, `data` — any JSON —,
//! `overwrite`, `failurePolicy`; proto names accepted too, unknown keys
//! ignored); the name comes from the URL only. A GET answers the `Job` as
//! daprd does: `data` as an `Any` of `google.protobuf.Value`, the failure
//! policy always present.

use super::ApiResponse;
use super::handlers::compact_json;
use super::wire::{self, ProtoJson};
use crate::api::jobs as api;
use crate::delivery::jobs::VALUE_TYPE;
use crate::error::ApiError;
use crate::runtime::Runtime;
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tandem_stateful::job::{FailurePolicy, Job};

fn no_content() -> ApiResponse {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Default::default())
        .expect("valid response parts")
}

/// protobuf JSON's Duration: seconds with an `s` (`"3s"`, `"0.5s"`); a Go
/// duration (`"500ms"`) is taken too.
fn duration_ms(text: &str) -> Result<u64, ApiError> {
    let t = text.trim();
    match wire::proto_duration("interval", t) {
        Ok(d) => Ok((d.as_secs_f64() * 1000.0).round() as u64),
        Err(e) => tandem_config::parse_duration(t)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| e),
    }
}

fn failure_policy(v: &Value) -> Result<FailurePolicy, ApiError> {
    let Value::Object(m) = v else {
        return Err(wire::malformed_body(format!(
            "`failurePolicy` is {v}; expected {{\"drop\":{{}}}} or {{\"constant\":{{\"interval\":\"1s\",\"maxRetries\":3}}}}"
        )));
    };
    if m.contains_key("drop") {
        return Ok(FailurePolicy::Drop);
    }
    let Some(Value::Object(c)) = m.get("constant") else {
        return Err(wire::malformed_body(
            "`failurePolicy` has neither `drop` nor `constant`",
        ));
    };
    let c = ProtoJson(c.clone());
    let interval_ms = match c.text("interval", "interval")? {
        Some(t) => duration_ms(&t)?,
        None => 0,
    };
    let max_retries = match c.get("maxRetries", "max_retries") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    wire::malformed_body(format!("`maxRetries` is {v}; expected a count"))
                })?,
        ),
    };
    Ok(FailurePolicy::Constant {
        interval_ms,
        max_retries,
    })
}

fn parse_job(name: &str, raw: &[u8]) -> Result<(Job, bool), ApiError> {
    let m = ProtoJson::parse(raw)?;
    if m.text("name", "name")?.is_some_and(|n| !n.is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "DAPR_SCHEDULER_JOB_NAME",
            "Set the job name in the url only",
        ));
    }
    let repeats = match m.get("repeats", "repeats") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    wire::malformed_body(format!(
                        "`repeats` is {v}; expected a whole number from 1 to {}",
                        u32::MAX
                    ))
                })?,
        ),
    };
    let overwrite = match m.get("overwrite", "overwrite") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(wire::malformed_body(format!(
                "`overwrite` is {other}; expected true or false"
            )));
        }
    };
    let job = Job {
        name: name.trim().to_string(),
        schedule: m.text("schedule", "schedule")?,
        repeats,
        due_time: m.text("dueTime", "due_time")?,
        ttl: m.text("ttl", "ttl")?,
        data: m.0.get("data").map(api::json_data),
        failure_policy: m
            .get("failurePolicy", "failure_policy")
            .map(failure_policy)
            .transpose()?
            .unwrap_or_default(),
    };
    Ok((job, overwrite))
}

/// A job in protobuf's JSON mapping, as daprd answers a GET.
pub fn job_json(job: &Job) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(job.name));
    if let Some(s) = &job.schedule {
        o.insert("schedule".into(), json!(s));
    }
    if let Some(r) = job.repeats {
        o.insert("repeats".into(), json!(r));
    }
    if let Some(d) = &job.due_time {
        o.insert("dueTime".into(), json!(d));
    }
    if let Some(t) = &job.ttl {
        o.insert("ttl".into(), json!(t));
    }
    if let Some(d) = &job.data {
        let value = if d.type_url == VALUE_TYPE {
            serde_json::from_slice(&d.value).unwrap_or(Value::Null)
        } else {
            json!(base64::engine::general_purpose::STANDARD.encode(&d.value))
        };
        o.insert("data".into(), json!({"@type": d.type_url, "value": value}));
    }
    let policy = match &job.failure_policy {
        FailurePolicy::Drop => json!({"drop": {}}),
        FailurePolicy::Constant {
            interval_ms,
            max_retries,
        } => {
            let interval = if interval_ms % 1000 == 0 {
                format!("{}s", interval_ms / 1000)
            } else {
                format!("{}.{:03}s", interval_ms / 1000, interval_ms % 1000)
            };
            let mut c = Map::new();
            c.insert("interval".into(), json!(interval));
            if let Some(m) = max_retries {
                c.insert("maxRetries".into(), json!(m));
            }
            json!({ "constant": c })
        }
    };
    o.insert("failurePolicy".into(), policy);
    Value::Object(o)
}

pub async fn handle(
    rt: &Runtime,
    method: &Method,
    name: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    match *method {
        Method::POST => {
            let raw = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
            let (job, overwrite) = parse_job(name, &raw)?;
            api::schedule(rt, job, overwrite).await?;
            Ok(no_content())
        }
        Method::GET => Ok(compact_json(&job_json(&api::get(rt, name).await?))),
        _ => {
            api::delete(rt, name).await?;
            Ok(no_content())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_as_daprd_reads_them() {
        let (j, o) = parse_job(
            " j ",
            br#"{"schedule":"@every 1s","repeats":3,"due_time":"1s","ttl":"10s","data":{"a":[1]},"overwrite":true,"failure_policy":{"constant":{"interval":"0.5s","max_retries":2}},"unknown":1}"#,
        )
        .unwrap();
        assert!(o);
        assert_eq!(j.name, "j");
        assert_eq!(j.due_time.as_deref(), Some("1s"));
        assert_eq!(
            j.failure_policy,
            FailurePolicy::Constant {
                interval_ms: 500,
                max_retries: Some(2)
            }
        );
        let back = job_json(&j);
        assert_eq!(
            back["data"],
            json!({"@type": VALUE_TYPE, "value": {"a": [1]}})
        );
        assert_eq!(
            back["failurePolicy"],
            json!({"constant": {"interval": "0.500s", "maxRetries": 2}})
        );
        let (j, _) = parse_job("k", br#"{"dueTime":"1s","failurePolicy":{"drop":{}}}"#).unwrap();
        assert_eq!(job_json(&j)["failurePolicy"], json!({"drop": {}}));
        assert_eq!(
            job_json(&Job {
                name: "d".into(),
                ..Job::default()
            })["failurePolicy"],
            json!({"constant": {"interval": "1s", "maxRetries": 3}})
        );
        for bad in [
            &br#"{"name":"x","schedule":"@daily"}"#[..],
            br#"{"repeats":-1}"#,
            br#"{"repeats":4294967296}"#,
            br#"{"repeats":"3"}"#,
            br#"{"schedule":5}"#,
            br#"{"overwrite":"yes"}"#,
            br#"{"failurePolicy":{"constant":{"interval":"soon"}}}"#,
            br#"{"failurePolicy":{}}"#,
            br#"[1]"#,
            br#"{"#,
        ] {
            assert!(
                parse_job("x", bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
