//! `conversation.anthropic`: Anthropic's Messages API. System texts go in
//! `system`; tool calls are `tool_use` blocks (arguments as a JSON
//! object); tool results are `tool_result` blocks in a user turn.

use super::http::{ProviderClient, count};
use super::*;
use serde_json::{Value, json};

pub struct Anthropic {
    client: ProviderClient,
    url: String,
    key: String,
    model: String,
    max_tokens: u64,
}

/// The Messages API version these requests are written for.
const VERSION: &str = "2023-06-01";

impl Anthropic {
    pub fn new(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let key = m
            .get("key")
            .filter(|k| !k.is_empty())
            .ok_or("metadata `key` is required: the Anthropic API key")?
            .clone();
        let base = m
            .get("endpoint")
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty())
            .unwrap_or("https://api.anthropic.com/v1");
        let url = format!("{base}/messages");
        super::openai::check_url(&url)?;
        let max_tokens = match m.get("maxTokens").filter(|v| !v.is_empty()) {
            None => 2048,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!("metadata `maxTokens` is `{v}`; expected a positive number")
                })?,
        };
        Ok(Self {
            client: ProviderClient::new(m)?,
            url,
            key,
            model: super::model(m, "ANTHROPIC_MODEL", "claude-sonnet-4-20250514"),
            max_tokens,
        })
    }
}

/// The Messages API body for `req`.
pub fn body(req: &Request, model: &str, max_tokens: u64) -> Result<Value, ConverseError> {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in &req.messages {
        if m.role == Role::System {
            system.extend(m.texts());
            continue;
        }
        let mut blocks = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) => blocks.push(json!({"type": "text", "text": t})),
                Part::ToolCall(c) => {
                    let input: Value = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.arguments).map_err(|e| {
                            ConverseError::Refused(format!(
                                "tool call `{}`: arguments must be a JSON object for Anthropic: {e}",
                                c.id
                            ))
                        })?
                    };
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                Part::ToolResult { id, text, .. } => {
                    blocks.push(json!({"type": "tool_result", "tool_use_id": id, "content": text}))
                }
            }
        }
        if blocks.is_empty() {
            continue;
        }
        let role = if m.role == Role::Assistant {
            "assistant"
        } else {
            "user"
        };
        messages.push(json!({"role": role, "content": blocks}));
    }
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": messages});
    if !system.is_empty() {
        body["system"] = json!(system.join("\n"));
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name, "input_schema": if t.parameters.is_object() { t.parameters.clone() } else { json!({"type": "object"}) }});
                if let Some(d) = &t.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        if let Some(choice) = &req.tool_choice {
            body["tool_choice"] = match choice.as_str() {
                "auto" => json!({"type": "auto"}),
                "required" | "any" => json!({"type": "any"}),
                "none" => json!({"type": "none"}),
                name => json!({"type": "tool", "name": name}),
            };
        }
    }
    Ok(body)
}

/// A Messages API answer: one output.
pub fn outputs(v: &Value, model: &str) -> Result<Vec<Output>, ConverseError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ConverseError::Failed("the answer has no `content`".into()))?;
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => texts.push(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b["id"].as_str().unwrap_or_default().into(),
                name: b["name"].as_str().unwrap_or_default().into(),
                arguments: b.get("input").map(Value::to_string).unwrap_or_default(),
            }),
            _ => {}
        }
    }
    let u = v.get("usage").unwrap_or(&Value::Null);
    let (prompt, completion) = (count(u, "input_tokens"), count(u, "output_tokens"));
    let cached = count(u, "cache_read_input_tokens");
    Ok(vec![Output {
        choices: vec![Choice {
            finish_reason: v["stop_reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .unwrap_or("unknown")
                .into(),
            index: 0,
            content: texts.join("\n"),
            tool_calls,
        }],
        model: Some(model.to_string()),
        usage: (prompt.saturating_add(completion) > 0).then(|| Usage {
            completion,
            prompt,
            total: prompt.saturating_add(completion),
            completion_details: None,
            prompt_details: (cached > 0).then_some(PromptDetails { audio: 0, cached }),
        }),
    }])
}

impl Conversation for Anthropic {
    fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a> {
        Box::pin(async move {
            let body = body(req, &self.model, self.max_tokens)?;
            let answer = self
                .client
                .post(
                    &self.url,
                    &[("x-api-key", &self.key), ("anthropic-version", VERSION)],
                    &body,
                )
                .await?;
            outputs(&answer, &self.model)
        })
    }
}
