//! `tandem invoke` and `tandem publish`: the Dapr CLI's commands of the same
//! names, with its flags and lines, through the sidecar of an app started
//! with `tandem run`.

use super::launch::{failure, success};
use crate::home::RunRecord;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The app to invoke.
    #[arg(long = "app-id", short = 'a')]
    app_id: String,
    /// The method (path) to call on it, query string included.
    #[arg(long = "method", short = 'm')]
    method: String,
    /// The HTTP verb.
    #[arg(long = "verb", short = 'v', default_value = "POST")]
    verb: String,
    /// The request body.
    #[arg(long = "data", short = 'd')]
    data: Option<String>,
    /// A file holding the request body.
    #[arg(long = "data-file", short = 'f')]
    data_file: Option<PathBuf>,
    /// A request header, `Name: value` (or `Name=value`); repeatable.
    #[arg(long = "header", short = 'H')]
    header: Vec<String>,
}

#[derive(clap::Args)]
pub struct PublishArgs {
    /// The app whose sidecar publishes.
    #[arg(long = "publish-app-id", short = 'i')]
    publish_app_id: String,
    /// The pub/sub component.
    #[arg(long = "pubsub", short = 'p')]
    pubsub: String,
    /// The topic.
    #[arg(long = "topic", short = 't')]
    topic: String,
    /// The event's data (JSON).
    #[arg(long = "data", short = 'd')]
    data: Option<String>,
    /// A file holding the event's data.
    #[arg(long = "data-file", short = 'f')]
    data_file: Option<PathBuf>,
    /// Publish metadata as a JSON object, e.g. '{"ttlInSeconds":"10"}'.
    #[arg(long = "metadata", short = 'm')]
    metadata: Option<String>,
}

/// `--data` or `--data-file`, not both; the CLI's messages.
fn payload(
    data: Option<String>,
    file: Option<PathBuf>,
    what: &str,
) -> std::result::Result<Vec<u8>, String> {
    match (data, file) {
        (Some(_), Some(_)) => Err(format!(
            "Only one of --data and --data-file allowed in the same {what} command"
        )),
        (Some(d), None) => Ok(d.into_bytes()),
        (None, Some(f)) => std::fs::read(&f)
            .map_err(|e| format!("Error reading payload from '{}'. Error: {e}", f.display())),
        (None, None) => Ok(Vec::new()),
    }
}

fn sidecar_port(app_id: &str) -> Option<u16> {
    RunRecord::read(app_id)
        .filter(|r| crate::home::pid_alive(r.cli_pid))
        .map(|r| r.http_port)
}

