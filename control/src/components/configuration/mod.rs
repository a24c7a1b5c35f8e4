//! The configuration building block (dapr-wire.md §1.9): read items by key
//! and be told when they change. A store answers `{value, version,
//! metadata}` per key; subscriptions and delivery to the app belong to
//! `crate::api::configuration`.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

pub use super::pubsub::SubscriptionHandle;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

pub type Metadata = BTreeMap<String, String>;

/// One item; empty fields are left out of its JSON, as daprd's `omitempty`
/// tags do (`{"orderId2":{"value":"102"}}`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Item {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

pub type Items = BTreeMap<String, Item>;

/// Told the items that changed; a deleted key comes with an empty value
/// and version.
pub type ChangeHandler = Arc<dyn Fn(Items) + Send + Sync>;

pub trait ConfigurationStore: Send + Sync {
    /// The items of `keys` that exist (all items when `keys` is empty).
    fn get<'a>(
        &'a self,
        keys: &'a [String],
        metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<Items, String>>;

    /// Calls `handler` with every change to `keys` (any key when empty)
    /// until the handle drops.
    fn subscribe(
        &self,
        keys: Vec<String>,
        metadata: Metadata,
        handler: ChangeHandler,
    ) -> BoxFuture<'_, Result<SubscriptionHandle, String>>;
}
