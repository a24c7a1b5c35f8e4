//! `conversation.ollama`: Ollama's own chat API (`/api/chat`, no
//! streaming). An `endpoint` ending in `/v1` is Ollama's OpenAI-compatible
//! API, which is what daprd 1.17+ speaks by default; both are served by
//! every Ollama.

use super::http::{ProviderClient, count};
use super::*;
use serde_json::{Value, json};

pub enum Ollama {
    Native {
        client: ProviderClient,
        url: String,
        model: String,
    },
    Compatible(super::openai::OpenAi),
}

impl Ollama {
    pub fn new(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let base = m
            .get("endpoint")
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty())
            .unwrap_or("http://localhost:11434");
        let model = super::model(m, "OLLAMA_MODEL", "llama3.2:latest");
        if base.ends_with("/v1") {
            return super::openai::OpenAi::compatible(m, base, model).map(Ollama::Compatible);
        }
        let url = format!("{base}/api/chat");
        super::openai::check_url(&url)?;
        Ok(Ollama::Native {
            client: ProviderClient::new(m)?,
            url,
            model,
        })
    }
}

/// The `/api/chat` body for `req`.
pub fn body(req: &Request, model: &str) -> Result<Value, ConverseError> {
    let mut messages = Vec::new();
    for m in &req.messages {
        for p in &m.parts {
            if let Part::ToolResult { name, text, .. } = p {
                messages.push(json!({"role": "tool", "content": text, "tool_name": name}));
            }
        }
        let texts: Vec<&str> = m.texts().collect();
        let mut calls = Vec::new();
        for c in m.tool_calls() {
            let args: Value = if c.arguments.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&c.arguments).map_err(|e| {
                    ConverseError::Refused(format!(
                        "tool call `{}`: arguments must be a JSON object for Ollama: {e}",
                        c.name
                    ))
                })?
            };
            calls.push(json!({"function": {"name": c.name, "arguments": args}}));
        }
        if texts.is_empty() && calls.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut msg = json!({"role": role, "content": texts.join("\n")});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        messages.push(msg);
    }
    let mut body = json!({"model": model, "messages": messages, "stream": false});
    if !req.tools.is_empty() && req.tool_choice.as_deref() != Some("none") {
        body["tools"] = super::http::function_tools(&req.tools);
    }
    if let Some(t) = req.temperature {
        body["options"] = json!({"temperature": t});
    }
    if let Some(schema) = &req.response_format {
        body["format"] = schema.clone();
    }
    Ok(body)
}

/// An `/api/chat` answer: one output.
pub fn outputs(v: &Value, model: &str) -> Result<Vec<Output>, ConverseError> {
    let msg = v
        .get("message")
        .ok_or_else(|| ConverseError::Failed("the answer has no `message`".into()))?;
    let tool_calls = super::http::tool_calls(msg);
    let (prompt, completion) = (count(v, "prompt_eval_count"), count(v, "eval_count"));
    let finish = match v["done_reason"].as_str().filter(|r| !r.is_empty()) {
        // Ollama says `stop` after a tool call too.
        Some("stop") if !tool_calls.is_empty() => "tool_calls",
        Some(r) => r,
        None => "unknown",
    };
    Ok(vec![Output {
        choices: vec![Choice {
            finish_reason: finish.into(),
            index: 0,
            content: msg["content"].as_str().unwrap_or_default().into(),
            tool_calls,
        }],
        model: Some(model.to_string()),
        usage: (prompt.saturating_add(completion) > 0).then(|| Usage {
            completion,
            prompt,
            total: prompt.saturating_add(completion),
            ..Default::default()
        }),
    }])
}

impl Conversation for Ollama {
    fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a> {
        match self {
            Ollama::Compatible(c) => c.converse(req),
            Ollama::Native { client, url, model } => Box::pin(async move {
                let answer = client.post(url, &[], &body(req, model)?).await?;
                outputs(&answer, model)
            }),
        }
    }
}
