//! Event delivery to the app (dapr-wire.md §3, §6.2): one broker
//! subscription per app subscription; each message is parsed as a
//! CloudEvent (or wrapped, for `rawPayload`), routed by the CEL rules, POSTed
//! to the app, and its answer handled as Dapr does — SUCCESS / RETRY / DROP,
//! 404 drops, other statuses retry — under the component's inbound
//! resiliency policy. When that is exhausted the message goes to the
//! dead-letter topic if there is one, otherwise back to the broker.

pub mod bindings;
mod bulk;
pub mod jobs;

use crate::api::pubsub::CLOUDEVENTS_JSON;
use crate::components::PubSubComponent;
use crate::components::pubsub::{Message, SubscribeRequest};
use crate::runtime::Runtime;
use bytes::Bytes;
use cel_interpreter::{Context, Program, Value as CelValue};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::sync::Arc;
use tandem_config::SubscriptionSpec;
use tandem_proxy::resilience::compile_cel;

struct Route {
    rule: Program,
    text: String,
    path: String,
}

struct Sub {
    spec: SubscriptionSpec,
    comp: PubSubComponent,
    rules: Vec<Route>,
    default: Option<String>,
}

/// What the app's answer means.
enum Outcome {
    Ack,
    /// Dropped by the app (DROP or 404): acknowledged, dead-lettered.
    Dropped(String),
    Retry(String),
}

/// Starts delivery for every subscription and input binding of the
/// runtime; returns how many subscriptions started. Subscriptions that
/// cannot start are logged and skipped.
pub fn start(rt: &Arc<Runtime>) -> usize {
    bindings::start(rt);
    crate::api::jobs::start(rt);
    start_subscriptions(rt)
}

fn start_subscriptions(rt: &Arc<Runtime>) -> usize {
    let snap = rt.snapshot();
    let mut started = 0;
    for (spec, kind) in rt.subscriptions() {
        // A streaming subscription is served by its own gRPC stream; a
        // delivery of it here would be a second consumer in the group,
        // taking the stream's events to an app route that is not there.
        if kind == crate::snapshot::SubscriptionKind::Streaming {
            continue;
        }
        let Some(comp) = snap.pubsubs.get(&spec.pubsubname).cloned() else {
            tracing::warn!(pubsub = %spec.pubsubname, topic = %spec.topic, "subscription skipped: no such pubsub");
            continue;
        };
        if !comp.scopes.may_subscribe(rt.app_id(), &spec.topic) {
            tracing::warn!(pubsub = %spec.pubsubname, topic = %spec.topic, "subscription skipped: not allowed by subscriptionScopes/allowedTopics");
            continue;
        }
        let routes = spec.effective_routes();
        let mut rules = Vec::new();
        let mut broken = false;
        for r in &routes.rules {
            match compile_cel(&r.match_) {
                Ok(rule) => rules.push(Route {
                    rule,
                    text: r.match_.clone(),
                    path: r.path.clone(),
                }),
                Err(e) => {
                    tracing::warn!(topic = %spec.topic, rule = %r.match_, error = %e, "subscription skipped: a routing rule is not valid CEL");
                    broken = true;
                }
            }
        }
        if broken {
            continue;
        }
        let sub = Arc::new(Sub {
            default: routes.default.clone(),
            spec: spec.clone(),
            comp: comp.clone(),
            rules,
        });
        let (handler, concurrency): (crate::components::pubsub::Handler, usize) =
            match bulk::settings(&spec) {
                // The broker must hand over a whole batch at once.
                Some((max, wait)) => (
                    bulk::handler(rt.clone(), sub, max, wait),
                    comp.concurrency.max(max),
                ),
                None => {
                    let rt = rt.clone();
                    let handler = Arc::new(move |msg: Message| {
                        let (rt, sub) = (rt.clone(), sub.clone());
                        Box::pin(async move { deliver(&rt, &sub, msg).await })
                            as futures_util::future::BoxFuture<'static, _>
                    });
                    (handler, comp.concurrency)
                }
            };
        match comp.broker.subscribe(SubscribeRequest {
            topic: spec.topic.clone(),
            consumer_group: comp.consumer_id.clone(),
            handler,
            concurrency,
        }) {
            Ok(handle) => {
                rt.keep_subscription(handle);
                started += 1;
                tracing::info!(pubsub = %spec.pubsubname, topic = %spec.topic, "subscribed");
            }
            Err(e) => {
                tracing::warn!(pubsub = %spec.pubsubname, topic = %spec.topic, error = %e, "subscription failed")
            }
        }
    }
    started
}

