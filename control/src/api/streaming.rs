//! Streaming subscriptions (`SubscribeTopicEventsAlpha1`): the app opens a
//! gRPC stream, names a pubsub and topic, and gets events on it, answering
//! each with `event_processed`. The subscription lives as long as the
//! stream; it is listed as STREAMING in the metadata API meanwhile. An event
//! the client does not acknowledge before it goes away stays with the broker.

use crate::api::pubsub::CLOUDEVENTS_JSON;
use crate::components::pubsub::{Message, SubscribeRequest};
use crate::error::ApiError;
use crate::runtime::Runtime;
use http::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tandem_config::{SubscriptionRoutes, SubscriptionSpec};
use tandem_proto::runtime::v1 as rt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

type Out = Result<rt::SubscribeTopicEventsResponseAlpha1, Status>;
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<i32>>>>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "ERR_PUBSUB_REQUEST_METADATA",
        msg,
    )
}

pub async fn subscribe(
    rt: Arc<Runtime>,
    mut inbound: Streaming<rt::SubscribeTopicEventsRequestAlpha1>,
) -> Result<ReceiverStream<Out>, ApiError> {
    use rt::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
    let first = inbound
        .message()
        .await
        .map_err(|s| bad(format!("reading the first message: {}", s.message())))?;
    let Some(In::InitialRequest(init)) = first.and_then(|m| m.subscribe_topic_events_request_type)
    else {
        return Err(bad(
            "the first message of the stream must be an initial_request naming pubsub_name and topic",
        ));
    };
    if init.pubsub_name.is_empty() || init.topic.is_empty() {
        return Err(bad("initial_request needs pubsub_name and topic"));
    }
    let comp = rt
        .snapshot()
        .pubsubs
        .get(&init.pubsub_name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::InvalidArgument,
                "ERR_PUBSUB_NOT_FOUND",
                format!("pubsub {} not found", init.pubsub_name),
            )
        })?;
    if !comp.scopes.may_subscribe(rt.app_id(), &init.topic) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "ERR_PUBSUB_FORBIDDEN",
            format!(
                "app {} may not subscribe to topic {}",
                rt.app_id(),
                init.topic
            ),
        ));
    }
    let (tx, rx) = mpsc::channel::<Out>(64);
    let initial = rt::SubscribeTopicEventsResponseAlpha1 {
        subscribe_topic_events_response_type: Some(
            rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType::InitialResponse(
                rt::SubscribeTopicEventsResponseInitialAlpha1 {},
            ),
        ),
    };
    let _ = tx.send(Ok(initial)).await;

    let waiting: Waiting = Arc::default();
    let handler = {
        let (tx, waiting, comp) = (tx.clone(), waiting.clone(), comp.clone());
        let (pubsub, dlt) = (
            init.pubsub_name.clone(),
            init.dead_letter_topic.clone().filter(|t| !t.is_empty()),
        );
        let tracers = rt.tracer_cell();
        Arc::new(move |msg: Message| {
            let tracers = tracers.clone();
            let (tx, waiting, comp, pubsub, dlt) = (
                tx.clone(),
                waiting.clone(),
                comp.clone(),
                pubsub.clone(),
                dlt.clone(),
            );
            Box::pin(async move {
                let ce = match serde_json::from_slice::<serde_json::Value>(&msg.data) {
                    Ok(serde_json::Value::Object(o)) => o,
                    _ if msg.content_type != CLOUDEVENTS_JSON => {
                        // A raw payload: hand it over wrapped.
                        let mut o = serde_json::Map::new();
                        o.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
                        o.insert("datacontenttype".into(), msg.content_type.clone().into());
                        o.insert(
                            "data".into(),
                            String::from_utf8_lossy(&msg.data).into_owned().into(),
                        );
                        o.insert("topic".into(), msg.topic.clone().into());
                        o
                    }
                    _ => return Ok(()),
                };
                let event = crate::delivery::topic_event_request(&ce, &pubsub, &msg.topic, "");
                // A CONSUMER span per event under its publisher's context,
                // ended when the subscriber answers.
                let tracer = tracers.load_full();
                let published = ce
                    .get("traceparent")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                let span =
                    crate::delivery::consumer_span(&tracer, &pubsub, &msg.topic, &[published]);
                let outcome = async {
                    let id = event.id.clone();
                    let (done_tx, done_rx) = oneshot::channel();
                    waiting
                        .lock()
                        .expect("waiting lock")
                        .insert(id.clone(), done_tx);
                    let out = rt::SubscribeTopicEventsResponseAlpha1 {
                        subscribe_topic_events_response_type: Some(
                            rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType::EventMessage(event),
                        ),
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        waiting.lock().expect("waiting lock").remove(&id);
                        return Err("the streaming subscriber is gone".to_string());
                    }
                    let status = done_rx.await.map_err(|_| {
                        "the streaming subscriber went away before answering".to_string()
                    })?;
                    match rt::topic_event_response::TopicEventResponseStatus::try_from(status) {
                        Ok(rt::topic_event_response::TopicEventResponseStatus::Success) => Ok(()),
                        Ok(rt::topic_event_response::TopicEventResponseStatus::Drop) => {
                            if let Some(dlt) = dlt {
                                let mut dead = msg.clone();
                                dead.topic = dlt;
                                comp.broker.publish(dead).await?;
                            }
                            Ok(())
                        }
                        _ => Err("the streaming subscriber answered RETRY".to_string()),
                    }
                }
                .await;
                if let Some(span) = span {
                    tracer.end(span, outcome.is_ok());
                }
                outcome
            }) as futures_util::future::BoxFuture<'static, Result<(), String>>
        })
    };
    let handle = comp
        .broker
        .subscribe(SubscribeRequest {
            topic: init.topic.clone(),
            consumer_group: comp.consumer_id.clone(),
            handler,
            // One event at a time down the stream, as the client acks them.
            concurrency: 1,
        })
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                "ERR_PUBSUB_SUBSCRIBE",
                e,
            )
        })?;
    let spec = SubscriptionSpec {
        pubsubname: init.pubsub_name.clone(),
        topic: init.topic.clone(),
        metadata: init.metadata.clone().into_iter().collect(),
        route: None,
        routes: Some(SubscriptionRoutes::default()),
        dead_letter_topic: init.dead_letter_topic.clone().filter(|t| !t.is_empty()),
        bulk_subscribe: None,
    };
    let registration = rt.add_streaming_subscription(spec);
    tracing::info!(pubsub = %init.pubsub_name, topic = %init.topic, "streaming subscription opened");
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(In::EventProcessed(done)) = m.subscribe_topic_events_request_type {
                let status = done.status.map_or(0, |s| s.status);
                if let Some(waiter) = waiting.lock().expect("waiting lock").remove(&done.id) {
                    let _ = waiter.send(status);
                }
            }
        }
        drop(handle);
        rt.remove_streaming_subscription(registration);
        tracing::info!(topic = %init.topic, "streaming subscription closed");
    });
    Ok(ReceiverStream::new(rx))
}
