//! Local name resolution (the default, single host, no multicast): every
//! sidecar writes one small file `<dir>/<app-id>/<pid>-<port>.json` naming
//! its internal (sidecar-to-sidecar) address, and removes it when it stops.
//! Resolving an app id reads that folder and keeps the instances whose
//! process is still alive, so a sidecar killed without cleaning up is never
//! chosen (and its file is removed by the next reader). Choosing among
//! live instances is `crate::balance`'s work.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub app_id: String,
    pub namespace: String,
    pub address: SocketAddr,
    pub pid: u32,
}

pub struct LocalRegistry {
    dir: PathBuf,
    /// What a folder held when last read: reading it on every call would
    /// cost more than the call. Entries live `CACHE_TTL`, and go at once
    /// when a caller finds an instance unreachable (`forget`).
    cache: std::sync::Mutex<std::collections::HashMap<(String, String), Seen>>,
}

/// When a folder was read, and the live instances it held.
type Seen = (std::time::Instant, Vec<Instance>);

const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// This sidecar's entry; removed on drop.
pub struct Registration {
    file: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// An app id is a folder name: nothing that could climb out of the registry.
fn valid_id(app_id: &str) -> bool {
    !app_id.is_empty() && app_id != "." && app_id != ".." && !app_id.contains(['/', '\\', '\0'])
}

impl LocalRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache: Default::default(),
        }
    }

    pub fn register(&self, me: &Instance) -> std::io::Result<Registration> {
        if !valid_id(&me.app_id) {
            return Err(std::io::Error::other(format!(
                "app id `{}` cannot be registered",
                me.app_id
            )));
        }
        let folder = self.dir.join(&me.app_id);
        std::fs::create_dir_all(&folder)?;
        let file = folder.join(format!("{}-{}.json", me.pid, me.address.port()));
        // Written aside and renamed, so a reader never sees half a file.
        let tmp = folder.join(format!(".{}-{}.tmp", me.pid, me.address.port()));
        std::fs::write(&tmp, serde_json::to_vec(me).expect("JSON"))?;
        std::fs::rename(&tmp, &file)?;
        Ok(Registration { file })
    }

    /// Every live instance of `app_id` in `namespace`, as read at most a
    /// second ago.
    pub fn instances(&self, app_id: &str, namespace: &str) -> Vec<Instance> {
        let key = (app_id.to_string(), namespace.to_string());
        if let Some((at, found)) = self.cache.lock().expect("registry cache").get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return found.clone();
        }
        let found = self.read(app_id, namespace);
        self.cache
            .lock()
            .expect("registry cache")
            .insert(key, (std::time::Instant::now(), found.clone()));
        found
    }

    /// Drops what is remembered of `app_id`: the next call reads afresh.
    pub fn forget(&self, app_id: &str, namespace: &str) {
        self.cache
            .lock()
            .expect("registry cache")
            .remove(&(app_id.to_string(), namespace.to_string()));
    }

    fn read(&self, app_id: &str, namespace: &str) -> Vec<Instance> {
        if !valid_id(app_id) {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(self.dir.join(app_id)) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let Ok(instance) = serde_json::from_slice::<Instance>(&text) else {
                continue;
            };
            if !alive(instance.pid) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if instance.namespace == namespace {
                found.push(instance);
            }
        }
        found.sort_by_key(|i| (i.pid, i.address));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_resolve_and_forget() {
        let dir = std::env::temp_dir().join(format!("tandem-registry-{}", std::process::id()));
        let reg = LocalRegistry::new(&dir);
        let me = Instance {
            app_id: "orders".into(),
            namespace: String::new(),
            address: "127.0.0.1:4000".parse().unwrap(),
            pid: std::process::id(),
        };
        let entry = reg.register(&me).unwrap();
        assert_eq!(reg.instances("orders", ""), vec![me.clone()]);
        assert_eq!(reg.instances("orders", "prod"), vec![], "other namespace");
        assert_eq!(reg.instances("billing", ""), vec![]);
        assert_eq!(reg.instances("../orders", ""), vec![]);
        // A dead process's entry is skipped and removed.
        let ghost = Instance {
            pid: u32::MAX - 1,
            address: "127.0.0.1:4001".parse().unwrap(),
            ..me.clone()
        };
        let ghost_entry = reg.register(&ghost).unwrap();
        assert_eq!(reg.instances("orders", ""), vec![me.clone()], "cached");
        reg.forget("orders", "");
        assert_eq!(reg.instances("orders", ""), vec![me.clone()]);
        assert!(!ghost_entry.file.exists(), "the stale entry was removed");
        drop(entry);
        reg.forget("orders", "");
        assert_eq!(reg.instances("orders", ""), vec![], "gone after drop");
        assert!(
            reg.register(&Instance {
                app_id: "a/b".into(),
                ..me
            })
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
