//! A job's trigger to the app, as daprd sends it. HTTP: `POST /job/<name>`,
//! `content-type: application/json`, the body the job's data — a JSON
//! value's JSON for jobs made over HTTP (`google.protobuf.Value` data),
//! else the data's raw bytes, whitespace trimmed. gRPC:
//! `AppCallback/OnJobEvent`, then `AppCallbackAlpha/OnJobEventAlpha1` when
//! the app does not implement the first. A 2xx (or OK) is taken; a 404 (or
//! NOT_FOUND) too — the app has no handler, which no retry changes; any
//! other answer is a failure the job's failure policy handles.

use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use tandem_proto::runtime::v1 as rtpb;
use tandem_proxy::AppChannel;
use tandem_stateful::job::Job;
use tandem_stateful::scheduler::Deliver;

/// The type URL of data given as a JSON value (the HTTP API's).
pub const VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.Value";

pub struct ToApp {
    pub app: Arc<AppChannel>,
    pub metrics: Arc<tandem_proxy::telemetry::Metrics>,
}

/// The HTTP body of a trigger.
pub fn http_body(job: &Job) -> bytes::Bytes {
    let Some(data) = &job.data else {
        return bytes::Bytes::new();
    };
    if data.type_url == VALUE_TYPE {
        // Stored as the JSON text the caller gave.
        return bytes::Bytes::from(data.value.clone());
    }
    let v = &data.value;
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    bytes::Bytes::copy_from_slice(&v[start..end.max(start)])
}

/// The `Any` the app gets over gRPC.
pub fn any_of(job: &Job) -> Option<prost_types::Any> {
    job.data.as_ref().map(|d| {
        if d.type_url == VALUE_TYPE {
            // JSON text → the protobuf Value it stands for.
            let value = serde_json::from_slice::<serde_json::Value>(&d.value)
                .map(|v| crate::delivery::to_prost(&v))
                .unwrap_or_default();
            prost_types::Any {
                type_url: VALUE_TYPE.into(),
                value: prost::Message::encode_to_vec(&value),
            }
        } else {
            prost_types::Any {
                type_url: d.type_url.clone(),
                value: d.value.clone(),
            }
        }
    })
}

async fn over_http(app: &AppChannel, job: Job) -> Result<(), String> {
    let name = job.name.trim_start_matches('/').to_string();
    let path = format!("/job/{}", escape(&name));
    let req = Request::builder()
        .method(Method::POST)
        .uri(path.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(tandem_proxy::invoke::full(http_body(&job)))
        .map_err(|e| e.to_string())?;
    let resp = app.send_http(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        Ok(())
    } else {
        Err(format!("the app answered {status} to POST {path}"))
    }
}

/// The name as a path segment: what a segment cannot carry as it is,
/// percent-encoded (sub-delimiters, `:`, `@` and `|` stay readable).
fn escape(name: &str) -> String {
    crate::components::metadata::percent_encode_keeping(name, b"!$&'()*+,;=:@|")
}

async fn over_grpc(
    app: &AppChannel,
    channel: tonic::transport::Channel,
    job: Job,
) -> Result<(), String> {
    let request = rtpb::JobEventRequest {
        name: job.name.clone(),
        data: any_of(&job),
        method: format!("job/{}", job.name),
        content_type: job
            .data
            .as_ref()
            .map(|d| d.type_url.clone())
            .unwrap_or_default(),
        http_extension: Some(tandem_proto::common::v1::HttpExtension {
            verb: tandem_proto::common::v1::http_extension::Verb::Post as i32,
            querystring: String::new(),
        }),
    };
    let _permit = app.permit().await;
    let mut req = tonic::Request::new(request.clone());
    app.add_grpc_token(&mut req);
    let first = rtpb::app_callback_client::AppCallbackClient::new(channel.clone())
        .on_job_event(req)
        .await;
    let result = match first {
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            let mut req = tonic::Request::new(request);
            app.add_grpc_token(&mut req);
            rtpb::app_callback_alpha_client::AppCallbackAlphaClient::new(channel)
                .on_job_event_alpha1(req)
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    };
    match result {
        Ok(()) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(format!(
            "OnJobEvent failed: {:?}: {}",
            s.code(),
            s.message()
        )),
    }
}

impl Deliver for ToApp {
    fn deliver(&self, job: Job, due: i64) -> BoxFuture<'static, Result<(), String>> {
        let (app, metrics) = (self.app.clone(), self.metrics.clone());
        Box::pin(async move {
            let result = match app.grpc_channel() {
                Some(channel) => over_grpc(&app, channel, job).await,
                None => over_http(&app, job).await,
            };
            let late = u64::try_from(tandem_stateful::scheduler::now_ms() - due).unwrap_or(0);
            metrics.job_fired(result.is_ok(), std::time::Duration::from_millis(late));
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_stateful::job::Data;

    #[test]
    fn bodies_as_daprd_sends_them() {
        let job = |type_url: &str, value: &[u8]| Job {
            name: "j".into(),
            data: Some(Data {
                type_url: type_url.into(),
                value: value.to_vec(),
            }),
            ..Job::default()
        };
        assert_eq!(http_body(&job(VALUE_TYPE, b"{\"a\":1}")), &b"{\"a\":1}"[..]);
        assert_eq!(http_body(&job("", b"  {\"x\": 2}\n")), &b"{\"x\": 2}"[..]);
        assert_eq!(http_body(&job("t", b" \n ")), &b""[..]);
        assert_eq!(http_body(&Job::default()), &b""[..]);
        assert_eq!(escape("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(escape("my||job@x"), "my||job@x");
    }
}
