//! Dapr's workflow HTTP API (`/v1.0/workflows/…`, also under `v1.0-beta1`
//! and `v1.0-alpha1`): start (`202 {"instanceID"}`), get, raiseEvent,
//! pause, resume, terminate, purge (`202`). Bodies are passed on as the
//! workflow's input or the event's data, as they are.

use super::ApiResponse;
use super::handlers::compact_json;
use super::wire;
use crate::api::workflows as api;
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

fn accepted(body: Value) -> ApiResponse {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("valid response parts")
}

async fn text(rt: &Runtime, req: Request<Incoming>) -> Result<Option<String>, ApiError> {
    let raw = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    if raw.is_empty() {
        return Ok(None);
    }
    String::from_utf8(raw.to_vec()).map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_BODY_READ",
            "the body is not UTF-8 text; workflow inputs and event data are JSON",
        )
    })
}

/// `segs` after the version: `workflows/{component}/…`.
pub async fn handle(
    rt: &Runtime,
    method: &Method,
    rest: &[&str],
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "ERR_DIRECT_INVOKE",
            format!(
                "no workflow API route matches {method} {}",
                req.uri().path()
            ),
        )
    };
    match (method, rest) {
        (&Method::POST, [_component, name, "start"]) => {
            let q = wire::query_params(req.uri().query());
            let id = q.get("instanceID").cloned();
            let name = name.to_string();
            let caller = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let input = text(rt, req).await?;
            let id = api::start(rt, &name, id, input, &Default::default(), caller).await?;
            Ok(accepted(json!({ "instanceID": id })))
        }
        (&Method::GET, [_component, id]) => {
            let s = api::get(rt, id).await?;
            let mut o = Map::new();
            o.insert("instanceID".into(), s.instance_id.into());
            o.insert("workflowName".into(), s.name.into());
            o.insert(
                "createdAt".into(),
                crate::clock::rfc3339_utc(s.created_ms).into(),
            );
            o.insert(
                "lastUpdatedAt".into(),
                crate::clock::rfc3339_utc(s.updated_ms).into(),
            );
            o.insert("runtimeStatus".into(), s.status.into());
            o.insert(
                "properties".into(),
                Value::Object(
                    s.properties
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ),
            );
            Ok(compact_json(&Value::Object(o)))
        }
        (&Method::POST, [_component, id, "raiseEvent", event]) => {
            let (id, event) = (id.to_string(), event.to_string());
            let data = text(rt, req).await?;
            api::raise(rt, &id, &event, data).await?;
            Ok(accepted(json!({})))
        }
        (
            &Method::POST,
            [
                _component,
                id,
                op @ ("pause" | "resume" | "terminate" | "purge"),
            ],
        ) => {
            match *op {
                "pause" => api::pause(rt, id).await?,
                "resume" => api::resume(rt, id).await?,
                "terminate" => api::terminate(rt, id).await?,
                _ => api::purge(rt, id).await?,
            }
            Ok(accepted(json!({})))
        }
        _ => Err(not_found()),
    }
}
