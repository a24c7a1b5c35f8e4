//! The actor RPCs: `InvokeActor`, actor state, timers and reminders — the
//! same runtime as the HTTP door (`crate::actors`).

use crate::actors::reminders::{self, Reminder};
use crate::actors::state::{self, Op};
use crate::actors::{self, Call, Timer};
use crate::api::http::actors::runtime;
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tandem_proto::runtime::v1 as rt;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        code,
        message,
    )
}

/// Reminder and timer data given as bytes, kept as daprd keeps it: the
/// JSON text of a base64 string (so an SDK decodes it the same whether it
/// registered over HTTP or gRPC); none when empty.
fn json_data(data: &[u8]) -> Value {
    use base64::Engine;
    if data.is_empty() {
        return Value::Null;
    }
    Value::String(base64::engine::general_purpose::STANDARD.encode(data))
}

async fn owner_runtime(rt: &Runtime) -> Result<Arc<Runtime>, ApiError> {
    runtime(rt).await?.runtime().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "ERR_ACTOR_RUNTIME_CLOSED",
            "the sidecar is stopping",
        )
    })
}

pub async fn invoke(
    rt: &Runtime,
    r: rt::InvokeActorRequest,
) -> Result<rt::InvokeActorResponse, ApiError> {
    let a = runtime(rt).await?;
    if r.method.is_empty() {
        return Err(bad("ERR_MALFORMED_REQUEST", "the actor method is empty"));
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &r.metadata {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let answer = a
        .call(
            Call {
                what: format!("method/{}", actors::segment(&r.method)),
                actor_type: r.actor_type,
                actor_id: r.actor_id,
                method: Method::PUT,
                headers,
                body: Bytes::from(r.data),
            },
            0,
        )
        .await?;
    if answer.headers.contains_key(actors::ERROR_HEADER) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_ACTOR_INVOKE_METHOD",
            format!(
                "error invoke actor method: {}",
                String::from_utf8_lossy(&answer.body)
            ),
        ));
    }
    Ok(rt::InvokeActorResponse {
        data: answer.body.to_vec(),
    })
}

pub async fn get_state(
    rt: &Runtime,
    r: rt::GetActorStateRequest,
) -> Result<rt::GetActorStateResponse, ApiError> {
    runtime(rt).await?;
    Ok(
        match state::get(rt, &r.actor_type, &r.actor_id, &r.key).await? {
            Some(v) => rt::GetActorStateResponse {
                data: v.data.to_vec(),
                metadata: v.metadata.into_iter().collect(),
            },
            None => rt::GetActorStateResponse::default(),
        },
    )
}

pub async fn transact(
    rt: &Runtime,
    r: rt::ExecuteActorStateTransactionRequest,
) -> Result<(), ApiError> {
    runtime(rt).await?;
    let mut ops = Vec::with_capacity(r.operations.len());
    for (i, op) in r.operations.into_iter().enumerate() {
        if op.key.is_empty() {
            return Err(bad(
                "ERR_MALFORMED_REQUEST",
                format!("operation {i} has no key"),
            ));
        }
        ops.push(match op.operation_type.as_str() {
            "upsert" => Op::Upsert {
                key: op.key,
                value: Bytes::from(op.value.map(|v| v.value).unwrap_or_default()),
                metadata: op.metadata.into_iter().collect(),
            },
            "delete" => Op::Delete { key: op.key },
            other => {
                return Err(bad(
                    "ERR_MALFORMED_REQUEST",
                    format!("operation {i} is `{other}`; expected upsert or delete"),
                ));
            }
        });
    }
    state::transact(rt, &r.actor_type, &r.actor_id, ops).await
}

