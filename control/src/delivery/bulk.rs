//! Bulk subscriptions (`bulkSubscribe.enabled`, dapr-wire.md §3): the
//! broker hands messages over concurrently, up to `maxMessagesCount`; they
//! are gathered for at most `maxAwaitDurationMs` and delivered to the app as
//! one request per route — HTTP `{id, entries, …, type:
//! "com.dapr.event.sent.bulk"}` answered with `{"statuses": […]}`, or gRPC
//! `OnBulkTopicEvent` (then `OnBulkTopicEventAlpha1`). Each entry is acked,
//! dropped (dead-lettered) or left to the broker by its own status; entries
//! to retry are sent again under the inbound resiliency policy.

use super::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const DEFAULT_MAX_MESSAGES: usize = 100;
const DEFAULT_MAX_AWAIT: Duration = Duration::from_millis(1000);
const BULK_TYPE: &str = "com.dapr.event.sent.bulk";

/// A message waiting in a batch, and where its result goes.
struct Waiting {
    msg: Message,
    done: oneshot::Sender<Result<(), String>>,
}

impl Waiting {
    fn finish(self, r: Result<(), String>) {
        let _ = self.done.send(r);
    }
}

/// One entry of a batch on its way to one route.
struct Entry {
    id: String,
    ce: serde_json::Map<String, Value>,
    waiting: Waiting,
}

/// `(maxMessagesCount, maxAwaitDuration)` of a bulk subscription, with
/// Dapr's defaults; `None` when bulk delivery is off.
pub(super) fn settings(spec: &SubscriptionSpec) -> Option<(usize, Duration)> {
    let b = spec.bulk_subscribe.as_ref().filter(|b| b.enabled)?;
    let count = b
        .max_messages_count
        .filter(|n| *n > 0)
        .map(|n| n as usize)
        .unwrap_or(DEFAULT_MAX_MESSAGES);
    let wait = b
        .max_await_duration_ms
        .filter(|n| *n > 0)
        .map(|n| Duration::from_millis(n as u64))
        .unwrap_or(DEFAULT_MAX_AWAIT);
    Some((count, wait))
}

/// The broker-facing handler of a bulk subscription. Each call waits for
/// its message's own result; the batching task ends when the handler (and
/// so the broker subscription) is dropped.
pub(super) fn handler(
    rt: Arc<Runtime>,
    sub: Arc<Sub>,
    max: usize,
    wait: Duration,
) -> crate::components::pubsub::Handler {
    let (tx, rx) = mpsc::unbounded_channel::<Waiting>();
    tokio::spawn(gather(rt, sub, rx, max, wait));
    Arc::new(move |msg: Message| {
        let tx = tx.clone();
        Box::pin(async move {
            let (done, result) = oneshot::channel();
            tx.send(Waiting { msg, done })
                .map_err(|_| "the bulk subscription stopped".to_string())?;
            result
                .await
                .unwrap_or_else(|_| Err("the bulk subscription stopped".into()))
        }) as futures_util::future::BoxFuture<'static, _>
    })
}

async fn gather(
    rt: Arc<Runtime>,
    sub: Arc<Sub>,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    max: usize,
    wait: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        while batch.len() < max {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(w) => batch.push(w),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        deliver_batch(&rt, &sub, batch).await;
    }
}

async fn deliver_batch(rt: &Runtime, sub: &Sub, batch: Vec<Waiting>) {
    let mut by_path: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for waiting in batch {
        let Some((ce, path)) = addressed(sub, &waiting.msg).await else {
            waiting.finish(Ok(()));
            continue;
        };
        by_path.entry(path).or_default().push(Entry {
            id: uuid::Uuid::new_v4().to_string(),
            ce,
            waiting,
        });
    }
    for (path, entries) in by_path {
        deliver_to_path(rt, sub, &path, entries).await;
    }
}

