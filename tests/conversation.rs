//! The conversation API through a real sidecar: `conversation.echo` as
//! daprd answers it (HTTP alpha1/alpha2, gRPC), PII scrubbing, Dapr's
//! error codes, and the model providers spoken to in their own protocols by
//! a local server that checks each request field by field.

mod common;

use common::{TempDir, component, serve_http, sidecar};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tandem_proto::runtime::v1 as rt;
use tandem_proto::runtime::v1::dapr_client::DaprClient;

fn post(s: &common::Sidecar, path: &str, body: Value) -> common::Resp {
    s.request("POST", path, body.to_string().as_bytes())
}

fn alpha2(s: &common::Sidecar, name: &str, body: Value) -> common::Resp {
    post(
        s,
        &format!("/v1.0-alpha2/conversation/{name}/converse"),
        body,
    )
}

fn user(text: &str) -> Value {
    json!({"messages": [{"ofUser": {"content": [{"text": text}]}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answers_as_daprd_does() {
    let res = TempDir::new("conv-echo");
    // As the SDKs' resources folders carry it, beside other components.
    res.write(
        "conversation.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: echo\nspec:\n  type: conversation.echo\n  version: v1\n",
    );
    res.write(
        "state.yaml",
        &component("statestore", "state.in-memory", &[]),
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let meta = s.get("/v1.0/metadata").json();
    assert!(
        meta["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "echo" && c["type"] == "conversation.echo"),
        "{meta}"
    );

    // alpha1: every input's text in one result; contextID and parameters
    // come back.
    let r = post(
        &s,
        "/v1.0-alpha1/conversation/echo/converse",
        json!({"contextID": "ctx-1", "inputs": [{"content": "one"}, {"content": "two", "role": "user"}],
               "parameters": {"max": {"@type": "type.googleapis.com/google.protobuf.Int64Value", "value": "100"}},
               "temperature": 0.7}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"contextID": "ctx-1", "outputs": [{"result": "one\ntwo",
            "parameters": {"max": {"@type": "type.googleapis.com/google.protobuf.Int64Value", "value": "100"}}}]})
    );

    // alpha2 with a tool: daprd's own expectation, field for field.
    let r = alpha2(
        &s,
        "echo",
        json!({
            "contextId": "test-conversation-123",
            "inputs": [
                {"messages": [{"ofUser": {"content": [{"text": "well hello there"}]}}]},
                {"messages": [{"ofSystem": {"content": [{"text": "You are a helpful assistant"}]}}]}
            ],
            "metadata": {"k": "v"},
            "scrubPii": true,
            "temperature": 0.7,
            "responseFormat": {"type": "object", "properties": {"a": {"type": "string"}}},
            "promptCacheRetention": "86400s",
            "tools": [{"function": {"name": "test_function", "description": "d",
                       "parameters": {"type": "object", "properties": {"param1": {"type": "string"}}}}}],
            "toolChoice": "auto"
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"contextId": "test-conversation-123", "outputs": [{"choices": [{"finishReason": "tool_calls",
            "message": {"content": "well hello there\nYou are a helpful assistant",
                        "toolCalls": [{"id": "0", "function": {"name": "test_function", "arguments": "param1"}}]}}],
            "usage": {"completionTokens": "8", "promptTokens": "8", "totalTokens": "16"}}]})
    );

    // Every role; a tool's answer; an assistant's tool calls come back.
    let r = alpha2(
        &s,
        "echo",
        json!({"inputs": [{"messages": [
            {"ofDeveloper": {"name": "dev", "content": [{"text": "be brief"}]}},
            {"ofAssistant": {"content": [{"text": "assistant message"}],
                             "toolCalls": [{"id": "call_123", "function": {"name": "f", "arguments": "{\"x\":1}"}}]}},
            {"ofTool": {"toolId": "tool-123", "name": "tool name", "content": [{"text": "tool message"}]}}
        ]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    let choice = &out["outputs"][0]["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "be brief\nassistant message\nTool Response for tool ID 'tool-123' with name 'tool name': tool message"
    );
    assert_eq!(choice["finishReason"], "tool_calls");
    assert_eq!(
        choice["message"]["toolCalls"],
        json!([{"id": "call_123", "function": {"name": "f", "arguments": "{\"x\":1}"}}])
    );

    // PII scrubbed from an input that asks for it, not from the others.
    let r = alpha2(
        &s,
        "echo",
        json!({"inputs": [
            {"messages": [{"ofUser": {"content": [{"text": "mail test@test.com from 10.8.9.1"}]}}], "scrubPii": true},
            {"messages": [{"ofUser": {"content": [{"text": "call +2222222222"}]}}]}
        ]}),
    );
    assert_eq!(
        r.json()["outputs"][0]["choices"][0]["message"]["content"],
        "mail <EMAIL_ADDRESS> from <IP>\ncall +2222222222"
    );
    // … and from the answer when the request asks (alpha1 too).
    let r = post(
        &s,
        "/v1.0-alpha1/conversation/echo/converse",
        json!({"inputs": [{"content": "card 4111 1111 1111 1111"}], "scrubPII": true}),
    );
    assert_eq!(r.json()["outputs"][0]["result"], "card <CREDIT_CARD>");

    // Bad input: Dapr's codes and statuses, the runtime still serving.
    let bad: &[(&str, Value, u16, &str, &str)] = &[
        (
            "nobody",
            user("hi"),
            400,
            "ERR_CONVERSATION_NOT_FOUND",
            "echo",
        ),
        (
            "echo",
            json!({"inputs": []}),
            400,
            "ERR_CONVERSATION_MISSING_INPUTS",
            "missing inputs",
        ),
        (
            "echo",
            json!({}),
            400,
            "ERR_CONVERSATION_MISSING_INPUTS",
            "missing inputs",
        ),
        (
            "echo",
            json!({"inputs": [{"messages": [{"ofNobody": {}}]}]}),
            400,
            "ERR_CONVERSATION_INVALID_PARMS",
            "message type cannot be nil",
        ),
        (
            "echo",
            json!({"inputs": [{"messages": [{"ofAssistant": {"toolCalls": [{"id": "1"}]}}]}]}),
            400,
            "ERR_CONVERSATION_INVALID_PARMS",
            "tool types cannot be nil",
        ),
        (
            "echo",
            json!({"inputs": [user("hi")], "toolChoice": "required"}),
            400,
            "ERR_CONVERSATION_INVALID_PARMS",
            "tool choice",
        ),
        (
            "echo",
            json!({"inputs": [user("hi")], "toolChoice": "lookup",
            "tools": [{"function": {"name": "weather"}}]}),
            400,
            "ERR_CONVERSATION_INVALID_PARMS",
            "weather",
        ),
        (
            "echo",
            json!({"inputs": "hi"}),
            400,
            "ERR_MALFORMED_REQUEST",
            "failed deserializing",
        ),
        (
            "echo",
            json!({"inputs": [{"messages": [{"ofUser": {"content": [{"text": "a"}]}, "ofSystem": {"content": []}}]}]}),
            400,
            "ERR_MALFORMED_REQUEST",
            "more than one",
        ),
        (
            "echo",
            json!({"inputs": [user("hi")], "promptCacheRetention": "a day"}),
            400,
            "ERR_MALFORMED_REQUEST",
            "86400s",
        ),
        (
            "echo",
            json!({"inputs": [user("hi")], "tools": [{"function": {"name": "t", "parameters": {"properties": 7}}}]}),
            500,
            "ERR_CONVERSATION_INVOKE",
            "properties",
        ),
    ];
    for (name, body, status, code, says) in bad {
        let r = alpha2(&s, name, body.clone());
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{body}: {}",
            r.text()
        );
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    let r = s.request(
        "POST",
        "/v1.0-alpha2/conversation/echo/converse",
        b"{not json",
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );

    // gRPC: the same component through ConverseAlpha1/Alpha2.
    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let text = |t: &str| rt::ConversationMessageContent { text: t.into() };
    let a1 = c
        .converse_alpha1(rt::ConversationRequest {
            name: "echo".into(),
            context_id: Some("g-1".into()),
            inputs: vec![
                rt::ConversationInput {
                    content: "sync hello".into(),
                    role: Some("user".into()),
                    scrub_pii: None,
                },
                rt::ConversationInput {
                    content: "ssn 078-05-1120".into(),
                    role: None,
                    scrub_pii: Some(true),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a1.context_id.as_deref(), Some("g-1"));
    assert_eq!(a1.outputs[0].result, "sync hello\nssn <US_SSN>");
    let a2 = c
        .converse_alpha2(rt::ConversationRequestAlpha2 {
            name: "echo".into(),
            inputs: vec![rt::ConversationInputAlpha2 {
                messages: vec![rt::ConversationMessage {
                    message_types: Some(rt::conversation_message::MessageTypes::OfUser(
                        rt::ConversationMessageOfUser {
                            name: Some(String::new()),
                            content: vec![text("weather in Lisbon?")],
                        },
                    )),
                }],
                scrub_pii: None,
            }],
            tools: vec![rt::ConversationTools {
                tool_types: Some(rt::conversation_tools::ToolTypes::Function(
                    rt::ConversationToolsFunction {
                        name: "get_weather".into(),
                        description: Some("the weather".into()),
                        parameters: Some(prost_types::Struct {
                            fields: BTreeMap::from([(
                                "properties".to_string(),
                                prost_types::Value {
                                    kind: Some(prost_types::value::Kind::StructValue(
                                        prost_types::Struct {
                                            fields: BTreeMap::from([
                                                (
                                                    "location".to_string(),
                                                    prost_types::Value::default(),
                                                ),
                                                ("unit".to_string(), prost_types::Value::default()),
                                            ]),
                                        },
                                    )),
                                },
                            )]),
                        }),
                    },
                )),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let choice = &a2.outputs[0].choices[0];
    assert_eq!(choice.finish_reason, "tool_calls");
    let msg = choice.message.as_ref().unwrap();
    assert_eq!(msg.content, "weather in Lisbon?");
    let Some(rt::conversation_tool_calls::ToolTypes::Function(f)) = &msg.tool_calls[0].tool_types
    else {
        panic!("a function call: {msg:?}");
    };
    assert_eq!(
        (f.name.as_str(), f.arguments.as_str()),
        ("get_weather", "location,unit")
    );
    assert_eq!(a2.outputs[0].usage.as_ref().unwrap().total_tokens, 6);
    let e = c
        .converse_alpha2(rt::ConversationRequestAlpha2 {
            name: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("failed finding conversation component nobody")
    );
    let e = c
        .converse_alpha1(rt::ConversationRequest {
            name: "echo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("missing inputs"), "{e:?}");
}

/// One request a provider server saw.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A server that speaks OpenAI's chat completions, Anthropic's Messages
/// and Ollama's chat API, by path; `/e<status>/…` answers that status
/// with the provider's error shape; `/flaky/…` fails once, then answers.
async fn providers(log: Log) -> u16 {
    serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let path = req.uri().path().to_string();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let earlier = {
                let mut l = log.lock().unwrap();
                let n = l.iter().filter(|s| s.path == path).count();
                l.push(Seen {
                    path: path.clone(),
                    headers,
                    body,
                });
                n
            };
            let status: u16 = match path.split('/').nth(1) {
                Some(e) if e.starts_with('e') => e[1..].parse().unwrap_or(500),
                Some("flaky") if earlier == 0 => 503,
                _ => 200,
            };
            let answer = if status != 200 {
                json!({"error": {"message": format!("provider says {status}"), "type": "test"}})
            } else if path.ends_with("/chat/completions") {
                json!({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini-2024",
                    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                        "tool_calls": [{"id": "call_abc", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"location\":\"Lisbon\"}"}}]}},
                        {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "It is sunny."}}],
                    "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30,
                              "prompt_tokens_details": {"cached_tokens": 4},
                              "completion_tokens_details": {"reasoning_tokens": 0}}})
            } else if path.ends_with("/messages") {
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                    "content": [{"type": "text", "text": "Let me look."},
                                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Lisbon"}}],
                    "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 12}})
            } else if path.ends_with("/api/chat") {
                json!({"model": "llama3.2", "created_at": "2026-12-02T00:00:00Z",
                    "message": {"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "Lisbon"}}}]},
                    "done": true, "done_reason": "stop", "prompt_eval_count": 17, "eval_count": 5})
            } else {
                json!({"error": "no such path"})
            };
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(answer.to_string())))
                .unwrap()
        }
    })
    .await
}

/// A conversation with a tool round trip: the system's words, the
/// question, the model's call, the tool's answer.
fn tool_conversation() -> Value {
    json!({"inputs": [{"messages": [
        {"ofSystem": {"content": [{"text": "You forecast."}]}},
        {"ofUser": {"content": [{"text": "Weather in Lisbon?"}]}},
        {"ofAssistant": {"toolCalls": [{"id": "call_0", "function": {"name": "get_weather", "arguments": "{\"location\":\"Lisbon\"}"}}]}},
        {"ofTool": {"toolId": "call_0", "name": "get_weather", "content": [{"text": "21C"}]}}
    ]}],
    "temperature": 0.5,
    "tools": [{"function": {"name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_spoken_to_in_their_own_protocols() {
    let log: Log = Arc::default();
    let port = providers(log.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    let res = TempDir::new("conv-providers");
    let openai = |name: &str, endpoint: String, extra: &[(&str, &str)]| {
        let mut md = vec![("key", "sk-test"), ("model", "gpt-4o-mini")];
        md.extend_from_slice(extra);
        let endpoint = endpoint.leak() as &str;
        md.push(("endpoint", endpoint));
        component(name, "conversation.openai", &md)
    };
    res.write("openai.yaml", &openai("gpt", format!("{base}/v1"), &[]));
    res.write(
        "cached.yaml",
        &openai(
            "cached",
            format!("{base}/cached/v1"),
            &[("cacheTTL", "10m")],
        ),
    );
    res.write(
        "flaky.yaml",
        &openai("flaky", format!("{base}/flaky/v1"), &[]),
    );
    for status in ["400", "401", "429", "500"] {
        res.write(
            &format!("e{status}.yaml"),
            &openai(&format!("e{status}"), format!("{base}/e{status}/v1"), &[]),
        );
    }
    res.write(
        "claude.yaml",
        &component(
            "claude",
            "conversation.anthropic",
            &[
                ("key", "ant-key"),
                ("model", "claude-test"),
                ("endpoint", &format!("{base}/v1/")),
            ],
        ),
    );
    res.write(
        "llama.yaml",
        &component(
            "llama",
            "conversation.ollama",
            &[("model", "llama3.2"), ("endpoint", &base)],
        ),
    );
    res.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      twice:\n        policy: constant\n        duration: 10ms\n        maxRetries: 2\n  targets:\n    components:\n      flaky:\n        outbound:\n          retry: twice\n      e400:\n        outbound:\n          retry: twice\n",
    );
    let s = sidecar()
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let seen = |path: &str| -> Vec<Seen> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    };

    // OpenAI: the request field by field, both choices back as outputs.
    let mut req = tool_conversation();
    req["toolChoice"] = json!("get_weather");
    let r = alpha2(&s, "gpt", req);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &seen("/v1/chat/completions")[0];
    assert_eq!(sent.headers["authorization"], "Bearer sk-test");
    assert_eq!(
        sent.body,
        json!({"model": "gpt-4o-mini", "temperature": 0.5,
            "messages": [
                {"role": "system", "content": "You forecast."},
                {"role": "user", "content": "Weather in Lisbon?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":\"Lisbon\"}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "21C"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    );
    let usage = json!({"completionTokens": "9", "promptTokens": "21", "totalTokens": "30",
        "promptTokensDetails": {"cachedTokens": "4"}});
    assert_eq!(
        r.json(),
        json!({"outputs": [
            {"choices": [{"finishReason": "tool_calls", "message": {"toolCalls": [{"id": "call_abc",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Lisbon\"}"}}]}}],
             "model": "gpt-4o-mini", "usage": usage},
            {"choices": [{"finishReason": "stop", "index": "1", "message": {"content": "It is sunny."}}],
             "model": "gpt-4o-mini", "usage": usage}]})
    );

    // Anthropic: system apart, tool_use / tool_result blocks, its headers.
    let r = alpha2(&s, "claude", tool_conversation());
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &seen("/v1/messages")[0];
    assert_eq!(sent.headers["x-api-key"], "ant-key");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        sent.body,
        json!({"model": "claude-test", "max_tokens": 2048, "temperature": 0.5, "system": "You forecast.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Lisbon?"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_0", "name": "get_weather",
                    "input": {"location": "Lisbon"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": "21C"}]}],
            "tools": [{"name": "get_weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}],
            "tool_choice": {"type": "auto"}})
    );
    assert_eq!(
        r.json()["outputs"][0],
        json!({"choices": [{"finishReason": "tool_use", "message": {"content": "Let me look.",
            "toolCalls": [{"id": "toolu_1", "function": {"name": "get_weather", "arguments": "{\"location\":\"Lisbon\"}"}}]}}],
            "model": "claude-test", "usage": {"completionTokens": "12", "promptTokens": "30", "totalTokens": "42"}})
    );

    // Ollama's own API: arguments as objects, no streaming, options.
    let r = alpha2(&s, "llama", tool_conversation());
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &seen("/api/chat")[0];
    assert_eq!(sent.body["stream"], false);
    assert_eq!(sent.body["options"], json!({"temperature": 0.5}));
    assert_eq!(
        sent.body["messages"][2],
        json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "Lisbon"}}}]})
    );
    assert_eq!(
        sent.body["messages"][3],
        json!({"role": "tool", "content": "21C", "tool_name": "get_weather"})
    );
    assert_eq!(
        r.json()["outputs"][0]["choices"][0],
        json!({"finishReason": "tool_calls", "message": {"toolCalls": [{"function": {"name": "get_weather",
            "arguments": "{\"location\":\"Lisbon\"}"}}]}})
    );

    // cacheTTL: the same question is asked of the provider once.
    for _ in 0..3 {
        let r = alpha2(&s, "cached", json!({"inputs": [user("cache me")]}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = alpha2(&s, "cached", json!({"inputs": [user("another question")]}));
    assert_eq!(r.status, 200);
    assert_eq!(seen("/cached/v1/chat/completions").len(), 2);

    // Errors: Dapr's code with the provider's words; a failure is retried
    // by the component's policy, a refusal is not.
    for status in ["400", "401", "429", "500"] {
        let r = alpha2(&s, &format!("e{status}"), json!({"inputs": [user("hi")]}));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "ERR_CONVERSATION_INVOKE")
        );
        assert!(
            r.text().contains(status) && r.text().contains(&format!("provider says {status}")),
            "{}",
            r.text()
        );
    }
    assert_eq!(
        seen("/e400/v1/chat/completions").len(),
        1,
        "400 is not retried"
    );
    let r = alpha2(&s, "flaky", json!({"inputs": [user("hi")]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen("/flaky/v1/chat/completions").len(), 2);
    // The sidecar serves on.
    assert_eq!(s.get("/v1.0/healthz").status, 204);
}

#[test]
fn a_provider_without_its_key_or_with_a_bad_endpoint_stops_the_sidecar_with_a_reason() {
    for (type_, md, says) in [
        ("conversation.openai", vec![], "metadata `key` is required"),
        (
            "conversation.anthropic",
            vec![],
            "metadata `key` is required",
        ),
        (
            "conversation.openai",
            vec![("key", "k"), ("apiType", "azure")],
            "`endpoint` and `apiVersion`",
        ),
        (
            "conversation.ollama",
            vec![("endpoint", "ftp://x")],
            "not an http:// or https:// URL",
        ),
        (
            "conversation.openai",
            vec![("key", "k"), ("cacheTTL", "soon")],
            "cacheTTL",
        ),
    ] {
        let res = TempDir::new("conv-bad");
        res.write("c.yaml", &component("llm", type_, &md));
        let (status, out) = sidecar()
            .args(["--resources-path", res.path().to_str().unwrap()])
            .start_failing();
        assert!(!status.success());
        assert!(out.contains(says), "{type_} {md:?}: {out}");
    }
}
