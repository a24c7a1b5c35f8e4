//! HTTP handlers for health, metadata, shutdown and secrets.

use super::ApiResponse;
use super::wire::{metadata_params, query_params, read_body};
use crate::api::{metadata, secrets};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use std::time::Duration;

fn no_content() -> ApiResponse {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("valid response parts")
}

/// A 200 JSON answer written the way daprd's `json.Encoder` writes its
/// (metadata, secrets, configuration, bulk state, query): see `go_json`.
pub(super) fn json(value: &serde_json::Value) -> ApiResponse {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(go_json(value))))
        .expect("valid response parts")
}

/// JSON as Go's `json.Encoder` writes it: `<`, `>`, `&`, U+2028 and U+2029
/// escaped, and a newline at the end. Clients that print or compare daprd's
/// answers see the same bytes. (Those characters only ever occur inside
/// JSON strings, so escaping them in the text is exact.)
pub(crate) fn go_json(value: &impl serde::Serialize) -> Vec<u8> {
    let text = serde_json::to_string(value).expect("JSON of plain values");
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out.into_bytes()
}

/// A 200 JSON answer written compactly, without a final newline (daprd's
/// protojson answers, e.g. the lock API).
pub(super) fn compact_json(value: &serde_json::Value) -> ApiResponse {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("JSON of plain values"),
        )))
        .expect("valid response parts")
}

pub fn healthz(rt: &Runtime, req: &Request<Incoming>) -> ApiResponse {
    let params = query_params(req.uri().query());
    if let Some(id) = params.get("appid")
        && id != rt.app_id()
    {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_HEALTH_APPID_NOT_MATCH",
            format!(
                "dapr app-id does not match: asked for {id}, this sidecar is {}",
                rt.app_id()
            ),
        )
        .to_http();
    }
    if rt.ready() {
        no_content()
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_HEALTH_NOT_READY",
            "dapr is not ready: [app]",
        )
        .to_http()
    }
}

pub fn healthz_outbound(rt: &Runtime) -> ApiResponse {
    if rt.outbound_ready() {
        no_content()
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_OUTBOUND_HEALTH_NOT_READY",
            "dapr outbound is not ready",
        )
        .to_http()
    }
}

pub fn get_metadata(rt: &Runtime) -> ApiResponse {
    json(&metadata::to_json(&metadata::build(rt)))
}

pub async fn put_metadata(rt: &Runtime, key: String, req: Request<Incoming>) -> ApiResponse {
    let body = match read_body(req.into_body(), rt.options.max_body_size).await {
        Ok(b) => b,
        Err(e) => return e.to_http(),
    };
    rt.set_extended(key, String::from_utf8_lossy(&body).into_owned());
    no_content()
}

pub fn shutdown(rt: &Runtime, req: &Request<Incoming>) -> ApiResponse {
    let force = req
        .headers()
        .get("dapr-force-shutdown")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if force {
        tracing::warn!("forced shutdown requested through the API: exiting without draining");
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::process::exit(1);
        });
    } else {
        tracing::info!("shutdown requested through the API");
        rt.request_shutdown();
    }
    no_content()
}

pub async fn get_secret(
    rt: &Runtime,
    store: &str,
    key: &str,
    req: &Request<Incoming>,
) -> ApiResponse {
    let md = metadata_params(req.uri().query());
    match secrets::get(rt, store, key, &md).await {
        Ok(Some(secret)) => json(&serde_json::json!(secret)),
        Ok(None) => no_content(),
        Err(e) => e.to_http(),
    }
}

pub async fn bulk_secrets(rt: &Runtime, store: &str, req: &Request<Incoming>) -> ApiResponse {
    let md = metadata_params(req.uri().query());
    match secrets::bulk(rt, store, &md).await {
        Ok(all) => json(&serde_json::json!(all)),
        Err(e) => e.to_http(),
    }
}
