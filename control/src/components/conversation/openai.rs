//! `conversation.openai`: OpenAI's chat-completions protocol. With
//! `endpoint` it serves anything that speaks it (vLLM, llama.cpp's server,
//! DeepSeek, Ollama's `/v1`); `apiType: azure` is Azure OpenAI (deployment
//! URL, `api-version`, `api-key` header).

use super::http::{ProviderClient, count};
use super::*;
use serde_json::{Value, json};

pub struct OpenAi {
    client: ProviderClient,
    url: String,
    /// The header that carries the key, and its value.
    auth: Option<(&'static str, String)>,
    model: String,
}

const DEFAULT_BASE: &str = "https://api.openai.com/v1";

impl OpenAi {
    pub fn new(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let key = m.get("key").filter(|k| !k.is_empty()).cloned();
        let endpoint = m
            .get("endpoint")
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty());
        let azure = m
            .get("apiType")
            .is_some_and(|t| t.eq_ignore_ascii_case("azure"));
        let (url, auth, model) = if azure {
            let version = m.get("apiVersion").filter(|v| !v.is_empty());
            let (Some(endpoint), Some(version)) = (endpoint, version) else {
                return Err(
                    "metadata `endpoint` and `apiVersion` are required with `apiType: azure`"
                        .into(),
                );
            };
            let model = super::model(m, "AZURE_OPENAI_MODEL", "gpt-4.1-nano");
            let key = key.ok_or("metadata `key` is required: the Azure OpenAI API key")?;
            (
                format!(
                    "{endpoint}/openai/deployments/{model}/chat/completions?api-version={version}"
                ),
                Some(("api-key", key)),
                model,
            )
        } else {
            if key.is_none() && endpoint.is_none() {
                return Err("metadata `key` is required: the OpenAI API key (or give `endpoint` for a server that needs none)".into());
            }
            (
                format!("{}/chat/completions", endpoint.unwrap_or(DEFAULT_BASE)),
                key.map(|k| ("authorization", format!("Bearer {k}"))),
                super::model(m, "OPENAI_MODEL", "gpt-5-nano"),
            )
        };
        check_url(&url)?;
        Ok(Self {
            client: ProviderClient::new(m)?,
            url,
            auth,
            model,
        })
    }

    /// For Ollama's OpenAI-compatible `/v1`: no key needed.
    pub fn compatible(
        m: &BTreeMap<String, String>,
        base: &str,
        model: String,
    ) -> Result<Self, String> {
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        check_url(&url)?;
        Ok(Self {
            client: ProviderClient::new(m)?,
            url,
            auth: m
                .get("key")
                .filter(|k| !k.is_empty())
                .map(|k| ("authorization", format!("Bearer {k}"))),
            model,
        })
    }
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    match url.parse::<::http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) => Ok(()),
        _ => Err(format!(
            "`{url}` is not an http:// or https:// URL: check metadata `endpoint`"
        )),
    }
}

/// Reasoning models take no `temperature` (they refuse any but 1).
fn takes_temperature(model: &str) -> bool {
    !(model.starts_with("gpt-5")
        || model.starts_with("o1")
        || model == "o3"
        || model.starts_with("o3-")
        || model.starts_with("o4-"))
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The chat-completions body for `req`.
pub fn body(req: &Request, model: &str) -> Value {
    let mut messages = Vec::new();
    for m in &req.messages {
        // Each tool result is a message of its own.
        for p in &m.parts {
            if let Part::ToolResult { id, text, .. } = p {
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
        }
        let texts: Vec<&str> = m.texts().collect();
        let calls: Vec<Value> = m
            .tool_calls()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        if texts.is_empty() && calls.is_empty() {
            continue;
        }
        let content = match texts.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => Value::Array(
                many.iter()
                    .map(|t| json!({"type": "text", "text": t}))
                    .collect(),
            ),
        };
        let mut msg = json!({"role": role(m.role), "content": content});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        messages.push(msg);
    }
    let mut body = json!({"model": model, "messages": messages});
    if !req.tools.is_empty() {
        body["tools"] = super::http::function_tools(&req.tools);
        if let Some(choice) = &req.tool_choice {
            body["tool_choice"] = match choice.as_str() {
                "auto" | "none" | "required" => json!(choice),
                name => json!({"type": "function", "function": {"name": name}}),
            };
        }
    }
    if let Some(t) = req.temperature.filter(|_| takes_temperature(model)) {
        body["temperature"] = json!(t);
    }
    if let Some(schema) = &req.response_format {
        let name = schema
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("response");
        let strict = schema
            .get("strict")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        body["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": name, "strict": strict, "schema": schema}});
    }
    body
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    let (c, p) = (
        u.get("completion_tokens_details").unwrap_or(&Value::Null),
        u.get("prompt_tokens_details").unwrap_or(&Value::Null),
    );
    let completion_details = CompletionDetails {
        accepted_prediction: count(c, "accepted_prediction_tokens"),
        audio: count(c, "audio_tokens"),
        reasoning: count(c, "reasoning_tokens"),
        rejected_prediction: count(c, "rejected_prediction_tokens"),
    };
    let prompt_details = PromptDetails {
        audio: count(p, "audio_tokens"),
        cached: count(p, "cached_tokens"),
    };
    let usage = Usage {
        completion: count(u, "completion_tokens"),
        prompt: count(u, "prompt_tokens"),
        total: count(u, "total_tokens"),
        completion_details: (completion_details != CompletionDetails::default())
            .then_some(completion_details),
        prompt_details: (prompt_details != PromptDetails::default()).then_some(prompt_details),
    };
    (usage.completion > 0 || usage.prompt > 0 || usage.total > 0).then_some(usage)
}

/// A chat-completions answer: each choice an output of its own.
pub fn outputs(v: &Value, model: &str) -> Result<Vec<Output>, ConverseError> {
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| ConverseError::Failed("the answer has no `choices`".into()))?;
    let usage = usage(v);
    Ok(choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let msg = c.get("message").unwrap_or(&Value::Null);
            let tool_calls = super::http::tool_calls(msg);
            Output {
                choices: vec![Choice {
                    finish_reason: c["finish_reason"]
                        .as_str()
                        .filter(|r| !r.is_empty())
                        .unwrap_or("unknown")
                        .into(),
                    index: i as i64,
                    content: msg["content"].as_str().unwrap_or_default().into(),
                    tool_calls,
                }],
                model: Some(model.to_string()),
                usage: usage.clone(),
            }
        })
        .collect())
}

impl Conversation for OpenAi {
    fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a> {
        Box::pin(async move {
            let headers: Vec<(&str, &str)> =
                self.auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = self
                .client
                .post(&self.url, &headers, &body(req, &self.model))
                .await?;
            outputs(&answer, &self.model)
        })
    }
}
