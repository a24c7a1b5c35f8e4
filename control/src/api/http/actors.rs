//! `/v1.0/actors/{type}/{id}/…`: method calls (any verb; the app gets
//! `PUT`), state (`state` transaction, `state/{key}`), reminders and
//! timers.

use super::ApiResponse;
use super::wire;
use crate::actors::reminders::{self, Reminder};
use crate::actors::state::{self, Op};
use crate::actors::{self, Actors, Call, Timer};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;

fn no_content() -> ApiResponse {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::default())
        .expect("valid response parts")
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_MALFORMED_REQUEST",
        message,
    )
}

/// The actor runtime, or daprd's answer when there is none. Like daprd,
/// a call that comes while the sidecar is still reading the app's actor
/// configuration waits for it (up to 30 s).
pub async fn runtime(rt: &Runtime) -> Result<Arc<Actors>, ApiError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(a) = rt.actors.get() {
            return Ok(a.clone());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_ACTOR_RUNTIME_NOT_FOUND",
                "the actor runtime is not initialized yet: the app's configuration (GET /dapr/config) has not been read (is the app listening on its port?)",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn text(o: &serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(malformed(format!("`{key}` is {other}; expected text"))),
    }
}

fn object(raw: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(raw) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(malformed(format!("expected a JSON object, got {other}"))),
        Err(e) => Err(malformed(format!("the body is not JSON: {e}"))),
    }
}

pub async fn handle(
    rt: &Runtime,
    method: &Method,
    segs: &[&str],
    raw_path: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let [_, _, actor_type, actor_id, rest @ ..] = segs else {
        return Err(malformed("expected /v1.0/actors/{type}/{id}/…"));
    };
    let (t, id) = (actor_type.to_string(), actor_id.to_string());
    actors::check_names(&t, &id)?;
    let a = runtime(rt).await?;
    let headers = req.headers().clone();
    // The app gets the caller's query string too, as from daprd.
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let body = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    match (method, rest) {
        (_, ["method", m, ..]) if !m.is_empty() => {
            // The method as the caller wrote it (still escaped).
            let what = format!(
                "{}{query}",
                raw_path
                    .trim_start_matches('/')
                    .splitn(5, '/')
                    .nth(4)
                    .unwrap_or_default()
            );
            let mut headers = headers;
            tandem_proxy::invoke::strip_hop_by_hop(&mut headers);
            headers.remove("dapr-api-token");
            headers.remove(http::header::HOST);
            let answer = a
                .call(
                    Call {
                        actor_type: t,
                        actor_id: id,
                        what,
                        method: Method::PUT,
                        headers,
                        body,
                    },
                    0,
                )
                .await?;
            let mut r = Response::builder()
                .status(answer.status)
                .body(Full::new(answer.body))
                .expect("valid response parts");
            for (k, v) in &answer.headers {
                if k == http::header::CONTENT_LENGTH
                    || k == http::header::TRANSFER_ENCODING
                    || k == http::header::CONNECTION
                {
                    continue;
                }
                r.headers_mut().append(k, v.clone());
            }
            Ok(r)
        }
        (&Method::POST | &Method::PUT, ["state"]) => {
            let ops = parse_ops(&body)?;
            state::transact(rt, &t, &id, ops).await?;
            Ok(no_content())
        }
        (&Method::GET, ["state", key]) => match state::get(rt, &t, &id, key).await? {
            Some(v) => {
                let mut r = Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(v.data))
                    .expect("valid response parts");
                for (k, val) in &v.metadata {
                    if let (Ok(name), Ok(val)) = (
                        http::HeaderName::from_bytes(format!("metadata.{k}").as_bytes()),
                        http::HeaderValue::from_str(val),
                    ) {
                        r.headers_mut().insert(name, val);
                    }
                }
                Ok(r)
            }
            None => Ok(no_content()),
        },
        (&Method::POST | &Method::PUT, ["reminders", name]) => {
            let o = object(&body)?;
            let r = Reminder {
                due_time: text(&o, "dueTime")?,
                period: text(&o, "period")?,
                ttl: text(&o, "ttl")?,
                data: o.get("data").cloned().unwrap_or(Value::Null),
                overwrite: match o.get("overwrite") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(malformed(format!(
                            "`overwrite` is {other}; expected true or false"
                        )));
                    }
                },
            };
            let rt = owner_runtime(&a)?;
            reminders::register(&rt, &t, &id, name, r).await?;
            Ok(no_content())
        }
        (&Method::GET, ["reminders", name]) => {
            let rt = owner_runtime(&a)?;
            let v = reminders::get(&rt, &t, &id, name).await?;
            Ok(super::handlers::compact_json(&v))
        }
        (&Method::DELETE, ["reminders", name]) => {
            let rt = owner_runtime(&a)?;
            reminders::unregister(&rt, &t, &id, name).await?;
            Ok(no_content())
        }
        (&Method::POST | &Method::PUT, ["timers", name]) => {
            let o = object(&body)?;
            let timer = timer(&o)?;
            a.register_timer(&t, &id, name, timer).await?;
            Ok(no_content())
        }
        (&Method::DELETE, ["timers", name]) => {
            a.unregister_timer(&t, &id, name).await;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "ERR_DIRECT_INVOKE",
            format!("no actor API route matches {method} {raw_path}"),
        )),
    }
}

