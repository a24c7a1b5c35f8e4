//! Where instances are kept: the actor state store (the one marked
//! `actorStateStore: "true"`), under the workflow actor's keys —
//! `<app>||dapr.internal.<ns>.<app>.workflow||<instance>||metadata`,
//! `…||history-000000`, `…||inbox-000000` — each event its own key
//! (protobuf), so a turn writes only what it adds: one transaction.

use super::history::Meta;
use crate::actors::state::{self, Op};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use tandem_proto::durabletask as dt;

pub fn history_key(i: u32) -> String {
    format!("history-{i:06}")
}

pub fn inbox_key(i: u32) -> String {
    format!("inbox-{i:06}")
}

pub const META: &str = "metadata";

pub fn upsert(key: String, value: Bytes) -> Op {
    Op::Upsert {
        key,
        value,
        metadata: BTreeMap::new(),
    }
}

pub fn delete(key: String) -> Op {
    Op::Delete { key }
}

pub fn put_event(key: String, e: &dt::HistoryEvent) -> Op {
    upsert(key, Bytes::from(e.encode_to_vec()))
}

pub fn put_meta(m: &Meta) -> Op {
    upsert(
        META.into(),
        Bytes::from(serde_json::to_vec(m).expect("metadata serialises")),
    )
}

/// An instance as stored: its metadata, history and inbox.
pub struct Stored {
    pub meta: Meta,
    pub history: Vec<dt::HistoryEvent>,
    pub inbox: Vec<dt::HistoryEvent>,
}

fn broken(id: &str, what: String) -> ApiError {
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::DataLoss,
        "ERR_GET_WORKFLOW",
        format!("workflow instance {id}: its stored state is unreadable: {what}"),
    )
}

/// Reads an instance (`None`: there is none).
pub async fn load(rt: &Runtime, actor_type: &str, id: &str) -> Result<Option<Stored>, ApiError> {
    let Some(raw) = state::get(rt, actor_type, id, META).await? else {
        return Ok(None);
    };
    let meta: Meta =
        serde_json::from_slice(&raw.data).map_err(|e| broken(id, format!("metadata: {e}")))?;
    let read = |key: String| async move {
        match state::get(rt, actor_type, id, &key).await? {
            Some(v) => dt::HistoryEvent::decode(v.data.as_ref())
                .map_err(|e| broken(id, format!("{key}: {e}"))),
            None => Err(broken(id, format!("{key} is missing"))),
        }
    };
    let history =
        futures_util::future::try_join_all((0..meta.history_len).map(|i| read(history_key(i))))
            .await?;
    let inbox =
        futures_util::future::try_join_all(meta.inbox.iter().map(|i| read(inbox_key(*i)))).await?;
    Ok(Some(Stored {
        meta,
        history,
        inbox,
    }))
}

pub async fn write(rt: &Runtime, actor_type: &str, id: &str, ops: Vec<Op>) -> Result<(), ApiError> {
    state::transact(rt, actor_type, id, ops).await
}
