//! The loopback control API, under `/v1.0-alpha1/tandem/` on the Dapr HTTP
//! port (same API-token rule as every other route):
//!
//! - `GET status`: the generation serving, whether hot reload watches,
//!   the loaded resources (kind, name, file:line, status), the last
//!   reload's result and the recent ones that changed something or were
//!   refused, the start time, the ports bound, mTLS and the app's health;
//! - `POST reload`: read everything again now; 200 with the outcome, or
//!   400 with the refusal (nothing changed);
//! - `PUT resources/<name>`: a YAML document (one or more resources)
//!   written to `<first resources dir>/<name>.yaml` — the file stays the
//!   source of truth — and applied; a document that does not load, or a
//!   change that is refused, is not written (the file is put back) and
//!   the answer is 400 with the reason;
//! - `DELETE resources/<name>`: the file removed and the change applied.

use super::{ApiResponse, handlers::json, wire};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::{Request, StatusCode};
use hyper::body::Incoming;

fn reloader(rt: &Runtime) -> Result<&std::sync::Arc<crate::reload::Reloader>, ApiError> {
    rt.reloader().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "ERR_TANDEM_RELOAD",
            "the sidecar is still starting",
        )
    })
}

fn refused(message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_TANDEM_RELOAD",
        message,
    )
}

fn outcome(o: crate::reload::Outcome) -> Result<ApiResponse, ApiError> {
    if o.ok {
        Ok(json(&serde_json::to_value(&o).expect("JSON")))
    } else {
        Err(refused(o.error.unwrap_or_default()))
    }
}

pub fn status(rt: &Runtime) -> Result<ApiResponse, ApiError> {
    let r = reloader(rt)?;
    let snap = rt.snapshot();
    let mut resources = Vec::new();
    for l in &snap.resources.components {
        let name = &l.resource.metadata.name;
        resources.push(serde_json::json!({
            "kind": "Component",
            "name": name,
            "type": l.resource.spec.type_,
            "source": l.source.to_string(),
            "status": if snap.instances.contains_key(name) { "loaded" } else { "failed (ignoreErrors)" },
        }));
    }
    let mut others = |kind: &str, items: Vec<(&String, &tandem_config::SourceRef)>| {
        for (name, source) in items {
            resources.push(serde_json::json!({
                "kind": kind, "name": name, "source": source.to_string(), "status": "loaded",
            }));
        }
    };
    let r_ = &snap.resources;
    let o = &rt.options;
    others(
        "Subscription",
        r_.subscriptions
            .iter()
            .map(|l| (&l.resource.metadata.name, &l.source))
            .collect(),
    );
    others(
        "Resiliency",
        r_.resiliencies
            .iter()
            .map(|l| (&l.resource.metadata.name, &l.source))
            .collect(),
    );
    others(
        "HTTPEndpoint",
        r_.http_endpoints
            .iter()
            .map(|l| (&l.resource.metadata.name, &l.source))
            .collect(),
    );
    Ok(json(&serde_json::json!({
        "appId": rt.app_id(),
        "generation": snap.generation,
        "hotReload": crate::reload::hot_reload_enabled(&snap.configuration),
        "resourcesDir": r.resources_dir().map(|d| d.display().to_string()),
        "resources": resources,
        "skipped": r_.skipped.iter().map(|(at, why)| serde_json::json!({"source": at.to_string(), "reason": why})).collect::<Vec<_>>(),
        "lastReload": r.last(),
        "recentReloads": r.recent(),
        "startedAt": crate::clock::rfc3339_utc(
            rt.started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        ),
        "uptimeSecs": rt.started.elapsed().map_or(0, |d| d.as_secs()),
        "ports": {
            "http": o.http_port(),
            "grpc": o.grpc_port(),
            "metrics": o.enable_metrics.then(|| o.metrics_port_or_default()),
            "app": o.app_port,
        },
        "mtls": o.enable_mtls,
        // null when the sidecar does not probe the app's health.
        "appHealthy": o.enable_app_health_check.then(|| rt.app_health.is_healthy()),
    })))
}

pub async fn reload(rt: &Runtime) -> Result<ApiResponse, ApiError> {
    outcome(reloader(rt)?.reload("api").await)
}

/// `<name>.yaml` in the first resources dir; names are plain file names.
fn document_path(rt: &Runtime, name: &str) -> Result<std::path::PathBuf, ApiError> {
    let r = reloader(rt)?;
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::malformed(format!(
            "resource document name `{name}`: use letters, digits, `-`, `_` and `.` (it becomes <name>.yaml)"
        )));
    }
    let dir = r.resources_dir().ok_or_else(|| {
        refused("this sidecar runs on its embedded defaults; start it with --resources-path to apply resources".into())
    })?;
    let file = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    Ok(dir.join(format!("{file}.yaml")))
}

pub async fn put(
    rt: &Runtime,
    name: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let path = document_path(rt, name)?;
    let body = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::malformed("the document is not UTF-8 text"))?;
    // Loads on its own first: a broken document never reaches the dir.
    let ctx = tandem_config::LoadContext {
        app_id: rt.app_id().to_string(),
        namespace: rt.options.namespace.clone(),
    };
    tandem_config::load_str(&text, &path, &ctx, &mut Default::default())
        .map_err(|e| refused(e.to_string()))?;
    let before = std::fs::read(&path).ok();
    write_atomically(&path, text.as_bytes())?;
    let o = reloader(rt)?.reload("api: put").await;
    if !o.ok {
        restore(&path, before);
    }
    outcome(o)
}

pub async fn delete(rt: &Runtime, name: &str) -> Result<ApiResponse, ApiError> {
    let path = document_path(rt, name)?;
    let Ok(before) = std::fs::read(&path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "ERR_TANDEM_RESOURCE_NOT_FOUND",
            format!("{} does not exist", path.display()),
        ));
    };
    std::fs::remove_file(&path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let o = reloader(rt)?.reload("api: delete").await;
    if !o.ok {
        restore(&path, Some(before));
    }
    outcome(o)
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), ApiError> {
    // Written aside (a hidden name the loader skips) and renamed.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("doc")
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| refused(format!("{}: {e}", path.display())))
}

/// Puts a document back as it was before a refused change.
fn restore(path: &std::path::Path, before: Option<Vec<u8>>) {
    let put_back = match before {
        Some(bytes) => write_atomically(path, &bytes).map_err(|e| e.message),
        None => std::fs::remove_file(path).map_err(|e| e.to_string()),
    };
    if let Err(e) = put_back {
        tracing::error!(file = %path.display(), error = %e, "a refused document could not be put back");
    }
}