pub async fn register_timer(
    rt: &Runtime,
    r: rt::RegisterActorTimerRequest,
) -> Result<(), ApiError> {
    let a = runtime(rt).await?;
    let mut o = serde_json::Map::new();
    o.insert("dueTime".into(), Value::String(r.due_time));
    o.insert("period".into(), Value::String(r.period));
    o.insert("ttl".into(), Value::String(r.ttl));
    o.insert("callback".into(), Value::String(r.callback));
    o.insert("data".into(), json_data(&r.data));
    let timer: Timer = crate::api::http::actors::timer(&o)?;
    a.register_timer(&r.actor_type, &r.actor_id, &r.name, timer)
        .await
}

pub async fn unregister_timer(
    rt: &Runtime,
    r: rt::UnregisterActorTimerRequest,
) -> Result<(), ApiError> {
    let a = runtime(rt).await?;
    actors::check_names(&r.actor_type, &r.actor_id)?;
    a.unregister_timer(&r.actor_type, &r.actor_id, &r.name)
        .await;
    Ok(())
}

pub async fn register_reminder(
    rt: &Runtime,
    r: rt::RegisterActorReminderRequest,
) -> Result<(), ApiError> {
    let owner = owner_runtime(rt).await?;
    let reminder = Reminder {
        due_time: r.due_time,
        period: r.period,
        ttl: r.ttl,
        data: json_data(&r.data),
        overwrite: r.overwrite.unwrap_or(true),
    };
    reminders::register(&owner, &r.actor_type, &r.actor_id, &r.name, reminder).await
}

pub async fn unregister_reminder(
    rt: &Runtime,
    r: rt::UnregisterActorReminderRequest,
) -> Result<(), ApiError> {
    let owner = owner_runtime(rt).await?;
    reminders::unregister(&owner, &r.actor_type, &r.actor_id, &r.name).await
}

/// A reminder's data as daprd returns it: the JSON value's bytes in a
/// `google.protobuf.BytesValue`.
fn any_json(v: &Value) -> Option<prost_types::Any> {
    use prost::Message;
    (!v.is_null()).then(|| prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.BytesValue".into(),
        value: serde_json::to_vec(v).unwrap_or_default().encode_to_vec(),
    })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

pub async fn get_reminder(
    rt: &Runtime,
    r: rt::GetActorReminderRequest,
) -> Result<rt::GetActorReminderResponse, ApiError> {
    let owner = owner_runtime(rt).await?;
    let v = reminders::get(&owner, &r.actor_type, &r.actor_id, &r.name).await?;
    Ok(rt::GetActorReminderResponse {
        actor_type: r.actor_type,
        actor_id: r.actor_id,
        due_time: text(&v["dueTime"]),
        period: text(&v["period"]),
        data: any_json(&v["data"]),
        ttl: text(&v["ttl"]),
    })
}

pub async fn list_reminders(
    rt: &Runtime,
    r: rt::ListActorRemindersRequest,
) -> Result<rt::ListActorRemindersResponse, ApiError> {
    let owner = owner_runtime(rt).await?;
    let all = reminders::list(&owner, &r.actor_type, r.actor_id.as_deref()).await?;
    Ok(rt::ListActorRemindersResponse {
        reminders: all
            .iter()
            .map(|v| rt::NamedActorReminder {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                reminder: Some(rt::ActorReminder {
                    actor_type: v["actorType"].as_str().unwrap_or_default().to_string(),
                    actor_id: v["actorID"].as_str().unwrap_or_default().to_string(),
                    due_time: text(&v["dueTime"]),
                    period: text(&v["period"]),
                    data: any_json(&v["data"]),
                    ttl: text(&v["ttl"]),
                }),
            })
            .collect(),
    })
}

pub async fn unregister_by_type(
    rt: &Runtime,
    r: rt::UnregisterActorRemindersByTypeRequest,
) -> Result<rt::UnregisterActorRemindersByTypeResponse, ApiError> {
    let owner = owner_runtime(rt).await?;
    reminders::unregister_type(&owner, &r.actor_type, r.actor_id.as_deref()).await?;
    Ok(rt::UnregisterActorRemindersByTypeResponse {})
}
