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
    let mut m = std::borrow::Cow::Borrowed(m);
    if m.kind != super::history::META_KIND {
        m.to_mut().kind = super::history::META_KIND.into();
    }
    upsert(
        META.into(),
        Bytes::from(serde_json::to_vec(&*m).expect("metadata serialises")),
    )
}

/// One page of the app's instance ids, through the actor state store's
/// query API (the metadata values carry `kind: dapr.workflow`): `None`
/// when the store has no query API.
pub async fn list(
    rt: &Runtime,
    actor_type: &str,
    page_size: Option<u32>,
    token: Option<&str>,
) -> Result<Option<(Vec<String>, Option<String>)>, ApiError> {
    use crate::components::state::{feature, query};
    let s = state::store(rt)?;
    if !s.store.has(feature::QUERY_API) {
        return Ok(None);
    }
    let offset = match token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::new(
                http::StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "ERR_MALFORMED_REQUEST",
                format!("continuation token `{t}` is not one this sidecar gave"),
            )
        })?,
    };
    let q = query::Query {
        filter: Some(query::Filter::Eq(
            vec!["kind".into()],
            serde_json::Value::String(super::history::META_KIND.into()),
        )),
        sort: Vec::new(),
        limit: page_size.filter(|n| *n > 0).map(u64::from),
        offset,
    };
    // The store adds the `||` after the prefix.
    let prefix = format!("{}||{actor_type}", rt.app_id());
    let r = s.store.query(q, Some(prefix.clone())).await.map_err(|e| {
        ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_STATE_QUERY",
            format!("listing workflow instances failed: {e}"),
        )
    })?;
    let ids = r
        .items
        .iter()
        .filter_map(|i| {
            i.key
                .strip_prefix(&prefix)?
                .strip_prefix("||")?
                .strip_suffix("||metadata")
        })
        .map(str::to_string)
        .collect();
    Ok(Some((ids, r.token)))
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
