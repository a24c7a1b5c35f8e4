//! The `SecretStore` building block: trait, features, and the local stores.

pub mod local_env;
pub mod local_file;

use futures_util::future::BoxFuture;
use std::collections::BTreeMap;

pub type Secret = BTreeMap<String, String>;

/// A secret store. Values are maps because a secret may hold several
/// key/value pairs (`multiValued`).
pub trait SecretStore: Send + Sync {
    /// `Ok(None)`: the store has no such secret.
    fn get<'a>(
        &'a self,
        key: &'a str,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Option<Secret>, String>>;

    fn bulk_get<'a>(
        &'a self,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, Secret>, String>>;

    /// Capabilities shown in the metadata API.
    fn features(&self) -> Vec<&'static str> {
        Vec::new()
    }
}
