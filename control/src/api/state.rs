//! The state API (dapr-wire.md §1.5, §6.1), shared by HTTP and gRPC: store
//! lookup, key prefixing, option parsing, calls into the store and the wire
//! errors. Values arrive here already encoded as the bytes to store.

use crate::components::StateComponent;
use crate::components::state::{
    Concurrency, Consistency, DeleteRequest, GetRequest, Metadata, SetRequest, StateError,
    StateValue, TransactionOp, feature,
};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::StatusCode;
use tonic::Code;

/// One item to save, as both protocols describe it.
#[derive(Clone, Debug, Default)]
pub struct SaveItem {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub metadata: Metadata,
    pub concurrency: String,
    pub consistency: String,
}

/// One transaction operation before validation.
#[derive(Clone, Debug)]
pub struct TxItem {
    pub operation: String,
    pub item: SaveItem,
}

/// One answer of a bulk get: the key as the caller wrote it, and the value,
/// nothing (missing) or the per-key error.
pub struct BulkItem {
    pub key: String,
    pub result: Result<Option<StateValue>, String>,
}

/// Runs one store call under the component's outbound resiliency policy.
/// Only store failures are retried; ETag, input and support errors are
/// final answers.
async fn guarded<T, F, Fut>(comp: &StateComponent, mut op: F) -> Result<T, StateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    use tandem_proxy::resilience::{FailureKind, ResilienceError};
    if comp.outbound.is_empty() {
        return op().await;
    }
    comp.outbound
        .run(op, |e| match e {
            StateError::Store(_) => FailureKind::Transient,
            _ => FailureKind::Permanent,
        })
        .await
        .map_err(|e| match e {
            ResilienceError::Inner(e) => e,
            other => StateError::Store(other.to_string()),
        })
}

fn lookup(rt: &Runtime, name: &str) -> Result<StateComponent, ApiError> {
    let snap = rt.snapshot();
    if snap.state_stores.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::FailedPrecondition,
            "ERR_STATE_STORE_NOT_CONFIGURED",
            "state store is not configured: add a component of type state.* to a resources dir",
        )
        .meta("appID", rt.app_id()));
    }
    snap.state_stores.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "ERR_STATE_STORE_NOT_FOUND",
            format!(
                "state store {name} is not found; configured state stores: [{}]",
                snap.state_stores
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .meta("appID", rt.app_id())
    })
}

/// The key as stored: `<prefix>||<key>`. `||` in a user key is refused.
fn stored_key(comp: &StateComponent, store: &str, key: &str) -> Result<String, ApiError> {
    if key.contains("||") {
        return Err(
            ApiError::malformed(format!("input key/keyPrefix '{key}' can't contain '||'"))
                .with_reason("DAPR_STATE_ILLEGAL_KEY")
                .on("state", store)
                .field(key),
        );
    }
    if key.is_empty() {
        return Err(ApiError::malformed("\"key\" is a required field"));
    }
    Ok(stored_key_for(comp, key))
}

/// The key as stored, for a key already known to be valid.
pub(crate) fn stored_key_for(comp: &StateComponent, key: &str) -> String {
    match &comp.prefix {
        Some(p) => format!("{p}||{key}"),
        None => key.to_string(),
    }
}

fn store_error(code: &'static str, verb: &str, store: &str, e: StateError) -> ApiError {
    match e {
        StateError::EtagMismatch(m) => ApiError::new(
            StatusCode::CONFLICT,
            Code::Aborted,
            code,
            format!(
                "failed {verb} state with key in state store {store}: possible etag mismatch: {m}"
            ),
        ),
        StateError::InvalidEtag(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            code,
            format!("failed {verb} state in state store {store}: invalid etag value: {m}"),
        ),
        StateError::BadRequest(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            code,
            format!("failed {verb} state in state store {store}: {m}"),
        ),
        StateError::NotSupported(m) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unimplemented,
            "ERR_STATE_STORE_NOT_SUPPORTED",
            format!("state store {store}: {m}"),
        ),
        StateError::Store(m) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            code,
            format!("failed {verb} state in state store {store}: {m}"),
        ),
    }
}

/// Unknown option strings are the store's refusal in Dapr: a 500.
fn options(
    code: &'static str,
    verb: &str,
    store: &str,
    concurrency: &str,
    consistency: &str,
) -> Result<(Concurrency, Consistency), ApiError> {
    let c = Concurrency::parse(concurrency)
        .map_err(|m| store_error(code, verb, store, StateError::Store(m)))?;
    let s = Consistency::parse(consistency)
        .map_err(|m| store_error(code, verb, store, StateError::Store(m)))?;
    Ok((c, s))
}

