//! Configuration (dapr-wire.md §1.9), shared by the HTTP and gRPC APIs:
//! get items, subscribe to their changes — pushed to an HTTP app at
//! `POST /configuration/<store>/<key>` or streamed to a gRPC caller —
//! and unsubscribe by id.

use crate::components::configuration::{ChangeHandler, ConfigurationStore, Items, Metadata};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::sync::Arc;

fn store(rt: &Runtime, name: &str) -> Result<Arc<dyn ConfigurationStore>, ApiError> {
    let snap = rt.snapshot();
    if snap.configuration_stores.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::FailedPrecondition,
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
            "no configuration store is configured: add a component of type configuration.redis or configuration.postgresql",
        ));
    }
    snap.configuration_stores.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_CONFIGURATION_STORE_NOT_FOUND",
            format!(
                "configuration store `{name}` is not found; configured stores: [{}]",
                snap.configuration_stores
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
    keys: &[String],
    metadata: &Metadata,
) -> Result<Items, ApiError> {
    let store = store(rt, store_name)?;
    store.get(keys, metadata).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_CONFIGURATION_GET",
            format!("failed to get {keys:?} from configuration store `{store_name}`: {e}"),
        )
    })
}

fn subscribe_failed(store: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "ERR_CONFIGURATION_SUBSCRIBE",
        format!("failed to subscribe to configuration store `{store}`: {e}"),
    )
}

/// Where a subscription's changes go, with its id.
pub type Deliver = Arc<dyn Fn(&str, Items) + Send + Sync>;

/// Subscribes; every change goes to `deliver` with the subscription id.
/// Returns the id.
pub async fn subscribe(
    rt: &Runtime,
    store_name: &str,
    keys: Vec<String>,
    metadata: Metadata,
    deliver: Deliver,
) -> Result<String, ApiError> {
    let store = store(rt, store_name)?;
    let id = uuid::Uuid::new_v4().to_string();
    let sub_id = id.clone();
    let handler: ChangeHandler = Arc::new(move |items| deliver(&sub_id, items));
    let handle = store
        .subscribe(keys, metadata, handler)
        .await
        .map_err(|e| subscribe_failed(store_name, e))?;
    rt.keep_configuration_subscription(id.clone(), store_name.to_string(), handle);
    Ok(id)
}

/// Changes pushed to an HTTP app: one `POST /configuration/<store>/<key>`
/// per changed key, body `{id, items: {key: item}}`, in order of change.
pub async fn subscribe_http(
    rt: &Runtime,
    store_name: &str,
    keys: Vec<String>,
    metadata: Metadata,
) -> Result<String, ApiError> {
    let Some(app) = rt.app.clone() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_APP_CHANNEL_NIL",
            "configuration updates are pushed to the app, and this sidecar has no --app-port",
        ));
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Items)>();
    let store = store_name.to_string();
    let pusher = tokio::spawn(async move {
        while let Some((id, items)) = rx.recv().await {
            for (key, item) in items {
                let body = serde_json::json!({ "id": id, "items": { &key: item } });
                let req = http::Request::builder()
                    .method(http::Method::POST)
                    // Keys come from the store: encoded, so any key is a path.
                    .uri(format!(
                        "/configuration/{}/{}",
                        crate::components::metadata::percent_encode(&store),
                        crate::components::metadata::percent_encode(&key)
                    ))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(tandem_proxy::invoke::full(body.to_string()))
                    .expect("valid request parts");
                match app.send_http(req).await {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    Ok(r) => {
                        tracing::warn!(store = %store, key = %key, status = %r.status(), "the app did not take a configuration update")
                    }
                    Err(e) => {
                        tracing::warn!(store = %store, key = %key, error = %e, "configuration update not delivered")
                    }
                }
            }
        }
    });
    let deliver = Arc::new(move |id: &str, items: Items| {
        let _ = tx.send((id.to_string(), items));
    });
    let id = subscribe(rt, store_name, keys, metadata, deliver).await;
    if id.is_err() {
        pusher.abort();
    }
    // The pusher ends when the subscription (holding the sender) is dropped.
    id
}

pub fn unsubscribe(rt: &Runtime, store_name: &str, id: &str) -> Result<(), ApiError> {
    store(rt, store_name)?;
    if rt.drop_configuration_subscription(store_name, id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_CONFIGURATION_UNSUBSCRIBE",
            format!("configuration store `{store_name}` has no subscription `{id}`"),
        ))
    }
}