/// What the app said of each entry of one request.
enum Answer {
    /// Entry id → SUCCESS / RETRY / DROP; entries not named are retried.
    Statuses(BTreeMap<String, &'static str>),
    /// 404: every entry is dropped.
    DropAll(String),
    /// Transport failure or a non-2xx answer: every entry is retried.
    RetryAll(String),
}

async fn deliver_to_path(rt: &Runtime, sub: &Sub, path: &str, entries: Vec<Entry>) {
    // One CONSUMER span for the request, linked to each event's publisher;
    // the app gets its context (each event keeps its publisher's).
    let tracer = rt.tracer();
    let published: Vec<&str> = entries
        .iter()
        .map(|e| {
            e.ce.get("traceparent")
                .and_then(Value::as_str)
                .unwrap_or_default()
        })
        .collect();
    let span = super::consumer_span(&tracer, &sub.spec.pubsubname, &sub.spec.topic, &published);
    let traceparent = span.as_ref().map(|s| s.context.traceparent());
    let remaining = std::sync::Mutex::new(entries);
    let attempt = || async {
        let batch: Vec<(String, serde_json::Map<String, Value>)> = remaining
            .lock()
            .expect("batch lock")
            .iter()
            .map(|e| (e.id.clone(), e.ce.clone()))
            .collect();
        let answer = send(rt, sub, path, &batch, traceparent.as_deref()).await;
        let (settled, why): (Vec<(Entry, Option<String>)>, Option<String>) = {
            let mut left = remaining.lock().expect("batch lock");
            let all = std::mem::take(&mut *left);
            let mut settled = Vec::new();
            let why = match &answer {
                Answer::DropAll(why) => {
                    settled.extend(all.into_iter().map(|e| (e, Some(why.clone()))));
                    None
                }
                Answer::RetryAll(why) => {
                    *left = all;
                    Some(why.clone())
                }
                Answer::Statuses(statuses) => {
                    for e in all {
                        match statuses.get(&e.id).copied() {
                            Some("SUCCESS") => settled.push((e, None)),
                            Some("DROP") => settled.push((e, Some("the app answered DROP".into()))),
                            _ => left.push(e),
                        }
                    }
                    (!left.is_empty())
                        .then(|| format!("the app asked to retry {} entries", left.len()))
                }
            };
            (settled, why)
        };
        for (e, dropped) in settled {
            if let Some(why) = dropped {
                let _ = dead_letter(sub, &e.waiting.msg, &why).await;
            }
            e.waiting.finish(Ok(()));
        }
        match why {
            Some(why) => Err(why),
            None => Ok(()),
        }
    };
    let result = sub.comp.inbound.run_transient(attempt).await;
    if let Some(span) = span {
        tracer.end(span, result.is_ok());
    }
    if let Err(why) = result {
        let left = std::mem::take(&mut *remaining.lock().expect("batch lock"));
        for e in left {
            let r = dead_letter(sub, &e.waiting.msg, &why).await;
            e.waiting.finish(r);
        }
    }
}

async fn send(
    rt: &Runtime,
    sub: &Sub,
    path: &str,
    batch: &[(String, serde_json::Map<String, Value>)],
    traceparent: Option<&str>,
) -> Answer {
    let Some(app) = rt.app.as_ref() else {
        return Answer::RetryAll("there is no app channel (no --app-port)".into());
    };
    if let Some(channel) = app.grpc_channel() {
        return send_grpc(app, channel, path, sub, batch, traceparent).await;
    }
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "entries": batch.iter().map(|(id, ce)| json!({
            "entryId": id,
            "event": ce,
            "metadata": {},
            "contentType": CLOUDEVENTS_JSON,
        })).collect::<Vec<_>>(),
        "metadata": {},
        "topic": sub.spec.topic,
        "pubsubname": sub.spec.pubsubname,
        "type": BULK_TYPE,
    });
    let body = match post_http(
        app,
        path,
        "application/json",
        sub,
        (traceparent, None),
        Bytes::from(body.to_string()),
    )
    .await
    {
        Ok(body) => body,
        Err(Outcome::Dropped(why)) => return Answer::DropAll(why),
        Err(Outcome::Retry(why)) => return Answer::RetryAll(why),
        // post_http never acknowledges by itself; nothing settled = retry.
        Err(Outcome::Ack) => return Answer::Statuses(Default::default()),
    };
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let statuses = answer
        .get("statuses")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| {
                    let id = s.get("entryId")?.as_str()?.to_string();
                    let st = match s.get("status").and_then(Value::as_str) {
                        Some("SUCCESS") | Some("") | None => "SUCCESS",
                        Some("DROP") => "DROP",
                        _ => "RETRY",
                    };
                    Some((id, st))
                })
                .collect()
        })
        .unwrap_or_default();
    Answer::Statuses(statuses)
}

