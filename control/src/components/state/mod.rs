//! The `StateStore` building block: the trait every store implements, the
//! request types, and the concurrency/TTL rules they share so every store
//! behaves the same (Dapr's in-memory store is the reference, dapr-wire §6.1).
//!
//! Stores see full keys (already prefixed); prefixing, value encoding and the
//! wire errors belong to `crate::api::state`.

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod query;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sqlite;

pub use crate::clock::{now_ms, rfc3339_utc};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::Duration;

pub type Metadata = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Concurrency {
    FirstWrite,
    #[default]
    LastWrite,
}

impl Concurrency {
    /// `""` is the store default (last-write); anything else unknown is an
    /// error, as in Dapr.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "last-write" => Ok(Concurrency::LastWrite),
            "first-write" => Ok(Concurrency::FirstWrite),
            other => Err(format!(
                "unrecognized concurrency model '{other}'; expected first-write or last-write"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Eventual,
    Strong,
}

impl Consistency {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "eventual" => Ok(Consistency::Eventual),
            "strong" => Ok(Consistency::Strong),
            other => Err(format!(
                "unrecognized consistency model '{other}'; expected eventual or strong"
            )),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct GetRequest {
    pub key: String,
    pub consistency: Consistency,
    pub metadata: Metadata,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateValue {
    pub data: Bytes,
    pub etag: String,
    /// `ttlExpireTime` when the item expires.
    pub metadata: Metadata,
}

#[derive(Clone, Debug, Default)]
pub struct SetRequest {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub metadata: Metadata,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteRequest {
    pub key: String,
    pub etag: Option<String>,
    pub metadata: Metadata,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
}

#[derive(Clone, Debug)]
pub enum TransactionOp {
    Upsert(SetRequest),
    Delete(DeleteRequest),
}

impl TransactionOp {
    pub fn key(&self) -> &str {
        match self {
            TransactionOp::Upsert(s) => &s.key,
            TransactionOp::Delete(d) => &d.key,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The ETag did not match, or first-write found the key present.
    #[error("possible etag mismatch: {0}")]
    EtagMismatch(String),
    /// The ETag is not of the form this store uses.
    #[error("invalid etag value: {0}")]
    InvalidEtag(String),
    /// Bad request metadata (e.g. `ttlInSeconds`).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotSupported(String),
    /// The store itself failed (connection, disk, …).
    #[error("{0}")]
    Store(String),
}

/// Capabilities, as the metadata API names them.
pub mod feature {
    pub const ETAG: &str = "ETAG";
    pub const TRANSACTIONAL: &str = "TRANSACTIONAL";
    pub const TTL: &str = "TTL";
    pub const QUERY_API: &str = "QUERY_API";
    pub const ACTOR: &str = "ACTOR";
}

pub type StateFuture<'a, T> = BoxFuture<'a, Result<T, StateError>>;

pub trait StateStore: Send + Sync {
    fn features(&self) -> Vec<&'static str>;

    fn get<'a>(&'a self, req: GetRequest) -> StateFuture<'a, Option<StateValue>>;

    fn set<'a>(&'a self, req: SetRequest) -> StateFuture<'a, ()>;

    fn delete<'a>(&'a self, req: DeleteRequest) -> StateFuture<'a, ()>;

    /// All-or-nothing. Only for stores with `TRANSACTIONAL`.
    fn transact<'a>(&'a self, ops: Vec<TransactionOp>) -> StateFuture<'a, ()> {
        let _ = ops;
        Box::pin(async {
            Err(StateError::NotSupported(
                "this state store does not support transactions".into(),
            ))
        })
    }

    /// Runs a query over the stored JSON values of keys starting with
    /// `key_prefix`. Only for stores with `QUERY_API`.
    fn query<'a>(
        &'a self,
        q: query::Query,
        key_prefix: Option<String>,
    ) -> StateFuture<'a, query::QueryResult> {
        let _ = (q, key_prefix);
        Box::pin(async {
            Err(StateError::NotSupported(
                "this state store does not support the query API".into(),
            ))
        })
    }

    /// The most operations one transaction may hold, if the store has a cap.
    fn max_transaction_ops(&self) -> Option<usize> {
        None
    }

