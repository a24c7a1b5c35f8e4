//! `secretstores.local.env`: the sidecar's environment variables as secrets.
//! Each secret is `{name: value}`. Metadata `prefix` limits and strips a
//! prefix (`prefix: APP_` exposes `APP_DB` as `DB`).

use super::{Secret, SecretStore};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;

pub struct LocalEnvStore {
    prefix: String,
}

impl LocalEnvStore {
    pub fn new(metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            prefix: metadata.get("prefix").cloned().unwrap_or_default(),
        })
    }

    fn lookup(&self, key: &str) -> Option<String> {
        std::env::var(format!("{}{key}", self.prefix)).ok()
    }
}

impl SecretStore for LocalEnvStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
        _metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Option<Secret>, String>> {
        Box::pin(async move {
            Ok(self
                .lookup(key)
                .map(|v| BTreeMap::from([(key.to_string(), v)])))
        })
    }

    fn bulk_get<'a>(
        &'a self,
        _metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, Secret>, String>> {
        Box::pin(async move {
            Ok(std::env::vars()
                .filter_map(|(k, v)| {
                    let name = k.strip_prefix(&self.prefix)?.to_string();
                    (!name.is_empty()).then(|| (name.clone(), BTreeMap::from([(name, v)])))
                })
                .collect())
        })
    }
}
