//! The HTTP client the model providers share: JSON in, JSON out, the
//! provider's own error text surfaced, 4xx (but 408 and 429) marked as
//! not worth a retry.

use super::ConverseError;
use http_body_util::BodyExt;
use std::time::Duration;
use tandem_proxy::invoke::{HttpsClient, OutsideTls};

/// An answer larger than this is refused (a chat completion is kilobytes).
const MAX_ANSWER: usize = 16 << 20;

pub struct ProviderClient {
    client: HttpsClient,
    timeout: Duration,
}

impl ProviderClient {
    /// `timeout`: metadata `timeout`, a duration (default 5 minutes: models
    /// can take long).
    pub fn new(m: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self {
            client: OutsideTls::default().client(false)?,
            timeout: crate::components::metadata::duration(m, "timeout", Duration::from_secs(300))?,
        })
    }

    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ConverseError> {
        // Errors name the endpoint without its user, password or query.
        let shown = crate::components::metadata::shown_url(url);
        let mut builder = ::http::Request::post(url)
            .header(::http::header::CONTENT_TYPE, "application/json")
            .header(::http::header::ACCEPT, "application/json");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder
            .body(tandem_proxy::invoke::full(bytes::Bytes::from(
                serde_json::to_vec(body).unwrap_or_default(),
            )))
            .map_err(|e| ConverseError::Refused(format!("{shown}: {e}")))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                ConverseError::Failed(format!(
                    "{}: {}",
                    shown,
                    tandem_proxy::app_channel::error_chain(&e)
                ))
            })?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ConverseError::Failed(format!("{shown}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ConverseError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                ConverseError::Failed(format!("{shown}: no answer within {:?}", self.timeout))
            })??;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let said = json
                .as_ref()
                .and_then(error_text)
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(500)]).into());
            // Some gateways repeat the request's key in their error: what
            // we sent in a header never goes back to the caller, and the
            // text is cut to what a message needs.
            let mut said = cut(&said, 500);
            for (_, v) in headers {
                let secret = v.strip_prefix("Bearer ").unwrap_or(v);
                if secret.len() >= 8 {
                    said = said.replace(secret, "***");
                }
            }
            let text = format!("{shown} answered {status}: {said}");
            let permanent = status.is_client_error()
                && status != ::http::StatusCode::REQUEST_TIMEOUT
                && status != ::http::StatusCode::TOO_MANY_REQUESTS;
            return Err(if permanent {
                ConverseError::Refused(text)
            } else {
                ConverseError::Failed(text)
            });
        }
        json.ok_or_else(|| ConverseError::Failed(format!("{shown}: the answer is not JSON")))
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The error text of a provider's error body: OpenAI's and Anthropic's
/// `{"error": {"message"}}`, Ollama's `{"error": "..."}`.
fn error_text(v: &serde_json::Value) -> Option<String> {
    let e = v.get("error")?;
    e.get("message")
        .and_then(|m| m.as_str())
        .or_else(|| e.as_str())
        .map(String::from)
}

/// A JSON number field as u64 (0 when absent).
pub fn count(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|n| n.as_u64()).unwrap_or(0)
}

/// The tools offered, as OpenAI's and Ollama's APIs both take them.
pub fn function_tools(tools: &[super::Tool]) -> serde_json::Value {
    tools
        .iter()
        .map(|t| {
            let mut f = serde_json::json!({"name": t.name, "parameters": t.parameters});
            if let Some(d) = &t.description {
                f["description"] = serde_json::json!(d);
            }
            serde_json::json!({"type": "function", "function": f})
        })
        .collect()
}

/// The tool calls of an answer's message (`tool_calls[].function`), as
/// OpenAI's and Ollama's APIs both write them; arguments that are a JSON
/// object (Ollama) are kept as its text.
pub fn tool_calls(msg: &serde_json::Value) -> Vec<super::ToolCall> {
    use serde_json::Value;
    msg.get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|t| super::ToolCall {
                    id: t["id"].as_str().unwrap_or_default().into(),
                    name: t["function"]["name"].as_str().unwrap_or_default().into(),
                    arguments: match &t["function"]["arguments"] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}