fn set_request(
    comp: &StateComponent,
    store: &str,
    code: &'static str,
    item: SaveItem,
) -> Result<SetRequest, ApiError> {
    let (concurrency, consistency) =
        options(code, "saving", store, &item.concurrency, &item.consistency)?;
    Ok(SetRequest {
        key: stored_key(comp, store, &item.key)?,
        value: item.value,
        etag: item.etag.filter(|e| !e.is_empty()),
        metadata: item.metadata,
        concurrency,
        consistency,
    })
}

fn delete_request(
    comp: &StateComponent,
    store: &str,
    code: &'static str,
    item: SaveItem,
) -> Result<DeleteRequest, ApiError> {
    let (concurrency, consistency) = options(
        code,
        "deleting",
        store,
        &item.concurrency,
        &item.consistency,
    )?;
    Ok(DeleteRequest {
        key: stored_key(comp, store, &item.key)?,
        etag: item.etag.filter(|e| !e.is_empty()),
        metadata: item.metadata,
        concurrency,
        consistency,
    })
}

pub async fn get(
    rt: &Runtime,
    store: &str,
    key: &str,
    consistency: &str,
    metadata: Metadata,
) -> Result<Option<StateValue>, ApiError> {
    let comp = lookup(rt, store)?;
    let consistency = Consistency::parse(consistency)
        .map_err(|m| store_error("ERR_STATE_GET", "getting", store, StateError::Store(m)))?;
    let req = GetRequest {
        key: stored_key(&comp, store, key)?,
        consistency,
        metadata,
    };
    guarded(&comp, || comp.store.get(req.clone()))
        .await
        .map_err(|e| store_error("ERR_STATE_GET", "getting", store, e))
}

/// Saves items in order; the first failure stops and is returned.
pub async fn save(rt: &Runtime, store: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
    let comp = lookup(rt, store)?;
    let reqs = items
        .into_iter()
        .map(|i| set_request(&comp, store, "ERR_STATE_SAVE", i))
        .collect::<Result<Vec<_>, _>>()?;
    for req in reqs {
        guarded(&comp, || comp.store.set(req.clone()))
            .await
            .map_err(|e| store_error("ERR_STATE_SAVE", "saving", store, e))?;
    }
    Ok(())
}

pub async fn delete(rt: &Runtime, store: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
    let comp = lookup(rt, store)?;
    let reqs = items
        .into_iter()
        .map(|i| delete_request(&comp, store, "ERR_STATE_DELETE", i))
        .collect::<Result<Vec<_>, _>>()?;
    for req in reqs {
        guarded(&comp, || comp.store.delete(req.clone()))
            .await
            .map_err(|e| store_error("ERR_STATE_DELETE", "deleting", store, e))?;
    }
    Ok(())
}

