//! The secrets API (dapr-wire.md §1.8, §6.4): store lookup, scoping, errors.

use crate::components::secretstores::Secret;
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::collections::BTreeMap;
use tonic::Code;

fn store<'a>(
    snap: &'a crate::snapshot::Snapshot,
    name: &str,
) -> Result<&'a std::sync::Arc<dyn crate::components::secretstores::SecretStore>, ApiError> {
    if snap.secret_stores.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::FailedPrecondition,
            "ERR_SECRET_STORES_NOT_CONFIGURED",
            "secret store is not configured: add a component of type secretstores.* to a resources dir",
        ));
    }
    snap.secret_stores.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            Code::InvalidArgument,
            "ERR_SECRET_STORE_NOT_FOUND",
            format!(
                "failed finding secret store with key {name}; configured secret stores: [{}]",
                snap.secret_stores
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

pub async fn get(
    rt: &Runtime,
    store_name: &str,
    key: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<Option<Secret>, ApiError> {
    let snap = rt.snapshot();
    let s = store(&snap, store_name)?;
    if let Some(scope) = snap.configuration.spec.secret_scope(store_name)
        && !scope.allows(key)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "ERR_PERMISSION_DENIED",
            format!("access denied by policy to get \"{key}\" from \"{store_name}\""),
        ));
    }
    s.get(key, metadata).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "ERR_SECRET_GET",
            format!("failed getting secret with key {key} from secret store {store_name}: {e}"),
        )
    })
}

/// All secrets the app may see; names the scope denies are left out.
pub async fn bulk(
    rt: &Runtime,
    store_name: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Secret>, ApiError> {
    let snap = rt.snapshot();
    let s = store(&snap, store_name)?;
    let mut all = s.bulk_get(metadata).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "ERR_SECRET_GET",
            format!("failed getting secrets from secret store {store_name}: {e}"),
        )
    })?;
    if let Some(scope) = snap.configuration.spec.secret_scope(store_name) {
        all.retain(|k, _| scope.allows(k));
    }
    Ok(all)
}
