//! `crypto.dapr.jwks`: keys from a JSON Web Key Set — metadata `jwks`
//! holds the set itself, a file path, or an `http(s)://` URL it is fetched
//! from (`requestTimeout`, default 30 s). Keys are named by their `kid`.
//! The set is read when the component is made (a change to the resource
//! makes it again).

use super::{KeyFuture, KeyStore, keys};
use http_body_util::BodyExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Jwks {
    keys: BTreeMap<String, Arc<keys::Key>>,
}

/// A set larger than this is refused.
const MAX_SET: usize = 4 << 20;

async fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let client = tandem_proxy::invoke::OutsideTls::default().client(false)?;
    let req = ::http::Request::get(url)
        .header(::http::header::ACCEPT, "application/json")
        .body(tandem_proxy::invoke::full(bytes::Bytes::new()))
        .map_err(|e| format!("metadata `jwks` `{url}`: {e}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {}", tandem_proxy::app_channel::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        http_body_util::Limited::new(resp.into_body(), MAX_SET)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| format!("{url}: reading the set: {e}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

impl Jwks {
    pub async fn load(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let source = m
            .get("jwks")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or("metadata `jwks` is required: the key set itself, a file path or a URL")?;
        let timeout =
            crate::components::metadata::duration(m, "requestTimeout", Duration::from_secs(30))?;
        let bytes = if source.starts_with('{') {
            source.as_bytes().to_vec()
        } else if source.starts_with("http://") || source.starts_with("https://") {
            fetch(source, timeout).await?
        } else {
            tokio::fs::read(source)
                .await
                .map_err(|e| format!("metadata `jwks`: cannot read `{source}`: {e}"))?
        };
        let keys = keys::parse_set(&bytes).map_err(|e| format!("metadata `jwks`: {e}"))?;
        Ok(Self {
            keys: keys.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        })
    }
}

impl KeyStore for Jwks {
    fn key<'a>(&'a self, name: &'a str) -> KeyFuture<'a> {
        Box::pin(async move {
            self.keys.get(name).cloned().ok_or_else(|| {
                format!(
                    "key '{name}' not found in the key set; its keys: [{}]",
                    self.keys.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        })
    }
}
