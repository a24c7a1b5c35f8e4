//! `crypto.dapr.localstorage`: keys as files in a folder (metadata
//! `path`). A key's name is its file's path inside the folder (`name` or
//! `name/version`); names that could leave it — `..` anywhere, an absolute
//! path, a NUL — are refused. Each use reads the file again, as daprd does,
//! so a key replaced on disk is used at once.

use super::{KeyFuture, KeyStore, keys};
use std::collections::BTreeMap;
use std::path::{Component, PathBuf};

#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let path = m
            .get("path")
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .ok_or("metadata `path` is required: the folder that holds the keys")?;
        let root = PathBuf::from(path);
        let meta = std::fs::metadata(&root)
            .map_err(|e| format!("metadata `path`: could not stat path '{path}': {e}"))?;
        if !meta.is_dir() {
            return Err(format!("metadata `path`: path '{path}' is not a directory"));
        }
        Ok(Self { root })
    }

    /// The file of key `name`, never outside the folder.
    fn file(&self, name: &str) -> Result<PathBuf, String> {
        if name.is_empty() {
            return Err("the key name is empty".into());
        }
        if name.contains("..") || name.contains('\0') || name.contains('\\') {
            return Err(format!(
                "invalid key path: `{name}` cannot contain '..', '\\' or NUL"
            ));
        }
        let rel = PathBuf::from(name.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!("invalid key path: `{name}`"));
        }
        Ok(self.root.join(rel))
    }

    async fn read(&self, name: &str) -> Result<keys::Key, String> {
        let file = self.file(name)?;
        // The file is read through its resolved path, checked to be in the
        // folder: a symbolic link may not lead out of it, and one swapped
        // in after the check is not followed.
        let root = tokio::fs::canonicalize(&self.root)
            .await
            .map_err(|e| format!("failed to load key '{name}': the key folder: {e}"))?;
        let real = tokio::fs::canonicalize(&file)
            .await
            .map_err(|e| format!("failed to load key '{name}': {e}"))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "invalid key path: `{name}` leads outside the key folder"
            ));
        }
        let bytes = tokio::fs::read(&real)
            .await
            .map_err(|e| format!("failed to load key '{name}': {e}"))?;
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        keys::parse(&bytes, &ext).map_err(|e| format!("failed to parse key '{name}': {e}"))
    }
}

impl KeyStore for LocalStorage {
    fn key<'a>(&'a self, name: &'a str) -> KeyFuture<'a> {
        Box::pin(async move { self.read(name).await.map(std::sync::Arc::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::crypto::scheme::WrapAlgorithm;

    impl LocalStorage {
        async fn wrap_key(
            &self,
            name: &str,
            a: WrapAlgorithm,
            k: &[u8],
        ) -> Result<Vec<u8>, String> {
            let key = self
                .key(name)
                .await
                .map_err(|e| format!("failed to retrieve the key encryption key: {e}"))?;
            crate::components::crypto::wrap(&key, a, k)
        }

        async fn unwrap_key(
            &self,
            name: &str,
            a: WrapAlgorithm,
            w: &[u8],
        ) -> Result<Vec<u8>, String> {
            crate::components::crypto::unwrap(&*self.key(name).await?, a, w)
        }
    }

    #[tokio::test]
    async fn keys_stay_in_their_folder_and_wrap_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(keys.join("v")).unwrap();
        std::fs::write(keys.join("sym"), [7u8; 32]).unwrap();
        std::fs::write(keys.join("v/2"), [8u8; 32]).unwrap();
        std::fs::write(dir.path().join("outside"), [9u8; 32]).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), keys.join("link")).unwrap();
        let s = LocalStorage::new(&BTreeMap::from([(
            "path".to_string(),
            keys.display().to_string(),
        )]))
        .unwrap();
        let fk = [1u8; 32];
        for name in ["sym", "v/2", "/sym", "./sym"] {
            let w = s.wrap_key(name, WrapAlgorithm::A256Kw, &fk).await.unwrap();
            assert_eq!(w.len(), 40);
            assert_eq!(
                s.unwrap_key(name, WrapAlgorithm::A256Kw, &w).await.unwrap(),
                fk
            );
        }
        let w = s.wrap_key("sym", WrapAlgorithm::A256Kw, &fk).await.unwrap();
        assert!(
            s.unwrap_key("v/2", WrapAlgorithm::A256Kw, &w)
                .await
                .is_err()
        );
        for bad in [
            "../outside",
            "v/../../outside",
            "..",
            "a\\b",
            "",
            "x\0",
            "link",
        ] {
            let e = s
                .wrap_key(bad, WrapAlgorithm::A256Kw, &fk)
                .await
                .unwrap_err();
            assert!(
                e.contains("invalid key path") || e.contains("empty"),
                "{bad}: {e}"
            );
        }
        let e = s
            .wrap_key("missing", WrapAlgorithm::A256Kw, &fk)
            .await
            .unwrap_err();
        assert!(e.contains("failed to load key 'missing'"), "{e}");
        let e = s
            .wrap_key("sym", WrapAlgorithm::RsaOaep256, &fk)
            .await
            .unwrap_err();
        assert!(e.contains("key type mismatch"), "{e}");
        let e = s
            .wrap_key("sym", WrapAlgorithm::A128CbcNoPad, &fk)
            .await
            .unwrap_err();
        assert!(e.contains("unsupported algorithm"), "{e}");
        assert!(
            LocalStorage::new(&BTreeMap::new())
                .unwrap_err()
                .contains("`path`")
        );
        let file = BTreeMap::from([("path".to_string(), keys.join("sym").display().to_string())]);
        assert!(
            LocalStorage::new(&file)
                .unwrap_err()
                .contains("not a directory")
        );
    }
}
