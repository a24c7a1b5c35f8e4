//! `POST /v1.0-alpha1/lock/{store}` and `POST /v1.0-alpha1/unlock/{store}`.

use super::handlers::compact_json as json;
use super::{ApiResponse, wire};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::Request;
use hyper::body::Incoming;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    resource_id: String,
    #[serde(default)]
    lock_owner: String,
    #[serde(default)]
    expiry_in_seconds: i64,
}

async fn body(rt: &Runtime, req: Request<Incoming>) -> Result<Body, ApiError> {
    let raw = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    serde_json::from_slice(&raw).map_err(|e| {
        ApiError::malformed(format!(
            "the body must be JSON {{\"resourceId\", \"lockOwner\", \"expiryInSeconds\"}}: {e}"
        ))
    })
}

pub async fn lock(
    rt: &Runtime,
    store: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let b = body(rt, req).await?;
    let success = crate::api::lock::try_lock(
        rt,
        &store,
        &b.resource_id,
        &b.lock_owner,
        b.expiry_in_seconds,
    )
    .await?;
    Ok(json(&serde_json::json!({ "success": success })))
}

pub async fn unlock(
    rt: &Runtime,
    store: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let b = body(rt, req).await?;
    let status = crate::api::lock::unlock(rt, &store, &b.resource_id, &b.lock_owner).await?;
    Ok(json(&serde_json::json!({ "status": status as i32 })))
}
