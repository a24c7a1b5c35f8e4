//! The workflow RPCs of Dapr's own API (`StartWorkflowBeta1`, …, and
//! their `Alpha1` twins, same messages): `crate::api::workflows`.

use crate::api::workflows as api;
use crate::error::ApiError;
use crate::runtime::Runtime;
use tandem_proto::runtime::v1 as rt;

fn text(data: Vec<u8>) -> Result<Option<String>, ApiError> {
    if data.is_empty() {
        return Ok(None);
    }
    String::from_utf8(data).map(Some).map_err(|_| {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_BODY_READ",
            "the input is not UTF-8 text; workflow inputs and event data are JSON",
        )
    })
}

pub async fn start(
    rt: &Runtime,
    r: rt::StartWorkflowRequest,
) -> Result<rt::StartWorkflowResponse, ApiError> {
    let options = r.options.into_iter().collect();
    let id = (!r.instance_id.is_empty()).then_some(r.instance_id);
    let instance_id = api::start(rt, &r.workflow_name, id, text(r.input)?, &options, None).await?;
    Ok(rt::StartWorkflowResponse { instance_id })
}

pub async fn get(
    rt: &Runtime,
    r: rt::GetWorkflowRequest,
) -> Result<rt::GetWorkflowResponse, ApiError> {
    let s = api::get(rt, &r.instance_id).await?;
    let ts = |ms: i64| Some(crate::workflow::history::ts(ms));
    Ok(rt::GetWorkflowResponse {
        instance_id: s.instance_id,
        workflow_name: s.name,
        created_at: ts(s.created_ms),
        last_updated_at: ts(s.updated_ms),
        runtime_status: s.status.into(),
        properties: s.properties.into_iter().collect(),
    })
}

pub async fn raise(rt: &Runtime, r: rt::RaiseEventWorkflowRequest) -> Result<(), ApiError> {
    api::raise(rt, &r.instance_id, &r.event_name, text(r.event_data)?).await
}