/// Gets many keys with up to `parallelism` in flight (0 = all at once).
/// Order is kept; per-key failures are reported per key.
pub async fn bulk_get(
    rt: &Runtime,
    store: &str,
    keys: Vec<String>,
    parallelism: usize,
    metadata: Metadata,
) -> Result<Vec<BulkItem>, ApiError> {
    use futures_util::stream::{self, StreamExt};
    let comp = lookup(rt, store)?;
    let limit = if parallelism == 0 {
        keys.len().max(1)
    } else {
        parallelism
    };
    let results = stream::iter(keys.into_iter().map(|key| {
        let comp = comp.clone();
        let metadata = metadata.clone();
        async move {
            let result = match stored_key(&comp, store, &key) {
                Err(e) => Err(e.message),
                Ok(full) => {
                    let req = GetRequest {
                        key: full,
                        consistency: Consistency::Eventual,
                        metadata,
                    };
                    guarded(&comp, || comp.store.get(req.clone()))
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            BulkItem { key, result }
        }
    }))
    .buffered(limit)
    .collect::<Vec<_>>()
    .await;
    Ok(results)
}

/// Runs a transaction; request metadata is merged into each operation
/// (the operation's own keys win).
pub async fn transaction(
    rt: &Runtime,
    store: &str,
    ops: Vec<TxItem>,
    metadata: Metadata,
) -> Result<(), ApiError> {
    let comp = lookup(rt, store)?;
    if !comp.store.has(feature::TRANSACTIONAL) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unimplemented,
            "ERR_STATE_STORE_NOT_SUPPORTED",
            format!("state store {store} doesn't support transactions"),
        )
        .with_reason("DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED")
        .on("state", store));
    }
    if let Some(max) = comp.store.max_transaction_ops()
        && ops.len() > max
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS",
            format!(
                "the transaction contains {} operations, which is more than what the state store supports: {max}",
                ops.len()
            ),
        )
        .on("state", store)
        .meta("currentOpsTransaction", ops.len().to_string())
        .meta("maxOpsPerTransaction", max.to_string()));
    }
    let mut staged = Vec::with_capacity(ops.len());
    // Outbox projections: published in place of the saved value, not saved.
    let mut projections = std::collections::BTreeMap::new();
    for op in ops {
        let mut item = op.item;
        for (k, v) in &metadata {
            item.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if item
            .metadata
            .get(crate::outbox::PROJECTION)
            .is_some_and(|v| v == "true")
        {
            if comp.outbox.is_none() || op.operation != "upsert" {
                return Err(ApiError::malformed(format!(
                    "operation on key {} has metadata {}: only upserts on a state store with an outbox (outboxPublishPubsub) can be projections",
                    item.key,
                    crate::outbox::PROJECTION
                )));
            }
            let key = stored_key(&comp, store, &item.key)?;
            item.metadata.remove(crate::outbox::PROJECTION);
            projections.insert(key, (item.value, item.metadata));
            continue;
        }
        staged.push(match op.operation.as_str() {
            "upsert" => {
                TransactionOp::Upsert(set_request(&comp, store, "ERR_STATE_TRANSACTION", item)?)
            }
            "delete" => {
                TransactionOp::Delete(delete_request(&comp, store, "ERR_STATE_TRANSACTION", item)?)
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::Unimplemented,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    format!("operation type {other} not supported; expected upsert or delete"),
                ));
            }
        });
    }
    for key in projections.keys() {
        let saved = staged
            .iter()
            .any(|op| matches!(op, TransactionOp::Upsert(s) if &s.key == key));
        if !saved {
            return Err(ApiError::malformed(format!(
                "the outbox projection of key {} has no upsert of the same key in the transaction",
                key.rsplit("||").next().unwrap_or(key)
            )));
        }
    }
    if staged.is_empty() {
        return Ok(());
    }
    if let Some(cfg) = comp.outbox.clone() {
        crate::outbox::stage(rt, store, &comp, &cfg, &mut staged, &projections).await?;
    }
    guarded(&comp, || comp.store.transact(staged.clone()))
        .await
        .map_err(|e| {
            let mut err = store_error(
                "ERR_STATE_TRANSACTION",
                "executing a transaction on",
                store,
                e,
            );
            // Inside a transaction every failure, ETag mismatches included, is a 500.
            if err.error_code == "ERR_STATE_TRANSACTION" {
                err.http = StatusCode::INTERNAL_SERVER_ERROR;
                err.grpc = Code::Internal;
            }
            err
        })
}

/// Runs a state query (alpha) over the caller's own keys; keys come back
/// without their prefix.
pub async fn query(
    rt: &Runtime,
    store: &str,
    body: &[u8],
) -> Result<crate::components::state::query::QueryResult, ApiError> {
    let comp = lookup(rt, store)?;
    if !comp.store.has(feature::QUERY_API) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unimplemented,
            "ERR_STATE_STORE_NOT_SUPPORTED",
            format!("state store {store} doesn't support the query API"),
        )
        .with_reason("DAPR_STATE_QUERYING_NOT_SUPPORTED")
        .on("state", store));
    }
    // A caller's mistake: 400 (daprd answers 500 ERR_STATE_QUERY).
    let q = crate::components::state::query::parse(body)
        .map_err(|m| ApiError::malformed(format!("state query: {m}")))?;
    let mut result = guarded(&comp, || comp.store.query(q.clone(), comp.prefix.clone()))
        .await
        .map_err(|e| {
            let mut err = store_error("ERR_STATE_QUERY", "querying", store, e).on("state", store);
            err.http = StatusCode::INTERNAL_SERVER_ERROR;
            err
        })?;
    for item in &mut result.items {
        if let Some((_, rest)) = item.key.split_once("||") {
            item.key = rest.to_string();
        }
    }
    Ok(result)
}
