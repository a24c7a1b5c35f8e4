//! Output bindings (dapr-wire.md §1.7, §6.3), shared by the HTTP and gRPC
//! APIs: the binding looked up, the operation checked against what it
//! supports, the trace context added to the metadata, and the call run
//! under the component's outbound resiliency policy (a request the binding
//! calls bad is not retried).

use crate::components::bindings::{BindingError, OutputRequest, OutputResponse};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use tandem_proxy::resilience::{FailureKind, ResilienceError};

const ERR: &str = "ERR_INVOKE_OUTPUT_BINDING";

fn failed(status: StatusCode, message: String) -> ApiError {
    let grpc = if status.is_client_error() {
        tonic::Code::InvalidArgument
    } else {
        tonic::Code::Internal
    };
    ApiError::new(status, grpc, ERR, message)
}

pub async fn invoke(
    rt: &Runtime,
    name: &str,
    mut req: OutputRequest,
    traceparent: Option<&str>,
) -> Result<OutputResponse, ApiError> {
    let snap = rt.snapshot();
    let Some(comp) = snap.bindings.get(name) else {
        let outputs: Vec<&str> = snap
            .bindings
            .iter()
            .filter(|(_, b)| b.direction.output && !b.binding.operations().is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "output binding `{name}` is not defined; defined output bindings: [{}]",
                outputs.join(", ")
            ),
        ));
    };
    if req.operation.is_empty() {
        return Err(ApiError::malformed(format!(
            "the request to binding `{name}` has no `operation`; it supports: {}",
            comp.binding.operations().join(", ")
        )));
    }
    let supported = comp.binding.operations();
    if !comp.direction.output || supported.is_empty() {
        return Err(failed(
            StatusCode::BAD_REQUEST,
            format!("binding `{name}` is an input binding; it takes no output operations"),
        ));
    }
    if !supported.contains(&req.operation.as_str()) {
        return Err(failed(
            StatusCode::BAD_REQUEST,
            format!(
                "binding `{name}` does not support operation `{}`; supported operations: {}",
                req.operation,
                supported.join(", ")
            ),
        ));
    }
    if let Some(tp) = traceparent {
        req.metadata
            .entry("traceparent".into())
            .or_insert_with(|| tp.to_string());
    }
    let binding = comp.binding.clone();
    let attempt = || binding.invoke(req.clone());
    let classify = |e: &BindingError| match e {
        BindingError::BadRequest(_) => FailureKind::Permanent,
        BindingError::Failed(_) => FailureKind::Transient,
    };
    comp.outbound
        .run(attempt, classify)
        .await
        .map_err(|e| match e {
            ResilienceError::Inner(BindingError::BadRequest(m)) => failed(
                StatusCode::BAD_REQUEST,
                format!("binding `{name}` {}: {m}", req.operation),
            ),
            other => failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("binding `{name}` {}: {other}", req.operation),
            ),
        })
}
