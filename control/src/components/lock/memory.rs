//! `lock.in-memory`: locks of this sidecar's process (one host, one
//! sidecar; gone with it). Expired leases are treated as free.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Default)]
pub struct MemoryLock {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryLock {
    pub fn new(_m: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self::default())
    }
}

impl LockStore for MemoryLock {
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, String>> {
        let mut held = self.held.lock().expect("lock table");
        let now = Instant::now();
        let free = held.get(key).is_none_or(|(_, until)| *until <= now);
        if free {
            held.insert(key.to_string(), (owner.to_string(), now + lease));
        }
        Box::pin(async move { Ok(free) })
    }

    fn unlock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<UnlockStatus, String>> {
        let mut held = self.held.lock().expect("lock table");
        let status = match held.get(key) {
            Some((_, until)) if *until <= Instant::now() => {
                held.remove(key);
                UnlockStatus::LockDoesNotExist
            }
            None => UnlockStatus::LockDoesNotExist,
            Some((o, _)) if o != owner => UnlockStatus::LockBelongsToOthers,
            Some(_) => {
                held.remove(key);
                UnlockStatus::Success
            }
        };
        Box::pin(async move { Ok(status) })
    }
}
