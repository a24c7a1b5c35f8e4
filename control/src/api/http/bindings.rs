//! `POST|PUT /v1.0/bindings/{name}`: `{data, metadata, operation}` in; the
//! binding's data (200, its metadata as `metadata.<key>` headers) or 204
//! out. `data` is handed to the binding as its JSON text, as Dapr does: a
//! JSON string `"hi"` arrives as the four bytes `"hi"`, quotes included.

use super::{ApiResponse, wire};
use crate::components::bindings::OutputRequest;
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
struct Body {
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    operation: String,
}

pub async fn invoke(
    rt: &Runtime,
    name: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let raw = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    let body: Body = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::malformed(format!(
            "the body must be JSON {{\"operation\": \"…\", \"data\": …, \"metadata\": {{\"key\": \"string\"}}}}: {e}"
        ))
    })?;
    let request = OutputRequest {
        operation: body.operation,
        data: Bytes::from(serde_json::to_vec(&body.data).expect("JSON")),
        metadata: body.metadata.unwrap_or_default(),
    };
    let out = crate::api::bindings::invoke(rt, &name, request, traceparent.as_deref()).await?;
    let mut resp = Response::builder();
    for (k, v) in &out.metadata {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(format!("metadata.{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp = resp.header(n, v);
        }
    }
    let resp = match out.data.filter(|d| !d.is_empty()) {
        Some(data) => resp.status(StatusCode::OK).body(Full::new(data)),
        None => resp
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new())),
    };
    Ok(resp.expect("valid response parts"))
}
