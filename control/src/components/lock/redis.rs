//! `lock.redis`: `SET key owner NX PX <lease>` takes a lock; unlocking
//! is one Lua script that deletes the key only for its owner, so the check
//! and the delete cannot be split by another client. Redis expires leases.

use super::*;
use ::redis::Script;
use ::redis::aio::ConnectionManager;

const UNLOCK: &str = r#"
local v = redis.call("GET", KEYS[1])
if not v then return 1 end
if v ~= ARGV[1] then return 2 end
redis.call("DEL", KEYS[1])
return 0
"#;

pub struct RedisLock {
    conn: ConnectionManager,
    unlock: Script,
}

impl RedisLock {
    pub async fn connect(m: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            conn: crate::components::metadata::redis_connection(m, "lock.redis").await?,
            unlock: Script::new(UNLOCK),
        })
    }
}

impl LockStore for RedisLock {
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let set: Option<String> = ::redis::cmd("SET")
                .arg(key)
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(lease.as_millis().max(1) as u64)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(set.is_some())
        })
    }

    fn unlock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<UnlockStatus, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let code: i64 = self
                .unlock
                .key(key)
                .arg(owner)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(match code {
                0 => UnlockStatus::Success,
                1 => UnlockStatus::LockDoesNotExist,
                _ => UnlockStatus::LockBelongsToOthers,
            })
        })
    }
}
