//! Dapr's own workflow API, shared by the HTTP routes
//! (`/v1.0[-beta1|-alpha1]/workflows/{component}/…`) and the gRPC
//! `…Workflow{Alpha1,Beta1}` RPCs: daprd's validation, status codes and
//! error codes over the workflow engine (`crate::workflow`). The component
//! segment is ignored, as by daprd 1.15 and later.

use crate::error::ApiError;
use crate::runtime::Runtime;
use crate::workflow::{Workflows, history, service};
use http::StatusCode;
use std::collections::BTreeMap;
use tandem_proto::durabletask as dt;

/// The longest instance id Dapr's API lets a caller choose.
const MAX_START_ID: usize = 64;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        code,
        message,
    )
}

/// The engine's error as the API's `code`: a caller's mistake or a
/// missing instance keeps its status; anything else is a 500.
fn as_api(code: &'static str, e: ApiError) -> ApiError {
    if e.http == StatusCode::NOT_FOUND {
        return e;
    }
    if e.http == StatusCode::BAD_REQUEST && e.error_code.starts_with("ERR_INSTANCE_ID") {
        return e;
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        match e.grpc {
            tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => e.grpc,
            _ => tonic::Code::Internal,
        },
        code,
        e.message,
    )
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(bad(
            "ERR_INSTANCE_ID_PROVIDED_MISSING",
            "no instance ID was provided",
        ));
    }
    service::check_id(id)
}

async fn engine(rt: &Runtime) -> Result<std::sync::Arc<Workflows>, ApiError> {
    Workflows::of(rt).await
}

/// Starts a workflow: the instance id (made when not given).
pub async fn start(
    rt: &Runtime,
    name: &str,
    instance_id: Option<String>,
    input: Option<String>,
    options: &BTreeMap<String, String>,
    caller: Option<String>,
) -> Result<String, ApiError> {
    if name.is_empty() {
        return Err(bad(
            "ERR_WORKFLOW_NAME_MISSING",
            "workflow name is not configured",
        ));
    }
    let id = match instance_id.filter(|i| !i.is_empty()) {
        Some(id) => id,
        None => uuid::Uuid::new_v4().to_string(),
    };
    if id.len() > MAX_START_ID {
        return Err(bad(
            "ERR_INSTANCE_ID_TOO_LONG",
            format!("workflow instance ID exceeds the max length of {MAX_START_ID} characters"),
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(
            "ERR_INSTANCE_ID_INVALID",
            format!(
                "workflow instance ID '{}' is invalid: only letters, digits, '-' and '_' are allowed",
                id.escape_debug()
            ),
        ));
    }
    let scheduled = match options.get("dapr.workflow.start_time") {
        Some(t) => Some(history::ts(tandem_stateful::times::rfc3339(t).ok_or_else(
            || {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    tonic::Code::Internal,
                    "ERR_START_WORKFLOW",
                    format!("start times must be in RFC3339 format (got `{t}`)"),
                )
            },
        )?)),
        None => None,
    };
    let w = engine(rt).await?;
    w.start(
        dt::CreateInstanceRequest {
            instance_id: id.clone(),
            name: name.into(),
            input,
            scheduled_start_timestamp: scheduled,
            ..Default::default()
        },
        caller,
    )
    .await
    .map_err(|e| as_api("ERR_START_WORKFLOW", e))
}

/// An instance as Dapr's API shows it.
pub struct Shown {
    pub instance_id: String,
    pub name: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub status: &'static str,
    pub properties: BTreeMap<String, String>,
}

pub async fn get(rt: &Runtime, id: &str) -> Result<Shown, ApiError> {
    check_id(id)?;
    let w = engine(rt).await?;
    let s = w
        .get(id, true)
        .await
        .map_err(|e| as_api("ERR_GET_WORKFLOW", e))?
        .ok_or_else(|| crate::workflow::not_found(id))?;
    let mut properties = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            properties.insert(format!("dapr.workflow.{k}"), v);
        }
    };
    put("input", Some(s.input.clone().unwrap_or_default()));
    put("output", s.output.clone());
    put("custom_status", s.custom_status.clone());
    if let Some(f) = &s.failure_details {
        put("failure.error_type", Some(f.error_type.clone()));
        put("failure.error_message", Some(f.error_message.clone()));
        put("failure.stack_trace", f.stack_trace.clone());
    }
    Ok(Shown {
        instance_id: s.instance_id,
        name: s.name,
        created_ms: s
            .created_timestamp
            .as_ref()
            .map(history::ms_of)
            .unwrap_or(0),
        updated_ms: s
            .last_updated_timestamp
            .as_ref()
            .map(history::ms_of)
            .unwrap_or(0),
        status: service::runtime_status(s.workflow_status),
        properties,
    })
}

pub async fn raise(
    rt: &Runtime,
    id: &str,
    event: &str,
    data: Option<String>,
) -> Result<(), ApiError> {
    check_id(id)?;
    if event.is_empty() {
        return Err(bad(
            "ERR_WORKFLOW_EVENT_NAME_MISSING",
            "missing workflow event name",
        ));
    }
    let w = engine(rt).await?;
    w.raise(id, event, data)
        .await
        .map_err(|e| as_api("ERR_RAISE_EVENT_WORKFLOW", e))
}

pub async fn pause(rt: &Runtime, id: &str) -> Result<(), ApiError> {
    check_id(id)?;
    let w = engine(rt).await?;
    w.suspend(id, None)
        .await
        .map_err(|e| as_api("ERR_PAUSE_WORKFLOW", e))
}

pub async fn resume(rt: &Runtime, id: &str) -> Result<(), ApiError> {
    check_id(id)?;
    let w = engine(rt).await?;
    w.resume(id, None)
        .await
        .map_err(|e| as_api("ERR_RESUME_WORKFLOW", e))
}

pub async fn terminate(rt: &Runtime, id: &str) -> Result<(), ApiError> {
    check_id(id)?;
    let w = engine(rt).await?;
    w.terminate(id, None, true)
        .await
        .map_err(|e| as_api("ERR_TERMINATE_WORKFLOW", e))
}

pub async fn purge(rt: &Runtime, id: &str) -> Result<(), ApiError> {
    check_id(id)?;
    let w = engine(rt).await?;
    w.purge(id, true)
        .await
        .map(drop)
        .map_err(|e| as_api("ERR_PURGE_WORKFLOW", e))
}