/// The CloudEvent to deliver: the message's own, or a wrapper for raw
/// payloads.
fn cloud_event(sub: &Sub, msg: &Message) -> Result<serde_json::Map<String, Value>, String> {
    if sub
        .spec
        .metadata
        .get("rawPayload")
        .is_some_and(|v| v == "true")
    {
        return Ok(crate::cloudevent::wrap_raw(
            &msg.data,
            &msg.topic,
            &sub.spec.pubsubname,
        ));
    }
    crate::cloudevent::parse_delivered(&msg.data)
}

fn route(sub: &Sub, ce: &serde_json::Map<String, Value>) -> Option<String> {
    if !sub.rules.is_empty() {
        let mut ctx = Context::default();
        if ctx.add_variable("event", Value::Object(ce.clone())).is_ok() {
            for r in &sub.rules {
                match r.rule.execute(&ctx) {
                    Ok(CelValue::Bool(true)) => return Some(r.path.clone()),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(rule = %r.text, error = %e, "routing rule did not evaluate")
                    }
                }
            }
        }
    }
    sub.default.clone()
}

/// POSTs one delivery to an HTTP app; the body of a 2xx answer, or what a
/// failure means (404 drops, anything else is retried).
async fn post_http(
    app: &tandem_proxy::AppChannel,
    path: &str,
    content_type: &str,
    sub: &Sub,
    (traceparent, tracestate): (Option<&str>, Option<&str>),
    body: Bytes,
) -> Result<Bytes, Outcome> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut req = http::Request::post(path.as_str())
        .header(http::header::CONTENT_TYPE, content_type)
        .header("pubsubname", sub.spec.pubsubname.as_str());
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    if let Some(ts) = tracestate {
        req = req.header("tracestate", ts);
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return Err(Outcome::Dropped(format!(
            "route `{path}` is not a valid request path"
        )));
    };
    let resp = app
        .send_http(req)
        .await
        .map_err(|e| Outcome::Retry(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status == http::StatusCode::NOT_FOUND {
        return Err(Outcome::Dropped(format!("the app answered 404 for {path}")));
    }
    if !status.is_success() {
        return Err(Outcome::Retry(format!(
            "the app answered {status} for {path}"
        )));
    }
    Ok(body)
}

async fn post(
    rt: &Runtime,
    path: &str,
    body: Bytes,
    sub: &Sub,
    ce: &serde_json::Map<String, Value>,
    traceparent: &str,
) -> Outcome {
    let Some(app) = rt.app.as_ref() else {
        return Outcome::Retry("there is no app channel (no --app-port)".into());
    };
    if let Some(channel) = app.grpc_channel() {
        return post_grpc(app, channel, path, sub, ce, traceparent).await;
    }
    let trace = (
        Some(traceparent).filter(|t| !t.is_empty()),
        ce.get("tracestate").and_then(Value::as_str),
    );
    let body = match post_http(app, path, CLOUDEVENTS_JSON, sub, trace, body).await {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let answer = serde_json::from_slice::<Value>(&body).ok();
    match answer
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
    {
        None | Some("") | Some("SUCCESS") => Outcome::Ack,
        Some("DROP") => Outcome::Dropped("the app answered DROP".into()),
        Some("RETRY") => Outcome::Retry("the app answered RETRY".into()),
        Some(other) => Outcome::Retry(format!("the app answered an unknown status `{other}`")),
    }
}

async fn dead_letter(sub: &Sub, msg: &Message, why: &str) -> Result<(), String> {
    let Some(dlt) = sub
        .spec
        .dead_letter_topic
        .as_ref()
        .filter(|t| !t.is_empty())
    else {
        return Err(why.to_string());
    };
    let mut dead = msg.clone();
    dead.topic = dlt.clone();
    sub.comp
        .broker
        .publish(dead)
        .await
        .map_err(|e| format!("{why}; and the dead-letter publish failed: {e}"))?;
    tracing::warn!(topic = %msg.topic, dead_letter_topic = %dlt, reason = %why, "message sent to the dead-letter topic");
    Ok(())
}

/// The CloudEvent of `msg` and the app route it goes to; `None` when the
/// message cannot be delivered at all (not a CloudEvent, expired, no
/// route) — it has then been dead-lettered if the subscription has a
/// dead-letter topic, and is to be acknowledged.
async fn addressed(sub: &Sub, msg: &Message) -> Option<(serde_json::Map<String, Value>, String)> {
    let ce = match cloud_event(sub, msg) {
        Ok(ce) => ce,
        Err(why) => {
            // Redelivery cannot fix it: dead-letter, else drop with an error.
            if dead_letter(sub, msg, &why).await.is_err() {
                tracing::error!(topic = %msg.topic, reason = %why, "message dropped");
            }
            return None;
        }
    };
    if let Some(exp) = ce.get("expiration").and_then(Value::as_str)
        && exp < crate::clock::rfc3339_utc(crate::clock::now_ms()).as_str()
    {
        let _ = dead_letter(sub, msg, "the message expired").await;
        return None;
    }
    let Some(path) = route(sub, &ce) else {
        tracing::warn!(topic = %msg.topic, "no route matched the event and there is no default: dropped");
        let _ = dead_letter(sub, msg, "no route matched").await;
        return None;
    };
    Some((ce, path))
}

/// With a collector configured, the CONSUMER span `pubsub/<topic>` of a
/// delivery: for one message under its publisher's context (the
/// CloudEvent's `traceparent`, given as `published`), for a bulk delivery
/// a span of its own linked to each message's publisher. None without a
/// collector: no span work per message when tracing is off.
pub(crate) fn consumer_span(
    tracer: &tandem_proxy::trace::Tracer,
    pubsub: &str,
    topic: &str,
    published: &[&str],
) -> Option<tandem_proxy::trace::Span> {
    use tandem_proxy::trace::{Context, Kind};
    if !tracer.is_on() {
        return None;
    }
    let name = format!("pubsub/{topic}");
    let mut span = match published {
        [one] => tracer.start(|| name, Kind::Consumer, Context::parse(one)),
        many => {
            let links: Vec<Context> = many.iter().filter_map(|t| Context::parse(t)).collect();
            let mut span = tracer.start_linked(name, Kind::Consumer, &links);
            span.attribute("messaging.batch.message_count", many.len() as i64);
            span
        }
    };
    span.attribute("messaging.system", pubsub);
    span.attribute("messaging.destination.name", topic);
    span.attribute("messaging.operation", "process");
    Some(span)
}

async fn deliver(rt: &Runtime, sub: &Sub, msg: Message) -> Result<(), String> {
    let Some((ce, path)) = addressed(sub, &msg).await else {
        return Ok(());
    };
    let tracer = rt.tracer();
    let published = ce.get("traceparent").and_then(Value::as_str);
    let span = consumer_span(
        &tracer,
        &sub.spec.pubsubname,
        &sub.spec.topic,
        &[published.unwrap_or_default()],
    );
    // The app gets the CONSUMER span's context; without a collector, the
    // publisher's goes on as it is.
    let traceparent = match &span {
        Some(span) => span.context.traceparent(),
        None => published.unwrap_or_default().to_string(),
    };
    let body = Bytes::from(serde_json::to_vec(&Value::Object(ce.clone())).expect("JSON"));
    let attempt = || async {
        match post(rt, &path, body.clone(), sub, &ce, &traceparent).await {
            Outcome::Ack => Ok(None),
            Outcome::Dropped(why) => Ok(Some(why)),
            Outcome::Retry(why) => Err(why),
        }
    };
    let result = sub.comp.inbound.run_transient(attempt).await;
    if let Some(span) = span {
        tracer.end(span, matches!(result, Ok(None)));
    }
    match result {
        Ok(None) => Ok(()),
        Ok(Some(dropped)) => {
            let _ = dead_letter(sub, &msg, &dropped).await;
            Ok(())
        }
        Err(why) => dead_letter(sub, &msg, &why).await,
    }
}

pub(crate) fn to_prost(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_prost).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Delivery to a gRPC app: `AppCallback/OnTopicEvent`. UNIMPLEMENTED means
/// the app does not take events: acknowledged, not dead-lettered.
async fn post_grpc(
    app: &tandem_proxy::AppChannel,
    channel: tonic::transport::Channel,
    path: &str,
    sub: &Sub,
    ce: &serde_json::Map<String, Value>,
    traceparent: &str,
) -> Outcome {
    use tandem_proto::runtime::v1 as rt;
    let event = topic_event_request(ce, &sub.spec.pubsubname, &sub.spec.topic, path);
    let _permit = app.permit().await;
    let mut req = tonic::Request::new(event);
    app.add_grpc_token(&mut req);
    if let Some(tp) = Some(traceparent).filter(|t| !t.is_empty())
        && let Ok(v) = tp.parse()
    {
        req.metadata_mut().insert("traceparent", v);
    }
    let mut client = rt::app_callback_client::AppCallbackClient::new(channel);
    match client.on_topic_event(req).await {
        Ok(resp) => match rt::topic_event_response::TopicEventResponseStatus::try_from(
            resp.into_inner().status,
        ) {
            Ok(rt::topic_event_response::TopicEventResponseStatus::Success) => Outcome::Ack,
            Ok(rt::topic_event_response::TopicEventResponseStatus::Drop) => {
                Outcome::Dropped("the app answered DROP".into())
            }
            _ => Outcome::Retry("the app answered RETRY".into()),
        },
        Err(status) if status.code() == tonic::Code::Unimplemented => Outcome::Ack,
        Err(status) => Outcome::Retry(format!("OnTopicEvent failed: {}", status.message())),
    }
}

/// A CloudEvent as the gRPC `TopicEventRequest` apps and streaming
/// subscribers receive. `topic` is the topic it was read from — for a
/// dead-lettered message the dead-letter topic, while the event's own
/// `topic` extension keeps the original (daprd does the same, and the SDKs
/// route on the former).
pub(crate) fn topic_event_request(
    ce: &serde_json::Map<String, Value>,
    pubsub: &str,
    topic: &str,
    path: &str,
) -> tandem_proto::runtime::v1::TopicEventRequest {
    let s = |k: &str| {
        ce.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let core = [
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "data",
        "data_base64",
    ];
    let extensions = prost_types::Struct {
        fields: ce
            .iter()
            .filter(|(k, _)| !core.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), to_prost(v)))
            .collect(),
    };
    tandem_proto::runtime::v1::TopicEventRequest {
        id: s("id"),
        source: s("source"),
        r#type: s("type"),
        spec_version: s("specversion"),
        data_content_type: s("datacontenttype"),
        topic: topic.to_string(),
        data: crate::cloudevent::grpc_data(ce),
        pubsub_name: pubsub.to_string(),
        path: path.to_string(),
        extensions: Some(extensions),
    }
}