fn owner_runtime(a: &Actors) -> Result<Arc<Runtime>, ApiError> {
    a.runtime().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "ERR_ACTOR_RUNTIME_CLOSED",
            "the sidecar is stopping",
        )
    })
}

/// A timer's body: `{dueTime, period, ttl, callback, data}`.
pub fn timer(o: &serde_json::Map<String, Value>) -> Result<Timer, ApiError> {
    let bad = |e: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_ACTOR_TIMER_CREATE",
            format!("error creating actor timer: {e}"),
        )
    };
    let now = tandem_stateful::scheduler::now_ms();
    let due_text = text(o, "dueTime")?;
    let period_text = text(o, "period")?;
    let ttl = text(o, "ttl")?;
    let due_ms = actors::due_ms(&due_text, now).map_err(bad)?;
    let (period_ms, repeats) = if period_text.trim().is_empty() {
        (None, None)
    } else {
        let (p, r) = actors::period(&period_text).map_err(bad)?;
        (Some(p), r)
    };
    let expires = if ttl.trim().is_empty() {
        None
    } else {
        Some(tandem_stateful::times::instant(&ttl, now, "ttl").map_err(bad)?)
    };
    Ok(Timer {
        due_ms,
        due_text,
        period_ms,
        period_text,
        repeats,
        expires,
        callback: text(o, "callback")?,
        data: o.get("data").cloned().unwrap_or(Value::Null),
    })
}

/// `[{operation: "upsert"|"delete", request: {key, value, metadata}}]`.
fn parse_ops(raw: &Bytes) -> Result<Vec<Op>, ApiError> {
    let v: Value = serde_json::from_slice(raw)
        .map_err(|e| malformed(format!("the body is not a JSON list of operations: {e}")))?;
    let Value::Array(items) = v else {
        return Err(malformed(
            "expected a JSON list of operations: [{\"operation\":\"upsert\",\"request\":{\"key\":…,\"value\":…}}]",
        ));
    };
    let mut ops = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let op = item["operation"].as_str().unwrap_or_default();
        let req = &item["request"];
        let key = req["key"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| malformed(format!("operation {i} has no request.key")))?
            .to_string();
        ops.push(match op {
            "upsert" => {
                let metadata = match &req["metadata"] {
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_string),
                            )
                        })
                        .collect(),
                    _ => Default::default(),
                };
                Op::Upsert {
                    key,
                    value: Bytes::from(serde_json::to_vec(&req["value"]).unwrap_or_default()),
                    metadata,
                }
            }
            "delete" => Op::Delete { key },
            other => {
                return Err(malformed(format!(
                    "operation {i} is `{other}`; expected upsert or delete"
                )));
            }
        });
    }
    Ok(ops)
}