/// Characters a request target cannot carry as they are.
fn clean_target(s: &str) -> bool {
    !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub async fn invoke(args: InvokeArgs) -> Result<u8> {
    let fail = |msg: String| {
        failure(&msg);
        Ok(1)
    };
    let body = match payload(args.data, args.data_file, "invoke") {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let verb = args.verb.to_ascii_uppercase();
    if verb.is_empty() || !verb.chars().all(|c| c.is_ascii_alphabetic()) {
        return fail(format!(
            "error invoking app {}: `{}` is not an HTTP verb",
            args.app_id, args.verb
        ));
    }
    let method = args.method.trim_start_matches('/');
    if !clean_target(method) || !clean_target(&args.app_id) {
        return fail(format!(
            "error invoking app {}: the app id and method cannot hold spaces or control characters (percent-encode them)",
            args.app_id
        ));
    }
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    for h in &args.header {
        let Some((k, v)) = h.split_once(':').or_else(|| h.split_once('=')) else {
            return fail(format!("header `{h}`: expected `Name: value`"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_graphic())
            || v.chars().any(char::is_control)
        {
            return fail(format!("header `{h}`: not a valid header name and value"));
        }
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        headers.push((k.to_string(), v.to_string()));
    }
    let Some(port) = sidecar_port(&args.app_id) else {
        return fail(format!(
            "error invoking app {}: app ID {} not found",
            args.app_id, args.app_id
        ));
    };
    let path = format!("/v1.0/invoke/{}/method/{method}", args.app_id);
    let result = call(port, verb, path, headers, body).await;
    match result {
        Ok((status, _, body)) if (200..400).contains(&status) => {
            if !body.is_empty() {
                println!("{}", String::from_utf8_lossy(&body));
            }
            success("App invoked successfully");
            Ok(0)
        }
        Ok((status, reason_text, body)) => fail(format!(
            "error invoking app {}: {status} {reason_text}{}",
            args.app_id,
            if body.is_empty() {
                String::new()
            } else {
                format!(": {}", String::from_utf8_lossy(&body))
            }
        )),
        Err(e) => fail(format!("error invoking app {}: {e}", args.app_id)),
    }
}

async fn call(
    port: u16,
    verb: String,
    path: String,
    mut headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    if let Some(t) = std::env::var("DAPR_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        headers.push(("dapr-api-token".into(), t));
    }
    tokio::task::spawn_blocking(move || super::local_http_with(port, &verb, &path, &headers, &body))
        .await
        .map_err(std::io::Error::other)?
}

/// A JSON object with every required CloudEvent attribute goes as a
/// CloudEvent (the sidecar keeps it as it is); anything else as JSON data.
fn is_cloud_event(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| {
        ["id", "source", "specversion", "type", "data"]
            .iter()
            .all(|k| v.get(k).is_some())
    })
}

pub async fn publish(args: PublishArgs) -> Result<u8> {
    let fail = |msg: String| {
        failure(&msg);
        Ok(1)
    };
    let body = match payload(args.data, args.data_file, "publish") {
        Ok(b) => b,
        Err(m) => return fail(m),
    };
    let mut query = Vec::new();
    if let Some(m) = &args.metadata {
        let parsed: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(m) {
            Ok(v) => v,
            Err(e) => return fail(format!("Error parsing metadata as JSON. Error: {e}")),
        };
        for (k, v) in parsed {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            query.push(format!(
                "metadata.{}={}",
                tandem_control::components::metadata::percent_encode(&k),
                tandem_control::components::metadata::percent_encode(&v)
            ));
        }
    }
    let Some(port) = sidecar_port(&args.publish_app_id) else {
        return fail("couldn't find a running Dapr instance".to_string());
    };
    let mut path = format!(
        "/v1.0/publish/{}/{}",
        tandem_control::components::metadata::percent_encode(&args.pubsub),
        tandem_control::components::metadata::percent_encode(&args.topic)
    );
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let content_type = if is_cloud_event(&body) {
        "application/cloudevents+json"
    } else {
        "application/json"
    };
    let headers = vec![("Content-Type".to_string(), content_type.to_string())];
    match call(port, "POST".into(), path, headers, body).await {
        Ok((status, _, _)) if (200..300).contains(&status) => {
            success("Event published successfully");
            Ok(0)
        }
        Ok((status, _, body)) => fail(format!(
            "Error publishing topic {}: unexpected status code {status} on publishing to {} in {}{}",
            args.topic,
            args.topic,
            args.pubsub,
            if body.is_empty() {
                String::new()
            } else {
                format!(": {}", String::from_utf8_lossy(&body))
            }
        )),
        Err(e) => fail(format!("Error publishing topic {}: {e}", args.topic)),
    }
}

#[derive(clap::Args)]
pub struct VersionArgs {
    /// `json` for `{"Cli version": …, "Runtime version": …}`.
    #[arg(long, short = 'o')]
    output: Option<String>,
}

pub fn version_text() -> String {
    let v = env!("CARGO_PKG_VERSION");
    format!("CLI version: {v} \nRuntime version: {v}\n")
}

pub async fn version(args: VersionArgs) -> Result<u8> {
    let v = env!("CARGO_PKG_VERSION");
    match args.output.as_deref() {
        None | Some("") => print!("{}", version_text()),
        Some("json") => println!(
            "{}",
            serde_json::json!({"Cli version": v, "Runtime version": v})
        ),
        Some(_) => {
            failure("An invalid output format was specified.");
            return Ok(1);
        }
    }
    Ok(0)
}
