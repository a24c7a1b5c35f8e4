//! Conversation (dapr-wire.md, Dapr's conversation API alpha1/alpha2),
//! shared by the HTTP and gRPC doors: the component found, the request
//! checked and turned into the components' one shape, PII scrubbed on the
//! way in and out, the call made under the component's outbound
//! resiliency policy.

use crate::components::conversation::{
    self as conv, ConverseError, Message, Output, Part, Role, Tool, ToolCall,
};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::collections::BTreeMap;
use std::time::Duration;
use tandem_proxy::resilience::{FailureKind, ResilienceError};

/// One alpha1 input: a text with an optional role.
pub struct TextInput {
    pub content: String,
    pub role: Option<String>,
    pub scrub: bool,
}

/// One alpha2 message as the caller sent it.
pub enum RoleMessage {
    /// No role was set (an empty `ConversationMessage`).
    Missing,
    Developer(Vec<String>),
    System(Vec<String>),
    User(Vec<String>),
    Assistant {
        texts: Vec<String>,
        /// `None`: a tool call without its function.
        calls: Vec<Option<ToolCall>>,
    },
    Tool {
        id: String,
        name: String,
        texts: Vec<String>,
    },
}

pub struct MessagesInput {
    pub messages: Vec<RoleMessage>,
    pub scrub: bool,
}

#[derive(Default)]
pub struct Alpha2 {
    pub inputs: Vec<MessagesInput>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<String>,
    pub temperature: Option<f64>,
    pub metadata: BTreeMap<String, String>,
    pub response_format: Option<serde_json::Value>,
    pub prompt_cache_retention: Option<Duration>,
    pub scrub_output: bool,
}

fn not_found(rt: &Runtime, name: &str) -> ApiError {
    let snap = rt.snapshot();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_CONVERSATION_NOT_FOUND",
        format!(
            "failed finding conversation component {name}; loaded conversation components: [{}]",
            snap.conversations
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn missing_inputs(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_CONVERSATION_MISSING_INPUTS",
        format!("failed conversing with component {name}: missing inputs in request"),
    )
}

fn invalid(name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_CONVERSATION_INVALID_PARMS",
        format!("failed conversing with component {name}: invalid params: {why}"),
    )
}

fn scrubbed(text: String, scrub: bool) -> String {
    if scrub { conv::pii::scrub(&text) } else { text }
}

/// Asks component `name`, under its outbound resiliency policy.
async fn ask(rt: &Runtime, name: &str, req: conv::Request) -> Result<Vec<Output>, ApiError> {
    let comp = rt
        .snapshot()
        .conversations
        .get(name)
        .cloned()
        .ok_or_else(|| not_found(rt, name))?;
    let classify = |e: &ConverseError| match e {
        ConverseError::Refused(_) => FailureKind::Permanent,
        ConverseError::Failed(_) => FailureKind::Transient,
    };
    let llm = comp.llm.clone();
    let req = &req;
    comp.outbound
        .run(|| llm.converse(req), classify)
        .await
        .map_err(|e| {
            let why = match e {
                ResilienceError::Inner(e) => e.to_string(),
                other => other.to_string(),
            };
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "ERR_CONVERSATION_INVOKE",
                format!("failed conversing with component {name}: {why}"),
            )
        })
}

fn exists(rt: &Runtime, name: &str) -> Result<(), ApiError> {
    if rt.snapshot().conversations.contains_key(name) {
        Ok(())
    } else {
        Err(not_found(rt, name))
    }
}