async fn send_grpc(
    app: &tandem_proxy::AppChannel,
    channel: tonic::transport::Channel,
    path: &str,
    sub: &Sub,
    batch: &[(String, serde_json::Map<String, Value>)],
    traceparent: Option<&str>,
) -> Answer {
    use tandem_proto::runtime::v1 as rt;
    let entries = batch
        .iter()
        .map(|(id, ce)| {
            let e = topic_event_request(ce, &sub.spec.pubsubname, &sub.spec.topic, path);
            rt::TopicEventBulkRequestEntry {
                entry_id: id.clone(),
                content_type: CLOUDEVENTS_JSON.into(),
                metadata: Default::default(),
                event: Some(rt::topic_event_bulk_request_entry::Event::CloudEvent(
                    rt::TopicEventCeRequest {
                        id: e.id,
                        source: e.source,
                        r#type: e.r#type,
                        spec_version: e.spec_version,
                        data_content_type: e.data_content_type,
                        data: e.data,
                        extensions: e.extensions,
                    },
                )),
            }
        })
        .collect();
    let request = rt::TopicEventBulkRequest {
        id: uuid::Uuid::new_v4().to_string(),
        entries,
        metadata: Default::default(),
        topic: sub.spec.topic.clone(),
        pubsub_name: sub.spec.pubsubname.clone(),
        r#type: BULK_TYPE.into(),
        path: path.to_string(),
    };
    let _permit = app.permit().await;
    let traced = |mut req: tonic::Request<rt::TopicEventBulkRequest>| {
        app.add_grpc_token(&mut req);
        if let Some(v) = traceparent.and_then(|t| t.parse().ok()) {
            req.metadata_mut().insert("traceparent", v);
        }
        req
    };
    let req = traced(tonic::Request::new(request.clone()));
    let mut stable = rt::app_callback_client::AppCallbackClient::new(channel.clone());
    let answer = match stable.on_bulk_topic_event(req).await {
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            let req = traced(tonic::Request::new(request));
            let mut alpha = rt::app_callback_alpha_client::AppCallbackAlphaClient::new(channel);
            alpha.on_bulk_topic_event_alpha1(req).await
        }
        other => other,
    };
    match answer {
        Ok(resp) => Answer::Statuses(
            resp.into_inner()
                .statuses
                .into_iter()
                .map(|s| {
                    use rt::topic_event_response::TopicEventResponseStatus as S;
                    let st = match S::try_from(s.status) {
                        Ok(S::Success) => "SUCCESS",
                        Ok(S::Drop) => "DROP",
                        _ => "RETRY",
                    };
                    (s.entry_id, st)
                })
                .collect(),
        ),
        // An app without bulk handlers takes the events one by one.
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            drop(_permit);
            let mut statuses = BTreeMap::new();
            for (id, ce) in batch {
                let channel = app.grpc_channel().expect("a gRPC app");
                // The publisher's context as it is (bulk deliveries have
                // no span of their own).
                let tp = ce
                    .get("traceparent")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                let st = match post_grpc(app, channel, path, sub, ce, tp).await {
                    Outcome::Ack => "SUCCESS",
                    Outcome::Dropped(_) => "DROP",
                    Outcome::Retry(_) => "RETRY",
                };
                statuses.insert(id.clone(), st);
            }
            Answer::Statuses(statuses)
        }
        Err(s) => Answer::RetryAll(format!("OnBulkTopicEvent failed: {}", s.message())),
    }
}
