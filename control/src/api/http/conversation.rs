//! `POST /v1.0-alpha1/conversation/{name}/converse` and
//! `/v1.0-alpha2/…`: the bodies are the gRPC messages in protobuf's JSON
//! mapping (lowerCamel names, the proto names accepted too, unknown keys
//! ignored); answers leave zero values out and write 64-bit numbers as
//! strings, as daprd's do.

use super::handlers::compact_json as json;
use super::{ApiResponse, wire};
use crate::api::conversation::{self as api, Alpha2, MessagesInput, RoleMessage, TextInput};
use crate::components::conversation::{Output, Tool, ToolCall};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::Request;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Map, Value, json as j};
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Alpha1Body {
    #[serde(rename = "contextID")]
    context_id: Option<String>,
    inputs: Vec<Alpha1Input>,
    parameters: Option<Map<String, Value>>,
    metadata: BTreeMap<String, String>,
    #[serde(rename = "scrubPII")]
    scrub_pii: Option<bool>,
    temperature: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Alpha1Input {
    content: String,
    role: Option<String>,
    #[serde(rename = "scrubPII")]
    scrub_pii: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Alpha2Body {
    #[serde(rename = "contextId", alias = "context_id")]
    context_id: Option<String>,
    inputs: Vec<Alpha2Input>,
    metadata: BTreeMap<String, String>,
    #[serde(rename = "scrubPii", alias = "scrub_pii")]
    scrub_pii: Option<bool>,
    temperature: Option<f64>,
    tools: Vec<ToolBody>,
    #[serde(rename = "toolChoice", alias = "tool_choice")]
    tool_choice: Option<String>,
    #[serde(rename = "responseFormat", alias = "response_format")]
    response_format: Option<Map<String, Value>>,
    #[serde(rename = "promptCacheRetention", alias = "prompt_cache_retention")]
    prompt_cache_retention: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Alpha2Input {
    messages: Vec<MessageBody>,
    #[serde(rename = "scrubPii", alias = "scrub_pii")]
    scrub_pii: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageBody {
    #[serde(rename = "ofDeveloper", alias = "of_developer")]
    developer: Option<Texts>,
    #[serde(rename = "ofSystem", alias = "of_system")]
    system: Option<Texts>,
    #[serde(rename = "ofUser", alias = "of_user")]
    user: Option<Texts>,
    #[serde(rename = "ofAssistant", alias = "of_assistant")]
    assistant: Option<AssistantBody>,
    #[serde(rename = "ofTool", alias = "of_tool")]
    tool: Option<ToolMessageBody>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Content {
    text: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Texts {
    content: Vec<Content>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AssistantBody {
    content: Vec<Content>,
    #[serde(rename = "toolCalls", alias = "tool_calls")]
    tool_calls: Vec<ToolCallBody>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolMessageBody {
    #[serde(rename = "toolId", alias = "tool_id")]
    tool_id: String,
    name: String,
    content: Vec<Content>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallBody {
    id: String,
    function: Option<FunctionCall>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionCall {
    name: String,
    arguments: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolBody {
    function: Option<FunctionBody>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionBody {
    name: String,
    description: Option<String>,
    parameters: Option<Map<String, Value>>,
}

async fn parse<T: serde::de::DeserializeOwned + Default>(
    rt: &Runtime,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let raw = wire::read_body(req.into_body(), rt.options.max_body_size).await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&raw).map_err(wire::malformed_body)
}

fn texts(c: Vec<Content>) -> Vec<String> {
    c.into_iter().map(|c| c.text).collect()
}

pub async fn alpha1(
    rt: &Runtime,
    name: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let b: Alpha1Body = parse(rt, req).await?;
    let inputs = b
        .inputs
        .into_iter()
        .map(|i| TextInput {
            content: i.content,
            role: i.role,
            scrub: i.scrub_pii.unwrap_or(false),
        })
        .collect();
    let results = api::converse_alpha1(
        rt,
        &name,
        inputs,
        b.temperature,
        b.scrub_pii.unwrap_or(false),
    )
    .await?;
    let parameters = b.parameters.filter(|p| !p.is_empty());
    let outputs: Vec<Value> = results
        .into_iter()
        .map(|r| {
            let mut o = Map::new();
            if !r.is_empty() {
                o.insert("result".into(), j!(r));
            }
            if let Some(p) = &parameters {
                o.insert("parameters".into(), Value::Object(p.clone()));
            }
            Value::Object(o)
        })
        .collect();
    let mut body = j!({ "outputs": outputs });
    if let Some(id) = b.context_id.filter(|c| !c.is_empty()) {
        body["contextID"] = j!(id);
    }
    Ok(json(&body))
}

pub async fn alpha2(
    rt: &Runtime,
    name: String,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let b: Alpha2Body = parse(rt, req).await?;
    let mut inputs = Vec::new();
    for i in b.inputs {
        let mut messages = Vec::new();
        for m in i.messages {
            let set = [
                m.developer.is_some(),
                m.system.is_some(),
                m.user.is_some(),
                m.assistant.is_some(),
                m.tool.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if set > 1 {
                return Err(ApiError::malformed(
                    "failed deserializing HTTP body: a message sets more than one of ofDeveloper, ofSystem, ofUser, ofAssistant, ofTool",
                ));
            }
            messages.push(if let Some(t) = m.developer {
                RoleMessage::Developer(texts(t.content))
            } else if let Some(t) = m.system {
                RoleMessage::System(texts(t.content))
            } else if let Some(t) = m.user {
                RoleMessage::User(texts(t.content))
            } else if let Some(a) = m.assistant {
                RoleMessage::Assistant {
                    texts: texts(a.content),
                    calls: a
                        .tool_calls
                        .into_iter()
                        .map(|c| {
                            c.function.map(|f| ToolCall {
                                id: c.id,
                                name: f.name,
                                arguments: f.arguments,
                            })
                        })
                        .collect(),
                }
            } else if let Some(t) = m.tool {
                RoleMessage::Tool {
                    id: t.tool_id,
                    name: t.name,
                    texts: texts(t.content),
                }
            } else {
                RoleMessage::Missing
            });
        }
        inputs.push(MessagesInput {
            messages,
            scrub: i.scrub_pii.unwrap_or(false),
        });
    }
    let mut tools = Vec::new();
    for t in b.tools {
        let Some(f) = t.function else {
            return Err(api_invalid(&name, "tool types cannot be nil"));
        };
        tools.push(Tool {
            name: f.name,
            description: f.description,
            parameters: Value::Object(f.parameters.unwrap_or_default()),
        });
    }
    let prompt_cache_retention = b
        .prompt_cache_retention
        .as_deref()
        .map(|v| wire::proto_duration("promptCacheRetention", v))
        .transpose()?;
    let outputs = api::converse_alpha2(
        rt,
        &name,
        Alpha2 {
            inputs,
            tools,
            tool_choice: b.tool_choice,
            temperature: b.temperature,
            metadata: b.metadata,
            response_format: b.response_format.map(Value::Object),
            prompt_cache_retention,
            scrub_output: b.scrub_pii.unwrap_or(false),
        },
    )
    .await?;
    let mut body = j!({ "outputs": outputs.iter().map(output_json).collect::<Vec<_>>() });
    if let Some(id) = b.context_id.filter(|c| !c.is_empty()) {
        body["contextId"] = j!(id);
    }
    Ok(json(&body))
}

fn api_invalid(name: &str, why: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_CONVERSATION_INVALID_PARMS",
        format!("failed conversing with component {name}: invalid params: {why}"),
    )
}

/// Sets `key` to `n` as protobuf's JSON writes a 64-bit number (a string),
/// leaving zero out.
fn put_count(o: &mut Map<String, Value>, key: &str, n: u64) {
    if n != 0 {
        o.insert(key.into(), j!(n.to_string()));
    }
}

fn output_json(o: &Output) -> Value {
    let choices: Vec<Value> = o
        .choices
        .iter()
        .map(|c| {
            let mut message = Map::new();
            if !c.content.is_empty() {
                message.insert("content".into(), j!(c.content));
            }
            if !c.tool_calls.is_empty() {
                let calls: Vec<Value> = c
                    .tool_calls
                    .iter()
                    .map(|t| {
                        let mut call = j!({"function": {"name": t.name, "arguments": t.arguments}});
                        if !t.id.is_empty() {
                            call["id"] = j!(t.id);
                        }
                        call
                    })
                    .collect();
                message.insert("toolCalls".into(), Value::Array(calls));
            }
            let mut choice = Map::new();
            if !c.finish_reason.is_empty() {
                choice.insert("finishReason".into(), j!(c.finish_reason));
            }
            if c.index != 0 {
                choice.insert("index".into(), j!(c.index.to_string()));
            }
            choice.insert("message".into(), Value::Object(message));
            Value::Object(choice)
        })
        .collect();
    let mut out = Map::new();
    out.insert("choices".into(), Value::Array(choices));
    if let Some(m) = &o.model {
        out.insert("model".into(), j!(m));
    }
    if let Some(u) = &o.usage {
        let mut usage = Map::new();
        put_count(&mut usage, "completionTokens", u.completion);
        put_count(&mut usage, "promptTokens", u.prompt);
        put_count(&mut usage, "totalTokens", u.total);
        if let Some(d) = &u.completion_details {
            let mut m = Map::new();
            put_count(&mut m, "acceptedPredictionTokens", d.accepted_prediction);
            put_count(&mut m, "audioTokens", d.audio);
            put_count(&mut m, "reasoningTokens", d.reasoning);
            put_count(&mut m, "rejectedPredictionTokens", d.rejected_prediction);
            usage.insert("completionTokensDetails".into(), Value::Object(m));
        }
        if let Some(d) = &u.prompt_details {
            let mut m = Map::new();
            put_count(&mut m, "audioTokens", d.audio);
            put_count(&mut m, "cachedTokens", d.cached);
            usage.insert("promptTokensDetails".into(), Value::Object(m));
        }
        out.insert("usage".into(), Value::Object(usage));
    }
    Value::Object(out)
}