/// alpha1: one text per input; the answer's first choice of each output.
pub async fn converse_alpha1(
    rt: &Runtime,
    name: &str,
    inputs: Vec<TextInput>,
    temperature: Option<f64>,
    scrub_output: bool,
) -> Result<Vec<String>, ApiError> {
    exists(rt, name)?;
    if inputs.is_empty() {
        return Err(missing_inputs(name));
    }
    let messages = inputs
        .into_iter()
        .map(|i| Message {
            role: match i.role.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("system") => Role::System,
                Some("assistant" | "ai") => Role::Assistant,
                // Everything else (user, human, developer, none) is the user.
                _ => Role::User,
            },
            parts: vec![Part::Text(scrubbed(i.content, i.scrub))],
        })
        .collect();
    let req = conv::Request {
        messages,
        temperature: temperature.filter(|t| *t > 0.0),
        ..Default::default()
    };
    Ok(ask(rt, name, req)
        .await?
        .into_iter()
        .map(|o| {
            let text = o
                .choices
                .into_iter()
                .next()
                .map(|c| c.content)
                .unwrap_or_default();
            scrubbed(text, scrub_output)
        })
        .collect())
}

/// alpha2: messages by role, tools; every output's choices.
pub async fn converse_alpha2(rt: &Runtime, name: &str, r: Alpha2) -> Result<Vec<Output>, ApiError> {
    exists(rt, name)?;
    if r.inputs.is_empty() {
        return Err(missing_inputs(name));
    }
    let mut messages = Vec::new();
    for input in r.inputs {
        let s = input.scrub;
        let texts = |t: Vec<String>| {
            t.into_iter()
                .map(|t| Part::Text(scrubbed(t, s)))
                .collect::<Vec<_>>()
        };
        for m in input.messages {
            messages.push(match m {
                RoleMessage::Missing => return Err(invalid(name, "message type cannot be nil")),
                // Models take the developer's words as the user's.
                RoleMessage::Developer(t) | RoleMessage::User(t) => Message {
                    role: Role::User,
                    parts: texts(t),
                },
                RoleMessage::System(t) => Message {
                    role: Role::System,
                    parts: texts(t),
                },
                RoleMessage::Assistant { texts: t, calls } => {
                    let mut parts = texts(t);
                    for c in calls {
                        let c = c.ok_or_else(|| invalid(name, "tool types cannot be nil"))?;
                        parts.push(Part::ToolCall(c));
                    }
                    Message {
                        role: Role::Assistant,
                        parts,
                    }
                }
                RoleMessage::Tool { id, name, texts: t } => Message {
                    role: Role::Tool,
                    parts: t
                        .into_iter()
                        .map(|text| Part::ToolResult {
                            id: id.clone(),
                            name: name.clone(),
                            text: scrubbed(text, s),
                        })
                        .collect(),
                },
            });
        }
    }
    let choices = "must be 'auto', 'none', 'required', or a specific tool name matching the tools available to be used";
    let tool_choice = match r.tool_choice.filter(|c| !c.is_empty()) {
        None if !r.tools.is_empty() => Some("auto".to_string()),
        None => None,
        Some(c) if matches!(c.as_str(), "auto" | "none") => Some(c),
        Some(c) if c == "required" => {
            if r.tools.is_empty() {
                return Err(invalid(name, &format!("tool choice {choices}")));
            }
            Some(c)
        }
        Some(c) => {
            if !r.tools.is_empty() && !r.tools.iter().any(|t| t.name == c) {
                return Err(invalid(
                    name,
                    &format!(
                        "tool choice selected was not found. Must be 'auto', 'none', 'required', or a specific tool name matching the tools available to be used (offered: {})",
                        r.tools
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Some(c)
        }
    };
    let req = conv::Request {
        messages,
        tools: r.tools,
        tool_choice,
        temperature: r.temperature.filter(|t| *t > 0.0),
        metadata: r.metadata,
        response_format: r.response_format,
        prompt_cache_retention: r.prompt_cache_retention,
    };
    let mut outputs = ask(rt, name, req).await?;
    if r.scrub_output {
        for o in &mut outputs {
            for c in &mut o.choices {
                c.content = conv::pii::scrub(&c.content);
            }
        }
    }
    Ok(outputs)
}
