//! `secretstores.local.file`: secrets from a JSON file. Nested objects are
//! flattened with `nestedSeparator` (default `:`) unless `multiValued` is
//! true, in which case each top-level key is one secret holding its nested
//! pairs. The file is read once at init, as Dapr does.

use super::{Secret, SecretStore};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct LocalFileStore {
    secrets: BTreeMap<String, Secret>,
    multi_valued: bool,
}

/// Secret files are configuration, not data.
const MAX_SECRETS_FILE: u64 = 16 << 20;

impl LocalFileStore {
    pub fn new(metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        let path = metadata
            .get("secretsFile")
            .filter(|p| !p.is_empty())
            .ok_or("metadata `secretsFile` is required: the path of a JSON file of secrets")?;
        let path = PathBuf::from(path);
        let separator = metadata
            .get("nestedSeparator")
            .cloned()
            .unwrap_or_else(|| ":".into());
        let multi_valued = match metadata.get("multiValued").map(|s| s.trim()) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!(
                    "metadata `multiValued` is `{other}`; expected true or false"
                ));
            }
        };
        let len = std::fs::metadata(&path)
            .map_err(|e| format!("cannot read secretsFile {}: {e}", path.display()))?
            .len();
        if len > MAX_SECRETS_FILE {
            return Err(format!(
                "secretsFile {} is {len} bytes; the limit is {MAX_SECRETS_FILE}",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read secretsFile {}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("secretsFile {} is not valid JSON: {e}", path.display()))?;
        let serde_json::Value::Object(top) = json else {
            return Err(format!(
                "secretsFile {} must hold a JSON object of secrets",
                path.display()
            ));
        };
        let mut secrets = BTreeMap::new();
        for (name, value) in top {
            if multi_valued {
                let mut pairs = BTreeMap::new();
                match value {
                    serde_json::Value::Object(inner) => {
                        for (k, v) in inner {
                            flatten(&k, &v, &separator, &mut pairs);
                        }
                    }
                    other => flatten(&name, &other, &separator, &mut pairs),
                }
                secrets.insert(name, pairs);
            } else {
                let mut flat = BTreeMap::new();
                flatten(&name, &value, &separator, &mut flat);
                for (k, v) in flat {
                    secrets.insert(k.clone(), BTreeMap::from([(k, v)]));
                }
            }
        }
        Ok(Self {
            secrets,
            multi_valued,
        })
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, sep: &str, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}{sep}{k}"), v, sep, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), String::new());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

impl SecretStore for LocalFileStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
        _metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Option<Secret>, String>> {
        Box::pin(async move {
            // Like Dapr's local file store: an unknown name is an error, not "empty".
            self.secrets
                .get(key)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("secret `{key}` not found in the secrets file"))
        })
    }

    fn bulk_get<'a>(
        &'a self,
        _metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, Secret>, String>> {
        Box::pin(async move { Ok(self.secrets.clone()) })
    }

    fn features(&self) -> Vec<&'static str> {
        if self.multi_valued {
            vec!["MULTIPLE_KEY_VALUES_PER_SECRET"]
        } else {
            Vec::new()
        }
    }
}
