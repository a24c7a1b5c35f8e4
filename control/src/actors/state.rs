//! Actor state: in the state store marked `actorStateStore: "true"`, under
//! daprd's key layout `<appID>||<type>||<id>||<key>` (so state daprd wrote
//! reads back), written as one transaction per call.

use crate::components::state::{DeleteRequest, GetRequest, SetRequest, StateValue, TransactionOp};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::StatusCode;
use std::collections::BTreeMap;

/// One operation of an actor's state transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Upsert {
        key: String,
        value: Bytes,
        metadata: BTreeMap<String, String>,
    },
    Delete {
        key: String,
    },
}

fn no_store() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::FailedPrecondition,
        "ERR_ACTOR_STATE_STORE_NOT_FOUND",
        "actors: state store does not exist or incorrectly configured: mark one state store with metadata actorStateStore: \"true\"",
    )
}

pub(crate) fn store(rt: &Runtime) -> Result<crate::components::StateComponent, ApiError> {
    rt.snapshot()
        .state_stores
        .values()
        .find(|s| s.actor_store)
        .cloned()
        .ok_or_else(no_store)
}

fn key(rt: &Runtime, actor_type: &str, actor_id: &str, k: &str) -> Result<String, ApiError> {
    if k.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_MALFORMED_REQUEST",
            "an actor state key is empty",
        ));
    }
    Ok(format!("{}||{actor_type}||{actor_id}||{k}", rt.app_id()))
}

pub async fn get(
    rt: &Runtime,
    actor_type: &str,
    actor_id: &str,
    k: &str,
) -> Result<Option<StateValue>, ApiError> {
    super::check_names(actor_type, actor_id)?;
    let s = store(rt)?;
    let req = GetRequest {
        key: key(rt, actor_type, actor_id, k)?,
        ..Default::default()
    };
    s.store.get(req).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_ACTOR_STATE_GET",
            format!("error getting actor state: {e}"),
        )
    })
}

pub async fn transact(
    rt: &Runtime,
    actor_type: &str,
    actor_id: &str,
    ops: Vec<Op>,
) -> Result<(), ApiError> {
    super::check_names(actor_type, actor_id)?;
    let s = store(rt)?;
    if ops.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(match op {
            Op::Upsert {
                key: k,
                value,
                metadata,
            } => TransactionOp::Upsert(SetRequest {
                key: key(rt, actor_type, actor_id, &k)?,
                value,
                metadata: metadata.into_iter().collect(),
                ..Default::default()
            }),
            Op::Delete { key: k } => TransactionOp::Delete(DeleteRequest {
                key: key(rt, actor_type, actor_id, &k)?,
                ..Default::default()
            }),
        });
    }
    s.store.transact(out).await.map_err(|e| {
        let status = match e {
            crate::components::state::StateError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(
            status,
            tonic::Code::Internal,
            "ERR_ACTOR_STATE_TRANSACTION_SAVE",
            format!("error saving actor transaction state: {e}"),
        )
    })
}
