//! `conversation.echo`: answers with what it was sent, as daprd's does —
//! one choice whose content is every text (and tool result) joined by
//! newlines, one made-up call per tool offered (its arguments the names of
//! the tool's parameters) plus the calls the conversation carried, and a
//! word count as usage. For testing apps without a model.

use super::*;

pub struct Echo;

impl Echo {
    pub fn new(_: &BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Echo)
    }
}

/// The names of a tool's parameters, sorted and joined by commas.
fn parameter_names(tool: &Tool) -> Result<String, ConverseError> {
    let refused = |what: &str| {
        ConverseError::Refused(format!(
            "tool `{}`: {what} must be a JSON object",
            tool.name
        ))
    };
    let params = match &tool.parameters {
        serde_json::Value::Null => return Ok(String::new()),
        serde_json::Value::Object(o) => o,
        _ => return Err(refused("`parameters`")),
    };
    let mut names: Vec<&str> = match params.get("properties") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Object(p)) => p.keys().map(String::as_str).collect(),
        Some(_) => return Err(refused("`parameters.properties`")),
    };
    names.sort_unstable();
    Ok(names.join(","))
}

impl Conversation for Echo {
    fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a> {
        Box::pin(async move {
            let mut lines = Vec::new();
            let mut calls = Vec::new();
            for (i, tool) in req.tools.iter().enumerate() {
                calls.push(ToolCall {
                    id: i.to_string(),
                    name: tool.name.clone(),
                    arguments: parameter_names(tool)?,
                });
            }
            for m in &req.messages {
                for part in &m.parts {
                    match part {
                        Part::Text(t) => lines.push(t.clone()),
                        Part::ToolResult { id, name, text } => lines.push(format!(
                            "Tool Response for tool ID '{id}' with name '{name}': {text}"
                        )),
                        Part::ToolCall(c) => calls.push(c.clone()),
                    }
                }
            }
            let content = lines.join("\n");
            let words = content.split_whitespace().count() as u64;
            Ok(vec![Output {
                choices: vec![Choice {
                    finish_reason: if calls.is_empty() {
                        "stop"
                    } else {
                        "tool_calls"
                    }
                    .into(),
                    index: 0,
                    content,
                    tool_calls: calls,
                }],
                model: None,
                usage: Some(Usage {
                    completion: words,
                    prompt: words,
                    total: 2 * words,
                    ..Default::default()
                }),
            }])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(role: Role, t: &str) -> Message {
        Message {
            role,
            parts: vec![Part::Text(t.into())],
        }
    }

    #[tokio::test]
    async fn echoes_texts_tool_results_and_offers_each_tool() {
        let req = Request {
            messages: vec![
                text(Role::System, "be brief"),
                text(Role::User, "hi there"),
                Message {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall(ToolCall {
                        id: "call_1".into(),
                        name: "lookup".into(),
                        arguments: "{\"q\":1}".into(),
                    })],
                },
                Message {
                    role: Role::Tool,
                    parts: vec![Part::ToolResult {
                        id: "call_1".into(),
                        name: "lookup".into(),
                        text: "42".into(),
                    }],
                },
            ],
            tools: vec![Tool {
                name: "weather".into(),
                description: None,
                parameters: serde_json::json!({"type": "object", "properties": {"unit": {}, "city": {}}}),
            }],
            ..Default::default()
        };
        let out = Echo.converse(&req).await.unwrap();
        assert_eq!(out.len(), 1);
        let c = &out[0].choices[0];
        assert_eq!(
            c.content,
            "be brief\nhi there\nTool Response for tool ID 'call_1' with name 'lookup': 42"
        );
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!(
            c.tool_calls
                .iter()
                .map(|t| (t.id.as_str(), t.name.as_str(), t.arguments.as_str()))
                .collect::<Vec<_>>(),
            [
                ("0", "weather", "city,unit"),
                ("call_1", "lookup", "{\"q\":1}")
            ]
        );
        let u = out[0].usage.as_ref().unwrap();
        assert_eq!((u.prompt, u.completion, u.total), (14, 14, 28));
        // Without tools it stops; a schema that is not an object is refused.
        let plain = Request {
            messages: vec![text(Role::User, "one"), text(Role::User, "two")],
            ..Default::default()
        };
        let out = Echo.converse(&plain).await.unwrap();
        assert_eq!(
            (
                out[0].choices[0].content.as_str(),
                out[0].choices[0].finish_reason.as_str()
            ),
            ("one\ntwo", "stop")
        );
        let mut bad = plain.clone();
        bad.tools.push(Tool {
            name: "t".into(),
            description: None,
            parameters: serde_json::json!({"properties": [1]}),
        });
        assert!(matches!(
            Echo.converse(&bad).await,
            Err(ConverseError::Refused(m)) if m.contains("properties")
        ));
    }
}
