//! `bindings.localstorage`: files under `rootPath`. Operations `create`
//! (metadata `fileName`, else a random UUID; answers `{"fileName": …}`),
//! `get`, `list` (every file, as paths relative to the root) and
//! `delete`. A name that would leave the root — `..`, an absolute path, a
//! symbolic link pointing out — is refused.
//!
//! As Dapr's component does, `create` stores the text of a JSON string
//! rather than its quotes, and base64 text decoded.

use super::*;
use base64::Engine;
use std::path::{Component, Path, PathBuf};

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(m: &Metadata) -> Result<Self, String> {
        let root = m.get("rootPath").filter(|v| !v.is_empty()).ok_or(
            "metadata `rootPath` is required: the folder files are read from and saved to",
        )?;
        std::fs::create_dir_all(root)
            .map_err(|e| format!("metadata `rootPath` `{root}`: cannot create it: {e}"))?;
        let root = std::fs::canonicalize(root)
            .map_err(|e| format!("metadata `rootPath` `{root}`: {e}"))?;
        Ok(Self { root })
    }

    /// Where `name` lives under the root; refused when it would leave it.
    fn path_of(&self, name: &str) -> Result<PathBuf, BindingError> {
        let outside = || {
            BindingError::BadRequest(format!(
                "file name `{name}` leaves the binding's rootPath; use a relative name without `..`"
            ))
        };
        let rel = Path::new(name);
        if name.is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(outside());
        }
        let path = self.root.join(rel);
        // A symbolic link inside the root may still point out of it.
        let mut probe = path.clone();
        while !probe.exists() {
            if !probe.pop() {
                break;
            }
        }
        match std::fs::canonicalize(&probe) {
            Ok(real) if real.starts_with(&self.root) => Ok(path),
            Ok(_) => Err(outside()),
            Err(e) => Err(BindingError::Failed(format!("{name}: {e}"))),
        }
    }

    fn create(&self, req: &OutputRequest) -> Result<OutputResponse, BindingError> {
        let name = req
            .metadata
            .get("fileName")
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let path = self.path_of(&name)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BindingError::Failed(format!("{name}: {e}")))?;
        }
        std::fs::write(&path, stored_bytes(&req.data))
            .map_err(|e| BindingError::Failed(format!("{name}: {e}")))?;
        Ok(OutputResponse {
            data: Some(
                serde_json::to_vec(&serde_json::json!({ "fileName": name }))
                    .expect("JSON")
                    .into(),
            ),
            metadata: Metadata::new(),
        })
    }

    fn get(&self, req: &OutputRequest) -> Result<OutputResponse, BindingError> {
        let name = required(&req.metadata, "fileName", "get")?;
        let path = self.path_of(name)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(OutputResponse {
                data: Some(bytes.into()),
                metadata: Metadata::new(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BindingError::BadRequest(
                format!("file `{name}` does not exist"),
            )),
            Err(e) => Err(BindingError::Failed(format!("{name}: {e}"))),
        }
    }

    fn list(&self) -> Result<OutputResponse, BindingError> {
        let mut names = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries =
                std::fs::read_dir(&dir).map_err(|e| BindingError::Failed(format!("list: {e}")))?;
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(path),
                    Ok(t) if t.is_file() => {
                        if let Ok(rel) = path.strip_prefix(&self.root) {
                            names.push(rel.to_string_lossy().into_owned());
                        }
                    }
                    _ => {}
                }
            }
        }
        names.sort();
        Ok(OutputResponse {
            data: Some(serde_json::to_vec(&names).expect("JSON").into()),
            metadata: Metadata::new(),
        })
    }

    fn delete(&self, req: &OutputRequest) -> Result<OutputResponse, BindingError> {
        let name = required(&req.metadata, "fileName", "delete")?;
        let path = self.path_of(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(OutputResponse::default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BindingError::BadRequest(
                format!("file `{name}` does not exist"),
            )),
            Err(e) => Err(BindingError::Failed(format!("{name}: {e}"))),
        }
    }
}

/// The bytes `create` stores: a JSON string's text, base64 decoded when
/// it is base64 (as Dapr's component does), else the data as given.
fn stored_bytes(data: &[u8]) -> Vec<u8> {
    let text = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::String(s)) => s,
        _ => match std::str::from_utf8(data) {
            Ok(s) => s.to_string(),
            Err(_) => return data.to_vec(),
        },
    };
    match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
        Ok(bytes) if !text.is_empty() => bytes,
        _ => text.into_bytes(),
    }
}

impl Binding for LocalStorage {
    fn operations(&self) -> Vec<&'static str> {
        vec!["create", "get", "list", "delete"]
    }

    fn invoke<'a>(
        &'a self,
        req: OutputRequest,
    ) -> BoxFuture<'a, Result<OutputResponse, BindingError>> {
        Box::pin(async move {
            // File I/O off the async workers.
            let this = LocalStorage {
                root: self.root.clone(),
            };
            tokio::task::spawn_blocking(move || match req.operation.as_str() {
                "create" => this.create(&req),
                "get" => this.get(&req),
                "list" => this.list(),
                "delete" => this.delete(&req),
                other => Err(unsupported(other)),
            })
            .await
            .map_err(|e| BindingError::Failed(format!("localstorage: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let s = LocalStorage::new(&Metadata::from([(
            "rootPath".to_string(),
            root.display().to_string(),
        )]))
        .unwrap();
        assert!(s.path_of("a/b.txt").is_ok());
        for bad in ["../x", "a/../../x", "/etc/passwd", ""] {
            assert!(
                matches!(s.path_of(bad), Err(BindingError::BadRequest(_))),
                "{bad}"
            );
        }
        // A link inside the root that points out of it.
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        assert!(matches!(
            s.path_of("out/secret"),
            Err(BindingError::BadRequest(_))
        ));
    }

    #[test]
    fn created_bytes_follow_dapr() {
        assert_eq!(stored_bytes(br#""Hello World""#), b"Hello World");
        assert_eq!(stored_bytes(br#""aGk=""#), b"hi", "base64 decoded");
        assert_eq!(stored_bytes(b"{\"a\":1}"), b"{\"a\":1}");
        assert_eq!(stored_bytes(&[0xff, 0x00]), vec![0xff, 0x00]);
    }
}
