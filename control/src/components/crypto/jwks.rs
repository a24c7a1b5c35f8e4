//! `crypto.dapr.jwks`: keys from a JSON Web Key Set — metadata `jwks`
//! holds the set itself (JSON, or that JSON in base64), a file path, or an
//! `http(s)://` URL it is fetched from (`requestTimeout`, default 30 s).
//! Keys are named by their `kid`. As daprd does, a URL's set is fetched
//! again every `minRefreshInterval` (default 10 m) and a file's when the
//! file changes (checked each second); a set that fails to load or parse
//! leaves the keys as they were, with a warning. The refresh stops when
//! the component goes (a change to the resource makes a new one).

use super::{KeyFuture, KeyStore, keys};
use http_body_util::BodyExt;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

type KeySet = BTreeMap<String, Arc<keys::Key>>;

pub struct Jwks {
    keys: Arc<RwLock<KeySet>>,
}

/// Where the set comes from.
enum Source {
    Inline,
    Url(String, Duration),
    File(String),
}

/// How often a file's set is checked for a change.
const FILE_CHECK: Duration = Duration::from_secs(1);

fn parse(bytes: &[u8]) -> Result<KeySet, String> {
    let keys = keys::parse_set(bytes).map_err(|e| format!("metadata `jwks`: {e}"))?;
    Ok(keys.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
}

/// A file's identity for change checks: its length and time of change.
fn stamp(path: &str) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Loads the set again when it may have changed, while the component
/// lives.
fn refresh(keys: Weak<RwLock<KeySet>>, source: Source, timeout: Duration) {
    let (url, every, file) = match source {
        Source::Inline => return,
        Source::Url(url, every) => (Some(url), every, None),
        Source::File(path) => (None, FILE_CHECK, Some(path)),
    };
    tokio::spawn(async move {
        let mut seen = file.as_deref().and_then(stamp);
        loop {
            tokio::time::sleep(every).await;
            if keys.strong_count() == 0 {
                return;
            }
            let loaded = match (&url, &file) {
                (Some(url), _) => fetch(url, timeout).await,
                (_, Some(path)) => {
                    let now = stamp(path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    tokio::fs::read(path)
                        .await
                        .map_err(|e| format!("cannot read `{path}`: {e}"))
                }
                _ => return,
            };
            let Some(keys) = keys.upgrade() else { return };
            match loaded.and_then(|b| parse(&b)) {
                Ok(set) => {
                    tracing::debug!(keys = set.len(), "crypto.dapr.jwks: key set loaded again");
                    *keys.write().unwrap_or_else(|e| e.into_inner()) = set;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "crypto.dapr.jwks: the key set could not be loaded again; its keys stay as they were"
                ),
            }
        }
    });
}

/// A set larger than this is refused.
const MAX_SET: usize = 4 << 20;

async fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let shown = crate::components::metadata::shown_url(url);
    let client = tandem_proxy::invoke::OutsideTls::default().client(false)?;
    let req = ::http::Request::get(url)
        .header(::http::header::ACCEPT, "application/json")
        .body(tandem_proxy::invoke::full(bytes::Bytes::new()))
        .map_err(|e| format!("metadata `jwks` `{shown}`: {e}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{shown}: {}", tandem_proxy::app_channel::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{shown} answered {}", resp.status()));
        }
        http_body_util::Limited::new(resp.into_body(), MAX_SET)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| format!("{shown}: reading the set: {e}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{shown}: no answer within {timeout:?}"))?
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
        let every = crate::components::metadata::duration(
            m,
            "minRefreshInterval",
            Duration::from_secs(600),
        )?;
        if every.is_zero() {
            return Err("metadata `minRefreshInterval` must be more than zero".into());
        }
        let (bytes, from) = if source.starts_with('{') {
            (source.as_bytes().to_vec(), Source::Inline)
        } else if source.starts_with("http://") || source.starts_with("https://") {
            (
                fetch(source, timeout).await?,
                Source::Url(source.to_string(), every),
            )
        } else {
            match tokio::fs::read(source).await {
                Ok(bytes) => (bytes, Source::File(source.to_string())),
                Err(io) => {
                    use base64::Engine;
                    // The set in base64 (standard alphabet), as daprd takes
                    // it. The value is not echoed: it may hold keys.
                    let compact: String = source.split_whitespace().collect();
                    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
                        Ok(b) if b.first() == Some(&b'{') => (b, Source::Inline),
                        _ => {
                            return Err(format!(
                                "metadata `jwks` is not a key set (JSON, or JSON in base64), an http(s) URL, or a file that can be read (as a file: {io})"
                            ));
                        }
                    }
                }
            }
        };
        let keys = Arc::new(RwLock::new(parse(&bytes)?));
        refresh(Arc::downgrade(&keys), from, timeout);
        Ok(Self { keys })
    }
}

impl KeyStore for Jwks {
    fn key<'a>(&'a self, name: &'a str) -> KeyFuture<'a> {
        Box::pin(async move {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.get(name)
                .cloned()
                .ok_or_else(|| format!("key '{name}' not found in the key set"))
        })
    }
}
