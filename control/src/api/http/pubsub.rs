//! HTTP handlers of the publish API: body and headers in, the shared
//! publish logic of `crate::api::pubsub` out.

use super::{ApiResponse, wire};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

pub async fn publish(
    rt: &Runtime,
    pubsub: String,
    topic: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let metadata = wire::metadata_params(req.uri().query());
    let header = |n: http::header::HeaderName| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let traceparent = header(http::header::HeaderName::from_static("traceparent"));
    let tracestate = header(http::header::HeaderName::from_static("tracestate"));
    let data = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    crate::api::pubsub::publish(
        rt,
        crate::api::pubsub::Publish {
            pubsub,
            topic,
            data,
            content_type,
            metadata,
            traceparent,
            tracestate,
        },
    )
    .await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("valid response parts"))
}

/// `POST /v1.0/publish/bulk/{pubsub}/{topic}`: a JSON array of
/// `{entryId, event, contentType, metadata?}`.
pub async fn bulk_publish(
    rt: &Runtime,
    pubsub: String,
    topic: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let metadata = wire::metadata_params(req.uri().query());
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let trace = (header("traceparent"), header("tracestate"));
    let body = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    let out = crate::cloudevent::bulk_entries(&body)
        .map_err(|why| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "ERR_PUBSUB_EVENTS_SER",
                why,
            )
        })?
        .into_iter()
        .map(|e| crate::api::pubsub::BulkEntry {
            entry_id: e.entry_id,
            data: Bytes::from(e.data),
            content_type: e.content_type,
            metadata: e.metadata,
        })
        .collect();
    let failed =
        crate::api::pubsub::bulk_publish(rt, &pubsub, &topic, out, metadata, trace).await?;
    if failed.is_empty() {
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("valid response parts"));
    }
    let body = serde_json::json!({
        "failedEntries": failed.iter().map(|(id, err)| serde_json::json!({"entryId": id, "error": err})).collect::<Vec<_>>(),
        "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
    });
    Ok(Response::builder()
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).expect("JSON"),
        )))
        .expect("valid response parts"))
}
