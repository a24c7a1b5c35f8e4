//! The Jobs RPCs (`ScheduleJob`, `GetJob`, `DeleteJob`,
//! `DeleteJobsByPrefix`, `ListJobs`, and their `…Alpha1` names): the
//! messages turned into `tandem_stateful` jobs and back. Data given as a
//! `google.protobuf.Value` is kept as its JSON (so an HTTP app gets the
//! JSON, as from daprd); any other `Any` is kept as it came.

use crate::api::jobs as api;
use crate::delivery::jobs::{VALUE_TYPE, any_of};
use crate::error::ApiError;
use crate::runtime::Runtime;
use tandem_proto::common::v1 as common;
use tandem_proto::runtime::v1 as rt;
use tandem_stateful::job::{Data, FailurePolicy, Job};

fn data_of(any: prost_types::Any) -> Data {
    if any.type_url == VALUE_TYPE
        && let Ok(v) = <prost_types::Value as prost::Message>::decode(any.value.as_slice())
    {
        return api::json_data(&super::conversation::value_json(v));
    }
    Data {
        type_url: any.type_url,
        value: any.value,
    }
}

fn policy_of(p: common::JobFailurePolicy) -> FailurePolicy {
    match p.policy {
        Some(common::job_failure_policy::Policy::Drop(_)) => FailurePolicy::Drop,
        Some(common::job_failure_policy::Policy::Constant(c)) => FailurePolicy::Constant {
            interval_ms: c
                .interval
                .map(|d| {
                    (d.seconds.max(0) as u64)
                        .saturating_mul(1000)
                        .saturating_add((d.nanos.max(0) / 1_000_000) as u64)
                })
                .unwrap_or(0),
            max_retries: c.max_retries,
        },
        None => FailurePolicy::default(),
    }
}

fn job_of(j: rt::Job) -> Job {
    Job {
        name: j.name,
        schedule: j.schedule,
        repeats: j.repeats,
        due_time: j.due_time,
        ttl: j.ttl,
        // The Python SDK always sends an `Any`, empty when there is no data.
        data: j
            .data
            .filter(|a| !(a.type_url.is_empty() && a.value.is_empty()))
            .map(data_of),
        failure_policy: j.failure_policy.map(policy_of).unwrap_or_default(),
    }
}

fn message_of(j: Job) -> rt::Job {
    let policy = match j.failure_policy {
        FailurePolicy::Drop => {
            common::job_failure_policy::Policy::Drop(common::JobFailurePolicyDrop {})
        }
        FailurePolicy::Constant {
            interval_ms,
            max_retries,
        } => common::job_failure_policy::Policy::Constant(common::JobFailurePolicyConstant {
            interval: Some(prost_types::Duration {
                seconds: (interval_ms / 1000) as i64,
                nanos: ((interval_ms % 1000) * 1_000_000) as i32,
            }),
            max_retries,
        }),
    };
    rt::Job {
        data: any_of(&j),
        name: j.name,
        schedule: j.schedule,
        repeats: j.repeats,
        due_time: j.due_time,
        ttl: j.ttl,
        failure_policy: Some(common::JobFailurePolicy {
            policy: Some(policy),
        }),
    }
}

pub async fn schedule(
    r: &Runtime,
    req: rt::ScheduleJobRequest,
) -> Result<rt::ScheduleJobResponse, ApiError> {
    let Some(job) = req.job else {
        return Err(ApiError::new(
            http::StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "DAPR_SCHEDULER_EMPTY",
            "Job is empty",
        ));
    };
    api::schedule(r, job_of(job), req.overwrite).await?;
    Ok(rt::ScheduleJobResponse {})
}

pub async fn get(r: &Runtime, req: rt::GetJobRequest) -> Result<rt::GetJobResponse, ApiError> {
    let job = api::get(r, &req.name).await?;
    Ok(rt::GetJobResponse {
        job: Some(message_of(job)),
    })
}

pub async fn delete(
    r: &Runtime,
    req: rt::DeleteJobRequest,
) -> Result<rt::DeleteJobResponse, ApiError> {
    api::delete(r, &req.name).await?;
    Ok(rt::DeleteJobResponse {})
}

pub async fn delete_prefix(r: &Runtime, prefix: Option<String>) -> Result<(), ApiError> {
    api::delete_prefix(r, prefix.as_deref().unwrap_or("")).await
}

pub async fn list(r: &Runtime) -> Result<Vec<rt::Job>, ApiError> {
    Ok(api::list(r).await?.into_iter().map(message_of).collect())
}