    fn has(&self, feature: &str) -> bool {
        self.features().contains(&feature)
    }
}

/// Dapr's write rule, shared by every store: a given ETag must match the
/// stored one; first-write without an ETag only inserts; otherwise upsert.
pub fn check_write(
    key: &str,
    current_etag: Option<&str>,
    etag: Option<&str>,
    concurrency: Concurrency,
) -> Result<(), StateError> {
    match (etag.filter(|e| !e.is_empty()), current_etag) {
        (Some(given), Some(current)) if given == current => Ok(()),
        (Some(_), _) => Err(StateError::EtagMismatch(format!(
            "key `{key}`: the ETag does not match the stored item"
        ))),
        (None, Some(_)) if concurrency == Concurrency::FirstWrite => {
            Err(StateError::EtagMismatch(format!(
                "key `{key}` already exists and first-write concurrency was asked without an ETag"
            )))
        }
        (None, _) => Ok(()),
    }
}

/// The delete rule: a given ETag must match; without one, delete whatever is
/// there (a missing key is not an error).
pub fn check_delete(
    key: &str,
    current_etag: Option<&str>,
    etag: Option<&str>,
) -> Result<(), StateError> {
    match etag.filter(|e| !e.is_empty()) {
        Some(given) if current_etag == Some(given) => Ok(()),
        Some(_) => Err(StateError::EtagMismatch(format!(
            "key `{key}`: the ETag does not match the stored item"
        ))),
        None => Ok(()),
    }
}

/// `ttlInSeconds` from item metadata: `Some(d)` for a positive TTL, `None`
/// for absent, `-1` or zero (no expiry).
pub fn ttl(metadata: &Metadata) -> Result<Option<Duration>, StateError> {
    let Some(raw) = metadata.get("ttlInSeconds") else {
        return Ok(None);
    };
    let n: i64 = raw.trim().parse().map_err(|_| {
        StateError::BadRequest(format!(
            "incorrect value for metadata 'ttlInSeconds': `{raw}` is not a whole number of seconds"
        ))
    })?;
    if n < -1 {
        return Err(StateError::BadRequest(format!(
            "incorrect value for metadata 'ttlInSeconds': {n}; expected -1 (never expire) or more"
        )));
    }
    Ok((n > 0).then(|| Duration::from_secs(n as u64)))
}

/// The `ttlExpireTime` response metadata for an expiry in Unix ms.
pub fn expiry_metadata(expires_at_ms: Option<i64>) -> Metadata {
    let mut m = Metadata::new();
    if let Some(ms) = expires_at_ms {
        m.insert("ttlExpireTime".into(), rfc3339_utc(ms));
    }
    m
}

pub fn new_etag() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `LIKE` pattern matching every key that starts with `prefix`.
pub fn like_prefix(prefix: Option<&str>) -> String {
    match prefix {
        None => "%".into(),
        Some(p) => {
            let escaped = p
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("{escaped}||%")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rules() {
        use Concurrency::*;
        assert!(check_write("k", None, None, LastWrite).is_ok());
        assert!(check_write("k", Some("a"), None, LastWrite).is_ok());
        assert!(check_write("k", None, None, FirstWrite).is_ok());
        assert!(check_write("k", Some("a"), None, FirstWrite).is_err());
        assert!(check_write("k", Some("a"), Some("a"), FirstWrite).is_ok());
        assert!(check_write("k", Some("a"), Some("b"), LastWrite).is_err());
        assert!(
            check_write("k", None, Some("a"), LastWrite).is_err(),
            "an ETag needs the item"
        );
        assert!(check_delete("k", None, None).is_ok());
        assert!(check_delete("k", Some("a"), Some("b")).is_err());
    }

    #[test]
    fn ttl_values() {
        let m = |v: &str| Metadata::from([("ttlInSeconds".to_string(), v.to_string())]);
        assert_eq!(ttl(&m("5")).unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(ttl(&m("-1")).unwrap(), None);
        assert_eq!(ttl(&m("0")).unwrap(), None);
        assert!(ttl(&m("soon")).is_err());
        assert!(ttl(&m("-5")).is_err());
        assert_eq!(ttl(&Metadata::new()).unwrap(), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_756_249_000), "2026-11-27T05:10:49Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
