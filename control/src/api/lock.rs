//! Distributed lock (dapr-wire.md §1.10), shared by the HTTP and gRPC
//! APIs: input checked, the store found, the resource key prefixed.

use crate::components::LockComponent;
use crate::components::lock::UnlockStatus;
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::time::Duration;

fn store(rt: &Runtime, name: &str) -> Result<LockComponent, ApiError> {
    let snap = rt.snapshot();
    if snap.lock_stores.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::FailedPrecondition,
            "ERR_LOCK_STORE_NOT_CONFIGURED",
            "no lock store is configured: add a component of type lock.redis or lock.in-memory",
        ));
    }
    snap.lock_stores.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_LOCK_STORE_NOT_FOUND",
            format!(
                "lock store `{name}` is not found; configured lock stores: [{}]",
                snap.lock_stores
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn key(comp: &LockComponent, resource: &str) -> String {
    match &comp.prefix {
        Some(p) => format!("{p}||{resource}"),
        None => resource.to_string(),
    }
}

fn check(resource: &str, owner: &str) -> Result<(), ApiError> {
    if resource.is_empty() {
        return Err(ApiError::malformed(
            "`resourceId` is empty: name the resource to lock",
        ));
    }
    if owner.is_empty() {
        return Err(ApiError::malformed(
            "`lockOwner` is empty: name the owner (a random id per holder, e.g. a UUID)",
        ));
    }
    Ok(())
}

pub async fn try_lock(
    rt: &Runtime,
    store_name: &str,
    resource: &str,
    owner: &str,
    expiry_seconds: i64,
) -> Result<bool, ApiError> {
    let comp = store(rt, store_name)?;
    check(resource, owner)?;
    if expiry_seconds <= 0 {
        return Err(ApiError::malformed(format!(
            "`expiryInSeconds` is {expiry_seconds}; it must be a positive number of seconds"
        )));
    }
    comp.store
        .try_lock(
            &key(&comp, resource),
            owner,
            Duration::from_secs(expiry_seconds as u64),
        )
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_TRY_LOCK",
                format!("failed to lock `{resource}` in `{store_name}`: {e}"),
            )
        })
}

pub async fn unlock(
    rt: &Runtime,
    store_name: &str,
    resource: &str,
    owner: &str,
) -> Result<UnlockStatus, ApiError> {
    let comp = store(rt, store_name)?;
    check(resource, owner)?;
    comp.store
        .unlock(&key(&comp, resource), owner)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_UNLOCK",
                format!("failed to unlock `{resource}` in `{store_name}`: {e}"),
            )
        })
}
