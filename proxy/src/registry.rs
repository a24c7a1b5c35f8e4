//! Local name resolution (the default, single host, no multicast): every
//! sidecar writes one small file `<dir>/<app-id>/<pid>-<port>.json` naming
//! its internal (sidecar-to-sidecar) address, and removes it when it stops.
//! Resolving an app id reads that folder and keeps the instances whose
//! process is still alive, so a sidecar killed without cleaning up is never
//! chosen (and its file is removed by the next reader). Choosing among
//! live instances is `crate::balance`'s work; caching the answer is
//! `crate::resolve::Resolver`'s.

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
}

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
        Self { dir: dir.into() }
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

    /// Every live instance of `app_id` in `namespace`.
    pub fn instances(&self, app_id: &str, namespace: &str) -> Vec<Instance> {
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

impl crate::resolve::Resolve for LocalRegistry {
    fn lookup<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> crate::resolve::Lookup<'a> {
        let found = self.instances(app_id, namespace);
        Box::pin(async move { Ok(found.into_iter().map(|i| i.address).collect()) })
    }

    fn register(&self, me: &crate::resolve::Me) -> Result<Box<dyn Send + Sync>, String> {
        let entry = LocalRegistry::register(
            self,
            &Instance {
                app_id: me.app_id.clone(),
                namespace: me.namespace.clone(),
                address: me.address,
                pid: std::process::id(),
            },
        )
        .map_err(|e| {
            format!(
                "cannot register app {} in {}: {e}",
                me.app_id,
                self.dir.display()
            )
        })?;
        Ok(Box::new(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_resolve_and_clean_up() {
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
        assert_eq!(reg.instances("orders", ""), vec![me.clone()]);
        assert!(!ghost_entry.file.exists(), "the stale entry was removed");
        drop(entry);
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
