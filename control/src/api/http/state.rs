//! HTTP handlers of the state API: JSON bodies in, stored bytes out.

use super::ApiResponse;
use super::wire::{metadata_params, query_params, read_body};
use crate::api::state::{self, SaveItem, TxItem};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
struct Options {
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    consistency: String,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    options: Option<Options>,
}

impl Item {
    /// The stored bytes are the JSON text of `value`, exactly as sent.
    fn into_save(self, query_md: &BTreeMap<String, String>) -> Result<SaveItem, ApiError> {
        let key = self
            .key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::malformed("\"key\" is a required field"))?;
        let mut metadata = self.metadata;
        metadata.extend(query_md.iter().map(|(k, v)| (k.clone(), v.clone())));
        let options = self.options.unwrap_or_default();
        Ok(SaveItem {
            key,
            value: self
                .value
                .map(|v| Bytes::copy_from_slice(v.get().as_bytes()))
                .unwrap_or_default(),
            etag: self.etag,
            metadata,
            concurrency: options.concurrency,
            consistency: options.consistency,
        })
    }
}

/// Reads a JSON body (bounded by `--max-body-size`) and the `metadata.*`
/// query parameters of a state request.
async fn json_request<T: for<'de> Deserialize<'de>>(
    rt: &Runtime,
    req: Request<Incoming>,
    what: &str,
) -> Result<(T, BTreeMap<String, String>), ApiError> {
    let md = metadata_params(req.uri().query());
    let body = read_body(req.into_body(), rt.options.max_body_size).await?;
    Ok((parse(&body, what)?, md))
}

/// Stored bytes inside a JSON answer: JSON as JSON, anything else as a string.
fn embed(data: &[u8]) -> serde_json::Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(data).into_owned()))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("{what}: the body is not valid: {e}")))
}

fn no_content() -> ApiResponse {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("valid response parts")
}

fn json(status: StatusCode, body: Vec<u8>) -> ApiResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response parts")
}

pub async fn save(
    rt: &Runtime,
    store: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let (items, md): (Vec<Item>, _) = json_request(
        rt,
        req,
        "saving state: expected a JSON array of {key, value, etag?, metadata?, options?}",
    )
    .await?;
    let items = items
        .into_iter()
        .map(|i| i.into_save(&md))
        .collect::<Result<Vec<_>, _>>()?;
    state::save(rt, store, items).await?;
    Ok(no_content())
}

pub async fn get(
    rt: &Runtime,
    store: &str,
    key: &str,
    req: &Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let params = query_params(req.uri().query());
    let md = metadata_params(req.uri().query());
    let consistency = params.get("consistency").cloned().unwrap_or_default();
    let Some(value) = state::get(rt, store, key, &consistency, md).await? else {
        return Ok(no_content());
    };
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if let Ok(etag) = HeaderValue::from_str(&value.etag) {
        resp = resp.header(header::ETAG, etag);
    }
    for (k, v) in &value.metadata {
        if let (Ok(name), Ok(v)) = (
            HeaderName::try_from(format!("metadata.{k}")),
            HeaderValue::from_str(v),
        ) {
            resp = resp.header(name, v);
        }
    }
    Ok(resp
        .body(Full::new(value.data))
        .expect("valid response parts"))
}

pub fn delete_item(key: &str, req: &Request<Incoming>) -> SaveItem {
    let params = query_params(req.uri().query());
    SaveItem {
        key: key.to_string(),
        etag: req
            .headers()
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        metadata: metadata_params(req.uri().query()),
        concurrency: params.get("concurrency").cloned().unwrap_or_default(),
        consistency: params.get("consistency").cloned().unwrap_or_default(),
        value: Bytes::new(),
    }
}

pub async fn delete(
    rt: &Runtime,
    store: &str,
    key: &str,
    req: &Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    state::delete(rt, store, vec![delete_item(key, req)]).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
struct BulkRequest {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    parallelism: i64,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

pub async fn bulk(
    rt: &Runtime,
    store: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let (mut bulk, md): (BulkRequest, _) = json_request(
        rt,
        req,
        "bulk get: expected {keys: [...], parallelism?, metadata?}",
    )
    .await?;
    bulk.metadata.extend(md);
    let items = state::bulk_get(
        rt,
        store,
        bulk.keys,
        bulk.parallelism.max(0) as usize,
        bulk.metadata,
    )
    .await?;
    let out: Vec<serde_json::Value> = items
        .into_iter()
        .map(|i| {
            // daprd's item: key always; data, etag, metadata and error
            // only when there is one.
            let mut v = serde_json::json!({"key": i.key});
            match i.result {
                Ok(Some(value)) => {
                    v["data"] = embed(&value.data);
                    if let Some(etag) = Some(value.etag).filter(|e| !e.is_empty()) {
                        v["etag"] = etag.into();
                    }
                    if !value.metadata.is_empty() {
                        v["metadata"] = serde_json::json!(value.metadata);
                    }
                }
                Ok(None) => {}
                Err(e) => v["error"] = e.into(),
            }
            v
        })
        .collect();
    Ok(json(StatusCode::OK, super::handlers::go_json(&out)))
}

#[derive(Deserialize)]
struct TxRequest {
    #[serde(default)]
    operations: Vec<TxOperation>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TxOperation {
    operation: String,
    request: Item,
}

pub async fn transaction(
    rt: &Runtime,
    store: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let (mut tx, md): (TxRequest, _) = json_request(
        rt,
        req,
        "state transaction: expected {operations: [{operation, request}], metadata?}",
    )
    .await?;
    tx.metadata.extend(md);
    let ops = tx
        .operations
        .into_iter()
        .map(|op| {
            Ok(TxItem {
                operation: op.operation,
                item: op.request.into_save(&BTreeMap::new())?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    state::transaction(rt, store, ops, tx.metadata).await?;
    Ok(no_content())
}

pub async fn query(
    rt: &Runtime,
    store: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let body = read_body(req.into_body(), rt.options.max_body_size).await?;
    let result = state::query(rt, store, &body).await?;
    if result.items.is_empty() {
        return Ok(no_content());
    }
    let results: Vec<serde_json::Value> = result
        .items
        .into_iter()
        .map(|i| {
            let mut v = serde_json::json!({"key": i.key, "data": embed(&i.data)});
            if !i.etag.is_empty() {
                v["etag"] = i.etag.into();
            }
            v
        })
        .collect();
    let mut body = serde_json::json!({ "results": results });
    if let Some(t) = result.token {
        body["token"] = t.into();
    }
    Ok(json(StatusCode::OK, super::handlers::go_json(&body)))
}
