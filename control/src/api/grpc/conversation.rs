//! `ConverseAlpha1` and `ConverseAlpha2`: the protobuf messages turned into
//! the shared API's shapes and back.

use crate::api::conversation::{self as api, Alpha2, MessagesInput, RoleMessage, TextInput};
use crate::components::conversation::{Output, Tool, ToolCall};
use crate::error::ApiError;
use crate::runtime::Runtime;
use tandem_proto::runtime::v1 as rt;

/// A protobuf `Struct` as JSON.
pub fn struct_json(s: prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_json(v)))
            .collect(),
    )
}

pub(crate) fn value_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(l)) => l.values.into_iter().map(value_json).collect(),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

fn texts(c: Vec<rt::ConversationMessageContent>) -> Vec<String> {
    c.into_iter().map(|c| c.text).collect()
}

pub async fn alpha1(
    runtime: &Runtime,
    r: rt::ConversationRequest,
) -> Result<rt::ConversationResponse, ApiError> {
    let inputs = r
        .inputs
        .into_iter()
        .map(|i| TextInput {
            content: i.content,
            role: i.role,
            scrub: i.scrub_pii.unwrap_or(false),
        })
        .collect();
    let results = api::converse_alpha1(
        runtime,
        &r.name,
        inputs,
        r.temperature,
        r.scrub_pii.unwrap_or(false),
    )
    .await?;
    Ok(rt::ConversationResponse {
        context_id: r.context_id.filter(|c| !c.is_empty()),
        outputs: results
            .into_iter()
            .map(|result| rt::ConversationResult {
                result,
                parameters: r.parameters.clone(),
            })
            .collect(),
    })
}

pub async fn alpha2(
    runtime: &Runtime,
    r: rt::ConversationRequestAlpha2,
) -> Result<rt::ConversationResponseAlpha2, ApiError> {
    use rt::conversation_message::MessageTypes as M;
    let inputs = r
        .inputs
        .into_iter()
        .map(|i| MessagesInput {
            scrub: i.scrub_pii.unwrap_or(false),
            messages: i
                .messages
                .into_iter()
                .map(|m| match m.message_types {
                    None => RoleMessage::Missing,
                    Some(M::OfDeveloper(d)) => RoleMessage::Developer(texts(d.content)),
                    Some(M::OfSystem(s)) => RoleMessage::System(texts(s.content)),
                    Some(M::OfUser(u)) => RoleMessage::User(texts(u.content)),
                    Some(M::OfAssistant(a)) => RoleMessage::Assistant {
                        texts: texts(a.content),
                        calls: a.tool_calls.into_iter().map(tool_call).collect(),
                    },
                    Some(M::OfTool(t)) => RoleMessage::Tool {
                        id: t.tool_id.unwrap_or_default(),
                        name: t.name,
                        texts: texts(t.content),
                    },
                })
                .collect(),
        })
        .collect();
    let mut tools = Vec::new();
    for t in r.tools {
        let Some(rt::conversation_tools::ToolTypes::Function(f)) = t.tool_types else {
            return Err(ApiError::new(
                http::StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "ERR_CONVERSATION_INVALID_PARMS",
                format!(
                    "failed conversing with component {}: invalid params: tool types cannot be nil",
                    r.name
                ),
            ));
        };
        tools.push(Tool {
            name: f.name,
            description: f.description,
            parameters: f
                .parameters
                .map(struct_json)
                .unwrap_or_else(|| serde_json::json!({})),
        });
    }
    let outputs = api::converse_alpha2(
        runtime,
        &r.name,
        Alpha2 {
            inputs,
            tools,
            tool_choice: r.tool_choice,
            temperature: r.temperature,
            metadata: r.metadata.into_iter().collect(),
            response_format: r.response_format.map(struct_json),
            prompt_cache_retention: r
                .prompt_cache_retention
                .and_then(|d| std::time::Duration::try_from(d).ok()),
            scrub_output: r.scrub_pii.unwrap_or(false),
        },
    )
    .await?;
    Ok(rt::ConversationResponseAlpha2 {
        context_id: r.context_id.filter(|c| !c.is_empty()),
        outputs: outputs.into_iter().map(output).collect(),
    })
}

fn tool_call(c: rt::ConversationToolCalls) -> Option<ToolCall> {
    let rt::conversation_tool_calls::ToolTypes::Function(f) = c.tool_types?;
    Some(ToolCall {
        id: c.id.unwrap_or_default(),
        name: f.name,
        arguments: f.arguments,
    })
}

fn output(o: Output) -> rt::ConversationResultAlpha2 {
    rt::ConversationResultAlpha2 {
        choices: o
            .choices
            .into_iter()
            .map(|c| rt::ConversationResultChoices {
                finish_reason: c.finish_reason,
                index: c.index,
                message: Some(rt::ConversationResultMessage {
                    content: c.content,
                    tool_calls: c
                        .tool_calls
                        .into_iter()
                        .map(|t| rt::ConversationToolCalls {
                            id: Some(t.id).filter(|i| !i.is_empty()),
                            tool_types: Some(rt::conversation_tool_calls::ToolTypes::Function(
                                rt::ConversationToolCallsOfFunction {
                                    name: t.name,
                                    arguments: t.arguments,
                                },
                            )),
                        })
                        .collect(),
                }),
            })
            .collect(),
        model: o.model,
        usage: o
            .usage
            .map(|u| rt::ConversationResultAlpha2CompletionUsage {
                completion_tokens: u.completion,
                prompt_tokens: u.prompt,
                total_tokens: u.total,
                completion_tokens_details: u.completion_details.map(|d| {
                    rt::ConversationResultAlpha2CompletionUsageCompletionTokensDetails {
                        accepted_prediction_tokens: d.accepted_prediction,
                        audio_tokens: d.audio,
                        reasoning_tokens: d.reasoning,
                        rejected_prediction_tokens: d.rejected_prediction,
                    }
                }),
                prompt_tokens_details: u.prompt_details.map(|d| {
                    rt::ConversationResultAlpha2CompletionUsagePromptTokensDetails {
                        audio_tokens: d.audio,
                        cached_tokens: d.cached,
                    }
                }),
            }),
    }
}
