//! The distributed lock building block (dapr-wire.md §1.10): a named
//! resource held by one owner until it unlocks it or the lease expires.
//! Keys are prefixed as state keys are (`keyPrefix`, default the app id),
//! so apps do not share locks unless they ask to.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use futures_util::future::BoxFuture;
use std::time::Duration;

/// Unlock's answer, with Dapr's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlockStatus {
    Success = 0,
    LockDoesNotExist = 1,
    LockBelongsToOthers = 2,
    InternalError = 3,
}

pub trait LockStore: Send + Sync {
    /// Takes `key` for `owner` for `lease` unless someone holds it; whether
    /// it was taken. Taking a lock one already holds fails too (as in Dapr:
    /// locks are not re-entrant).
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, String>>;

    fn unlock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<UnlockStatus, String>>;
}
