//! `GET /v1.0/configuration/{store}?key=…`, `…/{store}/subscribe?key=…`
//! and `…/{store}/{id}/unsubscribe` (also under `v1.0-alpha1`).

use super::handlers::json;
use super::{ApiResponse, wire};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

pub async fn get(
    rt: &Runtime,
    store: &str,
    req: &Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let keys = wire::query_values(req.uri().query(), "key");
    let metadata = wire::metadata_params(req.uri().query());
    let items = crate::api::configuration::get(rt, store, &keys, &metadata).await?;
    if items.is_empty() {
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("valid response parts"));
    }
    Ok(json(
        &serde_json::to_value(&items).expect("JSON of plain values"),
    ))
}

pub async fn subscribe(
    rt: &Runtime,
    store: &str,
    req: &Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let keys = wire::query_values(req.uri().query(), "key");
    let metadata = wire::metadata_params(req.uri().query());
    let id = crate::api::configuration::subscribe_http(rt, store, keys, metadata).await?;
    Ok(json(&serde_json::json!({ "id": id })))
}

pub fn unsubscribe(rt: &Runtime, store: &str, id: &str) -> ApiResponse {
    match crate::api::configuration::unsubscribe(rt, store, id) {
        Ok(()) => json(&serde_json::json!({ "ok": true })),
        // daprd's `{ok, message}` with `omitempty`: a failure has no `ok`.
        Err(e) => Response::builder()
            .status(e.http)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(super::handlers::go_json(
                &serde_json::json!({ "message": e.message }),
            ))))
            .expect("valid response parts"),
    }
}
